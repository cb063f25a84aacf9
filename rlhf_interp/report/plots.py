"""Static figures: tidy DataFrames in, matplotlib Figures out (Agg backend, no display needed; in a notebook
the kernel's inline backend, and a returned figure is shown once).

Rules every figure here keeps, because a reader trusts what a figure shows: both axes are labelled with
their unit (`label` maps a column name to its axis label), no data point falls outside the axes (limits
are set from the data, log axes never get a negative half), and series are told apart by a qualitative
palette *and* a marker, not by neighbouring shades of one colour map.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

if not os.environ.get("MPLBACKEND"):  # a Jupyter kernel sets its inline backend here: keep it, figures show inline
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = [
    "save_figure", "LABELS", "label", "series_style", "plot_diff_by_layer", "plot_diff_heatmap", "plot_token_shifts", "diff_figures",
    "plot_sweep_curves", "plot_steering_sweep", "plot_ablation_sweep", "plot_reward_model_training",
    "plot_learned_vs_true", "plot_reward_hacking", "nonneg_symlog",
]


def _subplots(*args, **kwargs):
    """``plt.subplots`` for a figure that is returned, not kept by pyplot: a notebook shows it once (as the
    cell's value, not again when the cell ends), and a loop drawing many does not accumulate them."""
    fig, axes = plt.subplots(*args, **kwargs)
    plt.close(fig)
    return fig, axes


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG atomically and close it (a CLI that plots in a loop must not keep every figure)."""
    from rlhf_interp.core.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


# Axis labels with units, by column name. Columns not listed are shown by name.
LABELS: dict[str, str] = {
    "layer": "layer",
    "position": "token position",
    "step": "PPO step (phase)",
    "phase": "PPO phase",
    "head": "head",
    "coef": "steering coefficient (× the layer's period-vs-comma difference)",
    "rel_diff_norm": "‖tuned − base‖ / ‖base‖ (ratio)",
    "cosine_sim": "cosine(tuned, base)",
    "norm_ratio": "‖tuned‖ / ‖base‖ (ratio)",
    "diff_norm": "‖tuned − base‖",
    "js_divergence": "JS divergence (nats)",
    "prob_diff": "change in mean next-token probability (tuned − base)",
    "rank": "rank in the vocabulary (1 = most promoted)",
    "kl_exact_mean": "KL per sequence (nats)",
    "kl_prompt_mean": "KL per prompt token (nats, teacher-forced)",
    "kl_per_token": "KL per token (nats)",
    "reward_mean": "reward per sequence",
    "push_over_resid": "push size: coef × ‖vector_L‖ / mean ‖resid_post_L‖ (ratio)",
    "mean_share": "share (0-1)",
}


def label(column: str) -> str:
    """The axis label (with unit) for a column name."""
    return LABELS.get(column, column)


_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]


def series_style(i: int) -> dict:
    """Colour + marker for the i-th series (`rlhf_interp.report.style.cycle`: the same as the interactive charts;
    10 colours x 7 markers, so no two of 70 series look alike)."""
    from rlhf_interp.report.style import cycle

    style = cycle(i)
    return {"color": style["color"], "marker": style["marker"]}


def nonneg_symlog(ax, axis: str = "y", linthresh: float = 0.1, top: float | None = None, *, linscale: float = 1.0,
                  ticks: list[float] | None = None) -> None:
    """A symlog axis for non-negative data: linear near 0 (so 0 is drawn), logarithmic above ``linthresh``,
    and no negative half (the axis starts just below 0, so markers at 0 are not cut in half)."""
    from matplotlib.ticker import FixedLocator, ScalarFormatter

    margin = -0.08 * linthresh
    which = ax.yaxis if axis == "y" else ax.xaxis
    if axis == "y":
        ax.set_yscale("symlog", linthresh=linthresh, linscale=linscale)
        ax.set_ylim(bottom=margin, top=top)
    else:
        ax.set_xscale("symlog", linthresh=linthresh, linscale=linscale)
        ax.set_xlim(left=margin, right=top)
    if ticks is not None:
        which.set_major_locator(FixedLocator(ticks))
        which.set_major_formatter(ScalarFormatter())


def _require(df: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"DataFrame lacks column(s) {missing}; it has {list(df.columns)}.")


# ----------------------------------------------------------------------------------------------
# Model diffing (rlhf_interp.diff): layer-by-layer curves, heatmaps, token shifts


def plot_diff_by_layer(df: pd.DataFrame, metric: str = "rel_diff_norm", *, hue: str = "hook",
                       title: str | None = None, logy: bool = False, ylabel: str | None = None) -> Figure:
    """One line per ``hue`` value (a hook point, a step, a model ...) of ``metric`` against ``layer``.

    Rows sharing (``hue``, ``layer``) are averaged, so a trajectory table can be drawn with ``hue="step"``
    after filtering it to one hook.
    """
    _require(df, ["layer", metric, hue])
    fig, ax = _subplots(figsize=(7.5, 4.2))
    for i, (value, group) in enumerate(df.groupby(hue, sort=pd.api.types.is_numeric_dtype(df[hue]))):
        series = group.groupby("layer")[metric].mean()
        ax.plot(series.index, series.values, markersize=3.5, lw=1.4, label=str(value), **series_style(i))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(label("layer"))
    ax.set_ylabel(ylabel or label(metric))
    if logy:
        ax.set_yscale("log")
    ax.set_title(title or f"{metric} by layer")
    ax.legend(title=hue, fontsize=8, ncol=2 if df[hue].nunique() > 6 else 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_diff_heatmap(df: pd.DataFrame, *, row: str, col: str, value: str, title: str | None = None,
                      cmap: str = "viridis") -> Figure:
    """A ``row`` x ``col`` heatmap of ``value`` (mean over duplicate cells), e.g. layer x head JS divergence,
    step x layer relative difference norm, layer x position, layer x component weight change."""
    _require(df, [row, col, value])
    grid = df.pivot_table(index=row, columns=col, values=value, aggfunc="mean")
    fig, ax = _subplots(figsize=(min(14, 3 + 0.35 * grid.shape[1]), min(10, 2 + 0.3 * grid.shape[0])))
    image = ax.imshow(grid.values, aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_yticks(range(grid.shape[0]), [str(v) for v in grid.index], fontsize=7)
    step = max(1, grid.shape[1] // 40)
    ax.set_xticks(range(0, grid.shape[1], step), [str(v) for v in grid.columns[::step]], fontsize=7,
                  rotation=0 if pd.api.types.is_numeric_dtype(grid.columns) else 90)
    ax.set_xlabel(label(col))
    ax.set_ylabel(label(row))
    fig.colorbar(image, ax=ax, label=label(value))
    ax.set_title(title or f"{value}: {row} x {col}")
    fig.tight_layout()
    return fig


def plot_token_shifts(token_shifts: pd.DataFrame, *, value: str = "prob_diff", k: int = 12,
                      title: str | None = None) -> Figure:
    """Horizontal bars: the ``k`` tokens whose ``value`` rose most and the ``k`` that fell most
    (the ``token_shifts`` table of a diff; ``direction``/``rank`` columns)."""
    _require(token_shifts, ["direction", "rank", "token", value])
    if "step" in token_shifts.columns:
        token_shifts = token_shifts[token_shifts["step"] == token_shifts["step"].max()]
    shown = pd.concat([token_shifts[token_shifts["direction"] == "up"].nsmallest(k, "rank"),
                       token_shifts[token_shifts["direction"] == "down"].nsmallest(k, "rank").iloc[::-1]])
    fig, ax = _subplots(figsize=(6.5, 0.25 * len(shown) + 1.4))
    colors = ["tab:green" if v >= 0 else "tab:red" for v in shown[value]]
    ax.barh(range(len(shown)), shown[value], color=colors)
    ax.set_yticks(range(len(shown)), [repr(t) for t in shown["token"]], fontsize=8)
    ax.set_ylabel("token")
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel(label(value))
    ax.set_title(title or "tokens whose next-token probability moved most")
    fig.tight_layout()
    return fig


def diff_figures(tables: dict[str, pd.DataFrame], *, hook: str = "hook_resid_post") -> dict[str, Figure]:
    """The standard figures of a model diff (``ModelDiff.tables()``, or the same tables read from CSV), by file
    name. With a ``step`` column (a trajectory) the per-layer curves get one line per step and a step x layer
    heatmap is added."""
    figs: dict[str, Figure] = {}
    residual = tables.get("residual")
    trajectory = residual is not None and "step" in residual.columns and residual["step"].nunique() > 1
    if residual is not None:
        last = residual[residual["step"] == residual["step"].max()] if "step" in residual.columns else residual
        for metric, what in (("rel_diff_norm", "relative size of the change"), ("cosine_sim", "cosine similarity"),
                             ("norm_ratio", "norm ratio")):
            figs[f"residual_{metric}"] = plot_diff_by_layer(last, metric, title=f"Residual stream: {what}, "
                                                                                f"by layer and hook point")
        if trajectory:
            one = residual[residual["hook"] == hook]
            figs["trajectory_rel_diff_norm"] = plot_diff_heatmap(
                one, row="step", col="layer", value="rel_diff_norm", title=f"{hook}: relative change by step and layer")
            figs["trajectory_rel_diff_norm_curves"] = plot_diff_by_layer(
                one, "rel_diff_norm", hue="step", title=f"{hook}: relative change by layer, one line per step")
    by_position = tables.get("residual_by_position")
    if by_position is not None:
        if "step" in by_position.columns:
            by_position = by_position[by_position["step"] == by_position["step"].max()]
        figs["position_rel_diff_norm"] = plot_diff_heatmap(
            by_position[by_position["hook"] == hook], row="layer", col="position", value="rel_diff_norm",
            title=f"{hook}: relative change by layer and token position")
    directions = tables.get("directions")
    if directions is not None:
        last = (directions[directions["step"] == directions["step"].max()] if "step" in directions.columns
                else directions)
        long = last.melt(id_vars=["layer", "hook"], value_vars=["mean_share", "top_pc_variance_ratio"],
                         var_name="share", value_name="value")
        figs["direction_shares"] = plot_diff_by_layer(long, "value", hue="share", ylabel="share of E‖Δ‖² (0-1)",
                                                      title="difference: share that is a constant shift (mean_share) "
                                                            "and variance share of the top PC")
    attention = tables.get("attention")
    if attention is not None:
        last = attention[attention["step"] == attention["step"].max()] if "step" in attention.columns else attention
        figs["attention_js"] = plot_diff_heatmap(last, row="layer", col="head", value="js_divergence",
                                                 title="attention pattern JS divergence (nats) per head")
    weights = tables.get("weights_summary")
    if weights is not None:
        last = weights[weights["step"] == weights["step"].max()] if "step" in weights.columns else weights
        figs["weights_rel_diff_norm"] = plot_diff_heatmap(last, row="layer", col="component", value="rel_diff_norm",
                                                          title="weights: relative Frobenius change (layer -1: "
                                                                "outside blocks)")
    shifts = tables.get("token_shifts")
    if shifts is not None:
        figs["token_shifts"] = plot_token_shifts(shifts)
    ranks = tables.get("logit_lens_tokens")
    if ranks is not None and not trajectory:
        from rlhf_interp.report.lens_plot import plot_logit_lens_ranks

        figs["logit_lens_token_rank"] = plot_logit_lens_ranks(ranks)
    return figs


# ----------------------------------------------------------------------------------------------
# Edits and their KL shift (rlhf_interp.measure sweeps)


def plot_sweep_curves(df: pd.DataFrame, y: str, *, x: str = "coef", hue: str = "layer", err: str | None = None,
                      ax=None, title: str | None = None, logy: bool = False, xlabel: str | None = None,
                      ylabel: str | None = None) -> Figure:
    """One line per ``hue`` value of ``y`` against ``x`` (e.g. KL vs steering coefficient per layer),
    with ``err`` (a standard-error column) as error bars when given. ``logy``: a non-negative symlog axis."""
    _require(df, [x, y, hue] + ([err] if err else []))
    fig, ax = (ax.figure, ax) if ax is not None else _subplots(figsize=(6.5, 4.2))
    values = sorted(df[hue].unique(), key=lambda v: (str(type(v)), v))
    for i, value in enumerate(values):
        group = df[df[hue] == value].sort_values(x)
        yerr = group[err].fillna(0).to_numpy() if err else None
        ax.errorbar(group[x], group[y], yerr=yerr, markersize=4, capsize=2, lw=1.3, label=str(value),
                    **series_style(i))
    ax.set_xlabel(xlabel or label(x))
    ax.set_ylabel(ylabel or label(y))
    if logy:
        nonneg_symlog(ax, "y", linthresh=0.1, top=float((df[y] + (df[err].fillna(0) if err else 0)).max()) * 1.6)
    ax.set_title(title or f"{y} vs {x}")
    ax.legend(title=hue, fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_steering_sweep(df: pd.DataFrame, *, reward_label: str = "reward", hue: str = "layer",
                        kl: str = "kl_exact") -> Figure:
    """Three panels from a steering sweep: KL per sequence vs coefficient (symlog: linear below 0.1 nats,
    so coefficient 0 at exactly 0 is drawn, no negative half), reward vs coefficient, and reward against KL."""
    _require(df, ["coef", hue, f"{kl}_mean", "reward_mean"])
    fig, axes = _subplots(1, 3, figsize=(16, 4.6))
    err_kl = f"{kl}_stderr" if f"{kl}_stderr" in df else None
    err_r = "reward_stderr" if "reward_stderr" in df else None
    kl_label = "KL(steered ‖ unsteered) per sequence (nats)"
    plot_sweep_curves(df, f"{kl}_mean", hue=hue, err=err_kl, ax=axes[0], logy=True, ylabel=kl_label,
                      title="KL cost by coefficient")
    plot_sweep_curves(df, "reward_mean", hue=hue, err=err_r, ax=axes[1], ylabel=f"{reward_label} per sequence",
                      title=f"{reward_label} by coefficient")
    values = sorted(df[hue].unique())
    for i, value in enumerate(values):
        group = df[df[hue] == value].sort_values("coef")
        axes[2].plot(group[f"{kl}_mean"], group["reward_mean"], markersize=4, lw=1.3, label=str(value),
                     **series_style(i))
    nonneg_symlog(axes[2], "x", linthresh=0.1, top=float(df[f"{kl}_mean"].max()) * 1.6)
    axes[2].set_xlabel(kl_label)
    axes[2].set_ylabel(f"{reward_label} per sequence")
    axes[2].set_title(f"{reward_label} against KL (one line per {hue}, coefficient rising)")
    axes[2].legend(title=hue, fontsize=8)
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_ablation_sweep(df: pd.DataFrame, *, target: str = "target", kl: str = "kl_exact") -> Figure:
    """Bars per ablation target: KL per sequence (with standard errors) and mean reward."""
    _require(df, [target, f"{kl}_mean", "reward_mean"])
    fig, axes = _subplots(2, 1, figsize=(max(6, 0.35 * len(df) + 2), 6), sharex=True)
    labels = df[target].astype(str).tolist()
    err = df[f"{kl}_stderr"].fillna(0) if f"{kl}_stderr" in df else None
    axes[0].bar(labels, df[f"{kl}_mean"], yerr=err, color="#4c72b0", capsize=2)
    axes[0].set_ylabel("KL per sequence (nats)")
    axes[0].set_title("KL(ablated ‖ unablated) per sequence")
    rerr = df["reward_stderr"].fillna(0) if "reward_stderr" in df else None
    axes[1].bar(labels, df["reward_mean"], yerr=rerr, color="#dd8452", capsize=2)
    axes[1].set_ylabel("reward per sequence")
    axes[1].set_xlabel("ablated component")
    axes[1].tick_params(axis="x", rotation=90, labelsize=7)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Learned reward models (rlhf_interp.reward.model) and reward hacking


def plot_reward_model_training(metrics: pd.DataFrame) -> Figure:
    """Bradley-Terry loss and pair accuracy per epoch, train and validation (``train_reward_model``'s frame)."""
    _require(metrics, ["epoch", "split", "loss", "accuracy"])
    fig, axes = _subplots(1, 2, figsize=(10, 3.8))
    for split, style in (("train", "o-"), ("val", "s--")):
        group = metrics[metrics.split == split].sort_values("epoch")
        axes[0].plot(group.epoch, group.loss, style, label=split)
        axes[1].plot(group.epoch, group.accuracy, style, label=split)
    axes[0].set_ylabel("Bradley-Terry loss (nats per pair)")
    axes[1].set_ylabel("share of pairs ranked right")
    axes[1].axhline(0.5, color="grey", lw=0.8, ls=":", label="chance")
    for ax in axes:
        ax.set_xlabel("epoch (0 = before training)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_learned_vs_true(df: pd.DataFrame, *, true: str = "true_reward", learned: str = "rm_reward",
                         title: str | None = None, xlabel: str | None = None, ylabel: str | None = None) -> Figure:
    """Learned reward against the true reward it imitates: jittered points and the mean per true value."""
    _require(df, [true, learned])
    fig, ax = _subplots(figsize=(6.5, 4.2))
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(df))
    ax.scatter(df[true] + jitter, df[learned], s=8, alpha=0.35, color="#4c72b0", label="texts (x jittered ±0.15)")
    means = df.groupby(true)[learned].agg(["mean", "count"]).reset_index()
    ax.plot(means[true], means["mean"], "o-", color="#c44e52", label="mean per true value")
    ax.set_xlabel(xlabel or true)
    ax.set_ylabel(ylabel or learned)
    ax.set_title(title or f"{learned} vs {true}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_reward_hacking(phases: pd.DataFrame, *, true: str = "true_reward_z", learned: str = "rm_reward_z",
                        corr: str | None = "spearman") -> Figure:
    """True vs learned reward of the policy's samples over PPO phases (in the same standardised units),
    and optionally their per-phase rank correlation: where the curves part, the policy exploits the RM."""
    _require(phases, ["phase", true, learned] + ([corr] if corr else []))
    panels = 2 if corr else 1
    fig, axes = _subplots(1, panels, figsize=(6.2 * panels, 4), squeeze=False)
    ax = axes[0, 0]
    ax.plot(phases.phase, phases[true], "o-", label=f"true period count ({true})", color="#55a868")
    ax.plot(phases.phase, phases[learned], "s-", label=f"reward model ({learned})", color="#c44e52")
    ax.set_xlabel("PPO phase")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("mean reward (held-out base-text std units)")
    ax.set_title("true vs learned reward of the policy's samples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if corr:
        ax = axes[0, 1]
        ax.plot(phases.phase, phases[corr], "o-", color="#8172b3")
        ax.set_xlabel("PPO phase")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{corr} rank correlation, RM vs true (within phase)")
        ax.set_ylim(min(0.0, float(phases[corr].min()) - 0.05), 1.0)
        ax.set_title("does the RM still rank the policy's samples right?")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
