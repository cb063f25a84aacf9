"""Frontier v3 on the page (issues 31 and 32): the held-out, paired round's answer figure and tables, and the
capability figure (capability change and fluency against KL for every point).

Why a module: the page script (``analyses/frontier.py``) only chooses and lays out; these drawings and the order of
the round's tables are shared by the page and its tests.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from rlhf_interp.core import style as S  # noqa: E402


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


def capability_section(report, points: pd.DataFrame, meta: dict, which: str = "") -> None:
    """The page's capability section: the figure, then the table of every point with a capability value.
    ``which``: the caption's sentence on which points were measured."""
    cap = capability_points(points)
    if cap.empty:
        return
    notes = " ".join(meta.get("notes", []))
    which = which or ("Only the base model, prompting, logit amplification and the algorithms study's checkpoints "
                      "were measured; the v2 points (steering, rank-one, ablation, best-of-n, v2 PPO) have no "
                      "capability value yet.")
    report.section("What each change costs in capability")
    report.figure("capability", capability_figure(points), caption=(
        f"Left: change in next-token NLL (nats per token) against the base model on {meta.get('capability_texts')} "
        f"held-out texts ({meta.get('capability_tokens')} tokens) from {meta.get('capability_source', 'held-out text')}"
        "; the paired delta over texts with its 95% interval, against KL per sequence (95% bars over prompts). "
        "Right: fluency, the base model's NLL per token of each change's own continuations, 95% interval. "
        f"{which} {('Notes: ' + notes) if notes else ''}"))
    cols = ["method", "kind", "setting", "budget", "kl_exact_mean", "kl_exact_low", "kl_exact_high",
            "capability_nll_delta_mean", "capability_nll_delta_low", "capability_nll_delta_high",
            "capability_top1_mean", "fluency_nll_mean", "fluency_nll_low", "fluency_nll_high", "n_prompts",
            "samples_per_prompt"]
    report.table("capability", cap[[c for c in cols if c in cap]], caption="Capability and fluency per measured "
                 "point (capability_nll_delta: the change against the base model, nats per token, 95% interval "
                 "paired over texts).")


def at_budget_figure(at: pd.DataFrame, reward_label: str):
    """Reward at each KL budget per method (95% intervals over prompts), methods side by side at each budget."""
    have = at[at["reward_mean"].notna()]
    methods = list(dict.fromkeys(have["method"]))
    budgets = sorted(have["budget"].unique())
    fig, ax = plt.subplots(figsize=(10, 4.6))
    width = 0.8 / max(len(methods), 1)
    for i, method in enumerate(methods):
        g = have[have["method"] == method].set_index("budget")
        xs = [budgets.index(b) + (i - (len(methods) - 1) / 2) * width for b in g.index]
        mark = S.mark(S.family(method, None))
        ax.errorbar(xs, g["reward_mean"], yerr=[g["reward_mean"] - g["reward_low"], g["reward_high"] - g["reward_mean"]],
                    fmt=mark.marker, color=mark.color, ms=7, capsize=3, label=method)
    ax.set_xticks(range(len(budgets)), [f"{b:g} nat" + ("" if b == 1 else "s") for b in budgets])
    ax.set_xlabel("KL(changed ‖ base) per sequence (budget)")
    ax.set_ylabel(reward_label)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, ncol=3, frameon=False)
    fig.tight_layout()
    return fig


def _extra_note(at: pd.DataFrame) -> str:
    """The caption's sentence on settings sampled again with more seeds (the top two at a budget), if any."""
    if "extra_seeds" not in at or not (at["extra_seeds"].fillna(0) > 0).any():
        return ""
    more = at[at["extra_seeds"].fillna(0) > 0]
    items = "; ".join(f"{r.method} at {r.budget:g} nat{'' if r.budget == 1 else 's'}: {int(r.samples_per_prompt)}"
                      for r in more.itertuples())
    return (f" The top two edits at a budget were sampled again with other sampling seeds (shared by both), so "
            f"their intervals and paired difference rest on more samples per prompt ({items}).")


def heldout_section(report, at: pd.DataFrame, comparisons: pd.DataFrame, points: pd.DataFrame, meta: dict,
                    reward_label: str) -> None:
    """The held-out, paired round: the answer figure, its table, the paired differences, every point, and the
    capability of every point."""
    n = f"{meta['report_prompts']} report prompts x {meta['samples_per_prompt']} samples"
    report.section("The answer: reward at equal KL (held out, paired)")
    report.figure("answer_v3", at_budget_figure(at, reward_label), caption=(
        f"Reward at 1, 2 and 4 nats of KL per sequence, 95% t intervals over the {n} (samples of a prompt averaged "
        f"first), one sampling seed shared by every method. Edits: the family (vector and layer, rank-one layer, "
        f"prefix, amplification factor) and strength chosen on {meta['selection_prompts']} other prompts; PPO: 3 "
        "training seeds, each prompt's reward interpolated linearly in KL between the two checkpoints around the "
        "budget, then averaged over seeds; best-of-n: a pool of 16 base samples per prompt, interpolated between n. "
        "A method without a mark at a budget did not reach it (see the table)." + _extra_note(at)))
    cost = [f"{meta[k] / 60:.0f} CPU-min {what}" for k, what in (
        ("cpu_seconds_points", "for the points (each measured on the report prompts with its capability texts)"),
        ("cpu_seconds_extra_samples", "for the top two's extra samples")) if meta.get(k)]
    if cost:
        report.text("Cost of this round: " + "; ".join(cost) + " (one thread; choosing the strengths on the selection "
                    "prompts is not counted).")
    report.table("v3_at_budget", at, caption="Reward at each budget per method with its 95% interval (n_prompts, "
                 "samples_per_prompt, seeds); kl_report: the chosen setting's KL on the report prompts (on the "
                 "selection prompts it was within 15% of the budget: hit); capability_delta: next-token NLL change on the held-out "
                 "texts, paired over texts; how: where the number comes from.", show=40)
    if len(comparisons):
        report.table("v3_comparisons", comparisons, caption="Paired differences in reward (a - b, periods), per "
                     "budget: the top two, and every method against steering and against PPO; 95% t intervals over "
                     "the prompts both have; samples_per_prompt: the fewer of the two methods' samples per prompt.",
                     show=40)
    report.table("v3_points", points, caption="Every measured point of this round (one row per checkpoint or chosen "
                 "edit setting), with reward, KL, capability and fluency intervals.", show=20)
    capability_section(report, points, {**meta, "notes": []}, which=(
        "Every point of the held-out round is measured: the base model, the chosen edits, every PPO checkpoint of "
        "the 3 seeds and the algorithms study's last checkpoints (3 seeds each)."))


__all__ = ["at_budget_figure", "capability_figure", "capability_points", "capability_section",
           "heldout_section"]
