"""Two groups compared at equal values of a discrete covariate: bins, per-bin means, a stratified difference, and
the slope of a score against the covariate — each with its 95% interval.

Why: "the policy's samples score higher under the reward model than the base model's" mixes two things when the
policy also writes more of what the true reward counts. Compared within bins of the true count (texts with 3
periods against texts with 3 periods), a difference that remains is the learned score paying for something other
than the count. And "does the score keep rising with the count beyond the counts it was trained on" is a slope
on the texts out there. Model-free: DataFrames and arrays in, `rlhf_interp.core.stats.Interval` out.

- `count_bins(values, top)`: integer counts as labels ``"0"``, ``"1"``, ... , ``"<top>+"`` (the last bin open);
- `binned_means(frame, value, by)`: per group and bin, n, mean and its t interval;
- `stratified_difference(a, a_bins, b, b_bins)`: the per-bin differences A - B (Welch) and their weighted mean,
  with a Welch-Satterthwaite t interval; bins with fewer than ``min_n`` values in either group are left out
  (and marked so in the per-bin table);
- `slope_interval(x, y)`, `slope_difference(...)`: the least-squares slope (t, n - 2 df) and the difference of
  two slopes fitted on independent samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from rlhf_interp.core import stats
from rlhf_interp.core.stats import LEVEL, Interval


def bin_labels(top: int) -> list[str]:
    """The bins of `count_bins`, in order: ``"0"`` ... ``str(top - 1)``, ``f"{top}+"``."""
    if top < 1:
        raise ValueError(f"top must be >= 1 (the first open bin), got {top}")
    return [str(k) for k in range(top)] + [f"{top}+"]


def count_bins(values: Sequence[float], top: int) -> pd.Categorical:
    """Non-negative integer counts as ordered bin labels; every count >= ``top`` falls in ``"<top>+"``."""
    arr = np.asarray(values, dtype=float)
    if arr.size and (np.any(~np.isfinite(arr)) or np.any(arr < 0) or np.any(arr != np.floor(arr))):
        raise ValueError("count_bins takes non-negative whole counts")
    labels = bin_labels(top)
    return pd.Categorical([labels[min(int(v), top)] for v in arr], categories=labels, ordered=True)


def binned_means(frame: pd.DataFrame, value: str, by: str, *, group: str | None = None,
                 level: float = LEVEL) -> pd.DataFrame:
    """One row per (group, bin) present: ``n``, ``mean``, ``sd`` and the mean's t interval (``low``, ``high``;
    NaN below two values). ``by`` is a column of bin labels (a categorical keeps its order)."""
    keys = [group, by] if group else [by]
    rows = []
    for key, g in frame.groupby(keys, sort=True, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        vals = g[value].to_numpy(dtype=float)
        iv = stats.mean_interval(vals, level=level) if len(vals) >= 2 else None
        rows.append({**dict(zip(keys, key)), "n": len(vals), "mean": float(vals.mean()),
                     "sd": float(vals.std(ddof=1)) if len(vals) >= 2 else np.nan,
                     "low": iv.low if iv else np.nan, "high": iv.high if iv else np.nan})
    return pd.DataFrame(rows, columns=[*keys, "n", "mean", "sd", "low", "high"])


def _weight(n_a: int, n_b: int, weights: str) -> float:
    if weights == "harmonic":  # n_a n_b / (n_a + n_b): the Cochran-Mantel-Haenszel weight (near inverse variance)
        return n_a * n_b / (n_a + n_b)
    if weights == "a":  # standardised to group A's distribution over the bins
        return float(n_a)
    raise ValueError(f"weights {weights!r}: use 'harmonic' or 'a'")


def stratified_difference(a: Sequence[float], a_bins: Sequence, b: Sequence[float], b_bins: Sequence, *,
                          min_n: int = 2, weights: str = "harmonic", level: float = LEVEL,
                          n: dict[str, int] | None = None, note: str = "") -> tuple[Interval, pd.DataFrame]:
    """A - B within bins, pooled: sum_k w_k (mean_A,k - mean_B,k) / sum_k w_k over the bins where both groups have
    at least ``min_n`` values, with variance sum_k w_k^2 (s2_A,k / n_A,k + s2_B,k / n_B,k) / (sum w)^2 and
    Welch-Satterthwaite degrees of freedom (the groups independent, values independent within a bin).

    ``weights``: ``"harmonic"`` (n_A n_B / (n_A + n_B), the default: close to inverse-variance weighting when the
    spread is alike across bins) or ``"a"`` (n_A: the difference averaged over A's distribution of the covariate).
    Returns the pooled interval (infinite when no bin qualifies) and one row per bin present in either group:
    bin, n_a, n_b, mean_a, mean_b, diff, low, high (Welch t), used, weight (share of the pooled estimate).
    """
    from scipy import stats as sps

    if min_n < 2:
        raise ValueError("min_n must be >= 2: a bin needs a spread in both groups")
    fa = pd.DataFrame({"v": np.asarray(a, dtype=float), "bin": list(a_bins)})
    fb = pd.DataFrame({"v": np.asarray(b, dtype=float), "bin": list(b_bins)})
    kinds = [pd.Series(x) for x in (a_bins, b_bins)]
    cats = [s.cat.categories for s in kinds if isinstance(s.dtype, pd.CategoricalDtype)]
    order = list(cats[0]) if cats else sorted(set(fa["bin"]) | set(fb["bin"]), key=str)
    present = [k for k in order if (fa["bin"] == k).any() or (fb["bin"] == k).any()]
    rows, parts = [], []
    for k in present:
        va, vb = fa.loc[fa["bin"] == k, "v"].to_numpy(), fb.loc[fb["bin"] == k, "v"].to_numpy()
        used = len(va) >= min_n and len(vb) >= min_n
        diff = stats.welch_difference(va, vb, level=level) if used else None
        rows.append({"bin": k, "n_a": len(va), "n_b": len(vb),
                     "mean_a": float(va.mean()) if len(va) else np.nan,
                     "mean_b": float(vb.mean()) if len(vb) else np.nan,
                     "diff": float(va.mean() - vb.mean()) if len(va) and len(vb) else np.nan,
                     "low": diff.low if diff else np.nan, "high": diff.high if diff else np.nan, "used": used})
        if used:
            parts.append((_weight(len(va), len(vb), weights), va, vb))
    table = pd.DataFrame(rows, columns=["bin", "n_a", "n_b", "mean_a", "mean_b", "diff", "low", "high", "used"])
    total_w = sum(w for w, _, _ in parts)
    table["weight"] = [(_weight(r.n_a, r.n_b, weights) / total_w) if r.used else 0.0 for r in table.itertuples()]
    units = dict(n or {"bins": len(parts), "a": int(sum(len(x) for _, x, _ in parts)),
                       "b": int(sum(len(y) for _, _, y in parts))})
    method = f"stratified welch t ({weights} weights)"
    if not parts:
        return Interval(float("nan"), -np.inf, np.inf, level, method, units, note), table
    est = sum(w * (x.mean() - y.mean()) for w, x, y in parts) / total_w
    ca = [(w / total_w) ** 2 * x.var(ddof=1) / len(x) for w, x, _ in parts]
    cb = [(w / total_w) ** 2 * y.var(ddof=1) / len(y) for w, _, y in parts]
    var = float(sum(ca) + sum(cb))
    if var == 0:
        return Interval(float(est), float(est), float(est), level, method, units, note), table
    denom = sum(c * c / (len(x) - 1) for c, (_, x, _) in zip(ca, parts)) + \
        sum(c * c / (len(y) - 1) for c, (_, _, y) in zip(cb, parts))
    df = var ** 2 / denom
    q = float(sps.t.ppf(0.5 + level / 2, df=df))
    se = float(np.sqrt(var))
    return Interval(float(est), float(est - q * se), float(est + q * se), level, method, units, note), table


def _slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """Least-squares slope, its standard error and the residual df (n - 2)."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    sxx = float(((x - x.mean()) ** 2).sum())
    if len(x) < 3 or sxx == 0:
        return float("nan"), float("inf"), max(len(x) - 2, 0)
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / sxx)
    resid = y - y.mean() - slope * (x - x.mean())
    se = float(np.sqrt((resid ** 2).sum() / (len(x) - 2) / sxx))
    return slope, se, len(x) - 2


