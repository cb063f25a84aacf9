"""Statistics for reported numbers: intervals over prompts and seeds, paired differences, held-out selection,
verdicts. Pure numpy/scipy, no model; every analysis states its numbers through these.

The unit of resampling is what was drawn at random: the prompt (and, where a study has them, the training or
sampling seed). Samples of one prompt are not independent draws of the population of prompts, so a per-sample
interval is too narrow; average them per prompt first (`unit_means`).

- `mean_interval(x)`: the mean of per-prompt values with a t interval (``method="t"``, the default) or a
  bootstrap interval (``"percentile"`` / ``"bca"``, scipy.stats.bootstrap).
- `seeds_interval(values, seeds)`: hierarchical data (prompts within seeds). With >= 2 seeds the interval is
  a t interval over the per-seed means (df = seeds - 1: seed-to-seed variation included, exact for balanced
  normal data); `hierarchical_bootstrap` resamples seeds, then prompts within each seed. With one seed the
  interval is over prompts only and says so (``Interval.note``).
- `paired_difference(a, b)`: A - B measured on the same prompts (and seeds): the interval of the mean of the
  per-unit differences, far narrower than two separate intervals when the units are correlated.
- `welch_difference(a, b)`: A - B on different units (e.g. runs with different seeds), Welch's t interval.
- `rlhf_interp.core.bootstrap.ratio_of_sums_interval(num, den)`: a ratio of means pooled over positions (sum
  over units / sum over units), percentile bootstrap over units.
- `summary_interval` / `summary_difference`: the same from stored means and standard errors when a table kept
  no per-unit rows (the difference then unpaired, so conservative for the same prompts).
- `sd_interval(x)`: a standard deviation (e.g. batch noise from phase to phase) with its chi-square interval.
- `proportion_interval(k, n)`: a rate with its Wilson interval (3 of 32 is not "9%" without it).
- `proportion_difference(k_a, n_a, k_b, n_b)`: the difference of two rates (Newcombe's interval).
- `select_on_holdout(...)`: the best of several candidates chosen on one split of the prompts and reported on
  the other, beside the in-sample best (how much choosing inflated it).
- `verdict(diff)`: "A > B, decided at 95%", or "A - B within ±x" (|A - B| < x) with x the largest difference
  not ruled out.
- `r_squared` / `fit_is_drawn`: a fitted curve is drawn only when R^2 >= `FIT_R2_MIN`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

LEVEL = 0.95
FIT_R2_MIN = 0.8  # a fitted curve is drawn (and its parameters stated) only at or above this R^2
N_BOOT = 4000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval. ``n``: what it rests on (``prompts``, ``samples_per_prompt``,
    ``seeds`` ...), ``method``: how the interval was made; ``note``: what it leaves out (e.g. seed variation)."""

    value: float
    low: float
    high: float
    level: float = LEVEL
    method: str = "t"
    n: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fmt(self, spec: str = ".2f") -> str:
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def _clean(x: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=float).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise ValueError("no finite values to summarise")
    return arr


def _t_interval(arr: np.ndarray, level: float) -> tuple[float, float, float]:
    from scipy import stats

    mean = float(arr.mean())
    if arr.size < 2:
        return mean, -np.inf, np.inf
    se = float(arr.std(ddof=1) / np.sqrt(arr.size))
    if se == 0:
        return mean, mean, mean
    q = float(stats.t.ppf(0.5 + level / 2, df=arr.size - 1))
    return mean, mean - q * se, mean + q * se


def mean_interval(x: Sequence[float], *, level: float = LEVEL, method: str = "t", n_boot: int = N_BOOT,
                  seed: int = 0, n: dict[str, int] | None = None, note: str = "") -> Interval:
    """The mean of independent per-unit values (one per prompt) with its interval.

    ``method``: ``"t"`` (Student's t; exact for normal data), ``"percentile"`` or ``"bca"`` (scipy's bootstrap,
    ``n_boot`` resamples, seeded). ``n`` defaults to ``{"prompts": len(x)}``.
    """
    arr = _clean(x)
    n = dict(n or {"prompts": int(arr.size)})
    if method == "t":
        mean, low, high = _t_interval(arr, level)
    elif method in ("percentile", "bca", "basic"):
        mean = float(arr.mean())
        if arr.size < 2 or np.all(arr == arr[0]):
            low, high = (mean, mean) if arr.size >= 2 else (-np.inf, np.inf)
        else:
            from scipy import stats

            res = stats.bootstrap((arr,), np.mean, confidence_level=level, n_resamples=n_boot, method=method,
                                  vectorized=True, random_state=np.random.default_rng(seed))
            low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    else:
        raise ValueError(f"method {method!r}: use 't', 'percentile', 'bca' or 'basic'")
    return Interval(mean, low, high, level, method, n, note)


