"""rlhf_interp.core.stats against closed forms and against simulations with a known answer (seeded, fast)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from rlhf_interp.core import stats

N_SIM = 400  # coverage of a 95% interval over 400 datasets: s.e. 0.011, so [0.92, 0.98] is about +-2.7 s.e.


def coverage(make, truth, n_sim=N_SIM, seed=0):
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(n_sim):
        iv = make(rng, i)
        hits += iv.low <= truth <= iv.high
    return hits / n_sim


# ---- closed forms --------------------------------------------------------------------------------


def test_t_interval_matches_the_textbook_formula():
    x = np.array([1.0, 2.0, 4.0, 7.0, 11.0])
    iv = stats.mean_interval(x)
    se = x.std(ddof=1) / np.sqrt(5)
    q = sps.t.ppf(0.975, 4)
    assert iv.value == pytest.approx(5.0)
    assert (iv.low, iv.high) == pytest.approx((5 - q * se, 5 + q * se))
    assert iv.n == {"prompts": 5} and iv.method == "t"


def test_paired_difference_is_the_interval_of_the_differences_and_narrower_than_unpaired():
    rng = np.random.default_rng(1)
    prompt_effect = rng.normal(0, 2, 40)
    a = prompt_effect + 0.5 + rng.normal(0, 0.3, 40)
    b = prompt_effect + rng.normal(0, 0.3, 40)
    paired = stats.paired_difference(a, b)
    direct = stats.mean_interval(a - b)
    assert (paired.low, paired.high) == pytest.approx((direct.low, direct.high))
    unpaired = stats.welch_difference(a, b)
    assert paired.half_width < unpaired.half_width / 3
    assert stats.verdict(paired, "A", "B").text == "A > B, decided at 95%"
    assert not stats.verdict(unpaired, "A", "B").decided


def test_welch_matches_scipy():
    a, b = np.array([1.0, 2.5, 3.0, 4.2]), np.array([0.1, 0.3, 2.0])
    iv = stats.welch_difference(a, b)
    res = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((res.low, res.high))


def test_summary_forms_match_the_per_unit_ones():
    rng = np.random.default_rng(2)
    a, b = rng.normal(1, 1, 12), rng.normal(0, 2, 9)
    se = lambda x: x.std(ddof=1) / np.sqrt(len(x))  # noqa: E731
    one = stats.summary_interval(a.mean(), se(a), 12)
    ref = stats.mean_interval(a)
    assert (one.low, one.high) == pytest.approx((ref.low, ref.high))
    two = stats.summary_difference(a.mean(), se(a), 12, b.mean(), se(b), 9)
    ref = stats.welch_difference(a, b)
    assert (two.low, two.high) == pytest.approx((ref.low, ref.high))


def test_wilson_interval_closed_form():
    iv = stats.proportion_interval(3, 32)
    assert iv.value == pytest.approx(3 / 32)
    z = sps.norm.ppf(0.975)
    p, n = 3 / 32, 32
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (iv.low, iv.high) == pytest.approx((centre - half, centre + half))
    zero = stats.proportion_interval(0, 32)
    assert zero.low == 0 and 0.05 < zero.high < 0.15


def test_seeds_interval_is_a_t_interval_over_seed_means_and_one_seed_says_so():
    values = np.array([1.0, 2.0, 3.0, 10.0, 11.0, 12.0])
    seeds = np.array([0, 0, 0, 1, 1, 1])
    iv = stats.seeds_interval(values, seeds)
    assert iv.value == pytest.approx(6.5)
    q = sps.t.ppf(0.975, 1)
    assert (iv.low, iv.high) == pytest.approx((6.5 - q * 4.5, 6.5 + q * 4.5))
    assert iv.n == {"prompts": 3, "seeds": 2}
    one = stats.seeds_interval(values[:3], seeds[:3])
    assert "one seed" in one.note and one.n["seeds"] == 1


def test_verdicts():
    assert stats.verdict(stats.Interval(0.3, 0.1, 0.5), "A", "B").text == "A > B, decided at 95%"
    assert stats.verdict(stats.Interval(-0.3, -0.5, -0.1), "A", "B").text == "B > A, decided at 95%"
    v = stats.verdict(stats.Interval(0.1, -0.2, 0.4), "A", "B")
    assert not v.decided and v.bound == pytest.approx(0.4) and "A - B within ±0.4" in v.text
    assert not stats.verdict(stats.Interval(1.0, -np.inf, np.inf)).decided


def test_r_squared_and_the_fit_criterion():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert stats.r_squared(y, y) == 1.0
    assert stats.r_squared(y, np.full(4, 2.5)) == 0.0
    assert stats.fit_is_drawn(0.85) and not stats.fit_is_drawn(0.34) and not stats.fit_is_drawn(float("nan"))


# ---- simulations with a known answer --------------------------------------------------------------


def test_t_interval_covers_95_percent():
    cov = coverage(lambda rng, i: stats.mean_interval(rng.normal(3.0, 2.0, 16)), 3.0)
    assert 0.92 <= cov <= 0.98, cov


def test_bootstrap_interval_covers_95_percent():
    cov = coverage(lambda rng, i: stats.mean_interval(rng.exponential(1.0, 60), method="percentile", n_boot=999,
                                                      seed=i), 1.0, n_sim=300)
    assert 0.90 <= cov <= 0.98, cov  # percentile bootstrap of a skewed mean undercovers slightly at n=60


def test_paired_difference_covers_95_percent():
    def make(rng, i):
        prompt = rng.normal(0, 3, 24)
        return stats.paired_difference(prompt + 0.4 + rng.normal(0, 1, 24), prompt + rng.normal(0, 1, 24))

    cov = coverage(make, 0.4)
    assert 0.92 <= cov <= 0.98, cov


def test_seeds_interval_covers_95_percent_with_seed_variation():
    """Seed effects (sd 1) and prompt noise (sd 2): an interval over all prompts pooled ignores the seed
    effect and undercovers badly; the interval over seed means covers."""
    def data(rng):
        seeds = np.repeat(np.arange(4), 20)
        return 2.0 + rng.normal(0, 1, 4)[seeds] + rng.normal(0, 2, 80), seeds

    cov = coverage(lambda rng, i: stats.seeds_interval(*data(rng)), 2.0)
    assert 0.92 <= cov <= 0.98, cov
    pooled = coverage(lambda rng, i: stats.mean_interval(data(rng)[0]), 2.0)
    assert pooled < 0.8, pooled


def test_hierarchical_bootstrap_covers_with_enough_seeds():
    def make(rng, i):
        seeds = np.repeat(np.arange(12), 10)
        values = 1.0 + rng.normal(0, 0.5, 12)[seeds] + rng.normal(0, 1, 120)
        return stats.hierarchical_bootstrap(values, seeds, n_boot=300, seed=i)

    cov = coverage(make, 1.0, n_sim=200)
    assert 0.88 <= cov <= 0.98, cov  # a bootstrap of 12 groups undercovers a little


def test_proportion_difference_covers_95_percent():
    cov = coverage(lambda rng, i: stats.proportion_difference(int(rng.binomial(80, 0.1)), 80,
                                                              int(rng.binomial(256, 0.02)), 256), 0.08, n_sim=1000)
    assert 0.92 <= cov <= 0.98, cov


def test_sd_interval_covers_95_percent():
    cov = coverage(lambda rng, i: stats.sd_interval(rng.normal(0, 2.0, 10)), 2.0)
    assert 0.92 <= cov <= 0.98, cov


def test_wilson_covers_95_percent():
    cov = coverage(lambda rng, i: stats.proportion_interval(int(rng.binomial(32, 0.1)), 32), 0.1, n_sim=1000)
    assert 0.92 <= cov <= 0.99, cov


def test_held_out_selection_removes_the_winners_curse():
    """Ten candidates with the same true mean 1.0: the in-sample best is biased up, the held-out value is not."""
    rng = np.random.default_rng(3)
    in_sample, held_out, covered = [], [], 0
    for _ in range(100):
        df = pd.DataFrame({"prompt": np.tile(np.arange(32), 10), "candidate": np.repeat(np.arange(10), 32)})
        df["reward"] = 1.0 + rng.normal(0, 1, len(df))
        sel = stats.select_on_holdout(df, unit="prompt", candidate="candidate", value="reward", seed=int(rng.integers(1e6)))
        assert not set(sel.selection_units) & set(sel.report_units)
        in_sample.append(sel.in_sample_value)
        held_out.append(sel.held_out.value)
        covered += sel.held_out.contains(1.0)
    assert np.mean(in_sample) > 1.2
    assert abs(np.mean(held_out) - 1.0) < 0.08
    assert covered >= 88


def test_unit_means_average_samples_within_prompts():
    means, per = stats.unit_means([1, 3, 10, 20, 30], ["a", "a", "b", "b", "b"])
    assert sorted(means.tolist()) == [2.0, 20.0] and per == 2
