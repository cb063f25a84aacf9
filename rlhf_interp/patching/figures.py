"""Figures of causal attribution between two models (tables of `rlhf_interp.patching`): per-layer patching
heatmaps, additive attribution along the residual stream, weight swaps against activation patches, and the
checkpoint x layer trajectory.

Why here: these draw the patching tables' documented columns, so any page with those tables draws them alike;
and a heatmap's colour range comes from its data (`color_range`): a sequential map from 0 when every value is
>= 0 (a -1..1 diverging map left half the scale unused and made every cell look pale), a symmetric diverging map
only when values of both signs occur.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from rlhf_interp.core.style import CYCLE_COLORS


def _subplots(*args, **kwargs):
    fig, axes = plt.subplots(*args, **kwargs)
    plt.close(fig)  # returned, not kept by pyplot
    return fig, axes


def color_range(values) -> dict:
    """``imshow`` keyword arguments (cmap, vmin, vmax) from the data: sequential from 0 (or the minimum) to the
    maximum when no value is negative (or the negatives are within a tenth of the maximum); diverging and symmetric around 0 when both signs occur."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return {"cmap": "viridis", "vmin": 0.0, "vmax": 1.0}
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= -0.1 * max(hi, 0.0):  # none (or only slightly) negative: sequential over the data's own range
        return {"cmap": "viridis", "vmin": min(lo, 0.0), "vmax": max(hi, 1e-9)}
    if hi <= 0:
        return {"cmap": "viridis_r", "vmin": lo, "vmax": 0.0}
    bound = max(abs(lo), abs(hi))
    return {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound}


def figure_patching(act: pd.DataFrame):
    directions = list(act["direction"].unique())
    components = [c for c in ("hook_attn_out", "hook_mlp_out", "hook_resid_mid", "hook_resid_post")
                  if c in set(act["component"])]
    fig, axes = _subplots(len(directions), 1, figsize=(11, 1.2 + 0.55 * len(components) * len(directions) + 0.8),
                             squeeze=False)
    for ax, direction in zip(axes[:, 0], directions):
        sub = act[(act["direction"] == direction) & act["component"].isin(components)]
        grid = sub.pivot_table(index="component", columns="layer", values="fraction_recovered").reindex(components)
        im = ax.imshow(grid.values, aspect="auto", **color_range(grid.values))
        ax.set_yticks(range(len(components)), components)
        ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], fontsize=7)
        ax.set_title(f"{direction}: fraction of the KL recovered by one patch", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.025)
    axes[-1, 0].set_xlabel("layer")
    fig.tight_layout()
    return fig


def figure_attribution(parts: pd.DataFrame):
    directions = list(parts["direction"].unique())
    fig, axes = _subplots(1, len(directions), figsize=(6 * len(directions), 3.6), squeeze=False, sharey=True)
    for ax, direction in zip(axes[0], directions):
        sub = parts[parts["direction"] == direction]
        for offset, (component, color) in enumerate((("embed", "grey"), ("attn", CYCLE_COLORS[0]), ("mlp", CYCLE_COLORS[1]),
                                                     ("block", CYCLE_COLORS[2]), ("unembed", "black"))):
            rows = sub[sub["component"] == component]
            if len(rows):
                ax.bar(rows["layer"] + (0.2 if component == "mlp" else -0.2 if component == "attn" else 0),
                       rows["increment"], width=0.4, color=color, label=component)
        ax.axhline(0, color="k", lw=0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{direction}: additive attribution (sums to 1)", fontsize=10)
        ax.set_xlabel("layer (-1 = embedding, n = ln_final + unembed)")
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("share of the KL recovered")
    fig.tight_layout()
    return fig


def figure_weights(weights: pd.DataFrame, act: pd.DataFrame):
    fig, ax = _subplots(figsize=(9, 3.6))
    w = weights[weights["direction"] == "into_base"]
    for component, style in (("attn", CYCLE_COLORS[0]), ("mlp", CYCLE_COLORS[1]), ("block", CYCLE_COLORS[2])):
        rows = w[w["component"] == component]
        ax.plot(rows["layer"], rows["fraction_recovered"], marker="o", ms=3, color=style, label=f"weights: {component}")
    a = act[act["direction"] == "into_base"]
    for component, style in (("hook_attn_out", CYCLE_COLORS[0]), ("hook_mlp_out", CYCLE_COLORS[1])):
        rows = a[a["component"] == component]
        ax.plot(rows["layer"], rows["fraction_recovered"], ls=":", color=style, label=f"activation: {component}")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of KL(base||tuned) recovered")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def figure_trajectory(parts: pd.DataFrame, traj: pd.DataFrame):
    blocks = parts[parts["component"] == "block"]
    inc = blocks.pivot_table(index="step", columns="layer", values="increment")
    resid = traj[traj["component"] == "hook_resid_post"].pivot_table(index="step", columns="layer",
                                                                      values="fraction_recovered")
    fig, axes = _subplots(1, 2, figsize=(13, 0.9 + 0.45 * len(inc)), squeeze=False)
    for ax, grid, title in ((axes[0, 0], inc, "increment per layer (block)"),
                            (axes[0, 1], resid, "fraction recovered by tuned's hook_resid_post")):
        im = ax.imshow(grid.values, aspect="auto", **color_range(grid.values))
        ax.set_yticks(range(len(grid)), [str(s) for s in grid.index])
        ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], fontsize=7)
        ax.set_xlabel("layer")
        ax.set_ylabel("checkpoint step")
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


__all__ = ["color_range", "figure_attribution", "figure_patching", "figure_trajectory", "figure_weights"]
