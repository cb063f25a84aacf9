"""`rlhf_interp.measure.stratified`: bins of a count, per-bin means, the stratified difference and slopes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from rlhf_interp.core import stats
from rlhf_interp.measure.stratified import (
    bin_labels,
    binned_means,
    count_bins,
    slope_difference,
    slope_interval,
    stratified_difference,
)


def test_count_bins_put_every_count_at_or_above_top_in_the_open_bin():
    assert bin_labels(3) == ["0", "1", "2", "3+"]
    bins = count_bins([0, 1.0, 2, 3, 7, 12], 3)
    assert list(bins) == ["0", "1", "2", "3+", "3+", "3+"]
    assert list(bins.categories) == ["0", "1", "2", "3+"] and bins.ordered
    for bad in ([1.5], [-1], [float("nan")]):
        with pytest.raises(ValueError, match="whole counts"):
            count_bins(bad, 3)


def test_binned_means_are_each_bins_mean_with_its_t_interval():
    frame = pd.DataFrame({"g": ["a"] * 5 + ["b"] * 3, "bin": ["0", "0", "0", "1", "1", "0", "1", "1"],
                          "v": [1.0, 2.0, 3.0, 5.0, 7.0, 0.0, 4.0, 4.0]})
    out = binned_means(frame, "v", "bin", group="g").set_index(["g", "bin"])
    assert out.loc[("a", "0"), "n"] == 3 and out.loc[("a", "0"), "mean"] == 2.0
    iv = stats.mean_interval([1.0, 2.0, 3.0])
    assert (out.loc[("a", "0"), "low"], out.loc[("a", "0"), "high"]) == pytest.approx((iv.low, iv.high))
    assert np.isnan(out.loc[("b", "0"), "low"])  # one value: no interval
    assert out.loc[("b", "1"), "low"] == out.loc[("b", "1"), "high"] == 4.0  # no spread


def test_one_bin_is_welchs_difference():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 30), rng.normal(0.0, 2.0, 20)
    iv, table = stratified_difference(a, ["x"] * 30, b, ["x"] * 20)
    welch = stats.welch_difference(a, b)
    assert (iv.value, iv.low, iv.high) == pytest.approx((welch.value, welch.low, welch.high))
    assert table["weight"].tolist() == [1.0] and table["used"].tolist() == [True]


def test_stratifying_removes_the_confounding_a_pooled_mean_shows():
    """The score rises with the count; group A has higher counts. Unstratified, A scores far higher; within bins
    the two are alike (no planted effect) or differ by exactly the planted shift."""
    rng = np.random.default_rng(1)
    counts_a, counts_b = rng.integers(2, 7, 600), rng.integers(0, 4, 600)
    score = lambda c, shift: 0.5 * c + shift + rng.normal(0, 0.3, len(c))  # noqa: E731
    bins_a, bins_b = count_bins(counts_a, 5), count_bins(counts_b, 5)
    a0, b0 = score(counts_a, 0.0), score(counts_b, 0.0)
    naive = stats.welch_difference(a0, b0)
    assert naive.low > 1.0  # confounded by the count
    null, table = stratified_difference(a0, bins_a, b0, bins_b, min_n=5)
    assert null.contains(0.0) and null.half_width < 0.1
    assert table.set_index("bin").loc[["0", "1", "5+"], "used"].tolist() == [False, False, False]  # one group only
    assert table["weight"].sum() == pytest.approx(1.0)
    shifted, _ = stratified_difference(score(counts_a, 0.4), bins_a, b0, bins_b, min_n=5)
    assert shifted.contains(0.4) and shifted.low > 0.25
    by_a, _ = stratified_difference(score(counts_a, 0.4), bins_a, b0, bins_b, min_n=5, weights="a")
    assert by_a.contains(0.4)


def test_stratified_interval_covers_at_about_95_percent():
    """Unequal bin sizes and spreads, a true within-bin difference of 0.2: the interval covers it in ~95% of draws."""
    rng = np.random.default_rng(2)
    sizes_a, sizes_b, sds = [5, 20, 8], [30, 6, 10], [0.5, 2.0, 1.0]
    hits, draws = 0, 500
    for _ in range(draws):
        a = np.concatenate([rng.normal(k + 0.2, s, m) for k, (m, s) in enumerate(zip(sizes_a, sds))])
        b = np.concatenate([rng.normal(k, s, m) for k, (m, s) in enumerate(zip(sizes_b, sds))])
        bins_a = np.repeat([0, 1, 2], sizes_a)
        bins_b = np.repeat([0, 1, 2], sizes_b)
        iv, _ = stratified_difference(a, bins_a, b, bins_b)
        hits += iv.contains(0.2)
    assert 0.925 <= hits / draws <= 0.975


def test_no_shared_bin_gives_no_interval():
    iv, table = stratified_difference([1.0, 2.0], ["0", "0"], [1.0, 2.0, 3.0], ["1", "1", "1"])
    assert not np.isfinite(iv.low) and not table["used"].any()


def test_slope_is_least_squares_with_linregress_interval():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 8, 50).astype(float)
    y = 0.3 * x + rng.normal(0, 0.5, 50)
    fit = sps.linregress(x, y)
    iv = slope_interval(x, y)
    q = sps.t.ppf(0.975, 48)
    assert (iv.value, iv.low, iv.high) == pytest.approx((fit.slope, fit.slope - q * fit.stderr,
                                                        fit.slope + q * fit.stderr))
    assert not np.isfinite(slope_interval([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]).low)  # one x value: no slope


def test_slope_difference_sees_a_flattening():
    rng = np.random.default_rng(4)
    x1, x2 = rng.integers(0, 5, 200).astype(float), rng.integers(4, 10, 200).astype(float)
    rising, flat = 0.5 * x1 + rng.normal(0, 0.3, 200), 2.0 + rng.normal(0, 0.3, 200)
    d = slope_difference(x2, flat, x1, rising)
    assert d.high < -0.4 and d.contains(-0.5)
    same = slope_difference(x2, 0.5 * x2 + rng.normal(0, 0.3, 200), x1, rising)
    assert same.contains(0.0)
