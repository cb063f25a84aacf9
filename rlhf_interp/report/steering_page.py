"""The steering sweep page's claims: the equal-KL layer comparison (its headline) and the equal-coefficient grid's.

Why separate from the analysis script: the script measures and lays out the page; what the page may claim, with
which interval, n and verdict, is statistics over its CSVs, kept here beside the other pages' claims.

Equal-KL tables (`rlhf_interp.frontier.layer_round.budget_tables`): ``levels`` (one row per budget and layer: reward,
its paired gain over unsteered, fluency and its paired change, 95% t intervals over report prompts, ``chosen``: the
layer picked on the selection prompts) and ``comparisons`` (the chosen layer minus every other layer, the last layer
minus the first, the per-prompt slope of reward on layer).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rlhf_interp.core import stats
from rlhf_interp.core.stats import Interval
from rlhf_interp.report.claims import Claim


def _tag(budget: float) -> str:
    return f"{budget:g}".replace(".", "_")


def _iv(value: float, low: float, high: float, n: dict) -> Interval:
    return Interval(float(value), float(low), float(high), n=n)


def equal_kl_claims(levels: pd.DataFrame, comparisons: pd.DataFrame, n: dict, *, selection_prompts: int,
                    headline_budget: float) -> list[Claim]:
    """Per budget: the chosen layer's reward (with its gain over unsteered and its fluency beside it), its paired
    difference from every other layer, and later-vs-earlier (slope over all layers, last minus first). Only the
    ``headline_budget``'s chosen-layer, slope and closest-rival claims are headline claims."""
    out: list[Claim] = []
    for budget, lv in levels.groupby("budget", sort=True):
        head = bool(np.isclose(budget, headline_budget))
        best = lv[lv["chosen"].astype(bool)].iloc[0]
        comps = comparisons[np.isclose(comparisons["budget"], budget)]
        kl = lv.set_index("layer")["kl_report"]

        def pair(a, b) -> dict:
            return {"a": int(a), "b": int(b), "kla": f"{kl[int(a)]:.2f}", "klb": f"{kl[int(b)]:.2f}"}

        params = {"budget": f"{budget:g}", "nats": "nat" if budget == 1 else "nats", "layer": int(best["layer"])}
        out.append(Claim.estimate(
            f"equal_kl_chosen_layer_at_{_tag(budget)}_nats",
            "At {budget} {nats} of KL per sequence, the layer chosen among {k} on {sel} selection prompts is layer "
            "{layer} ({kl} nats on the report prompts, {how}): {value} {ci} periods per continuation ({gain} "
            "[{gain_low}, {gain_high}] against unsteered); fluency beside it: the base model's NLL of its "
            "continuations moves {dflu} [{dflu_low}, {dflu_high}] nats per token.",
            _iv(best.reward_mean, best.reward_low, best.reward_high, n),
            params={**params, "k": len(lv), "sel": selection_prompts, "gain": float(best.gain_mean),
                    "kl": f"{best.kl_report:.2f}", "how": str(best.how),
                    "gain_low": float(best.gain_low), "gain_high": float(best.gain_high),
                    "dflu": f"{best.fluency_change:+.2f}", "dflu_low": f"{best.fluency_change_low:.2f}",
                    "dflu_high": f"{best.fluency_change_high:.2f}"}, headline=head))
        out.append(Claim.compare(
            f"equal_kl_chosen_layer_gain_at_{_tag(budget)}_nats",
            "Layer {layer} at {budget} {nats} against unsteered (periods per continuation, paired over prompts): "
            "{value} {ci}; {verdict}.", _iv(best.gain_mean, best.gain_low, best.gain_high, n),
            f"layer {int(best['layer'])}", "unsteered", params=params, headline=False))
        out.append(Claim.compare(
            f"equal_kl_chosen_layer_fluency_at_{_tag(budget)}_nats",
            "Fluency of layer {layer} at {budget} {nats} against unsteered (the base model's NLL of the "
            "continuations, nats per token, paired over prompts): {value} {ci}; {verdict}.",
            _iv(best.fluency_change, best.fluency_change_low, best.fluency_change_high, n),
            f"layer {int(best['layer'])}", "unsteered", params=params, headline=False))
        slope = comps[comps["comparison"] == "slope per 10 layers"]
        if len(slope):
            c = slope.iloc[0]
            out.append(Claim.compare(
                f"equal_kl_slope_at_{_tag(budget)}_nats",
                "Is a later layer cheaper? At {budget} {nats}, reward per {per} layers (per-prompt least-squares "
                "slope over the {k} layers, {first} to {last}): {value} {ci} periods; {verdict}.",
                _iv(c.difference, c.low, c.high, n), "later layers", "earlier layers",
                params={**params, "per": 10, "k": len(lv), "first": int(c.b), "last": int(c.a)}, headline=head))
        ends = comps[comps["comparison"] == "last vs first"]
        if len(ends):
            c = ends.iloc[0]
            out.append(Claim.compare(
                f"equal_kl_last_vs_first_at_{_tag(budget)}_nats",
                "At {budget} {nats} ({kla} and {klb} nats on the report prompts), layer {a} minus layer {b}: {value} "
                "{ci} periods per continuation, paired over "
                "prompts; {verdict}.", _iv(c.difference, c.low, c.high, n), f"layer {int(c.a)}", f"layer {int(c.b)}",
                params={**params, **pair(c.a, c.b)}, headline=False))
        rivals = comps[comps["comparison"] == "best vs layer"].sort_values("difference")
        for i, c in enumerate(rivals.itertuples()):
            template = ("Layer {a} against the strongest other layer on the report prompts, layer {b}, at {budget} "
                        "{nats} ({kla} and {klb} nats): " if i == 0 else
                        "At {budget} {nats} ({kla} and {klb} nats on the report prompts), chosen layer {a} minus "
                        "layer {b}: ")
            out.append(Claim.compare(
                f"equal_kl_layer_{int(c.a)}_vs_{int(c.b)}_at_{_tag(budget)}_nats",
                template + "{value} {ci} periods, paired over prompts; {verdict}.",
                _iv(c.difference, c.low, c.high, n), f"layer {int(c.a)}", f"layer {int(c.b)}",
                params={**params, **pair(c.a, c.b)}, headline=head and i == 0))
    return out


