"""The freezing study (issue 31): PPO with the first N blocks frozen, several seeds per N, each run's last
checkpoint measured on the frontier v3 report prompts, and "which N buys the most reward per nat" answered over
seeds.

Why a module: the analyses script holds the study's choices (which Ns, seeds, phases, prompts) and the page; the
mechanics below are what any "one setting, several seeds, one number per run" study of fine-tuning needs:

- `run_name` / `study_runs`: the runs, seed-major (every N of seed 0 first), so a study cut short is balanced;
- `train_or_resume`: one run trained in this process, resumed from its latest checkpoint after a kill, skipped
  when its last phase is checkpointed (a run killed before its first checkpoint starts again);
- `per_run_table`: each run's reward gain over the base model per nat of KL(tuned || base), from the per-sequence
  rows `rlhf_interp.frontier.v3_round.Round.measure` saves (the base measured on the same prompts with the same
  sampling seed, so the gain is paired prompt by prompt);
- `per_n_table`, `pairwise_table`: per N the mean over seeds with a t interval over seeds, and every pair of Ns
  compared seed by seed (paired over seeds: the runs of one seed share their sampling stream);
- `best_n_claim`: the claim, decided or bounded, against the study's target half-width.

The unit of every interval is the run (seed): a run's reward per nat is one draw whose prompt-level noise (128
prompts x 2 samples) is inside the seed-to-seed spread the t interval over seeds measures.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from rlhf_interp.core import stats
from rlhf_interp.measure.seed_groups import over_seeds
from rlhf_interp.report.claims import Claim


def run_name(n: int, seed: int) -> str:
    """``N{n}_s{seed}``: the run directory's name under the study's runs directory."""
    return f"N{int(n)}_s{int(seed)}"


def parse_run_name(name: str) -> tuple[int, int]:
    """``N10_s2`` -> ``(10, 2)``."""
    n, _, seed = name.partition("_s")
    if not n.startswith("N") or not seed:
        raise ValueError(f"{name!r} is not a freezing run name (N<frozen layers>_s<seed>, e.g. N10_s0)")
    return int(n[1:]), int(seed)


def study_runs(ns: Sequence[int], seeds: Sequence[int]) -> list[tuple[str, int, int]]:
    """``(name, n, seed)`` seed-major: every N of the first seed, then of the next, so that whatever part of the
    study finished has the same seeds for every N (or one more for the first Ns)."""
    return [(run_name(n, s), int(n), int(s)) for s in seeds for n in ns]


def finished(run_dir: Path, phases: int) -> bool:
    """Whether the run's latest checkpoint holds its last phase."""
    from rlhf_interp.bridge.run_dirs import latest_checkpoint, read_meta

    latest = latest_checkpoint(run_dir) if Path(run_dir).exists() else None
    return latest is not None and int(read_meta(latest).get("step", -1)) >= phases


def train_or_resume(config: str | Path, run_dir: Path, overrides: Sequence[str], phases: int,
                    progress: bool = False) -> str:
    """Train one run to ``phases`` in this process: skipped when finished, resumed from its latest checkpoint
    when it has one (a killed run; the trainer restores weights, optimiser, KL controller and logs), else started
    (over a run killed before its first checkpoint). Returns what was done."""
    from rlhf_interp.bridge.run_dirs import latest_checkpoint
    from rlhf_interp.ppo import PPOConfig, PPOTrainer

    run_dir = Path(run_dir)
    if finished(run_dir, phases):
        return "done"
    if run_dir.exists() and latest_checkpoint(run_dir) is not None:
        trainer = PPOTrainer.resume(run_dir, overrides=[f"phases={phases}"], progress=progress)
        how = f"resumed at phase {trainer.phase}"
    else:
        cfg = PPOConfig.load(config, list(overrides))
        trainer = PPOTrainer(cfg, run_dir, progress=progress, overwrite=run_dir.exists())
        how = "started"
    trainer.train()
    del trainer
    return how


def run_seconds(run_dir: Path) -> float:
    """The run's training seconds: the sum of ``seconds`` over its logged phases (metrics.jsonl)."""
    from rlhf_interp.core.io import read_jsonl

    path = Path(run_dir) / "metrics.jsonl"
    return float(sum(r.get("seconds", 0.0) for _, r in read_jsonl(path))) if path.exists() else math.nan


