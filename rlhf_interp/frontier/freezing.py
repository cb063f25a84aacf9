"""The freezing study (issue 31): PPO with the first N blocks frozen, several seeds per N, each run's last
checkpoint measured on the frontier v3 report prompts, and "which N buys the most reward per nat" answered over
seeds.

Why a module: the analyses script holds the study's choices (which Ns, seeds, phases, prompts) and the page; the
mechanics below are what any "one setting, several seeds, one number per run" study of fine-tuning needs:

- `run_name` / `study_runs`: the runs, seed-major (every N of seed 0 first), so a study cut short is balanced;
- training each run: `rlhf_interp.ppo.runs.train_or_resume` (resumed after a kill, skipped when finished);
- `per_run_table`: each run's reward gain over the base model per nat of KL(tuned || base), from the per-sequence
  rows `rlhf_interp.frontier.v3_round.Round.measure` saves (the base measured on the same prompts with the same
  sampling seed, so the gain is paired prompt by prompt);
- `per_n_table`, `pairwise_table`: per N the mean over seeds with a t interval over seeds, and every pair of Ns
  compared seed by seed (paired over seeds: the runs of one seed share their sampling stream).
(The claims made from these tables: `rlhf_interp.report.freezing_claims`.)

The unit of every interval is the run (seed): a run's reward per nat is one draw whose prompt-level noise (128
prompts x 2 samples) is inside the seed-to-seed spread the t interval over seeds measures.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import pandas as pd

from rlhf_interp.core import stats
from rlhf_interp.measure.seed_groups import over_seeds


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


def seeds_for(sd: float, target: float, level: float = stats.LEVEL, most: int = 1000) -> int:
    """The fewest seeds whose t interval of a mean (df = seeds - 1) has half-width <= ``target`` when the per-seed
    values spread with ``sd``: the sizing of the next round from this one's noise (``most`` + 1 when even
    ``most`` seeds would not do; 2 when the spread is 0)."""
    from scipy.stats import t

    for n in range(2, most + 1):
        if t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n) <= target:
            return n
    return most + 1


def pairwise_table(per_run: pd.DataFrame, column: str = "reward_per_nat", target: float | None = None
                   ) -> pd.DataFrame:
    """Every pair of Ns (a < b): ``a - b`` of ``column`` over the seeds both have, paired by seed, with its 95% t
    interval over seeds and the verdict (`rlhf_interp.core.stats.verdict`); with ``target``, the standard
    deviation of the per-seed differences and the seeds it would take to bring the half-width within ``target``
    (`seeds_for`)."""
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
        if target is not None and len(both) >= 2:
            sd = float((both[a] - both[b]).std(ddof=1))
            row.update(sd=sd, seeds_for_target=seeds_for(sd, target))
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["pairwise_table", "parse_run_name", "per_n_table", "per_run_table", "prompt_means", "run_name", "seeds_for",
           "study_runs"]
