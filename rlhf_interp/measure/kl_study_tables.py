"""The KL-direction study's tables: a study directory -> tidy DataFrames (the report's CSVs).

Why tables of per-prompt values: every number on the page needs a 95% interval over the units that were drawn at
random, the evaluation prompts and the training seeds. `per_prompt_table` keeps one row per (penalty, seed,
prompt) at the end of training and at a common KL(pi||ref), so `levels` and `comparisons` (paired by seed and
prompt: every run is evaluated on the same prompts with the same sampling seed) come from the CSV alone.

Equal KL: evaluations are taken at the base model (updates 0) and every ``eval_every`` phases. A run is read where
its exact KL(pi||ref) per token on the evaluation samples first reaches the common level (0.8 x the smallest
final KL over the runs), linearly interpolated between the two evaluations around it, prompt by prompt
(`matched_runs.at_level` for the run-level metrics; the same weight for each prompt's values). With evaluations only
at the base and the end this assumes each metric moves linearly in KL between them; the page says so.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from rlhf_interp.core.io import read_jsonl
from rlhf_interp.measure.behaviour import collapse_onset
from rlhf_interp.measure.kl_study import PENALTIES, RUN_KEYS, Study, parse_run_name, read_base, run_done
from rlhf_interp.measure.matched_runs import common_level, matched, seed_spread

KEEP_T = math.log(10)  # a reference sample is kept when the policy's log-likelihood of it fell by less than log 10
PROMPT_METRICS = ("x_rate", "reward", "kept_10x", "lost_10x", "lost_100x")
COMPARED = ("x_rate", "reward", "lost_10x", "lost_100x")
SHARES = ("x_rate", "kept_10x", "lost_10x", "lost_100x")  # their t intervals are clipped to [0, 1]  # kept_10x = 1 - lost_10x: compared once, below
EVAL_METRICS = ["reward", "x_rate", "kl_pi_ref_per_token", "kl_ref_pi_per_token", "kl_pi_ref_seq",
                "kl_ref_pi_seq_policy_states", "kl_ref_pi_seq_k1", "kl_ref_pi_seq_exact", "entropy", "distinct_1",
                "distinct_2", "distinct_3", "lost_10x", "lost_100x", "lost_1000x", "delta_median", "greedy_delta",
                "greedy_logprob_policy"]
# The comparisons the study is for: each penalty against KL(pi||ref) and against no penalty.
VERSUS = ("pi_ref", "none")


def read_log(path: Path) -> pd.DataFrame:
    """A JSONL log as a DataFrame; logs of the first study are mapped to the new KL names (kl_forward_* ->
    kl_pi_ref_*)."""
    from rlhf_interp.core.kl import upgrade_kl_record

    return pd.DataFrame([upgrade_kl_record(r) for _, r in read_jsonl(path)]) if Path(path).exists() else pd.DataFrame()


def finished_runs(study: Study, study_dir: Path) -> list[str]:
    """The study's runs whose final evaluation exists; the others are named on stderr."""
    out = []
    for name in study.run_names():
        if run_done(study, Path(study_dir) / "runs" / name):
            out.append(name)
        else:
            print(f"note: {name} is not finished; left out of the tables", file=sys.stderr)
    return out


def prompt_values(eval_dir: Path, reward_scale: float = -1.0) -> pd.DataFrame:
    """One row per evaluation prompt of one evaluation: X's rate and the task's reward over the policy's samples,
    and the share of the prompt's reference samples kept within 10x likelihood / made 10x and 100x less likely."""
    samples = read_log(Path(eval_dir) / "samples.jsonl")
    cov = pd.read_csv(Path(eval_dir) / "coverage.csv")
    cov = cov[cov["kind"] == "sample"]
    prompts = list(dict.fromkeys(samples["prompt"]))
    s = samples.assign(x=samples["x_count"] > 0, reward=reward_scale * samples["x_count"])
    x = s.groupby("prompt", sort=False).agg(x_rate=("x", "mean"), reward=("reward", "mean"), n_samples=("x", "size"))
    c = cov.assign(kept_10x=cov["delta"] >= -KEEP_T, lost_10x=cov["delta"] < -KEEP_T,
                   lost_100x=cov["delta"] < -math.log(100)).groupby("prompt_idx").agg(
        kept_10x=("kept_10x", "mean"), lost_10x=("lost_10x", "mean"), lost_100x=("lost_100x", "mean"),
        n_reference=("kept_10x", "size"))
    x = x.loc[prompts].reset_index(drop=True)
    return pd.concat([x, c.loc[range(len(prompts))].reset_index(drop=True)], axis=1).rename_axis(
        "prompt_idx").reset_index()


