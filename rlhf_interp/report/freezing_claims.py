"""The freezing study's claims (issue 31): "which number of frozen layers buys the most reward per nat", decided
or bounded against the study's target, one estimate per N, and what the study cost.

Why apart from `rlhf_interp.frontier.freezing`: claims are the report layer's (the frontier layer sits below it);
the tables they read are that module's ``per_run`` / ``per_n`` (one row per run, one per N). The unit of every
interval is the run (seed): a t interval over seeds, Ns compared seed by seed.
"""

from __future__ import annotations

import math

import pandas as pd

from rlhf_interp.core import stats
from rlhf_interp.report.claims import Claim


def _n_of(per_run: pd.DataFrame, seeds: int) -> dict[str, int]:
    """What a comparison over ``seeds`` seeds rests on: the seeds and the prompts x samples of each measurement."""
    return {"seeds": int(seeds), "prompts": int(per_run["n_prompts"].min()),
            "samples_per_prompt": int(per_run["samples_per_prompt"].min())}


def best_n_claim(per_run: pd.DataFrame, target: float, column: str = "reward_per_nat", unit: str = "periods"
                 ) -> tuple[Claim, dict]:
    """"Which N buys the most per nat": the N with the highest mean over seeds against the runner-up, paired by
    seed. The two are picked on the runs the difference is measured on (three seeds leave none to hold out), and the
    claim says so: a winner picked on its own data is flattered. Decided when the interval excludes 0; otherwise
    bounded by the largest difference not ruled out, which meets the target when it is within ``target``. A claim not measured when fewer than two Ns share two seeds.
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
        "{unit} per nat {ci} (paired by seed, {n}); {verdict}; target ±{target}: {goal}. Both Ns were picked as the "
        "two highest means on these same runs (no held-out seeds), so the difference leans optimistic",
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


__all__ = ["best_n_claim", "cpu_claim", "per_n_claims"]