def bootstrap_interval(x: Sequence[float], statistic: Callable[[np.ndarray], float], *, level: float = LEVEL,
                       n_boot: int = N_BOOT, seed: int = 0, n: dict[str, int] | None = None, note: str = ""
                       ) -> Interval:
    """Any statistic of per-unit values (a median, a share, a ratio of means over columns of a 2-D ``x``:
    rows are units) with a percentile bootstrap interval over the rows."""
    arr = np.asarray(x, dtype=float)
    rows = arr.shape[0]
    rng = np.random.default_rng(seed)
    value = float(statistic(arr))
    draws = np.empty(n_boot)
    for i in range(n_boot):
        draws[i] = statistic(arr[rng.integers(0, rows, rows)])
    low, high = percentile_bounds(draws, level)
    return Interval(value, low, high, level, "percentile", dict(n or {"prompts": rows}), note)


def percentile_bounds(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap draws (non-finite draws, e.g. a ratio over a zero sum, dropped)."""
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    if not draws.size:
        return -np.inf, np.inf
    alpha = (1 - level) / 2
    return float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha))


def unit_means(values: Sequence[float], units: Sequence[Any]) -> tuple[np.ndarray, int]:
    """Per-unit (per-prompt) means of per-sample values, and the samples per unit (the smallest count)."""
    import pandas as pd

    s = pd.Series(np.asarray(values, dtype=float)).groupby(np.asarray(units)).agg(["mean", "size"])
    return s["mean"].to_numpy(), int(s["size"].min())


def seeds_interval(values: Sequence[float], seeds: Sequence[Any], *, level: float = LEVEL,
                   n: dict[str, int] | None = None, note: str = "") -> Interval:
    """The mean over seeds of each seed's mean (of its prompts), with a t interval over the seed means.

    With one seed this is `mean_interval` over its values, noted as not covering seed-to-seed variation.
    """
    values = np.asarray(values, dtype=float)
    seeds = np.asarray(seeds)
    keys = list(dict.fromkeys(seeds.tolist()))
    per_seed = np.array([values[seeds == k][np.isfinite(values[seeds == k])].mean() for k in keys])
    prompts = min(int(np.isfinite(values[seeds == k]).sum()) for k in keys)
    base = {"prompts": prompts, "seeds": len(keys)}
    if len(keys) == 1:
        iv = mean_interval(values, level=level)
        return Interval(iv.value, iv.low, iv.high, level, "t over prompts", dict(n or base),
                        note or "one seed: seed-to-seed variation not included")
    mean, low, high = _t_interval(per_seed, level)
    return Interval(mean, low, high, level, "t over seed means", dict(n or base), note)


def hierarchical_bootstrap(values: Sequence[float], seeds: Sequence[Any], *, level: float = LEVEL,
                           n_boot: int = N_BOOT, seed: int = 0, n: dict[str, int] | None = None, note: str = ""
                           ) -> Interval:
    """Mean over seeds of per-seed means, percentile interval from resampling seeds, then prompts within each
    resampled seed. Undercovers with few seeds (like every bootstrap of few groups); prefer `seeds_interval`
    for a mean, this for statistics with no closed form."""
    values = np.asarray(values, dtype=float)
    seeds = np.asarray(seeds)
    groups = [values[seeds == k] for k in dict.fromkeys(seeds.tolist())]
    groups = [g[np.isfinite(g)] for g in groups]
    rng = np.random.default_rng(seed)
    value = float(np.mean([g.mean() for g in groups]))
    g = len(groups)
    draws = np.empty(n_boot)
    sizes = [len(x) for x in groups]
    for i in range(n_boot):
        picks = rng.integers(0, g, g)
        draws[i] = np.mean([groups[j][rng.integers(0, sizes[j], sizes[j])].mean() for j in picks])
    alpha = (1 - level) / 2
    base = {"prompts": min(sizes), "seeds": g}
    return Interval(value, float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha)), level,
                    "hierarchical bootstrap", dict(n or base), note)


def paired_difference(a: Sequence[float], b: Sequence[float], *, level: float = LEVEL, method: str = "t",
                      seeds: Sequence[Any] | None = None, n: dict[str, int] | None = None, note: str = ""
                      ) -> Interval:
    """A - B where ``a[i]`` and ``b[i]`` were measured on the same unit (prompt, sampling seed): the interval of
    the mean per-unit difference. With ``seeds`` (one per unit), a t interval over per-seed mean differences."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} vs {b.shape} (same prompts, same order)")
    d = a - b
    if seeds is not None:
        iv = seeds_interval(d, seeds, level=level, n=n, note=note)
    else:
        iv = mean_interval(d, level=level, method=method, n=n, note=note)
    return Interval(iv.value, iv.low, iv.high, level, f"paired {iv.method}", iv.n, iv.note)


