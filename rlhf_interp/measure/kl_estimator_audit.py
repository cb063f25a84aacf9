"""How good are the sampled KL estimators on a real policy? k1, k2, k3 next to the exact per-token KL.

Schulman's "Approximating KL divergence" (2020) compares k1 = -log r, k2 = (log r)^2 / 2 and k3 = (r - 1) - log r
(r = q(x)/p(x), x ~ p, estimating KL(p || q)) on two Gaussians. Here the same comparison is measured on the
tokens a policy actually generated: at each generated token the exact KL over the vocabulary is known (so is
each estimator's value from the sampled token), and the estimator's error is binned by the true KL.

Three settings (the ``setting`` column), from per-token tables with ``logp`` (the sampling model's log-prob
of the token), ``logp_ref``, ``kl_pi_ref`` and ``kl_ref_pi`` (`token_scores.TokenScores.to_frame`):

- ``pi_ref|policy``: tokens sampled from pi, estimating KL(pi || ref): k1, k2, k3 (`kl.kl_estimate`);
- ``ref_pi|reference``: tokens sampled from ref, estimating KL(ref || pi): k1, k2, k3 with the roles swapped;
- ``ref_pi|policy-iw``: tokens sampled from pi, estimating KL(ref || pi) by importance weighting,
  k1 and k3 (`kl.kl_estimate_importance_weighted`, what a KL(ref||pi) penalty computed on rollouts uses; k2 has no such form).

Settings name the KL by its argument order: pi_ref = KL(pi || ref), ref_pi = KL(ref || pi).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from rlhf_interp.core.kl import kl_estimate, kl_estimate_importance_weighted

# Bin edges of the true per-token KL (nats): decades, the tail of the distribution in one bin.
KL_BINS: tuple[float, ...] = (0.0, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, math.inf)

SETTINGS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # setting: (direction, sampling, estimators)
    "pi_ref|policy": ("pi_ref", "policy", ("k1", "k2", "k3")),
    "ref_pi|reference": ("ref_pi", "reference", ("k1", "k2", "k3")),
    "ref_pi|policy-iw": ("ref_pi", "policy", ("k1", "k3")),
}


def estimates(tokens: pd.DataFrame, sampling: str) -> pd.DataFrame:
    """Long table: for every token of ``tokens`` (all sampled from ``sampling``: "policy" or "reference") and
    every setting using that sampling and every estimator, one row with ``setting``, ``direction``,
    ``estimator``, ``exact`` (the true KL at that state) and ``estimate``. Other columns of ``tokens`` are kept.

    ``tokens`` from the reference's samples scored under the policy carry ``logp`` = the *policy's* log-prob
    (the scored model) and ``logp_ref`` = the reference's: the sampling side is taken from ``sampling``.
    """
    if sampling not in ("policy", "reference"):
        raise ValueError(f"sampling must be 'policy' or 'reference', got {sampling!r}.")
    missing = {"logp", "logp_ref", "kl_pi_ref", "kl_ref_pi"} - set(tokens.columns)
    if missing:
        raise ValueError(f"Token table lacks columns {sorted(missing)}: score the tokens with a reference.")
    logp_pi = torch.tensor(tokens["logp"].to_numpy(), dtype=torch.float64)
    logp_ref = torch.tensor(tokens["logp_ref"].to_numpy(), dtype=torch.float64)
    keep = tokens.drop(columns=["logp", "logp_ref", "kl_pi_ref", "kl_ref_pi"])
    parts = []
    for setting, (direction, sampler, names) in SETTINGS.items():
        if sampler != sampling:
            continue
        exact = tokens["kl_pi_ref" if direction == "pi_ref" else "kl_ref_pi"].to_numpy()
        for name in names:
            if setting == "pi_ref|policy":
                value = kl_estimate(logp_pi, logp_ref, name)  # x ~ pi, KL(pi || ref)
            elif setting == "ref_pi|reference":
                value = kl_estimate(logp_ref, logp_pi, name)  # x ~ ref, KL(ref || pi)
            else:
                value = kl_estimate_importance_weighted(logp_pi, logp_ref, name)  # x ~ pi, KL(ref || pi), weighted
            parts.append(keep.assign(setting=setting, direction=direction, estimator=name, exact=exact,
                                     estimate=value.numpy()))
    return pd.concat(parts, ignore_index=True)


def _bin_labels(edges: Sequence[float]) -> list[str]:
    return [f"[{lo:g}, {hi:g})" for lo, hi in itertools.pairwise(edges)]


def binned_audit(long: pd.DataFrame, by: Sequence[str] = (), edges: Sequence[float] = KL_BINS) -> pd.DataFrame:
    """Bias, spread and correlation of each estimator, binned by the true per-token KL.

    One row per (``by`` columns, setting, estimator, KL bin): ``n``, ``kl_bin``, ``bin_lo``, ``exact_mean``,
    ``estimate_mean``, ``bias`` (mean of estimate - exact, each token against the exact KL at its own state),
    ``bias_stderr``, ``rel_bias`` (bias / exact_mean), ``std`` (of the estimate - exact: the sampling noise),
    ``rel_std`` (std / exact_mean, Schulman's "stdev/true"), ``corr`` (Pearson, estimate vs exact within the
    bin; NaN with < 3 tokens or no spread) and ``share_negative`` (estimates < 0).
    """
    labels = _bin_labels(edges)
    long = long.assign(bin_index=pd.cut(long["exact"].clip(lower=0.0), bins=list(edges), right=False, labels=False),
                       error=long["estimate"] - long["exact"])
    keys = [*by, "setting", "direction", "estimator", "bin_index"]
    rows = []
    for key, g in long.groupby(keys, sort=True):
        n = len(g)
        exact_mean = float(g["exact"].mean())
        std = float(g["error"].std(ddof=1)) if n > 1 else math.nan
        ok = n >= 3 and g["exact"].std() > 0 and g["estimate"].std() > 0
        index = int(key[-1])
        rows.append({**dict(zip(keys[:-1], key[:-1])), "kl_bin": labels[index], "bin_lo": float(edges[index]), "n": n,
                     "exact_mean": exact_mean, "estimate_mean": float(g["estimate"].mean()),
                     "bias": float(g["error"].mean()), "bias_stderr": std / math.sqrt(n) if n > 1 else math.nan,
                     "rel_bias": float(g["error"].mean()) / exact_mean if exact_mean > 0 else math.nan,
                     "std": std, "rel_std": std / exact_mean if exact_mean > 0 else math.nan,
                     "corr": float(np.corrcoef(g["exact"], g["estimate"])[0, 1]) if ok else math.nan,
                     "share_negative": float((g["estimate"] < 0).mean())})
    return pd.DataFrame(rows)


def overall_audit(long: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """The same statistics over all tokens (no binning), plus the correlation across all tokens."""
    return binned_audit(long, by, edges=(0.0, math.inf)).drop(columns=["kl_bin", "bin_lo"])


def sequence_sums(long: pd.DataFrame, lengths: Sequence[int], by: Sequence[str] = (),
                  seq_keys: Sequence[str] = ("row",)) -> pd.DataFrame:
    """How the per-sequence sum's spread grows with length: for each sequence, the sums of the estimate and of
    the exact KL over its first ``L`` generated tokens (``pos < L``), for each ``L`` in ``lengths`` (capped at the
    longest sequence, so no length repeats another's numbers).

    One row per (``by``, setting, estimator, length): ``n_sequences``, ``exact_sum_mean``, ``estimate_sum_mean``,
    ``sum_error_std`` (std over sequences of estimate sum - exact sum), ``estimate_sum_std``,
    ``share_negative_sum`` (sequence sums < 0: what a user sees as "negative KL").
    """
    rows = []
    group_keys = [*by, "setting", "direction", "estimator"]
    longest = int(long["pos"].max()) + 1 if len(long) else 0
    lengths = sorted({min(int(n), longest) for n in lengths})  # past the longest sequence a sum stops changing
    for key, g in long.groupby(group_keys, sort=True):
        for length in lengths:
            part = g[g["pos"] < length]
            sums = part.groupby(list(seq_keys))[["estimate", "exact"]].sum()
            if sums.empty:
                continue
            err = sums["estimate"] - sums["exact"]
            rows.append({**dict(zip(group_keys, key)), "length": int(length), "n_sequences": len(sums),
                         "exact_sum_mean": float(sums["exact"].mean()), "estimate_sum_mean": float(sums["estimate"].mean()),
                         "sum_error_std": float(err.std(ddof=1)) if len(sums) > 1 else math.nan,
                         "estimate_sum_std": float(sums["estimate"].std(ddof=1)) if len(sums) > 1 else math.nan,
                         "share_negative_sum": float((sums["estimate"] < 0).mean())})
    return pd.DataFrame(rows)
