"""Reward at a matched KL from training trajectories: one line per run, intervals over seeds.

Why: training methods reach different KLs in the same number of phases, so comparing their end rewards compares
different budgets. Each run's reward is regressed on its sequence KL(pi||ref) over its phases and read at one
matched KL -- the smallest end-of-run KL of any run, so no run is extrapolated. With several seeds per method the
interval is over seeds (the runs are the units); with one seed the fit's own t interval over its phases is
returned and says that seed-to-seed variation is left out.

Input: ``phases`` has one row per (method, seed, phase) with ``reward``, ``kl_pi_ref_per_sequence``,
``kl_pi_ref_per_token``, ``kl_ref_pi_per_token``, ``entropy``, ``seconds``; ``runs`` one row per (method, seed)
with ``cpu_seconds``. The method column is named by ``by``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from rlhf_interp.core import stats


def per_run_fits(phases: pd.DataFrame, runs: pd.DataFrame, *, by: str = "algorithm",
                 late: int = 3) -> tuple[pd.DataFrame, float]:
    """One row per run: reward per nat (OLS slope) and the fitted reward at the matched KL, with their standard
    errors; start / end (mean of the last ``late`` phases) reward, KL and entropy; seconds per nat of KL."""
    keys = [by, "seed"]
    ends = phases.groupby(keys).apply(lambda g: g.nlargest(late, "phase").kl_pi_ref_per_sequence.mean())
    matched = float(ends.min())
    out = []
    for (method, seed), g in phases.groupby(keys, sort=False):
        x, y = g.kl_pi_ref_per_sequence.to_numpy(float), g.reward.to_numpy(float)
        slope, intercept = np.polyfit(x, y, 1)
        resid = y - (intercept + slope * x)
        s2 = float((resid ** 2).sum() / max(1, len(x) - 2))
        sxx = max(float(((x - x.mean()) ** 2).sum()), 1e-12)
        last, first = g.nlargest(late, "phase"), g.nsmallest(1, "phase").iloc[0]
        cpu = runs[(runs[by] == method) & (runs.seed == seed)].cpu_seconds.sum()
        end_kl = last.kl_pi_ref_per_sequence.mean()
        out.append({by: method, "seed": seed, "phases": len(g), "reward_per_nat": slope,
                    "reward_per_nat_se": np.sqrt(s2 / sxx),
                    "reward_at_matched_kl": intercept + slope * matched,
                    "reward_at_matched_kl_se": np.sqrt(s2 * (1 / len(x) + (matched - x.mean()) ** 2 / sxx)),
                    "reward_start": first.reward, "reward_end": last.reward.mean(),
                    "kl_pi_ref_per_sequence_end": end_kl, "kl_pi_ref_per_token_end": last.kl_pi_ref_per_token.mean(),
                    "kl_ref_pi_per_token_end": last.kl_ref_pi_per_token.mean(),
                    "entropy_start": first.entropy, "entropy_end": last.entropy.mean(),
                    "train_seconds": g.seconds.sum(), "cpu_seconds": cpu,
                    "seconds_per_nat": g.seconds.sum() / max(end_kl, 1e-9)})
    return pd.DataFrame(out), matched


def _one_run_t(row: pd.Series, column: str) -> float:
    return float(sps.t.ppf(0.975, df=max(1, int(row.phases) - 2))) * float(row[f"{column}_se"])


def run_interval(fits: pd.DataFrame, column: str) -> stats.Interval:
    """``column``'s 95% interval for one method's runs: t over per-seed values with >= 2 seeds, else the single
    run's OLS t interval over its phases (labelled as leaving seed-to-seed variation out)."""
    if len(fits) >= 2:
        return stats.seeds_interval(fits[column], fits.seed, n={"seeds": len(fits)})
    row = fits.iloc[0]
    value, half = float(row[column]), _one_run_t(row, column)
    return stats.Interval(value, value - half, value + half, 0.95, "t over phases (OLS fit of one run)",
                          {"seeds": 1, "phases": int(row.phases)}, "one seed: seed-to-seed variation not included")


def run_difference(a: pd.DataFrame, b: pd.DataFrame, column: str) -> stats.Interval:
    """Method a minus method b in ``column``: Welch over seeds with >= 2 seeds each, else the two single fits'
    standard errors combined (labelled as leaving seed-to-seed variation out)."""
    if len(a) >= 2 and len(b) >= 2:
        return stats.welch_difference(a[column], b[column], n={"seeds": len(a) + len(b)})
    diff = float(a[column].mean() - b[column].mean())
    se = float(np.sqrt(a[f"{column}_se"].pow(2).mean() + b[f"{column}_se"].pow(2).mean()))
    phases = int(min(a.phases.min(), b.phases.min()))
    q = float(sps.t.ppf(0.975, df=max(1, phases - 2)))
    return stats.Interval(diff, diff - q * se, diff + q * se, 0.95, "t, OLS fits of one run each",
                          {"seeds": 1, "phases": phases}, "one seed each: seed-to-seed variation not included")
