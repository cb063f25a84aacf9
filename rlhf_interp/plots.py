"""Plotting helpers: tidy DataFrames in, matplotlib Figures out (Agg backend, no display needed).

Each function takes the tidy table an analysis returns and draws it; callers hand the Figure to
`Report.figure` or save it. Sections are appended per feature; keep each function self-contained.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


# ----------------------------------------------------------------------------------------------
# Model diffing (rlhf_interp.diff): layer-by-layer curves, heatmaps, token shifts


def plot_diff_by_layer(df: pd.DataFrame, metric: str = "rel_diff_norm", *, hue: str = "hook",
                       title: str | None = None, logy: bool = False) -> Figure:
    """One line per ``hue`` value (a hook point, a step, a model ...) of ``metric`` against ``layer``.

    Rows sharing (``hue``, ``layer``) are averaged, so a trajectory table can be drawn with ``hue="step"``
    after filtering it to one hook.
    """
    _require(df, ["layer", metric, hue])
    fig, ax = plt.subplots(figsize=(7, 4))
    for value, group in df.groupby(hue, sort=pd.api.types.is_numeric_dtype(df[hue])):
        series = group.groupby("layer")[metric].mean()
        ax.plot(series.index, series.values, marker="o", markersize=3, label=str(value))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel(metric)
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
    step x layer relative difference norm, layer x position cosine, layer x component weight change."""
    _require(df, [row, col, value])
    grid = df.pivot_table(index=row, columns=col, values=value, aggfunc="mean")
    fig, ax = plt.subplots(figsize=(min(14, 2 + 0.35 * grid.shape[1]), min(10, 1.5 + 0.3 * grid.shape[0])))
    image = ax.imshow(grid.values, aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_yticks(range(grid.shape[0]), [str(v) for v in grid.index], fontsize=7)
    step = max(1, grid.shape[1] // 40)
    ax.set_xticks(range(0, grid.shape[1], step), [str(v) for v in grid.columns[::step]], fontsize=7,
                  rotation=0 if pd.api.types.is_numeric_dtype(grid.columns) else 90)
    ax.set_xlabel(col)
    ax.set_ylabel(row)
    fig.colorbar(image, ax=ax, label=value)
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
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(shown) + 1.2))
    colors = ["tab:green" if v >= 0 else "tab:red" for v in shown[value]]
    ax.barh(range(len(shown)), shown[value], color=colors)
    ax.set_yticks(range(len(shown)), [repr(t) for t in shown["token"]], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel(value)
    ax.set_title(title or "tokens whose next-token probability moved most")
    fig.tight_layout()
    return fig


def diff_figures(tables: dict[str, pd.DataFrame], *, hook: str = "hook_resid_post") -> dict[str, Figure]:
    """The standard figures of a model diff (``ModelDiff.tables()``), by file name. With a ``step`` column
    (a trajectory) the per-layer curves get one line per step and a step x layer heatmap is added."""
    figs: dict[str, Figure] = {}
    residual = tables.get("residual")
    trajectory = residual is not None and "step" in residual.columns and residual["step"].nunique() > 1
    if residual is not None:
        last = residual[residual["step"] == residual["step"].max()] if "step" in residual.columns else residual
        for metric in ("rel_diff_norm", "cosine_sim", "norm_ratio"):
            figs[f"residual_{metric}"] = plot_diff_by_layer(last, metric, title=f"{metric} by layer and hook point")
        if trajectory:
            one = residual[residual["hook"] == hook]
            figs["trajectory_rel_diff_norm"] = plot_diff_heatmap(
                one, row="step", col="layer", value="rel_diff_norm", title=f"{hook}: rel_diff_norm by step and layer")
            figs["trajectory_rel_diff_norm_curves"] = plot_diff_by_layer(
                one, "rel_diff_norm", hue="step", title=f"{hook}: rel_diff_norm by layer, one line per step")
    by_position = tables.get("residual_by_position")
    if by_position is not None:
        if "step" in by_position.columns:
            by_position = by_position[by_position["step"] == by_position["step"].max()]
        figs["position_rel_diff_norm"] = plot_diff_heatmap(
            by_position[by_position["hook"] == hook], row="layer", col="position", value="rel_diff_norm",
            title=f"{hook}: rel_diff_norm by layer and token position")
    directions = tables.get("directions")
    if directions is not None:
        last = directions[directions["step"] == directions["step"].max()] if "step" in directions.columns else directions
        long = last.melt(id_vars=["layer", "hook"], value_vars=["mean_share", "top_pc_variance_ratio"],
                         var_name="share", value_name="value")
        figs["direction_shares"] = plot_diff_by_layer(long, "value", hue="share",
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
        labelled = ranks.assign(series=ranks["token"].map(repr) + " via " + ranks["model"])
        figs["logit_lens_token_rank"] = plot_diff_by_layer(labelled, "rank", hue="series", logy=True,
                                                           title="rank of watched tokens in each layer's mean "
                                                                 "difference (1 = most promoted)")
    return figs


def _require(df: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"DataFrame lacks column(s) {missing}; it has {list(df.columns)}.")


# ----------------------------------------------------------------------------------------------
# Edits and their KL shift (rlhf_interp.measure sweeps)


def plot_sweep_curves(df: pd.DataFrame, y: str, *, x: str = "coef", hue: str = "layer", err: str | None = None,
                      ax=None, title: str | None = None, logy: bool = False) -> Figure:
    """One line per ``hue`` value of ``y`` against ``x`` (e.g. KL vs steering coefficient per layer),
    with ``err`` (a standard-error column) as error bars when given."""
    _require(df, [x, y, hue] + ([err] if err else []))
    fig = ax.figure if ax is not None else plt.figure(figsize=(6, 4))
    ax = ax if ax is not None else fig.add_subplot(111)
    cmap = plt.get_cmap("viridis")
    values = sorted(df[hue].unique(), key=lambda v: (str(type(v)), v))
    for i, value in enumerate(values):
        group = df[df[hue] == value].sort_values(x)
        color = cmap(i / max(1, len(values) - 1))
        yerr = group[err].fillna(0).to_numpy() if err else None
        ax.errorbar(group[x], group[y], yerr=yerr, marker="o", markersize=3, capsize=2, color=color, label=str(value))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if logy:
        ax.set_yscale("symlog", linthresh=1e-2)
    ax.set_title(title or f"{y} vs {x}")
    ax.legend(title=hue, fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_steering_sweep(df: pd.DataFrame, *, reward_label: str = "reward", hue: str = "layer",
                        kl: str = "kl_exact") -> Figure:
    """Three panels from a steering sweep: KL per sequence vs coefficient, reward vs coefficient (one
    line per layer), and reward against KL (the price of each setting)."""
    _require(df, ["coef", hue, f"{kl}_mean", "reward_mean"])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    err_kl = f"{kl}_stderr" if f"{kl}_stderr" in df else None
    err_r = "reward_stderr" if "reward_stderr" in df else None
    plot_sweep_curves(df, f"{kl}_mean", hue=hue, err=err_kl, ax=axes[0],
                      title="KL(edited || unedited) per sequence (nats)")
    plot_sweep_curves(df, "reward_mean", hue=hue, err=err_r, ax=axes[1], title=f"{reward_label} per sequence")
    cmap = plt.get_cmap("viridis")
    values = sorted(df[hue].unique())
    for i, value in enumerate(values):
        group = df[df[hue] == value].sort_values("coef")
        axes[2].plot(group[f"{kl}_mean"], group["reward_mean"], marker="o", markersize=3,
                     color=cmap(i / max(1, len(values) - 1)), label=str(value))
    if float(df[f"{kl}_mean"].max()) > 10:
        axes[2].set_xscale("symlog", linthresh=1.0)
    axes[2].set_xlabel(f"{kl}_mean (nats per sequence)")
    axes[2].set_ylabel("reward_mean")
    axes[2].set_title(f"{reward_label} bought per nat of KL")
    axes[2].legend(title=hue, fontsize=8)
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_ablation_sweep(df: pd.DataFrame, *, target: str = "target", kl: str = "kl_exact") -> Figure:
    """Bars per ablation target: KL per sequence (with standard errors) and mean reward."""
    _require(df, [target, f"{kl}_mean", "reward_mean"])
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.35 * len(df) + 2), 6), sharex=True)
    labels = df[target].astype(str).tolist()
    err = df[f"{kl}_stderr"].fillna(0) if f"{kl}_stderr" in df else None
    axes[0].bar(labels, df[f"{kl}_mean"], yerr=err, color="#4c72b0", capsize=2)
    axes[0].set_ylabel(f"{kl}_mean (nats/seq)")
    axes[0].set_title("KL(ablated || unablated) per sequence")
    rerr = df["reward_stderr"].fillna(0) if "reward_stderr" in df else None
    axes[1].bar(labels, df["reward_mean"], yerr=rerr, color="#dd8452", capsize=2)
    axes[1].set_ylabel("reward_mean")
    axes[1].tick_params(axis="x", rotation=90, labelsize=7)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Learned reward models (rlhf_interp.reward_model) and reward hacking


