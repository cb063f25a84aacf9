"""Figures of the reward-hacking page (`analyses/reward_hacking.py`): the RM's score per true-count bin of each group
of texts with the equal-count differences, and KL(π‖ref) and entropy per PPO phase — each drawn once as `Panel`s
(static PNG and interactive chart alike)."""

from __future__ import annotations

import pandas as pd

from rlhf_interp.measure.stratified import binned_means, count_bins
from rlhf_interp.report.panels import Line, Panel

SOURCES = {"base": "base model", "policy": "final policy", "late": "late PPO rollouts"}


def by_true_count(groups: dict[str, pd.DataFrame], top: int) -> pd.DataFrame:
    """The RM's mean score per true-count bin of each group of texts (``source``: `SOURCES`' keys)."""
    long = pd.concat([g[["true_reward", "rm_reward"]].assign(source=k) for k, g in groups.items()])
    long["bin"] = count_bins(long.true_reward, top)
    long["source"] = pd.Categorical(long.source, categories=list(groups), ordered=True)
    table = binned_means(long, "rm_reward", "bin", group="source")
    table["source"] = table.source.astype(str)
    table["bin"] = table.bin.astype(str)
    return table


def calibration_panels(table: pd.DataFrame, diffs: pd.DataFrame, top: int, support: int, char: str) -> list[Panel]:
    """The RM's mean score per true-count bin for each group (95% t intervals), and the equal-count differences."""
    colors = {"base": "#4c72b0", "policy": "#c44e52", "late": "#dd8452"}
    x_of = {label: i for i, label in enumerate([*map(str, range(top)), f"{top}+"])}
    dodge = {"base": -0.08, "policy": 0.0, "late": 0.08}  # side by side, so the intervals do not hide each other
    lines = []
    for source, g in table.groupby("source", sort=False):
        g = g[g.n >= 2]
        lines.append(Line(SOURCES[source], [x_of[b] + dodge[source] for b in g.bin], g["mean"].tolist(),
                          colors[source], yerr=((g.high - g.low) / 2).tolist()))
    xlabel = f"true count of '{char}' (bin {top}: {top} or more; RM support up to {support})"
    panels = [Panel("RM score per true count (95% t intervals)", xlabel, "mean RM score (normalised units)", lines)]
    d_lines = []
    for comparison, g in diffs[diffs.used].groupby("comparison", sort=False):
        d_lines.append(Line(f"{SOURCES[comparison]} − base model", [x_of[b] + dodge[comparison] for b in g.bin],
                            g["diff"].tolist(), colors[comparison], yerr=((g.high - g.low) / 2).tolist(),
                            mode="markers", marker="D", symbol="diamond"))
    panels.append(Panel("At equal true count: policy − base (95% Welch t)", xlabel, "RM score difference",
                        d_lines, hlines=[(0.0, "no difference")]))
    return panels


def kl_entropy_panels(phases: pd.DataFrame, kl_target: float) -> list[Panel]:
    kl = Line("KL(π‖ref) per token", phases.phase.tolist(), phases.kl_pi_ref_per_token.tolist(), "#4c72b0")
    ent = Line("entropy per token", phases.phase.tolist(), phases.entropy.tolist(), "#55a868")
    target = [(kl_target, f"controller target {kl_target:g}")] if kl_target == kl_target else []
    return [Panel("Exact KL(π‖ref) per token", "PPO phase", "nats per token", [kl], hlines=target, ylim=(0, None)),
            Panel("Policy entropy per token", "PPO phase", "nats per token", [ent], ylim=(0, None))]