def cost_fact(config: dict, n_points: int) -> Claim:
    """The round's CPU time and what it measured (a count: no sampling error)."""
    return Claim.fact(
        "equal_kl_cpu_time", "The equal-KL round took {minutes} minutes of one CPU core ({points} points on the report "
        "prompts, bisection on the selection prompts).",
        params={"minutes": f"{config['cpu_seconds'] / 60:.0f}", "points": n_points},
        n={"prompts": int(config["report_prompts"]), "samples_per_prompt": int(config["samples"])}, headline=False)


def sweep_claims(table: pd.DataFrame, seqs: pd.DataFrame, baseline: pd.Series, seed: int = 0) -> list[Claim]:
    """The equal-coefficient grid's claims (none in the headline): how KL scales with the coefficient, the
    early-vs-late KL at one coefficient (paired over prompts), and the setting with the most periods chosen on half
    the prompts and reported on the other half."""
    from rlhf_interp.report.claims import Claim

    layers = sorted(table.layer.unique().tolist())
    early, late = min(layers), max(layers)
    n_prompts = int(seqs.prompt_idx.nunique())
    n = {"prompts": n_prompts, "samples_per_prompt": 1, "seeds": 1}
    out = []
    fits = []
    for layer, g in table[(table.coef > 0) & (table.kl_exact_mean > 0)].groupby("layer"):
        if len(g) >= 2:
            x, y = np.log(g.coef.to_numpy()), np.log(g.kl_exact_mean.to_numpy())
            slope, icpt = np.polyfit(x, y, 1)
            fits.append((slope, stats.r_squared(y, icpt + slope * x)))
    if len(fits) >= 2:
        iv = stats.mean_interval([f[0] for f in fits], n={"layers": len(fits), "prompts": n_prompts})
        out.append(Claim.estimate(
            "kl_scaling", "A contrastive period vector's KL per sequence grows like coef^k with k = {value} {ci} "
            "(log-log slope per layer, interval over the {layers} layers; every fit R² ≥ {r2}).", iv,
            params={"layers": len(fits), "r2": f"{min(f[1] for f in fits):.2f}"}, headline=False))
    coef = 1.0 if 1.0 in set(table.coef) else sorted(c for c in table.coef.unique() if c > 0)[0]
    a = seqs[(seqs.layer == late) & (seqs.coef == coef)].set_index("prompt_idx").kl_exact
    b = seqs[(seqs.layer == early) & (seqs.coef == coef)].set_index("prompt_idx").kl_exact.reindex(a.index)
    diff = stats.paired_difference(a.to_numpy(), b.to_numpy(), n=n)
    out.append(Claim.compare(
        "later_layer_kl", "At coefficient {coef} (each layer's own period-vs-comma difference) layer {late} minus "
        "layer {early} in KL per sequence: {value} {ci} nats, paired over prompts; {verdict}. Equal coefficients are "
        "not equal pushes, so this does not say which layer is cheaper per unit of reward.", diff,
        f"layer {late}", f"layer {early}", params={"coef": f"{coef:g}", "late": late, "early": early},
        headline=False))
    steered = seqs[seqs.coef > 0].assign(setting=lambda d: d.layer.astype(str) + "/" + d.coef.map("{:g}".format))
    sel = stats.select_on_holdout(steered, unit="prompt_idx", candidate="setting", value="reward", seed=seed)
    layer, c = sel.chosen.split("/")
    chosen = table[(table.layer == int(layer)) & (table.coef == float(c))].iloc[0]
    rep = list(sel.report_units)
    on = steered[(steered.setting == sel.chosen) & steered.prompt_idx.isin(rep)].set_index("prompt_idx").reward
    off = seqs[(seqs.coef == 0) & seqs.prompt_idx.isin(rep)].drop_duplicates("prompt_idx").set_index(
        "prompt_idx").reward.reindex(on.index)
    k = steered.setting.nunique()
    rep_n = {"prompts": len(rep), "samples_per_prompt": 1, "seeds": 1}
    out.append(Claim.estimate(
        "most_periods_held_out", "In the equal-coefficient grid, the setting with the most periods, chosen among {k} "
        "on {sel} prompts: layer {layer}, coefficient {coef}; on the other {rep} prompts it gives {value} {ci} periods "
        "per continuation at {kl} nats per sequence; fluency beside it: entropy {ent} nats per token and `distinct-2` "
        "{d2} (unsteered {ent0} and {d20}).", sel.held_out, n=rep_n,
        params={"k": k, "sel": len(sel.selection_units), "rep": len(rep), "layer": int(layer), "coef": c,
                "kl": f"{chosen.kl_exact_mean:.1f}", "ent": f"{chosen.entropy_mean:.2f}",
                "ent0": f"{baseline.entropy_mean:.2f}", "d2": f"{chosen.distinct_2:.2f}",
                "d20": f"{baseline.distinct_2:.2f}"}, headline=False))
    diff = stats.paired_difference(on.to_numpy(), off.to_numpy(), n=rep_n)
    out.append(Claim.compare(
        "most_periods_vs_unsteered", "Against unsteered on those held-out prompts: {value} {ci} periods; {verdict}.",
        diff, "steered", "unsteered", headline=False))
    out.append(Claim.fact(
        "in_sample_best", "Chosen and reported on all prompts, the best setting would read {best} periods: the "
        "maximum of {k} noisy settings, not an estimate.",
        params={"best": f"{sel.in_sample_value:.2f}", "k": k}, n={"prompts": n_prompts, "settings": k},
        headline=False))
    return out