def per_prompt_table(study: Study, study_dir: Path, matched_runs: pd.DataFrame | None = None,
                     done: list[str] | None = None) -> pd.DataFrame:
    """One row per (at, penalty, seed, prompt): ``at`` = "end" (final evaluation) or "equal_kl" (read at the common
    KL(pi||ref), see the module docstring), and the base model (penalty "base", seed -1, at both)."""
    study_dir = Path(study_dir)
    base = prompt_values(study_dir / "base" / "evals" / "0000")
    rows = [base.assign(at=at, penalty="base", seed=-1, updates=0.0) for at in ("end", "equal_kl")]
    for name in finished_runs(study, study_dir) if done is None else done:
        task, penalty, seed = parse_run_name(name)
        run_dir = study_dir / "runs" / name
        end = prompt_values(run_dir / "evals" / f"{study.phases:04d}")
        rows.append(end.assign(at="end", penalty=penalty, seed=seed, updates=float(study.phases)))
        if matched_runs is None or matched_runs.empty:
            continue
        m = matched_runs[(matched_runs["penalty"] == penalty) & (matched_runs["seed"] == seed)
                         & (matched_runs["match_on"] == "kl_pi_ref_per_token")]
        if m.empty or not m["reached"].iloc[0]:
            continue
        position = float(m["updates"].iloc[0])
        evals = sorted(int(p.parent.name) for p in (run_dir / "evals").glob("*/summary.json"))
        points = [0, *evals]
        hi = next(u for u in points if u >= position)
        lo = max(u for u in points if u <= position)
        at_lo = base if lo == 0 else prompt_values(run_dir / "evals" / f"{lo:04d}")
        at_hi = base if hi == 0 else prompt_values(run_dir / "evals" / f"{hi:04d}")
        w = 0.0 if hi == lo else (position - lo) / (hi - lo)
        mix = at_lo.copy()
        for col in PROMPT_METRICS:
            mix[col] = at_lo[col] + w * (at_hi[col] - at_lo[col])
        rows.append(mix.assign(at="equal_kl", penalty=penalty, seed=seed, updates=position))
    cols = ["at", "penalty", "seed", "prompt_idx", *PROMPT_METRICS, "n_samples", "n_reference", "updates"]
    return pd.concat(rows, ignore_index=True)[cols]


def _guarded(values: pd.Series, seeds: pd.Series, prompts: pd.Series):
    """t over seed means; with several seeds also the t interval over prompts of the seed-averaged values, and the
    wider of the two: a t interval from a few seed means can be near zero width by chance (two close means; three
    seeds that each lose the same few reference samples give exactly zero width)."""
    from rlhf_interp.core.stats import Interval, mean_interval, seeds_interval

    iv = seeds_interval(values, seeds)
    k = seeds.nunique()
    if k < 2:
        return iv
    over = mean_interval(values.groupby(prompts.to_numpy()).mean())
    if over.low >= iv.low and over.high <= iv.high:
        return iv
    return Interval(iv.value, min(iv.low, over.low), max(iv.high, over.high), iv.level,
                    f"wider of t over {k} seed means and t over prompts", iv.n,
                    f"{k} seeds: the wider of the seed and the prompt interval")


