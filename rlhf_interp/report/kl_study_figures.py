"""The KL-direction study's figures, from its CSVs (``trajectory``, ``evals``, ``coverage_final``,
``matched_summary``): reward against KL, a metric over training, coverage histograms, matched bars.

Why here: the page script keeps its story and its claims; the drawing is shared style (`plots.series_style`), one
colour and marker per penalty on every figure. Each function returns a Matplotlib figure and draws nothing for
penalties without rows, so a study with unfinished runs still renders.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rlhf_interp.measure.kl_study import ALL_PENALTIES, PENALTY_LABEL
from rlhf_interp.report.kl_study_claims import with_pilot_defaults
from rlhf_interp.report.plots import plt, series_style  # plots picks the backend before pyplot loads

COLORS = {p: series_style(i) for i, p in enumerate(ALL_PENALTIES)}


def figure_trajectories(trajectory: pd.DataFrame, evals: pd.DataFrame):
    """Reward against exact KL(pi||ref) per token, one panel per task: thin lines per run from the rollouts
    (3-phase rolling means), thick lines the evaluations' mean over seeds (whiskers: min-max over seeds)."""
    tasks = list(dict.fromkeys(trajectory["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.6 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for penalty in ALL_PENALTIES:
            style = COLORS[penalty]
            runs = trajectory[(trajectory["task"] == task) & (trajectory["penalty"] == penalty)]
            for seed, g in runs.groupby("seed"):
                g = g.sort_values("phase")
                ax.plot(g["kl_pi_ref_per_token"].rolling(3, min_periods=1).mean(),
                        g["reward"].rolling(3, min_periods=1).mean(), color=style["color"], lw=0.8, alpha=0.35)
            ev = evals[(evals["task"] == task) & (evals["penalty"] == penalty)]
            if ev.empty:
                continue
            stats = ev.groupby("updates")[["kl_pi_ref_per_token", "reward"]].agg(["mean", "min", "max"])
            x, y = stats["kl_pi_ref_per_token"], stats["reward"]
            ax.errorbar(x["mean"], y["mean"], xerr=[x["mean"] - x["min"], x["max"] - x["mean"]],
                        yerr=[y["mean"] - y["min"], y["max"] - y["mean"]], color=style["color"],
                        marker=style["marker"], lw=2, capsize=2, label=PENALTY_LABEL[penalty])
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlim(left=0)
        ax.set_xlabel("exact KL(π‖ref) per token (nats)")
        ax.set_ylabel("reward per continuation" + (" (−count of X)" if task == "suppress" else " (count of '.')"))
        ax.set_title(f"task: {task}", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_over_training(evals: pd.DataFrame, metric: str, ylabel: str, pct: bool = False,
                         trajectory: pd.DataFrame | None = None):
    """A metric from the evaluations against PPO updates: mean over seeds, min-max band, per task; with
    ``trajectory``, also the same metric of every phase's rollout (mean over seeds, 3-phase rolling mean, thin)."""
    tasks = list(dict.fromkeys(evals["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.6), squeeze=False)
    scale = 100.0 if pct else 1.0
    for ax, task in zip(axes[0], tasks):
        for penalty in ALL_PENALTIES:
            g = evals[(evals["task"] == task) & (evals["penalty"] == penalty)]
            if g.empty:
                continue
            stats = g.groupby("updates")[metric].agg(["mean", "min", "max"]) * scale
            style = COLORS[penalty]
            ax.plot(stats.index, stats["mean"], color=style["color"], marker=style["marker"], label=PENALTY_LABEL[penalty])
            ax.fill_between(stats.index, stats["min"], stats["max"], color=style["color"], alpha=0.15)
            if trajectory is not None:
                t = trajectory[(trajectory["task"] == task) & (trajectory["penalty"] == penalty)]
                per_phase = t.groupby("updates")[metric].mean().rolling(3, min_periods=1).mean() * scale
                ax.plot(per_phase.index, per_phase, color=style["color"], lw=0.8, alpha=0.5)
        ax.set_xlabel("PPO updates (phases)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"task: {task}", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_coverage(coverage: pd.DataFrame):
    """Histogram of delta = log pi(y) - log ref(y) over the reference's samples y, final checkpoint, per task."""
    samples = coverage[coverage["kind"] == "sample"]
    tasks = list(dict.fromkeys(samples["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        g = samples[samples["task"] == task]
        bins = np.linspace(min(g["delta"].min(), -1.0), max(g["delta"].max(), 1.0), 40)
        for penalty in ALL_PENALTIES:
            d = g.loc[g["penalty"] == penalty, "delta"]
            if len(d):
                ax.hist(d, bins=bins, histtype="step", lw=1.6, color=COLORS[penalty]["color"],
                        label=f"{PENALTY_LABEL[penalty]} (median {d.median():.2f})")
        ax.axvline(-math.log(100), color="grey", ls=":", lw=1)
        ax.set_xlabel("log π(y) − log ref(y) of reference samples y (nats per sequence)")
        ax.set_ylabel("reference samples (all seeds)")
        ax.set_title(f"task: {task} (dotted: 100× less likely)", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_matched(matched_summary: pd.DataFrame, match_on: str):
    metrics = [("reward", "reward"), ("x_rate", "rate of X"), ("lost_100x", "share of ref. samples 100× less likely"),
               ("kl_ref_pi_seq_k1", "sequence KL(ref‖π) (nats)"), ("distinct_2", "distinct-2 (token ids)")]
    m = matched_summary[matched_summary["match_on"] == match_on]
    tasks = list(dict.fromkeys(m["task"]))
    fig, axes = plt.subplots(len(tasks), len(metrics), figsize=(3.0 * len(metrics), 2.8 * len(tasks)), squeeze=False)
    for r, task in enumerate(tasks):
        for c, (metric, title) in enumerate(metrics):
            ax = axes[r][c]
            g = m[(m["task"] == task) & (m["metric"] == metric)].set_index("penalty").reindex(ALL_PENALTIES).dropna(
                subset=["mean"])
            xs = np.arange(len(g))
            ax.bar(xs, g["mean"], color=[COLORS[p]["color"] for p in g.index], alpha=0.8)
            ax.errorbar(xs, g["mean"], yerr=[g["mean"] - g["min"], g["max"] - g["mean"]], fmt="none", color="black",
                        capsize=3)
            ax.set_xticks(xs, g.index, fontsize=8)
            ax.set_title(f"{task}: {title}", fontsize=8)
        level = m.loc[m["task"] == task, "level"]
        if len(level):
            what = "KL(π‖ref)/token" if match_on == "kl_pi_ref_per_token" else match_on
            axes[r][0].set_ylabel(f"at {what} = {float(level.iloc[0]):.3g}", fontsize=8)
    fig.tight_layout()
    return fig


def figure_levels(levels: pd.DataFrame, at: str = "end"):
    """Each penalty's X rate, reward and coverage with its 95% interval (``levels.csv``), one panel per metric;
    the base model as a grey band."""
    metrics = [("x_rate", "rate of X (%)", 100.0), ("reward", "reward (−count of X)", 1.0),
               ("lost_10x", "ref. samples 10× less likely (%)", 100.0),
               ("lost_100x", "ref. samples 100× less likely (%)", 100.0)]
    lv = levels[levels["at"] == at]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.2), squeeze=False)
    for ax, (metric, title, scale) in zip(axes[0], metrics):
        g = lv[lv["metric"] == metric].set_index("penalty")
        if "base" in g.index:
            b = g.loc["base"]
            ax.axhspan(scale * b["low"], scale * b["high"], color="grey", alpha=0.2, label="base model")
        g = g.reindex([p for p in ALL_PENALTIES if p in g.index])
        xs = np.arange(len(g))
        for x, (penalty, r) in zip(xs, g.iterrows()):
            style = COLORS[penalty]
            low = scale * r["low"] if np.isfinite(r["low"]) else scale * r["value"]
            high = scale * r["high"] if np.isfinite(r["high"]) else scale * r["value"]
            ax.errorbar([x], [scale * r["value"]], yerr=[[scale * r["value"] - low], [high - scale * r["value"]]],
                        fmt=style["marker"], color=style["color"], capsize=3)
        ax.set_xticks(xs, g.index, fontsize=7, rotation=30)
        ax.set_title(title, fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_pilots(main_levels: pd.DataFrame, pilot_levels: pd.DataFrame, main_coef: float):
    """Share of the reference's samples kept within 10x likelihood at the end of training against the coefficient:
    the main study (3 seeds) at its coefficient, the one-seed pilots at stronger ones; 95% intervals; the 95% mark."""
    main = main_levels[(main_levels["at"] == "end") & (main_levels["metric"] == "kept_10x")].assign(
        kl_coef=main_coef, kl_bank_per_step=1, seq_estimator="k1")
    rows = pd.concat([main, pilot_levels[pilot_levels["metric"] == "kept_10x"]], ignore_index=True)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    rows = with_pilot_defaults(rows)
    rows["kl_bank_per_step"] = rows["kl_bank_per_step"].astype(int)
    rows.loc[rows["penalty"] != "ref_pi_seq", "seq_estimator"] = "k1"  # the estimator names the sequence term's
    for (penalty, per_step, estimator), g in rows[rows["penalty"].isin(["ref_pi_seq", "ref_pi_reward"])].groupby(
            ["penalty", "kl_bank_per_step", "seq_estimator"]):
        g = g.sort_values("kl_coef").drop_duplicates("kl_coef")  # ref_pi_reward runs shared by two pilots: once
        style = COLORS[penalty]
        exact = estimator != "k1"
        label = penalty + (f" ({'exact, ' if exact else ''}{per_step} bank sample{'s' if per_step > 1 else ''} per "
                           "step)" if penalty == "ref_pi_seq" else "")
        shift = 1.16 if exact else 1.08 if per_step != 1 else 1.0
        ax.errorbar(g["kl_coef"] * shift, g["value"] * 100,
                    yerr=[(g["value"] - g["low"]) * 100, (g["high"] - g["value"]) * 100],
                    color="black" if exact else style["color"],
                    marker="D" if exact else "s" if per_step != 1 else style.get("marker", "o"),
                    ls=":" if exact else "--" if per_step != 1 else "-", capsize=3, label=label)
    ax.axhline(95, color="grey", ls=":", lw=1, label="the 95% mark")
    ax.set_ylim(top=100)
    ax.set_xscale("log")
    ax.set_xlabel("kl_coef (log axis)")
    ax.set_ylabel("reference samples kept within 10x (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def pilot_section(report, main_levels: pd.DataFrame, pilot_levels: pd.DataFrame, pilot_comparisons: pd.DataFrame,
                  main_coef: float) -> None:
    """The stronger-coefficient pilots on the page (nothing when none has finished)."""
    if pilot_levels is None or pilot_levels.empty:
        return
    seeds = with_pilot_defaults(pilot_levels).groupby(["kl_coef", "kl_bank_per_step", "seq_estimator"])["seeds"].min()
    seed_words = "; ".join(f"kl_coef {c:g}" + ("" if k == 1 else f" with {int(k)} bank samples per step")
                           + ("" if e == "k1" else f" with the {e} sequence-level estimator")
                           + f": {int(n)} seed{'s' if n > 1 else ''}" for (c, k, e), n in seeds.items())
    report.section("Stronger coefficients (pilots)")
    report.figure("pilots", figure_pilots(main_levels, pilot_levels, main_coef), caption=(
        "Reference samples kept within 10x likelihood at the end of training against the coefficient. At the main "
        f"study's coefficient: 3 seeds (t over seed means). Pilots: {seed_words} (several seeds: t over seed means; "
        "one seed: t over the evaluation prompts, seed-to-seed variation not included). Squares, dashed: the "
        "sequence-level penalty averaging the labelled number of bank samples per prompt in each step. Black "
        "diamonds, dotted: the sequence-level penalty with the exact estimator (the reference's whole next-token "
        "distribution at each of its sampled states; the others use k1, the sampled token only)."))
    report.table("pilot_levels", pilot_levels, title="Pilots: coverage and X's rate at the end, per penalty "
                 "(95% intervals)", show=20)
    if pilot_comparisons is not None and len(pilot_comparisons):
        report.table("pilot_comparisons", pilot_comparisons, title="Pilots: ref_pi_seq − ref_pi_reward in coverage, "
                     "paired by prompt", show=10)
