"""Claims and end-of-run tables of the PPO training-curves page (`analyses/ppo_training.py`, ``reports/ppo_periods``).

Why here: the page's numbers are stated with n and a 95% interval, and with several seeds the unit is the seed
(`rlhf_interp.measure.seed_groups`): each run's end (the mean of its last `END_WINDOW` phases) is one value, and a
claim about the group is Student's t over those values, start-to-end changes paired by seed. A group of one seed
(a run kept from older CSVs) is one draw: its intervals are over phases and say that seed variation is left out.
Input: the page's tidy tables (``metrics``: one row per run and phase with ``group``, ``seed``, ``run``;
``runs``: one row per run with its settings; ``diversity``: distinct-n per run and logged phase).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import numpy as np
import pandas as pd

from rlhf_interp.core import stats
from rlhf_interp.measure.seed_groups import over_seeds, seed_ends
from rlhf_interp.report.claims import Claim

BATCH = 16  # samples per phase (configs/periods.yaml batch_size; every run here)
END_WINDOW = 10  # phases averaged for the "end" of a run (batch noise: 16 samples per phase)
QUANTITIES = ("reward", "kl", "entropy", "distinct_2")


def short(name: str) -> str:
    """A group or run label without its settings in parentheses."""
    return str(name).split(" (")[0]


def is_free(group: str) -> bool:
    """A group trained without a KL penalty (its label says ``KL coef 0,``)."""
    return "coef 0," in str(group)


def kl_column(metrics: pd.DataFrame) -> str:
    """The exact KL(π‖ref) per token column (named by argument order; older CSVs: kl_forward_per_token)."""
    return "kl_pi_ref_per_token" if "kl_pi_ref_per_token" in metrics else "kl_forward_per_token"


def run_ends(metrics: pd.DataFrame, diversity: pd.DataFrame, window: int = END_WINDOW) -> pd.DataFrame:
    """One row per run: group, seed, phases, ``<q>_start`` (phase 1) and ``<q>_end`` (mean of the last ``window``
    phases) for reward, KL per token, entropy and the KL coefficient; distinct-2 at the first logged phase and
    over the logged phases inside the end window (the last logged phase when none is); the best phase's reward and
    seconds per phase."""
    kl = kl_column(metrics)
    frame = metrics.rename(columns={"reward_mean": "reward", kl: "kl"})
    ends = seed_ends(frame, ["reward", "kl", "entropy", "kl_coef"], window, seed="run")
    rows = []
    for _, e in ends.iterrows():
        m = frame[frame["run"] == e["run"]]
        d = diversity[diversity["run"] == e["run"]].sort_values("phase")
        inside = d[d["phase"] >= e["end_from"]]
        inside = inside if len(inside) else d.tail(1)
        rows.append({"seed": m["seed"].iloc[0], "phases": int(m["phase"].max()),
                     "end_phases": f"{int(e['end_from'])}-{int(e['end_to'])}", "reward_max": m["reward"].max(),
                     "distinct_2_start": d["distinct_2"].iloc[0] if len(d) else math.nan,
                     "distinct_2_end": inside["distinct_2"].mean() if len(d) else math.nan,
                     "distinct_2_end_phases": ", ".join(map(str, inside["phase"])),
                     "seconds_per_phase_median": m["seconds"].median()})
    out = pd.concat([ends[["group", "run"]], pd.DataFrame(rows),
                     ends[[c for c in ends if c.endswith(("_start", "_end"))]]], axis=1)
    return out


def group_summary(ends: pd.DataFrame) -> pd.DataFrame:
    """One row per group and quantity (reward, KL per token, entropy, distinct-2): seeds, phases, the end window,
    the mean over seeds of the start and of the end, and the end's 95% t interval over seeds (``end_low``,
    ``end_high``; NaN for one seed)."""
    rows = []
    for group, g in ends.groupby("group", sort=False):
        for q in QUANTITIES:
            iv = over_seeds(g[f"{q}_end"]) if len(g) > 1 else None
            rows.append({"group": group, "seeds": len(g), "phases": int(g["phases"].max()),
                         "end_phases": ", ".join(dict.fromkeys(g["end_phases"])), "quantity": q,
                         "start": g[f"{q}_start"].mean(), "end": g[f"{q}_end"].mean(),
                         "end_low": iv.low if iv else math.nan, "end_high": iv.high if iv else math.nan})
    return pd.DataFrame(rows)


def _adaptive(value) -> bool:
    return str(value) == "True"  # a bool from the runs, the string "True" from runs.csv, NaN for a kept run


def conditions_text(runs: pd.DataFrame, metrics: pd.DataFrame) -> str:
    """What each group was run with (seeds, phases, KL target): groups not run under one protocol are not
    compared by a test, and the page says so."""
    parts = []
    for group, r in runs.groupby("group", sort=False):
        phases = int(metrics[metrics["group"] == group]["phase"].max())
        target = r["kl_target"].iloc[0] if "kl_target" in r and _adaptive(r["adaptive_kl"].iloc[0]) else None
        what = f"{len(r)} seeds" if len(r) > 1 else "one seed"
        parts.append(f"`{short(group)}`: {what}, {phases} phases" + (f", KL target {float(target):g}" if target
                                                                      else ""))
    return "; ".join(parts)


def _distinct2_draws(ids: list[list[int]], n_boot: int = 2000, seed: int = 0):
    """distinct-2 of token-id sequences and its bootstrap draws over the sequences (completions)."""
    from rlhf_interp.measure import distinct_n

    rng = np.random.default_rng(seed)
    draws = np.array([distinct_n([ids[i] for i in rng.integers(0, len(ids), len(ids))], 2) for _ in range(n_boot)])
    return distinct_n(ids, 2), draws


def _paired(end: pd.Series, start: pd.Series, n: dict) -> stats.Interval:
    """End minus start paired by seed: t over the seeds' differences."""
    return replace(stats.paired_difference(end, start, n=n), method="paired t over seeds")