def levels_and_comparisons(prompts: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``levels``: each penalty's value of every metric at the end and at equal KL, with a 95% interval (t over the
    seeds' means of per-prompt values; one seed: over prompts, noted; the base model: over prompts; shares clipped
    to [0, 1]);
    ``comparisons``: A - B for every penalty against pi_ref and against none, paired by seed and prompt, its interval
    and verdict (`core.stats.verdict`: decided, or the largest difference not ruled out)."""
    from rlhf_interp.core.stats import mean_interval, verdict

    levels, comps = [], []
    for (at, penalty), g in prompts.groupby(["at", "penalty"], sort=False):
        for metric in PROMPT_METRICS:
            iv = mean_interval(g[metric]) if penalty == "base" else _guarded(g[metric], g["seed"], g["prompt_idx"])
            low, high = (max(iv.low, 0.0), min(iv.high, 1.0)) if metric in SHARES else (iv.low, iv.high)
            levels.append({"at": at, "penalty": penalty, "metric": metric, "value": iv.value, "low": low,
                           "high": high, "seeds": 0 if penalty == "base" else g["seed"].nunique(),
                           "prompts": g["prompt_idx"].nunique(),
                           "per_prompt": int(g["n_samples" if metric in ("x_rate", "reward") else "n_reference"].min()),
                           "method": "t over prompts" if penalty == "base" else iv.method, "note": iv.note,
                           "updates": float(g["updates"].mean())})
    wanted = [(at, metric, a, b) for at in ("end", "equal_kl") for b in VERSUS for a in PENALTIES
              if a != b and not (b == "none" and a == "pi_ref") for metric in COMPARED]  # none - pi_ref once
    wanted += [(at, "kept_10x", "ref_pi_seq", "ref_pi_reward") for at in ("end", "equal_kl")]  # issue 29
    for at, metric, a, b in wanted:
        here = prompts[prompts["at"] == at]
        pairs = here[here["penalty"] == a].merge(here.loc[here["penalty"] == b, ["seed", "prompt_idx", metric]],
                                                 on=["seed", "prompt_idx"], suffixes=("", "_b"))
        if pairs.empty:
            continue
        iv = _guarded(pairs[metric] - pairs[f"{metric}_b"], pairs["seed"], pairs["prompt_idx"])
        v = verdict(iv, a, b, fmt=".2g")
        comps.append({"at": at, "metric": metric, "a": a, "b": b, "a_value": float(pairs[metric].mean()),
                      "b_value": float(pairs[f"{metric}_b"].mean()), "difference": iv.value, "low": iv.low,
                      "high": iv.high, "seeds": pairs["seed"].nunique(), "prompts": pairs["prompt_idx"].nunique(),
                      "per_prompt": int(pairs["n_samples" if metric in ("x_rate", "reward") else "n_reference"].min()),
                      "method": iv.method, "note": iv.note, "decided": v.decided, "verdict": v.text})
    columns = ["at", "metric", "a", "b", "a_value", "b_value", "difference", "low", "high", "seeds", "prompts",
               "per_prompt", "method", "note", "decided", "verdict"]
    return pd.DataFrame(levels), pd.DataFrame(comps, columns=columns)


def matched_tables(evals: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Every run read at a common exact KL(pi||ref) per token, and at a common reward (per task), from its
    evaluations (first crossing, linear interpolation). Levels: 0.8 x the smallest peak over the task's runs."""
    per_run, summary = [], []
    for task, g in evals.groupby("task", sort=False):
        base_reward = float(g.loc[g["updates"] == 0, "reward"].mean())
        for match_on, start in (("kl_pi_ref_per_token", 0.0), ("reward", base_reward)):
            level = common_level(g, RUN_KEYS, match_on, start=start)
            if math.isnan(level):
                continue
            table = matched(g, RUN_KEYS, match_on, level, EVAL_METRICS + ["updates"], order="updates")
            per_run.append(table)
            summary.append(seed_spread(table, ["task", "penalty", "match_on", "level"], EVAL_METRICS + ["updates"]))
    return {"matched": pd.concat(per_run, ignore_index=True) if per_run else pd.DataFrame(),
            "matched_summary": pd.concat(summary, ignore_index=True) if summary else pd.DataFrame()}


def end_table(evals: pd.DataFrame, phases: int) -> pd.DataFrame:
    """Mean / min / max over seeds of the final evaluation of each task x penalty (matched by coefficient)."""
    return seed_spread(evals[evals["updates"] == phases], ["task", "penalty"], EVAL_METRICS)


def collapse_table(trajectory: pd.DataFrame, base_distinct_2: float) -> pd.DataFrame:
    """Mode-collapse onset per run: the first phase whose rollout distinct-2 (token ids, one batch) is below half
    the base model's (measured on base continuations pooled in batch-sized chunks); smoothed over 3 phases."""
    rows = []
    for key, g in trajectory.groupby(RUN_KEYS, sort=True):
        g = g.sort_values("phase")
        smooth = g["distinct_2"].rolling(3, min_periods=1).mean()
        onset = collapse_onset(g["phase"].tolist(), smooth.tolist(), base_distinct_2)
        rows.append({**dict(zip(RUN_KEYS, key)), "base_distinct_2": base_distinct_2,
                     "final_distinct_2": float(smooth.iloc[-1]), "collapse_phase": onset if onset is not None else np.nan})
    return pd.DataFrame(rows)