__all__ = ["cost_fact", "equal_kl_claims", "sweep_claims"]


# ----------------------------------------------------------------------------------------------------------------
# the equal-KL section (from the CSVs alone)


def equal_kl_parts(report_dir, config: dict) -> dict | None:
    """The round's tables (read) and the at-budget tables and claims (computed), or None before the round ran."""
    from rlhf_interp.frontier.layer_round import budget_tables
    from rlhf_interp.report.page import read_table

    ekl = config.get("equal_kl")
    if ekl is None or not (report_dir / "equal_kl_points.csv").exists():
        return None
    per = read_table(report_dir, "equal_kl_per_prompt")
    points = read_table(report_dir, "equal_kl_points")
    choices = read_table(report_dir, "equal_kl_choices")
    examples = read_table(report_dir, "equal_kl_examples", keep_default_na=False)
    levels, comps = budget_tables(per, points, choices, ekl["budgets"], int(ekl["samples"]))
    n = {"prompts": int(ekl["report_prompts"]), "samples_per_prompt": int(ekl["samples"]), "seeds": 1}
    claims = equal_kl_claims(levels, comps, n, selection_prompts=int(ekl["selection_prompts"]),
                             headline_budget=min(ekl["budgets"])) + [cost_fact(ekl, len(points))]
    return {"per_prompt": per, "points": points, "choices": choices, "examples": examples, "levels": levels,
            "comparisons": comps, "claims": claims, "n": n}