def welch_difference(a: Sequence[float], b: Sequence[float], *, level: float = LEVEL,
                     n: dict[str, int] | None = None, note: str = "") -> Interval:
    """A - B from independent units (runs of different seeds): Welch's t interval (Welch-Satterthwaite df)."""
    from scipy import stats

    a, b = _clean(a), _clean(b)
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Interval(diff, -np.inf, np.inf, level, "welch t", dict(n or {"a": a.size, "b": b.size}), note)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = float(np.sqrt(va + vb))
    if se == 0:
        return Interval(diff, diff, diff, level, "welch t", dict(n or {"a": a.size, "b": b.size}), note)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    q = float(stats.t.ppf(0.5 + level / 2, df=df))
    return Interval(diff, diff - q * se, diff + q * se, level, "welch t",
                    dict(n or {"a": int(a.size), "b": int(b.size)}), note)


def summary_interval(mean: float, se: float, n: int, *, level: float = LEVEL, units: dict[str, int] | None = None,
                     note: str = "") -> Interval:
    """A t interval (df = n - 1) from a stored mean and standard error over ``n`` units, for tables that kept
    only the summary (no per-unit rows)."""
    from scipy import stats

    if n < 2 or not np.isfinite(se):
        return Interval(float(mean), -np.inf, np.inf, level, "t from mean and s.e.", dict(units or {"prompts": n}),
                        note)
    q = float(stats.t.ppf(0.5 + level / 2, df=n - 1))
    return Interval(float(mean), float(mean - q * se), float(mean + q * se), level, "t from mean and s.e.",
                    dict(units or {"prompts": int(n)}), note)


def summary_difference(mean_a: float, se_a: float, n_a: int, mean_b: float, se_b: float, n_b: int, *,
                       level: float = LEVEL, units: dict[str, int] | None = None, note: str = "") -> Interval:
    """A - B from two stored means and standard errors, treated as independent (Welch-Satterthwaite df). When A
    and B were measured on the same prompts this is conservative: pairing needs the per-prompt rows."""
    from scipy import stats

    diff = float(mean_a - mean_b)
    va, vb = float(se_a) ** 2, float(se_b) ** 2
    units = dict(units or {"prompts": int(min(n_a, n_b))})
    if n_a < 2 or n_b < 2 or not np.isfinite(va + vb):
        return Interval(diff, -np.inf, np.inf, level, "welch t from means and s.e.", units, note)
    if va + vb == 0:
        return Interval(diff, diff, diff, level, "welch t from means and s.e.", units, note)
    df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    q = float(stats.t.ppf(0.5 + level / 2, df=df))
    se = float(np.sqrt(va + vb))
    return Interval(diff, diff - q * se, diff + q * se, level, "welch t from means and s.e.", units, note)


def sd_interval(x: Sequence[float], *, level: float = LEVEL, n: dict[str, int] | None = None, note: str = ""
                ) -> Interval:
    """The sample standard deviation with its chi-square interval (exact for normal data)."""
    from scipy import stats

    arr = _clean(x)
    if arr.size < 2:
        return Interval(float("nan"), -np.inf, np.inf, level, "chi-square", dict(n or {"units": int(arr.size)}), note)
    sd = float(arr.std(ddof=1))
    df = arr.size - 1
    low = sd * np.sqrt(df / stats.chi2.ppf(0.5 + level / 2, df))
    high = sd * np.sqrt(df / stats.chi2.ppf(0.5 - level / 2, df))
    return Interval(sd, float(low), float(high), level, "chi-square", dict(n or {"units": int(arr.size)}), note)


def proportion_interval(k: int, total: int, *, level: float = LEVEL, n: dict[str, int] | None = None,
                        note: str = "") -> Interval:
    """``k`` of ``total`` with the Wilson score interval (sensible at 0 and at small counts)."""
    from scipy import stats

    if total <= 0:
        raise ValueError("a proportion needs at least one trial")
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = k / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), level, "wilson",
                    dict(n or {"samples": int(total)}), note)


def proportion_difference(k_a: int, n_a: int, k_b: int, n_b: int, *, level: float = LEVEL,
                          n: dict[str, int] | None = None, note: str = "") -> Interval:
    """k_a/n_a - k_b/n_b from independent samples, Newcombe's hybrid score interval (from the two Wilson
    intervals; sound at small counts, where the Wald interval is not)."""
    a, b = proportion_interval(k_a, n_a, level=level), proportion_interval(k_b, n_b, level=level)
    d = a.value - b.value
    low = d - np.sqrt((a.value - a.low) ** 2 + (b.high - b.value) ** 2)
    high = d + np.sqrt((a.high - a.value) ** 2 + (b.value - b.low) ** 2)
    return Interval(float(d), float(low), float(high), level, "newcombe",
                    dict(n or {"samples_a": int(n_a), "samples_b": int(n_b)}), note)