def side_by_side(final_samples: pd.DataFrame, base_samples: pd.DataFrame, n_prompts: int = 4) -> pd.DataFrame:
    """For the first ``n_prompts`` eval prompts: the base model's and each penalty's first sample (lowest seed)."""
    prompts = list(dict.fromkeys(base_samples["prompt"]))[:n_prompts]
    rows = []
    first_seed = final_samples[final_samples["seed"] == final_samples["seed"].min()] if len(final_samples) else final_samples
    for prompt in prompts:
        b = base_samples[base_samples["prompt"] == prompt].iloc[0]
        rows.append({"task": "(base)", "penalty": "(base model)", "prompt": prompt, "completion": b["completion"]})
        for (task, penalty), g in first_seed[first_seed["prompt"] == prompt].groupby(["task", "penalty"], sort=False):
            rows.append({"task": task, "penalty": penalty, "prompt": prompt, "completion": g.iloc[0]["completion"]})
    out = pd.DataFrame(rows)
    out["completion"] = out["completion"].str.replace("\n", " ⏎ ", regex=False)
    return out


def collect_tables(study: Study, study_dir: Path) -> dict[str, pd.DataFrame]:
    """Tidy tables of every finished run (unfinished runs are skipped with a note). With no finished run the
    tables hold the base model alone (``evals``, ``per_prompt``, ``levels``) and the trajectories of the
    unfinished runs so far, so the page can say what exists."""
    study_dir = Path(study_dir)
    base = read_base(study_dir)
    base_eval = json.loads((study_dir / "base" / "evals" / "0000" / "summary.json").read_text())
    base_samples = read_log(study_dir / "base" / "evals" / "0000" / "samples.jsonl")
    done = finished_runs(study, study_dir)
    trajectories, evals, coverage, samples = [], [], [], []
    for name in study.run_names():
        run_dir = study_dir / "runs" / name
        if not (run_dir / "metrics.jsonl").exists() or not (run_dir / "probes.jsonl").exists():
            continue
        task, penalty, seed = parse_run_name(name)
        keys = {"task": task, "penalty": penalty, "seed": seed, "finished": name in done}
        scale = float(yaml.safe_load((run_dir / "config.yaml").read_text())["reward_scale"])  # as optimised
        traj = read_log(run_dir / "metrics.jsonl")[["phase", "reward_mean", "kl_pi_ref_per_token", "kl_ref_pi_per_token",
                                                   "entropy", "kl_coef", "seconds"]].merge(
            read_log(run_dir / "probes.jsonl"), on="phase", how="inner")
        traj["reward"] = traj.pop("reward_mean") * scale
        trajectories.append(traj.assign(**keys))
        if name not in done:
            continue
        rows = [{**base_eval, "updates": 0}] + [json.loads(p.read_text())
                                                for p in sorted((run_dir / "evals").glob("*/summary.json"))]
        ev = pd.DataFrame(rows)
        ev["reward"] = ev[f"reward_{task}"]
        evals.append(ev.assign(**keys))
        final = run_dir / "evals" / f"{study.phases:04d}"
        coverage.append(pd.read_csv(final / "coverage.csv").assign(**keys))
        samples.append(read_log(final / "samples.jsonl").assign(**keys))
    base_row = pd.DataFrame([{**base_eval, "updates": 0, "reward": base_eval.get(f"reward_{study.tasks[0]}"),
                              "task": study.tasks[0], "penalty": "base", "seed": -1, "finished": True}])
    evals_df = pd.concat(evals, ignore_index=True) if evals else base_row
    tables = {"trajectory": pd.concat(trajectories, ignore_index=True) if trajectories else pd.DataFrame(),
              "evals": evals_df, "coverage_final": pd.concat(coverage, ignore_index=True) if coverage else pd.DataFrame(),
              "base_rates": pd.read_csv(study_dir / "base" / "base_rates.csv")}
    tables.update(matched_tables(evals_df) if evals else {"matched": pd.DataFrame(), "matched_summary": pd.DataFrame()})
    tables["end"] = end_table(evals_df, study.phases) if evals else pd.DataFrame()
    tables["collapse"] = (collapse_table(tables["trajectory"], base["diversity_at_batch_size"]["distinct_2"])
                          if trajectories else pd.DataFrame())
    tables["samples"] = side_by_side(pd.concat(samples, ignore_index=True) if samples else
                                     pd.DataFrame(columns=["prompt", "seed", "task", "penalty", "completion"]),
                                     base_samples)
    prompts = per_prompt_table(study, study_dir, tables["matched"], done)
    tables["per_prompt"] = prompts
    tables["levels"], tables["comparisons"] = levels_and_comparisons(prompts)
    return tables