def _seed_claims(g: pd.DataFrame, runs: pd.DataFrame) -> list[Claim]:
    """The headline of a group of several seeds: start, end, gain, KL, entropy and distinct-2, t over seeds."""
    k, span = len(g), ", ".join(dict.fromkeys(g["end_phases"]))
    n = {"seeds": k, "phases": END_WINDOW, "samples_per_phase": BATCH}
    setting = runs[runs["group"] == g["group"].iloc[0]].iloc[0]
    target = float(setting["kl_target"]) if _adaptive(setting.get("adaptive_kl")) else math.nan
    name = {"group": short(g["group"].iloc[0]), "k": k, "span": span, "p0": 1}
    gain = _paired(g["reward_end"], g["reward_start"], n)
    out = [Claim.compare(
        "reward_gain", "PPO on the period task (`{group}`, {k} seeds) raises the mean reward by {value} {ci} periods "
        "per sample from phase {p0} to phases {span} (paired by seed, t over seeds); {verdict}.", gain, "end", "start",
        params=name)]
    out.append(Claim.estimate("reward_start", "It starts at {value} {ci} periods per sample",
                              over_seeds(g["reward_start"], n={"seeds": k, "samples_per_phase": BATCH})))
    out.append(Claim.estimate("reward_end", "and ends at {value} {ci} (each seed's mean of phases {span})",
                              over_seeds(g["reward_end"], n=n), params=name))
    kl = over_seeds(g["kl_end"], n=n)
    where = "below" if kl.high < target else "reaching" if kl.low <= target <= kl.high else "above"
    out.append(Claim.estimate(
        "kl_end", "at exact KL(π‖ref) {value} {ci} nats/token, {where} the controller's target of {target} (its "
        "coefficient fell from {c0} at phase {p0} to {c1} on average over the end phases).", kl, fmt=".3f",
        params={"where": where, "target": f"{target:g}", "c0": f"{g['kl_coef_start'].mean():.2f}",
                "c1": f"{g['kl_coef_end'].mean():.2f}", "p0": 1}))
    for q, label, unit in (("entropy", "Policy entropy", " nats/token"), ("distinct_2", "`distinct-2` of the "
                                                                         "logged samples (token ids)", "")):
        diff = _paired(g[f"{q}_end"], g[f"{q}_start"], n)
        out.append(Claim.compare(
            f"{q}_change", label + ": {start} at phase {p0}, {end} at the end, a change of {value} {ci}" + unit
            + " (paired by seed); {verdict}.", diff, "end", "start",
            params={"start": f"{g[f'{q}_start'].mean():.2f}", "end": f"{g[f'{q}_end'].mean():.2f}", "p0": 1}))
    out.append(Claim.estimate(
        "seed_sd", "From seed to seed, the end reward varies with a standard deviation of {value} {ci} periods.",
        stats.sd_interval(g["reward_end"], n=n), headline=False))
    return out