def slope_interval(x: Sequence[float], y: Sequence[float], *, level: float = LEVEL, n: dict[str, int] | None = None,
                   note: str = "") -> Interval:
    """The least-squares slope of ``y`` on ``x`` with its t interval (n - 2 df; independent residuals). Fewer than
    three points or a single x value: no interval (infinite bounds)."""
    from scipy import stats as sps

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    slope, se, df = _slope(x, y)
    units = dict(n or {"samples": int(len(x))})
    if not np.isfinite(se):
        return Interval(slope, -np.inf, np.inf, level, "ols t", units, note)
    q = float(sps.t.ppf(0.5 + level / 2, df=df))
    return Interval(slope, slope - q * se, slope + q * se, level, "ols t", units, note)


def slope_difference(x_a: Sequence[float], y_a: Sequence[float], x_b: Sequence[float], y_b: Sequence[float], *,
                     level: float = LEVEL, n: dict[str, int] | None = None, note: str = "") -> Interval:
    """Slope A minus slope B, fitted on independent samples: t interval with Welch-Satterthwaite df from the two
    slopes' standard errors (each with n - 2 df)."""
    from scipy import stats as sps

    sa, se_a, df_a = _slope(np.asarray(x_a, dtype=float), np.asarray(y_a, dtype=float))
    sb, se_b, df_b = _slope(np.asarray(x_b, dtype=float), np.asarray(y_b, dtype=float))
    units = dict(n or {"a": len(x_a), "b": len(x_b)})
    diff = sa - sb
    if not (np.isfinite(se_a) and np.isfinite(se_b)):
        return Interval(diff, -np.inf, np.inf, level, "ols welch t", units, note)
    va, vb = se_a ** 2, se_b ** 2
    if va + vb == 0:
        return Interval(diff, diff, diff, level, "ols welch t", units, note)
    df = (va + vb) ** 2 / (va ** 2 / df_a + vb ** 2 / df_b)
    q = float(sps.t.ppf(0.5 + level / 2, df=df))
    se = float(np.sqrt(va + vb))
    return Interval(diff, diff - q * se, diff + q * se, level, "ols welch t", units, note)
