"""Frontier v3 (issue 32): the new rows measured in ``new_methods.csv`` (prompting, logit amplification, the
algorithms study's checkpoints) joined onto the v2 points, and the capability figure.

Why a module: the page script (``analyses/frontier.py``) only chooses and lays out; joining two measurement
rounds has one rule (the new base row carries the capability and fluency the old base row lacks: same model,
same texts) that belongs in one place.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from rlhf_interp.core import style as S  # noqa: E402

CARRIED = ["capability_nll_mean", "capability_nll_low", "capability_nll_high", "capability_nll_delta_mean",
           "capability_nll_delta_low", "capability_nll_delta_high", "capability_top1_mean", "fluency_nll_mean",
           "fluency_nll_low", "fluency_nll_high"]


def merge_new_methods(points: pd.DataFrame, new: pd.DataFrame | None) -> pd.DataFrame:
    """``points`` plus the non-base rows of ``new``; the new base row's capability and fluency columns are copied
    onto the existing base row (the base model is one model whatever round measured it)."""
    if new is None or new.empty:
        return points
    points = points.copy()
    base_new = new[new["kind"] == "base"]
    if len(base_new):
        for col in CARRIED:
            if col in base_new:
                points.loc[points["kind"] == "base", col] = float(base_new[col].iloc[0])
    rows = new[new["kind"] != "base"]
    points = points[~points["kind"].isin(set(rows["kind"]))]  # a page re-rendered from its own points.csv: no twins
    return pd.concat([points, rows], ignore_index=True, sort=False)


def capability_points(points: pd.DataFrame) -> pd.DataFrame:
    """The points with a capability measurement, one row per distinct model or setting (prompting's lightest
    prefix is listed at two budgets it misses: drawn once)."""
    have = points[points["capability_nll_delta_mean"].notna()].copy()
    return have.drop_duplicates(subset=["method", "setting"]).reset_index(drop=True)


def capability_figure(points: pd.DataFrame):
    """Left: capability NLL change vs the base model (nats per token on the held-out texts; the paired delta with
    its 95% interval) against KL per sequence (95% bars). Right: fluency, the base model's NLL of the continuations,
    against the same KL. Marks are the families' (`rlhf_interp.core.style`)."""
    cap = capability_points(points)
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2))
    for _, r in cap.iterrows():
        fam = S.family(r["method"], r["kind"])
        mark = S.mark(fam)
        x = max(float(r["kl_exact_mean"]), 0.02)  # the base model (KL 0) at the left edge of the log axis
        xerr = [[max(x - float(r["kl_exact_low"]), 0.0) if r["kl_exact_mean"] > 0 else 0.0],
                [max(float(r["kl_exact_high"]) - x, 0.0) if r["kl_exact_mean"] > 0 else 0.0]]
        short = str(r["setting"]).split(" on ")[0]
        label = f"logit amplification ({short})" if r["kind"] == "amplification" else r["method"]
        for ax, col in zip(axes, ("capability_nll_delta", "fluency_nll")):
            y = float(r[f"{col}_mean"])
            yerr = [[y - float(r[f"{col}_low"])], [float(r[f"{col}_high"]) - y]]
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=mark.marker, color=mark.color, ms=8, capsize=3,
                        label=label)
    for ax, ylabel in zip(axes, ("capability NLL change vs base, nats/token", "fluency: base NLL of continuations")):
        ax.set_xscale("log")
        ax.set_xlabel("KL(changed ‖ base) per sequence, nats (log axis; base at left edge)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].axhline(0, color="grey", lw=0.8, ls="--")
    handles, labels = axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    fig.legend(seen.values(), seen.keys(), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    return fig


def capability_section(report, points: pd.DataFrame, meta: dict) -> None:
    """The page's capability section: the figure, then the table of every point with a capability value."""
    cap = capability_points(points)
    if cap.empty:
        return
    notes = " ".join(meta.get("notes", []))
    report.section("What each change costs in capability")
    report.figure("capability", capability_figure(points), caption=(
        f"Left: change in next-token NLL (nats per token) against the base model on {meta.get('capability_texts')} "
        f"held-out texts ({meta.get('capability_tokens')} tokens) from {meta.get('capability_source', 'held-out text')}"
        "; the paired delta over texts with its 95% interval, against KL per sequence (95% bars over prompts). "
        "Right: fluency, the base model's NLL per token of each change's own continuations, 95% interval. Only the "
        "base model, prompting, logit amplification and the algorithms study's checkpoints were measured; the v2 "
        f"points (steering, rank-one, ablation, best-of-n, v2 PPO) have no capability value yet. Notes: {notes}"))
    cols = ["method", "kind", "setting", "budget", "kl_exact_mean", "kl_exact_low", "kl_exact_high",
            "capability_nll_delta_mean", "capability_nll_delta_low", "capability_nll_delta_high",
            "capability_top1_mean", "fluency_nll_mean", "fluency_nll_low", "fluency_nll_high", "n_prompts",
            "samples_per_prompt"]
    report.table("capability", cap[[c for c in cols if c in cap]], caption="Capability and fluency per measured "
                 "point (capability_nll_delta: the change against the base model, nats per token, 95% interval "
                 "paired over texts).")


__all__ = ["CARRIED", "capability_figure", "capability_points", "capability_section", "merge_new_methods"]