def equal_kl_panels(levels: pd.DataFrame, unsteered: float):
    """Periods and the fluency change against layer, one line per budget, bands = 95% intervals over prompts."""
    from rlhf_interp.report.panels import Line, Panel
    from rlhf_interp.report.style import cycle

    reward, fluency = [], []
    for i, (budget, g) in enumerate(levels.groupby("budget", sort=True)):
        st, g = cycle(i), g.sort_values("layer")
        x, name = g["layer"].tolist(), f"{budget:g} nats"
        reward.append(Line(name, x, g["reward_mean"].tolist(), st["color"], st["marker"], st["symbol"],
                           band=(g["reward_low"].tolist(), g["reward_high"].tolist())))
        fluency.append(Line(name, x, g["fluency_change"].tolist(), st["color"], st["marker"], st["symbol"],
                            band=(g["fluency_change_low"].tolist(), g["fluency_change_high"].tolist())))
    return [Panel("periods at equal KL", "steered layer", "periods per continuation", reward,
                  hlines=[(unsteered, "unsteered")]),
            Panel("fluency cost at equal KL", "steered layer", "base model's NLL of the continuation, change "
                  "(nats/token)", fluency, hlines=[(0.0, "unsteered")])]


def equal_kl_section(report, parts: dict, ekl: dict) -> None:
    """The page's headline section: design, answer (the claims' own sentences), sizing and cost, figure, tables."""
    from rlhf_interp.report.panels import to_matplotlib, to_plotly

    levels, comps, points = parts["levels"], parts["comparisons"], parts["points"]
    layers = ", ".join(str(x) for x in ekl["layers"])
    budgets = " and ".join(f"{b:g}" for b in ekl["budgets"])
    head = f"_at_{_tag(min(ekl['budgets']))}_nats"  # every comparison at the headline budget, the levels at all
    said = " ".join(c.sentence() for c in parts["claims"] if c.id.startswith("equal_kl_") and c.kind != "fact"
                    and "_fluency_" not in c.id and "_gain_" not in c.id and ("_vs_" not in c.id or
                                                                              c.id.endswith(head)))
    measured = points[points["key"] != "base"]["cpu_seconds"]
    paired = comps[comps["comparison"] == "best vs layer"]
    half = ((paired["high"] - paired["low"]) / 2) if len(paired) else pd.Series([np.nan])
    how = levels.groupby("how").size().to_dict()
    base_reward = float(parts["per_prompt"].query("key == 'base'")["reward"].mean())
    bisection = ekl["cpu_seconds"] - points["cpu_seconds"].sum()
    report.section("At equal KL: which layer buys the most periods, and is a later layer cheaper?", f"""
**Design.** The period vector below (one direction per layer) at layers {layers}. Per layer, the coefficient is
bisected on {ekl['selection_prompts']} selection prompts (one sample each) until the KL per sequence is within 15% of
each budget ({budgets} nats); each chosen coefficient is then sampled on {ekl['report_prompts']} other report prompts
x {ekl['samples']} samples (temperature 1, seed {ekl['seed']}: the same prompts and random numbers for every layer and
for unsteered, so layers are compared prompt by prompt — the frontier round's splits). On the report prompts a
point's KL lands near, not at, the budget, so each layer's per-prompt values are interpolated between its two points
(unsteered at 0 nats, then its points in order of coefficient) whose mean report KL brackets the budget: every layer
is read at the same KL ({how.get('interpolated', 0)} layer-budget cells interpolated, {how.get('measured', 0)} taken
as measured where nothing brackets the budget). The layer called best is the one with the most periods on the
selection prompts. Fluency beside every layer: the base model's NLL of the continuation (nats per token; higher =
less like the base model's own text), the sampled entropy and distinct-2 (table).

**Answer.** {said}

**Sizing and cost.** One point on {ekl['report_prompts']} prompts x {ekl['samples']} samples took
{measured.median():.0f} s of CPU (median of {len(measured)}; capability texts not scored), the bisection
~{bisection / 60:.0f} min for all layers; the whole round {ekl['cpu_seconds'] / 60:.0f} min of one core. The design
follows the frontier round's sizing (reward sd per sample 0.6-1.0, mostly within a prompt:
{ekl['report_prompts']} x {ekl['samples']} puts a paired difference's 95% half-width near 0.15 periods); measured
half-widths of the paired layer differences here:
{half.min():.2f}-{half.max():.2f} periods.
""")
    panels = equal_kl_panels(levels, base_reward)
    report.figure("equal_kl", to_matplotlib(panels, cols=2, panel_size=(5.2, 4.0)), chart=to_plotly(panels, cols=2),
                  chart_height=440, title="Every layer at the same KL", caption=(
        f"Left: periods per continuation at each budget, by steered layer (dashed: unsteered, {base_reward:.2f}). "
        "Right: change in the base model's NLL of the continuations against unsteered, paired per prompt. Bands: 95% "
        f"t intervals over the {ekl['report_prompts']} report prompts ({ekl['samples']} samples each averaged)."))
    shown = levels[["budget", "layer", "chosen", "how", "coef", "hit", "selection_kl", "selection_reward",
                    "reward_mean", "reward_low", "reward_high", "gain_mean", "gain_low", "gain_high", "kl_report",
                    "fluency_nll_mean", "fluency_change", "fluency_change_low", "fluency_change_high", "entropy_mean",
                    "entropy_low", "entropy_high", "entropy_unsteered", "distinct_2", "distinct_2_unsteered",
                    "point_kl"]]
    report.table("equal_kl_levels", levels, preview=shown, title="Every layer at each KL budget", caption=(
        "`reward_*`: periods per continuation at the budget, 95% t interval over prompts; `gain_*`: paired change "
        "from unsteered; `fluency_*`: the base model's NLL of the continuation (nats per token), its paired change; "
        "`entropy_*`: sampled entropy per token; `kl_report`: mean KL per sequence on the report prompts after "
        "interpolation; `point_kl`, `distinct_2`: of the measured point chosen for this budget; `selection_*`: on "
        "the selection prompts."))
    report.table("equal_kl_comparisons", comps, title="Paired comparisons between layers", caption=(
        "`difference` = a - b in periods per continuation (slope: periods per 10 layers), 95% t interval over the "
        "report prompts, paired (same prompts and samples)."))
    report.table("equal_kl_choices", parts["choices"], title="Bisection on the selection prompts",
                 caption="Per layer and budget, the coefficient chosen (`hit`: within 15% of the budget).")
    ex = parts["examples"]
    chosen_keys = set(parts["choices"].merge(levels[levels["chosen"]][["budget", "layer"]])["key"])
    shown = ex[ex["key"].isin(chosen_keys | {"base"})]
    report.table("equal_kl_examples", ex, preview=shown.assign(continuation=shown["continuation"].astype(str)
                                                                .str.replace("\n", " ⏎ ", regex=False)),
                 title="Sample continuations at equal KL", caption=(
        "The first sample of three report prompts, unsteered (`base`) and at each budget's chosen layer "
        "(⏎ = newline); the CSV has every point's."))
    report.table("equal_kl_points", points, show=0, title="Every measured point",
                 caption="One row per point on the report prompts (`measure_point`'s columns; `cpu_seconds` per "
                         "point).")
    report.table("equal_kl_per_prompt", parts["per_prompt"], show=0, title="Per-prompt values",
                 caption="One row per point and report prompt (its samples averaged): what every interval rests on.")


__all__ += ["equal_kl_panels", "equal_kl_parts", "equal_kl_section"]