# ----------------------------------------------------------------------------------------------
# Tables from the measured points


def prompt_means(seqs: pd.DataFrame) -> pd.DataFrame:
    """Per prompt the mean reward and exact KL of its samples (prompt_idx-indexed)."""
    return seqs.groupby("prompt_idx")[["reward", "kl_exact"]].mean()


def per_run_table(base_seqs: pd.DataFrame, runs: dict[str, pd.DataFrame], labels: dict[str, dict[str, Any]]
                  ) -> pd.DataFrame:
    """One row per run: reward and KL (means over prompts, samples of a prompt averaged first, with t intervals
    over prompts), the reward gain over the base on the same prompts (paired), and ``reward_per_nat`` = gain / KL.
    ``runs``: name -> per-sequence rows; ``labels``: name -> columns to carry (``n``, ``seed``, ``step`` ...)."""
    base = prompt_means(base_seqs)
    rows = []
    for name, seqs in runs.items():
        pm = prompt_means(seqs)
        both = pm.join(base["reward"].rename("base_reward"), how="inner")
        reward = stats.mean_interval(both["reward"])
        kl = stats.mean_interval(both["kl_exact"])
        gain = stats.paired_difference(both["reward"], both["base_reward"])
        samples = int(seqs.groupby("prompt_idx").size().min())
        rows.append({"run": name, **labels.get(name, {}), "reward_mean": reward.value, "reward_low": reward.low,
                     "reward_high": reward.high, "base_reward_mean": float(both["base_reward"].mean()),
                     "gain": gain.value, "gain_low": gain.low, "gain_high": gain.high, "kl_exact_mean": kl.value,
                     "kl_exact_low": kl.low, "kl_exact_high": kl.high,
                     "reward_per_nat": gain.value / kl.value if kl.value > 0 else math.nan,
                     "n_prompts": len(both), "samples_per_prompt": samples})
    return pd.DataFrame(rows)


def _n_of(per_run: pd.DataFrame, seeds: int) -> dict[str, int]:
    return {"seeds": int(seeds), "prompts": int(per_run["n_prompts"].min()),
            "samples_per_prompt": int(per_run["samples_per_prompt"].min())}


def per_n_table(per_run: pd.DataFrame, columns: Sequence[str] = ("reward_per_nat", "gain", "kl_exact_mean")
                ) -> pd.DataFrame:
    """Per N (``n`` column): each column's mean over the seeds with its 95% t interval over seeds (blank with one
    seed), and the seeds it rests on."""
    rows = []
    for n, part in per_run.groupby("n", sort=True):
        row: dict[str, Any] = {"n": int(n), "seeds": int(part["seed"].nunique()),
                               "seed_list": ",".join(str(int(s)) for s in sorted(part["seed"])),
                               "prompts": int(part["n_prompts"].min()),
                               "samples_per_prompt": int(part["samples_per_prompt"].min())}
        for c in columns:
            iv = over_seeds(part[c].to_numpy(dtype=float))
            row[c] = iv.value
            row[f"{c}_low"] = iv.low if math.isfinite(iv.low) else math.nan
            row[f"{c}_high"] = iv.high if math.isfinite(iv.high) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def pairwise_table(per_run: pd.DataFrame, column: str = "reward_per_nat") -> pd.DataFrame:
    """Every pair of Ns (a < b): ``a - b`` of ``column`` over the seeds both have, paired by seed, with its 95% t
    interval over seeds and the verdict (`rlhf_interp.core.stats.verdict`)."""
    wide = per_run.pivot_table(index="seed", columns="n", values=column, aggfunc="mean")
    rows = []
    for a, b in itertools.combinations(sorted(wide.columns), 2):
        both = wide[[a, b]].dropna()
        row = {"a": int(a), "b": int(b), "seeds": len(both), "seed_list": ",".join(str(int(s)) for s in both.index)}
        if len(both):
            iv = stats.paired_difference(both[a].to_numpy(), both[b].to_numpy(), n={"seeds": len(both)})
            v = stats.verdict(iv, f"N={int(a)}", f"N={int(b)}")
            row.update(difference=iv.value, low=iv.low if math.isfinite(iv.low) else math.nan,
                       high=iv.high if math.isfinite(iv.high) else math.nan, decided=v.decided,
                       bound=v.bound if math.isfinite(v.bound) else math.nan, verdict=v.text)
        rows.append(row)
    return pd.DataFrame(rows)