def _phase_claims(metrics: pd.DataFrame, run: str, prefix: str, headline: bool) -> list[Claim]:
    """A group of one seed: its end reward and KL, t over its last phases (phase means as units; no seed spread)."""
    m = metrics[metrics["run"] == run].sort_values("phase")
    last = m.tail(END_WINDOW)
    n = {"seeds": 1, "phases": len(last), "samples_per_phase": BATCH}
    note = "one training seed: the interval is over phases, seed-to-seed variation is not included"
    span = f"{int(last['phase'].min())}-{int(last['phase'].max())}"
    zero = {"zero": 0} if is_free(run) else {}
    lead = ("With KL coefficient {zero} (`{run}`, one seed of {phases} phases from an older run, so set beside the "
            "group untested): " if zero else
            "`{run}` (one seed of {phases} phases): ")
    fmt = ".1f" if zero else ".2f"
    return [Claim.estimate(f"{prefix}_reward", lead + "{value} {ci} periods per sample (phases {span}; interval over "
                           "phases)", stats.mean_interval(last["reward_mean"]), fmt=fmt, n=n, note=note,
                           params={"run": short(run), "phases": int(m["phase"].max()), "span": span, **zero},
                           headline=headline),
            Claim.estimate(f"{prefix}_kl", "at KL {value} {ci} nats/token.", stats.mean_interval(last[kl_column(m)]),
                           fmt=".3f" if not zero else ".2f", n=n, note=note, headline=headline)]


def ppo_claims(metrics: pd.DataFrame, samples: pd.DataFrame, runs: pd.DataFrame, diversity: pd.DataFrame,
               tokenize: Callable[[str], list[int]] | None = None) -> list[Claim]:
    """The page's claims: the penalised group with the most seeds (over seeds), other penalised groups of one seed
    (over phases, not in the headline), and the unpenalised group: its end and its collapse (distinct-2 with a
    bootstrap interval over the logged completions of its first and last logged phase; ``tokenize``: text -> token
    ids, the tokenizer the diversity table used, needed only when there is an unpenalised group)."""
    ends = run_ends(metrics, diversity)
    seeds = ends.groupby("group", sort=False)["run"].nunique()
    penalised = [g for g in seeds.index if not is_free(g)]
    main = max(penalised, key=lambda g: seeds[g]) if penalised else None
    out: list[Claim] = []
    if main is not None and seeds[main] > 1:
        out += _seed_claims(ends[ends["group"] == main], runs)
    elif main is not None:
        out += _phase_claims(metrics, ends[ends["group"] == main]["run"].iloc[0], "main", True)
    for i, group in enumerate(g for g in penalised if g != main):
        for run in ends[ends["group"] == group]["run"]:
            out += _phase_claims(metrics, run, f"other{i}", False)
    for i, group in enumerate(g for g in seeds.index if is_free(g)):
        run = ends[ends["group"] == group]["run"].iloc[0]
        prefix = "kl0" if i == 0 else f"kl0_{i}"
        out += _phase_claims(metrics, run, prefix, True)
        s = samples[samples["run"] == run]
        p0, p1 = int(s["phase"].min()), int(s["phase"].max())
        t0 = s[s["phase"] == p0]["completion"].fillna("").tolist()
        t1 = s[s["phase"] == p1]["completion"].fillna("").tolist()
        if tokenize is None:
            raise ValueError("ppo_claims: an unpenalised group's collapse needs tokenize (text -> token ids)")
        d0, draws0 = _distinct2_draws([tokenize(t) for t in t0], seed=0)
        d1, draws1 = _distinct2_draws([tokenize(t) for t in t1], seed=1)
        lo, hi = np.quantile(draws1 - draws0, [0.025, 0.975])
        diff = stats.Interval(d1 - d0, float(lo), float(hi), method="percentile bootstrap over completions",
                              n={"samples_per_phase": min(len(t0), len(t1)), "seeds": 1})
        out.append(Claim.compare(
            f"{prefix}_collapse", "Its samples collapse: `distinct-2` over token ids goes from {d0} at phase {p0} to "
            "{d1} at phase {p1}, a change of {value} {ci} (bootstrap over the {k} logged completions of each phase); "
            "{verdict}.", diff, f"phase {p1}", f"phase {p0}",
            params={"d0": f"{d0:.2f}", "d1": f"{d1:.2f}", "p0": p0, "p1": p1, "k": min(len(t0), len(t1))}))
    return out


__all__ = ["BATCH", "END_WINDOW", "conditions_text", "group_summary", "is_free", "kl_column", "ppo_claims",
           "run_ends", "short"]
