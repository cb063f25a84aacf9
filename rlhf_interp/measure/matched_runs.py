"""Compare training runs at matched strength: read every run's metrics where its trajectory first reaches
a common level of KL (or of reward), by linear interpolation between the two measured points around it.

Why: runs with different penalties end at different KLs, so their end points answer "which coefficient
did more", not "which penalty shapes the policy differently at the same distance from the reference".
Reading each trajectory where it *first* crosses the level keeps the comparison defined when a
trajectory later wanders back below it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd


def at_level(trajectory: pd.DataFrame, x: str, level: float, columns: Sequence[str]) -> dict[str, float]:
    """Every column in ``columns`` at the first crossing of ``x`` >= ``level`` along the rows (in order).

    Linear interpolation between the last row below the level and the first at or above it; the first row
    itself when it already reaches the level; NaN everywhere (and ``reached`` = 0) when no row reaches it.
    The returned dict also holds ``x`` (= level when reached) and ``position`` (fractional row index).
    """
    xs = trajectory[x].to_numpy(dtype=float)
    hit = np.flatnonzero(xs >= level)
    out: dict[str, float] = {x: math.nan, "position": math.nan, "reached": 0.0}
    if hit.size == 0:
        out.update({c: math.nan for c in columns})
        return out
    j = int(hit[0])
    if j == 0:
        weight, i = 0.0, 0
    else:
        i = j - 1
        weight = (level - xs[i]) / (xs[j] - xs[i])
    for c in columns:
        values = trajectory[c].to_numpy(dtype=float)
        out[c] = float(values[i] + weight * (values[j] - values[i])) if j != i else float(values[j])
    out.update({x: float(level) if j else float(xs[0]), "position": float(i + weight), "reached": 1.0})
    return out


def matched(trajectories: pd.DataFrame, run_keys: Sequence[str], x: str, level: float, columns: Sequence[str],
            order: str | None = None) -> pd.DataFrame:
    """`at_level` for every run (rows grouped by ``run_keys``, sorted by ``order`` within a run): one row per run."""
    rows = []
    for key, g in trajectories.groupby(list(run_keys), sort=True):
        g = g.sort_values(order) if order else g
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(run_keys, key)), "match_on": x, "level": level, **at_level(g, x, level, columns)})
    return pd.DataFrame(rows)


def common_level(trajectories: pd.DataFrame, run_keys: Sequence[str], x: str, fraction: float = 0.8,
                 start: float = 0.0) -> float:
    """A level every run reaches: ``start + fraction x`` the smallest over runs of (max ``x`` - ``start``).
    NaN when some run never gets above ``start``."""
    peaks = trajectories.groupby(list(run_keys))[x].max() - start
    low = float(peaks.min())
    return start + fraction * low if low > 0 else math.nan


def seed_spread(table: pd.DataFrame, group_keys: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """Mean, min, max and count over the rows of each group (e.g. over seeds): one row per group and column,
    columns ``metric``, ``mean``, ``min``, ``max``, ``n`` (NaNs ignored; n counts the non-NaN values)."""
    rows = []
    for key, g in table.groupby(list(group_keys), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        for c in columns:
            v = g[c].astype(float).dropna()
            rows.append({**dict(zip(group_keys, key)), "metric": c, "mean": float(v.mean()) if len(v) else math.nan,
                         "min": float(v.min()) if len(v) else math.nan, "max": float(v.max()) if len(v) else math.nan,
                         "n": len(v)})
    return pd.DataFrame(rows)