def best_n_claim(per_run: pd.DataFrame, target: float, column: str = "reward_per_nat", unit: str = "periods"
                 ) -> tuple[Claim, dict]:
    """"Which N buys the most per nat": the N with the highest mean over seeds against the runner-up, paired by
    seed. Decided when the interval excludes 0; otherwise bounded by the largest difference not ruled out, which
    meets the target when it is within ``target``. A claim not measured when fewer than two Ns share two seeds.
    Returns (claim, facts) with facts the ranking, the difference and whether the target is met."""
    means = per_run.groupby("n")[column].mean().sort_values(ascending=False)
    wide = per_run.pivot_table(index="seed", columns="n", values=column, aggfunc="mean")
    if len(means) < 2 or len(wide[[means.index[0], means.index[1]]].dropna()) < 2:
        seeds = int(per_run["seed"].nunique()) if len(per_run) else 0
        return Claim.not_measured(
            "freezing_best_n", "which number of frozen layers buys the most reward per nat: not yet measured with "
            "enough samples ({runs} finished runs, at least two seeds of two settings needed)",
            params={"runs": len(per_run)}, n={"runs": len(per_run), "seeds": seeds}), {"target_met": False}
    first, second = int(means.index[0]), int(means.index[1])
    both = wide[[first, second]].dropna()
    n = _n_of(per_run, len(both))
    diff = stats.paired_difference(both[first].to_numpy(), both[second].to_numpy(), n=n)
    v = stats.verdict(diff, f"N={first}", f"N={second}")
    met = v.decided or v.bound <= target
    goal = "decided" if v.decided else ("bounded within the target" if met else "the target not met")
    claim = Claim.compare(
        "freezing_best_n", "most reward per nat: `N` = {first} frozen layers, ahead of `N` = {second} by {value} "
        "{unit} per nat {ci} (paired by seed, {n}); {verdict}; target ±{target}: {goal}",
        diff, f"N={first}", f"N={second}", params={"first": first, "second": second, "target": float(target),
                                                   "goal": goal, "unit": unit})
    return claim, {"first": first, "second": second, "decided": v.decided, "bound": v.bound, "target_met": met}


def per_n_claims(per_n: pd.DataFrame, unit: str = "periods") -> list[Claim]:
    """One estimate per N with at least two seeds: its reward per nat, mean over seeds with a t interval."""
    out = []
    for r in per_n.itertuples():
        if r.seeds < 2 or not math.isfinite(r.reward_per_nat_low):
            continue
        iv = stats.Interval(r.reward_per_nat, r.reward_per_nat_low, r.reward_per_nat_high, method="t over seeds",
                            n={"seeds": int(r.seeds), "prompts": int(r.prompts),
                               "samples_per_prompt": int(r.samples_per_prompt)})
        out.append(Claim.estimate(f"freezing_n{int(r.n)}_per_nat", "`N` = {frozen} frozen layers: {value} {unit} "
                                  "gained per nat of KL {ci} (mean over seeds, {n})", iv,
                                  params={"frozen": int(r.n), "unit": unit}, headline=False))
    return out


def cpu_claim(per_run: pd.DataFrame) -> Claim:
    """What the study cost: training seconds (the runs' logged phase seconds) and measuring CPU seconds, summed
    over the runs and per run."""
    train = per_run["train_seconds"].astype(float)
    measure = per_run["measure_cpu_seconds"].astype(float)
    return Claim.fact("freezing_cpu", "cost: {train} s of training ({per_run} s per run, one thread) and {measure} s "
                      "of measuring CPU over {runs} runs", params={"train": round(float(train.sum())),
                      "per_run": round(float(train.mean())), "measure": round(float(measure.sum())),
                      "runs": len(per_run)}, n={"runs": len(per_run)}, headline=False)


__all__ = ["best_n_claim", "cpu_claim", "finished", "pairwise_table", "parse_run_name", "per_n_claims", "per_n_table",
           "per_run_table", "prompt_means", "run_name", "run_seconds", "study_runs", "train_or_resume"]