# ----------------------------------------------------------------------------------------------
# verdicts


@dataclass(frozen=True)
class Verdict:
    """The outcome of comparing A with B from the interval of A - B."""

    decided: bool
    text: str
    bound: float  # decided: the smallest difference the interval supports; undecided: the largest not ruled out

    def __str__(self) -> str:
        return self.text


def verdict(diff: Interval, a: str = "A", b: str = "B", *, fmt: str = ".2g") -> Verdict:
    """"A > B, decided at 95%" when the interval of A - B excludes 0, else "undecided at 95%: A - B within ±x,
    the largest difference not ruled out" (|A - B| < x; x = the interval's farther end from 0)."""
    pct = f"{diff.level * 100:g}%"
    if not (np.isfinite(diff.low) and np.isfinite(diff.high)):
        return Verdict(False, f"{a} vs {b}: undecided (too few units for an interval)", float("inf"))
    if diff.low > 0:
        return Verdict(True, f"{a} > {b}, decided at {pct}", float(diff.low))
    if diff.high < 0:
        return Verdict(True, f"{b} > {a}, decided at {pct}", float(-diff.high))
    bound = float(max(abs(diff.low), abs(diff.high)))
    # "|A - B| < x", written without "|" so that it can stand in a markdown table cell
    return Verdict(False, f"undecided at {pct}: {a} - {b} within ±{bound:{fmt}}, the largest difference not ruled "
                          f"out", bound)


# ----------------------------------------------------------------------------------------------
# held-out selection


@dataclass(frozen=True)
class Selection:
    """The best candidate chosen on the selection split, its value on the held-out split (with interval), and
    the in-sample best (chosen and reported on all units: the optimistic number)."""

    chosen: Any
    held_out: Interval
    in_sample_best: Any
    in_sample_value: float
    selection_units: tuple
    report_units: tuple


def split_units(units: Sequence[Any], *, fraction: float = 0.5, seed: int = 0) -> tuple[list, list]:
    """A seeded split of units (prompts) into (selection, report)."""
    uniq = sorted(dict.fromkeys(units), key=str)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    k = max(1, min(len(uniq) - 1, int(round(fraction * len(uniq)))))
    return [uniq[i] for i in sorted(order[:k])], [uniq[i] for i in sorted(order[k:])]


def select_on_holdout(df, *, unit: str, candidate: str, value: str, higher_is_better: bool = True,
                      fraction: float = 0.5, seed: int = 0, level: float = LEVEL) -> Selection:
    """Choose the candidate with the best mean ``value`` over one split of the ``unit`` column, report its mean
    (t interval over units) over the other split. ``df``: one row per (unit, candidate[, sample])."""
    sel_units, rep_units = split_units(df[unit].tolist(), fraction=fraction, seed=seed)
    sign = 1 if higher_is_better else -1
    means_sel = df[df[unit].isin(sel_units)].groupby(candidate)[value].mean()
    chosen = (sign * means_sel).idxmax()
    rep = df[df[unit].isin(rep_units) & (df[candidate] == chosen)]
    per_unit, samples = unit_means(rep[value], rep[unit])
    iv = mean_interval(per_unit, level=level, n={"prompts": len(per_unit), "samples_per_prompt": samples},
                       note=f"chosen on {len(sel_units)} other prompts")
    means_all = df.groupby(candidate)[value].mean()
    best_all = (sign * means_all).idxmax()
    return Selection(chosen, iv, best_all, float(means_all[best_all]), tuple(sel_units), tuple(rep_units))


# ----------------------------------------------------------------------------------------------
# fits


def r_squared(y: Sequence[float], fitted: Sequence[float]) -> float:
    """1 - SS_res / SS_tot (can be negative for a fit worse than the mean)."""
    y, fitted = np.asarray(y, dtype=float), np.asarray(fitted, dtype=float)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot == 0:
        return 1.0 if np.allclose(y, fitted) else 0.0
    return 1.0 - float(((y - fitted) ** 2).sum()) / ss_tot


def fit_is_drawn(r2: float, threshold: float = FIT_R2_MIN) -> bool:
    """The one criterion for drawing a fitted curve: R^2 >= ``threshold`` (default `FIT_R2_MIN`)."""
    return bool(np.isfinite(r2) and r2 >= threshold)
