"""Vectorised percentile bootstrap over units for statistics made of per-unit sums (ratios of means pooled over
positions: a fraction of KL recovered, a mean per token, a share of a reward gain).

Why a separate module from `rlhf_interp.core.stats`: these resample with one shared ``[n_boot, units]`` count
matrix, so that every statistic of a table (every patch, every layer) is computed for all resamples at once
with a matrix product, and statistics built from the same matrix are resampled jointly (the same texts in
each resample: a first-layer-reaching or a top-vs-runner-up comparison stays paired).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rlhf_interp.core.stats import LEVEL, N_BOOT, Interval, percentile_bounds


def bootstrap_weights(units: int, *, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``[n_boot, units]`` counts: how often each unit is drawn in each resample (rows of a percentile bootstrap
    over units). Why a matrix: a statistic made of per-unit sums is then ``weights @ values`` for every
    resample at once, and statistics sharing one matrix are resampled jointly (the same texts each time)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, units, size=(n_boot, units))
    weights = np.zeros((n_boot, units))
    np.add.at(weights, (np.arange(n_boot)[:, None], draws), 1.0)
    return weights


def ratio_of_sums_interval(numerator: Sequence[float], denominator: Sequence[float], *, offset: float = 0.0,
                           scale: float = 1.0, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0,
                           n: dict[str, int] | None = None, note: str = "") -> Interval:
    """``offset + scale * sum(numerator) / sum(denominator)`` over units (texts, prompts), with a percentile
    bootstrap interval that resamples units (each unit's numerator and denominator together).

    The ratio of means over pooled positions (a fraction recovered = 1 - sum KL_patched / sum KL_clean, a
    mean per token = sum / count, a share of a gain) is a ratio of per-unit sums; resampling the units keeps
    the positions of one text together, which a per-position interval would not."""
    num, den = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if num.shape != den.shape or num.ndim != 1 or num.size == 0:
        raise ValueError(f"one numerator and one denominator per unit (got shapes {num.shape} and {den.shape})")
    with np.errstate(divide="ignore", invalid="ignore"):
        value = offset + scale * num.sum() / den.sum()
        weights = bootstrap_weights(num.size, n_boot=n_boot, seed=seed)
        draws = offset + scale * (weights @ num) / (weights @ den)
    low, high = percentile_bounds(draws, level) if num.size >= 2 else (-np.inf, np.inf)
    return Interval(float(value), low, high, level, "percentile bootstrap over units, ratio of sums",
                    dict(n or {"units": int(num.size)}), note)
