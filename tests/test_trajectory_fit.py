"""Reward at a matched KL from training trajectories: the OLS fit and its intervals against scipy's."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from rlhf_interp.measure.trajectory_fit import per_run_fits, run_difference, run_interval


def _trajectory(method: str, seed: int, slope: float, noise: float, kl_end: float, phases: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    kl = np.linspace(0.05, kl_end, phases)
    return pd.DataFrame({"algorithm": method, "seed": seed, "phase": np.arange(1, phases + 1),
                         "kl_pi_ref_per_sequence": kl, "reward": 1 + slope * kl + noise * rng.standard_normal(phases),
                         "kl_pi_ref_per_token": kl / 24, "kl_ref_pi_per_token": kl / 20, "entropy": 2.0,
                         "seconds": 10.0})


def _runs(phases: pd.DataFrame) -> pd.DataFrame:
    return phases[["algorithm", "seed"]].drop_duplicates().assign(cpu_seconds=60.0)


def test_fit_matches_scipy_and_reads_at_the_smallest_end_kl():
    phases = pd.concat([_trajectory("a", 0, 2.0, 0.1, 1.0), _trajectory("b", 1, 1.0, 0.1, 0.6)])
    fits, matched = per_run_fits(phases, _runs(phases), late=3)
    ends = phases.groupby("algorithm").apply(lambda g: g.nlargest(3, "phase").kl_pi_ref_per_sequence.mean())
    assert matched == ends.min()
    for method, g in phases.groupby("algorithm"):
        ref = sps.linregress(g.kl_pi_ref_per_sequence, g.reward)
        row = fits.set_index("algorithm").loc[method]
        assert np.isclose(row.reward_per_nat, ref.slope) and np.isclose(row.reward_per_nat_se, ref.stderr)
        assert np.isclose(row.reward_at_matched_kl, ref.intercept + ref.slope * matched)


def test_one_seed_interval_is_the_fits_t_interval_and_says_so():
    phases = _trajectory("a", 0, 2.0, 0.2, 1.0)
    fits, _ = per_run_fits(phases, _runs(phases))
    iv = run_interval(fits, "reward_per_nat")
    ref = sps.linregress(phases.kl_pi_ref_per_sequence, phases.reward)
    half = sps.t.ppf(0.975, len(phases) - 2) * ref.stderr
    assert np.isclose(iv.low, ref.slope - half) and np.isclose(iv.high, ref.slope + half)
    assert iv.n == {"seeds": 1, "phases": 6} and "seed-to-seed" in iv.note


def test_several_seeds_use_seed_values_and_welch_for_differences():
    a = pd.concat([_trajectory("a", s, 2.0, 0.3, 1.0) for s in range(3)])
    b = pd.concat([_trajectory("b", s, 0.5, 0.3, 1.0) for s in range(3, 6)])
    fits, _ = per_run_fits(pd.concat([a, b]), _runs(pd.concat([a, b])))
    fa, fb = fits[fits.algorithm == "a"], fits[fits.algorithm == "b"]
    iv = run_interval(fa, "reward_per_nat")
    t = sps.t.interval(0.95, 2, loc=fa.reward_per_nat.mean(), scale=sps.sem(fa.reward_per_nat))
    assert np.allclose([iv.low, iv.high], t) and iv.n == {"seeds": 3}
    diff = run_difference(fa, fb, "reward_per_nat")
    welch = sps.ttest_ind(fa.reward_per_nat, fb.reward_per_nat, equal_var=False).confidence_interval(0.95)
    assert np.allclose([diff.low, diff.high], [welch.low, welch.high])
