"""95% intervals over texts for the patching tables, from the per-text sums `run_patches` keeps.

The texts are the random draw (prompts, and the policy's sampled continuations of them), so every interval
resamples texts: a percentile bootstrap over texts of a ratio of sums (`rlhf_interp.core.bootstrap`), which
is the ratio of means pooled over positions that the summary tables state. One resampling matrix serves every
patch of a table, so comparisons between patches (top vs runner-up, the first layer that reaches a level) are
paired: each resample draws the same texts for all of them.

A patch is named by its key ``(direction, layer, component)`` (unique in an `activation_patching` table).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from rlhf_interp.core.bootstrap import bootstrap_weights, percentile_bounds, ratio_of_sums_interval
from rlhf_interp.core.stats import LEVEL, N_BOOT, Interval

Key = tuple[str, int, str]
METHOD = "percentile bootstrap over texts, ratio of sums"


def _kl_column(direction: str) -> str:
    """The KL to the donor: KL(. || tuned) into base, KL(. || base) into tuned."""
    return "kl_tuned_sum" if direction == "into_base" else "kl_base_sum"


def _receiver_rows(per_text: pd.DataFrame, direction: str) -> pd.DataFrame:
    rows = per_text[(per_text["patch"] < 0) & (per_text["direction"] == direction)]
    if rows.empty:
        raise ValueError(f"the per-text table has no unpatched rows for {direction!r}: pass run_patches' own output")
    return rows.set_index("text").sort_index()


def _patch_rows(per_text: pd.DataFrame, key: Key) -> pd.DataFrame:
    direction, layer, component = key
    rows = per_text[(per_text["patch"] >= 0) & (per_text["direction"] == direction)
                    & (per_text["layer"] == layer) & (per_text["component"] == component)]
    if rows.empty:
        raise KeyError(f"no per-text rows for patch {key}")
    return rows.set_index("text").sort_index()


def _n(per_text: pd.DataFrame, direction: str) -> dict[str, int]:
    rows = _receiver_rows(per_text, direction)
    return {"texts": int(len(rows)), "positions": int(rows["n_tokens"].sum())}


def kl_clean_interval(per_text: pd.DataFrame, direction: str = "into_base", *, level: float = LEVEL,
                      n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """Mean KL(receiver || donor) per position without a patch (into base: KL(base || tuned)), nats."""
    r = _receiver_rows(per_text, direction)
    iv = ratio_of_sums_interval(r[_kl_column(direction)], r["n_tokens"], level=level, n_boot=n_boot, seed=seed,
                                n=_n(per_text, direction))
    return _with_method(iv)


def fraction_interval(per_text: pd.DataFrame, key: Key, *, level: float = LEVEL, n_boot: int = N_BOOT,
                      seed: int = 0) -> Interval:
    """Fraction recovered of one patch, 1 - sum KL(patched || donor) / sum KL(receiver || donor), over texts."""
    clean, patch = _receiver_rows(per_text, key[0]), _patch_rows(per_text, key)
    col = _kl_column(key[0])
    iv = ratio_of_sums_interval(patch[col], clean[col], offset=1.0, scale=-1.0, level=level, n_boot=n_boot,
                                seed=seed, n=_n(per_text, key[0]))
    return _with_method(iv)


def fraction_difference(per_text: pd.DataFrame, a: Key, b: Key, *, level: float = LEVEL, n_boot: int = N_BOOT,
                        seed: int = 0) -> Interval:
    """Fraction recovered of patch ``a`` minus that of ``b`` (same direction), paired over texts:
    (sum KL_b - sum KL_a) / sum KL_clean."""
    if a[0] != b[0]:
        raise ValueError(f"patches {a} and {b} have different receivers: their fractions have different denominators")
    col = _kl_column(a[0])
    clean, pa, pb = _receiver_rows(per_text, a[0]), _patch_rows(per_text, a), _patch_rows(per_text, b)
    iv = ratio_of_sums_interval(pb[col] - pa[col], clean[col], level=level, n_boot=n_boot, seed=seed,
                                n=_n(per_text, a[0]))
    return Interval(iv.value, iv.low, iv.high, level, "paired " + METHOD, iv.n, iv.note)


def proxy_recovered_interval(per_text: pd.DataFrame, key: Key, *, level: float = LEVEL, n_boot: int = N_BOOT,
                             seed: int = 0) -> Interval:
    """The patch's share of the reward proxy's gap, (patched - receiver) / (donor - receiver), over texts."""
    donor = "into_tuned" if key[0] == "into_base" else "into_base"
    clean, other, patch = _receiver_rows(per_text, key[0]), _receiver_rows(per_text, donor), _patch_rows(per_text, key)
    iv = ratio_of_sums_interval(patch["proxy_sum"] - clean["proxy_sum"], other["proxy_sum"] - clean["proxy_sum"],
                                level=level, n_boot=n_boot, seed=seed, n=_n(per_text, key[0]))
    return _with_method(iv)


def fraction_intervals(per_text: pd.DataFrame, keys: Sequence[Key] | None = None, *, level: float = LEVEL,
                       n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """``fraction_low`` / ``fraction_high`` (and the reward proxy's ``proxy_recovered_low`` / ``_high``) for many
    patches at once, one shared resampling matrix; columns direction, layer, component and the bounds."""
    patched = per_text[per_text["patch"] >= 0]
    if keys is None:
        keys = list(dict.fromkeys(map(tuple, patched[["direction", "layer", "component"]].itertuples(index=False))))
    texts = sorted(per_text["text"].unique())
    weights = bootstrap_weights(len(texts), n_boot=n_boot, seed=seed)
    rows = []
    for direction, layer, component in keys:
        key = (direction, int(layer), component)
        donor = "into_tuned" if direction == "into_base" else "into_base"
        col = _kl_column(direction)
        clean, other, patch = (_receiver_rows(per_text, direction), _receiver_rows(per_text, donor),
                               _patch_rows(per_text, key))
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = 1.0 - (weights @ patch[col].to_numpy()) / (weights @ clean[col].to_numpy())
            gap = other["proxy_sum"].to_numpy() - clean["proxy_sum"].to_numpy()
            proxy = (weights @ (patch["proxy_sum"].to_numpy() - clean["proxy_sum"].to_numpy())) / (weights @ gap)
        (f_low, f_high), (p_low, p_high) = percentile_bounds(frac, level), percentile_bounds(proxy, level)
        rows.append({"direction": direction, "layer": int(layer), "component": component, "fraction_low": f_low,
                     "fraction_high": f_high, "proxy_recovered_low": p_low, "proxy_recovered_high": p_high})
    return pd.DataFrame(rows)


def first_layer_reaching(per_text: pd.DataFrame, level_recovered: float, *, direction: str = "into_base",
                         component: str = "hook_resid_post", level: float = LEVEL, n_boot: int = N_BOOT,
                         seed: int = 0) -> Interval | None:
    """The first layer at which patching ``component`` recovers at least ``level_recovered`` of the KL, with a
    percentile interval of that layer over resampled texts (None when no layer reaches it on all texts).

    The interval is of a layer index (so its ends are layers); resamples in which no layer reaches the level
    count as one layer past the last."""
    rows = per_text[(per_text["patch"] >= 0) & (per_text["direction"] == direction)
                    & (per_text["component"] == component)]
    layers = sorted(int(x) for x in rows["layer"].unique())
    if not layers:
        return None
    col = _kl_column(direction)
    clean = _receiver_rows(per_text, direction)[col].to_numpy()
    kl = np.stack([_patch_rows(per_text, (direction, layer, component))[col].to_numpy() for layer in layers], axis=1)

    def first(frac: np.ndarray) -> np.ndarray:
        hit = frac >= level_recovered
        return np.where(hit.any(axis=-1), np.asarray(layers)[hit.argmax(axis=-1)], layers[-1] + 1)

    value = first(1.0 - kl.sum(axis=0) / clean.sum())
    if value > layers[-1]:
        return None
    weights = bootstrap_weights(len(clean), n_boot=n_boot, seed=seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = first(1.0 - (weights @ kl) / (weights @ clean)[:, None])
    low, high = percentile_bounds(draws.astype(float), level)
    n = {"texts": int(len(clean)), "positions": int(_receiver_rows(per_text, direction)["n_tokens"].sum())}
    return Interval(float(value), low, high, level, "percentile bootstrap over texts (layer index)", n)


def _with_method(iv: Interval) -> Interval:
    return Interval(iv.value, iv.low, iv.high, iv.level, METHOD, iv.n, iv.note)
