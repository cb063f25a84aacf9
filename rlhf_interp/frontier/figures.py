"""The frontier page's secondary figures (layer scan, Pareto front of the edit search, freezing study, collateral
KL), in the site's style (`rlhf_interp.core.style`): each method in its family's colour and marker.

Why in the package: they draw the frontier's documented tables (points, layer_scan, search_trials), so any page
showing those tables draws them alike; ``analyses/frontier.py`` keeps only the study's choices and its page.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter
import pandas as pd

from rlhf_interp.core import style as S
from rlhf_interp.frontier.plot import is_true


def _subplots(*args, **kwargs):
    fig, axes = plt.subplots(*args, **kwargs)
    plt.close(fig)  # returned, not kept by pyplot
    return fig, axes


def layer_scan_figure(scan: pd.DataFrame, reward_label: str):
    fig, axes = _subplots(1, 2, figsize=(10, 3.6))
    scan = scan.sort_values("layer")
    hit = scan[is_true(scan["hit"])]
    mark = S.mark(S.family(f"steer: {scan['vector'].iloc[0]}")).mpl() if "vector" in scan else {"marker": "o"}
    axes[0].errorbar(hit["layer"], hit["reward_mean"], yerr=hit["reward_stderr"], capsize=2, **mark)
    axes[0].set_xlabel("layer steered")
    axes[0].set_ylabel(f"{reward_label} at {scan['budget'].iloc[0]:g} nats")
    axes[1].plot(scan["layer"], scan["strength"], **mark)
    axes[1].set_yscale("log")
    axes[1].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.12, not 1.2x10^-1
    axes[1].yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes[1].set_xlabel("layer steered")
    axes[1].set_ylabel("strength that spends the budget\n(push / residual norm)")
    for ax in axes:
        ax.grid(True, alpha=0.2)
    fig.tight_layout()
    return fig


def pareto_figure(trials: pd.DataFrame, reward_label: str):
    fig, ax = _subplots(figsize=(7.5, 4.5))
    positive = trials[trials["kl_mean"] > 0]
    sc = ax.scatter(positive["kl_mean"], positive["reward_mean"], c=positive["layer"], cmap="viridis", s=22,
                    alpha=0.8, label="trial (colour: layer)")
    front = trials[is_true(trials["pareto"]) & (trials["kl_mean"] > 0)].sort_values("kl_mean")
    ax.plot(front["kl_mean"], front["reward_mean"], color="red", marker="o", mfc="none", ms=9, lw=1,
            label="Pareto front")
    for _, r in front.iterrows():
        ax.annotate(f"L{int(r['layer'])} {r['positions']} x{r['coef']:.2g}", (r["kl_mean"], r["reward_mean"]),
                    fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    if len(positive):
        ax.set_xlim(positive["kl_mean"].min() / 2, positive["kl_mean"].max() * 2)
    fig.colorbar(sc, ax=ax, label="layer")
    ax.set_xlabel("KL per sequence (nats, log)")
    ax.set_ylabel(reward_label)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    return fig


def freezing_figure(freezing: pd.DataFrame):
    fig, axes = _subplots(1, 2, figsize=(10, 3.6))
    for lora, g in freezing.groupby(freezing["lora_r"].fillna(0) > 0):
        name = "LoRA" if lora else "full weights"
        mark = S.mark("LoRA" if lora else "frozen-N PPO").mpl()
        g = g.sort_values("freeze_layers")
        axes[0].plot(g["freeze_layers"], g["reward_per_nat"], label=name, **mark)
        axes[1].plot(g["freeze_layers"], g["wall_seconds"] / 60, label=name, **mark)
    axes[0].set_ylabel("reward gain per nat of KL")
    axes[1].set_ylabel("training wall time (min)")
    for ax in axes:
        ax.set_xlabel("first N layers frozen")
        ax.grid(True, alpha=0.2)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def collateral_figure(points: pd.DataFrame):
    fig, ax = _subplots(figsize=(7.5, 4.5))
    pts = points[points["collateral_kl_mean"].notna() & (points["kl_exact_mean"] > 0)]
    groups = list(pts.groupby("method", sort=False))
    marks = S.distinct_marks([m for m, _ in groups], [g["kind"].iloc[0] if "kind" in g else None for _, g in groups])
    for method, g in groups:
        ax.errorbar(g["kl_exact_mean"], g["collateral_kl_mean"], yerr=g["collateral_kl_stderr"], ls="none",
                    label=method, ms=6, capsize=2, **marks[method])
    ax.set_xscale("log")
    top = float((pts["collateral_kl_mean"] + pts["collateral_kl_stderr"].fillna(0)).max()) if len(pts) else 1.0
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylim(0, max(top, 1e-3) * 2)
    if len(pts):
        ax.set_xlim(float(pts["kl_exact_mean"].min()) / 1.5, float(pts["kl_exact_mean"].max()) * 1.5)
    ax.set_xlabel("KL on the target prompts (nats per sequence, log)")
    ax.set_ylabel("collateral KL on unrelated prompts\n(nats per token)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    return fig


__all__ = ["collateral_figure", "freezing_figure", "layer_scan_figure", "pareto_figure"]
