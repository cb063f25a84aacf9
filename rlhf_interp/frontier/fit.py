"""Gao, Schulman & Hilton (2022), "Scaling laws for reward model overoptimization": the functional forms
of reward gained against distance from the initial policy, ``d = sqrt(KL)`` (KL in nats):

    best-of-n   R(d) = d (alpha - beta d)
    RL          R(d) = d (alpha - beta log d)

``R`` is the reward *gain* over the initial policy (so ``R(0) = 0``). Both forms are linear in
(alpha, beta), so they are fitted by (weighted) least squares: ``R = alpha d - beta d^2`` and
``R = alpha d - beta d log d``. Weights are ``1 / stderr^2`` of the reward when given; the
coefficients' standard errors come from the fit's covariance (scaled by the residual variance).
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np

Form = Literal["bon", "rl"]
FORMS: dict[str, str] = {"bon": "R(d) = d (alpha - beta d)", "rl": "R(d) = d (alpha - beta log d)"}


def _design(d: np.ndarray, form: Form) -> np.ndarray:
    if form == "bon":
        return np.column_stack([d, -d * d])
    if form == "rl":
        return np.column_stack([d, -d * np.log(d)])
    raise ValueError(f"Unknown Gao et al. form {form!r}; use 'bon' (best-of-n) or 'rl'.")


def gao_curve(form: Form, alpha: float, beta: float, kl: Sequence[float] | np.ndarray) -> np.ndarray:
    """Predicted reward gain at each KL (nats)."""
    d = np.sqrt(np.asarray(kl, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = _design(np.where(d > 0, d, 1.0), form) @ np.array([alpha, beta])
    return np.where(d > 0, out, 0.0)


def fit_gao(kl: Sequence[float], gain: Sequence[float], form: Form, stderr: Sequence[float] | None = None
            ) -> dict[str, float | int | str]:
    """Fit ``form`` to reward gains at KLs. Returns form, equation, alpha, beta, alpha_stderr,
    beta_stderr, r2 (weighted), n_points; NaNs (and ``note``) when fewer than 2 points have KL > 0."""
    kl_arr, gain_arr = np.asarray(kl, dtype=float), np.asarray(gain, dtype=float)
    keep = np.isfinite(kl_arr) & np.isfinite(gain_arr) & (kl_arr > 0)
    out: dict[str, float | int | str] = {"form": form, "equation": FORMS[form], "n_points": int(keep.sum())}
    if keep.sum() < 2:
        return {**out, "alpha": math.nan, "beta": math.nan, "alpha_stderr": math.nan, "beta_stderr": math.nan,
                "r2": math.nan, "note": "fewer than 2 points with KL > 0"}
    d, y = np.sqrt(kl_arr[keep]), gain_arr[keep]
    x = _design(d, form)
    if stderr is not None:
        se = np.asarray(stderr, dtype=float)[keep]
        w = np.where(np.isfinite(se) & (se > 0), 1.0 / np.maximum(se, 1e-12) ** 2, np.nan)
        w = np.where(np.isnan(w), np.nanmedian(w) if np.isfinite(w).any() else 1.0, w)
    else:
        w = np.ones_like(y)
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(x * sw[:, None], y * sw, rcond=None)
    resid = y - x @ coef
    dof = len(y) - 2
    xtwx = (x * w[:, None]).T @ x
    if dof > 0:
        sigma2 = float((w * resid ** 2).sum() / dof)
        cov = np.linalg.pinv(xtwx) * sigma2
        ses = np.sqrt(np.clip(np.diag(cov), 0, None))
    else:
        ses = np.array([math.nan, math.nan])
    mean = float((w * y).sum() / w.sum())
    total = float((w * (y - mean) ** 2).sum())
    r2 = 1 - float((w * resid ** 2).sum()) / total if total > 0 else math.nan
    return {**out, "alpha": float(coef[0]), "beta": float(coef[1]), "alpha_stderr": float(ses[0]),
            "beta_stderr": float(ses[1]), "r2": r2, "note": "" if dof > 0 else "exactly 2 points: no standard errors"}


__all__ = ["FORMS", "fit_gao", "gao_curve"]
