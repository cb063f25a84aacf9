"""The frontier figure: reward against KL for every method, drawn from a tidy points table.

Why its own module: the analysis script and the ``rlhf-interp frontier`` command draw the same figure
from the same columns, and the rules that make it honest live in one place: a log KL axis whose limits
are computed from the data (error bars included) so no point is clipped, KL-0 points (the base model,
best-of-1) drawn on the left edge with a label instead of vanishing, error bars on both axes, red rings on
points whose budget search ended outside its tolerance, and the fitted Gao et al. curves.

Columns read: kind ("base", "steering", "rank-one", "ablation", "fine-tuning", "best-of-n"), method,
kl_exact_mean, reward_mean; optional: kl_exact_stderr, reward_stderr, layer, hit, trajectory.
"""

from __future__ import annotations

import os

import matplotlib

if not os.environ.get("MPLBACKEND"):  # a Jupyter kernel sets its inline backend here: keep it, figures show inline
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

KIND_MARKERS = {"best-of-n": "D", "fine-tuning": "*", "ablation": "X"}
LAYER_MARKERS = "osv^<>phH8d"


def is_true(column: pd.Series) -> pd.Series:
    """A boolean column as read back from CSV (True/False; NaN or "" meaning not applicable -> False)."""
    return column.astype(str).str.lower().isin(["true", "1", "1.0"])


def series_label(row: pd.Series) -> str:
    """One legend entry per edit family (method and layer), per PPO run, per other method."""
    if row.get("kind") in ("steering", "rank-one") and pd.notna(row.get("layer")):
        return f"{row['method']}, layer {int(row['layer'])}"
    if row.get("kind") == "fine-tuning" and is_true(pd.Series([row.get("trajectory")])).iloc[0]:
        return f"{row['method']} (trajectory)"
    return str(row["method"])


def frontier_figure(points: pd.DataFrame, fits: pd.DataFrame | None = None, reward_label: str = "reward"):
    """Reward vs KL (log axis), error bars, every point inside the axes, fitted curves (``fits``: rows of
    `fit.fit_gao` plus ``method``, ``offset`` (the reward at KL 0) and optionally ``kl_min``/``kl_max``, the
    fitted range). Colour = method, marker = layer (edit families). The y range is the points'; a fitted
    curve leaving it is clipped."""
    from rlhf_interp.frontier.fit import gao_curve

    points = points.copy()
    for col in ("kl_exact_stderr", "reward_stderr", "layer", "hit", "trajectory"):
        if col not in points:
            points[col] = np.nan
    fig, ax = plt.subplots(figsize=(10.5, 6))
    plt.close(fig)  # returned, not kept by pyplot: a notebook shows it once
    base = points[points["kind"] == "base"]
    shown = points[points["kind"] != "base"].copy()
    if shown.empty and base.empty:
        raise ValueError("frontier_figure needs at least one point.")
    shown["label"] = shown.apply(series_label, axis=1) if len(shown) else []
    kl, kl_se = shown["kl_exact_mean"], shown["kl_exact_stderr"].fillna(0)
    positive = kl > 0
    left = (kl - kl_se).where((kl - kl_se) > 0, kl / 3)[positive]
    lo_x = float(left.min()) / 1.5 if positive.any() else 0.01
    hi_x = float((kl + kl_se)[positive].max()) * 1.5 if positive.any() else 10.0
    floor_x = lo_x * 1.25  # where KL = 0 points are drawn
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(dict.fromkeys(shown["method"]))}
    layer_markers = dict(zip(sorted(shown["layer"].dropna().unique()), LAYER_MARKERS * 4))
    for lab, g in shown.groupby("label", sort=False):
        g = g.sort_values("kl_exact_mean")
        kind = g["kind"].iloc[0]
        marker = KIND_MARKERS.get(kind) or layer_markers.get(g["layer"].iloc[0], "o")
        ax.errorbar(g["kl_exact_mean"].where(g["kl_exact_mean"] > 0, floor_x), g["reward_mean"],
                    xerr=g["kl_exact_stderr"].fillna(0), yerr=g["reward_stderr"].fillna(0),
                    color=colors[g["method"].iloc[0]], marker=marker, ms=12 if kind == "fine-tuning" else 6,
                    lw=0 if kind in ("ablation", "fine-tuning") else 1,  # checkpoints: not joined (KL not monotone)
                    elinewidth=0.8, capsize=2, label=lab,
                    ls="--" if kind == "rank-one" else "-")
        misses = g[g["hit"].notna() & (g["hit"].astype(str) != "") & ~is_true(g["hit"])]
        if len(misses):
            ax.scatter(misses["kl_exact_mean"].clip(lower=floor_x), misses["reward_mean"], s=110, facecolors="none",
                       edgecolors="red", lw=1, zorder=5)
    for _, fit in (fits if fits is not None else pd.DataFrame()).iterrows():
        if np.isfinite(fit["alpha"]) and "analytic" not in str(fit["method"]):
            # drawn over the KL range of the points it was fitted to (x2 either side), not extrapolated further
            start = max(lo_x, float(fit.get("kl_min", lo_x)) / 2) if np.isfinite(fit.get("kl_min", np.nan)) else lo_x
            stop = min(hi_x, float(fit.get("kl_max", hi_x)) * 2) if np.isfinite(fit.get("kl_max", np.nan)) else hi_x
            grid = np.geomspace(start, stop, 200)
            ax.plot(grid, fit["offset"] + gao_curve(fit["form"], fit["alpha"], fit["beta"], grid), ls=":", lw=1.5,
                    color="black" if fit["form"] == "rl" else "grey",
                    label=f"Gao fit, {fit['method']}: alpha {fit['alpha']:.2f}, beta {fit['beta']:.2f}")
    ys = [shown["reward_mean"] - shown["reward_stderr"].fillna(0), shown["reward_mean"] + shown["reward_stderr"].fillna(0)]
    if len(base):
        base_reward = float(base["reward_mean"].iloc[0])
        ax.axhline(base_reward, color="grey", ls=":", lw=0.8)
        ax.plot([floor_x], [base_reward], marker="o", color="black", ms=7, zorder=6)
        ax.annotate("base model (KL 0)", (floor_x, base_reward), xytext=(6, -12), textcoords="offset points",
                    fontsize=8)
        ys.append(pd.Series([base_reward]))
    ys_all = pd.concat(ys).dropna()
    span = float(ys_all.max() - ys_all.min()) or 1.0
    ax.set_ylim(float(ys_all.min()) - 0.06 * span, float(ys_all.max()) + 0.06 * span)
    ax.set_xscale("log")
    ax.set_xlim(lo_x, hi_x)
    ax.set_xlabel("KL(changed || base) per sequence, nats (exact per-token KL summed over its own samples; log axis)")
    ax.set_ylabel(reward_label)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


__all__ = ["frontier_figure", "is_true", "series_label"]