def plot_reward_model_training(metrics: pd.DataFrame) -> Figure:
    """Bradley-Terry loss and pair accuracy per epoch, train and validation (``train_reward_model``'s frame)."""
    _require(metrics, ["epoch", "split", "loss", "accuracy"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for split, style in (("train", "o-"), ("val", "s--")):
        group = metrics[metrics.split == split].sort_values("epoch")
        axes[0].plot(group.epoch, group.loss, style, label=split)
        axes[1].plot(group.epoch, group.accuracy, style, label=split)
    axes[0].set_ylabel("Bradley-Terry loss")
    axes[1].set_ylabel("pairs ranked right")
    axes[1].axhline(0.5, color="grey", lw=0.8, ls=":")
    for ax in axes:
        ax.set_xlabel("epoch (0 = before training)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_learned_vs_true(df: pd.DataFrame, *, true: str = "true_reward", learned: str = "rm_reward",
                         title: str | None = None) -> Figure:
    """Learned reward against the true reward it imitates: jittered points and the mean per true value."""
    _require(df, [true, learned])
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4.2))
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(df))
    ax.scatter(df[true] + jitter, df[learned], s=8, alpha=0.35, color="#4c72b0", label="texts")
    means = df.groupby(true)[learned].agg(["mean", "count"]).reset_index()
    ax.plot(means[true], means["mean"], "o-", color="#c44e52", label="mean per true value")
    ax.set_xlabel(true)
    ax.set_ylabel(learned)
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
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax = axes[0, 0]
    ax.plot(phases.phase, phases[true], "o-", label=f"true ({true})", color="#55a868")
    ax.plot(phases.phase, phases[learned], "s-", label=f"reward model ({learned})", color="#c44e52")
    ax.set_xlabel("PPO phase")
    ax.set_ylabel("mean reward (held-out base-text units)")
    ax.set_title("true vs learned reward of the policy's samples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if corr:
        ax = axes[0, 1]
        ax.plot(phases.phase, phases[corr], "o-", color="#8172b3")
        ax.set_xlabel("PPO phase")
        ax.set_ylabel(f"{corr} (RM vs true, within phase)")
        ax.set_title("does the RM still rank the policy's samples right?")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
