"""Figures of the iterated-RM study (`analyses/iterated_rm.py`): runs repeated over seeds in two settings (a frozen
and a refreshed reward model), and what appended strings are worth to each RM version. Tidy tables of
`rlhf_interp.ppo.refresh_tables` in, matplotlib figures out."""

from __future__ import annotations

from collections.abc import Sequence

from rlhf_interp.report.plots import series_style  # first: it picks the backend (Agg unless a notebook's)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

SETTINGS = ("frozen", "refreshed")


def plot_setting_curves(phases: pd.DataFrame, panels: list[tuple[str, str]], title: str,
                        settings: Sequence[str] = SETTINGS) -> plt.Figure:
    """One panel per (column, axis label); per setting its mean over seeds (thick) and each seed (thin), by phase."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (column, ylabel) in zip(axes[0], panels):
        for i, setting in enumerate(settings):
            runs = phases[phases.setting == setting]
            if runs.empty:
                continue
            style = series_style(i)
            for _, run in runs.groupby("seed"):
                ax.plot(run.phase, run[column], color=style["color"], lw=0.7, alpha=0.45)
            mean = runs.groupby("phase")[column].mean()
            ax.plot(mean.index, mean.values, color=style["color"], marker=style["marker"], lw=2,
                    label=f"{setting} (mean of {runs.seed.nunique()} seeds)")
        if column in ("gap", "gap_rm0"):
            ax.axhline(0, color="grey", lw=0.8, ls=":")
        if column.startswith("accuracy"):
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("PPO phase")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_probe_bars(probes: pd.DataFrame) -> plt.Figure:
    """Per appended string, the mean change of each RM's score (error bars: 2 standard errors)."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    names = list(dict.fromkeys(probes.rm))
    suffixes = list(dict.fromkeys(probes.suffix))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        rows = probes[probes.rm == name].set_index("suffix").loc[suffixes]
        ax.bar(np.arange(len(suffixes)) + i * width, rows.rm_delta, width, yerr=2 * rows.rm_delta_stderr,
               color=series_style(i)["color"], label=name)
    ax.set_xticks(np.arange(len(suffixes)) + width * (len(names) - 1) / 2, [repr(s) for s in suffixes])
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("string appended to each held-out base-model text")
    ax.set_ylabel("mean change in RM score (normalised RM units)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
