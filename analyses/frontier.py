"""Editing vs fine-tuning, v2: one equal-KL frontier for every way of changing the model.

    python analyses/frontier.py --base smollm2-135m --trajectory runs/periods \\
        --run runs/periods_lora --run runs/periods_freeze0 --run runs/periods_freeze20
    python analyses/frontier.py --render-only        # redraw reports/edit_vs_finetune/ from its CSVs

Every method is measured the same way, on the same held-out prompts, with the same reward, generation
length and sampling seed: sample continuations from the changed model (or the base model with an edit
on), score them, and sum the exact per-token KL(changed || base) along each sample (nats per
sequence; `rlhf_interp.measure.evaluate_edit`). Standard errors are over prompts.

- **steering** the base model along three vectors (`Steering`): the contrastive direction and the PCA
  direction of pairs of (best, worst) base-model samples under the reward, and the fine-tuning direction
  (mean tuned - base activation of the PPO run's last checkpoint); strength = the added vector's norm as a
  fraction of the layer's mean residual norm;
- **rank-one edit** of one MLP's output matrix (`rlhf_interp.frontier.RankOneEdit`, ROME-style: key = the
  prompts' mean MLP hidden activation, value pushed along the direction that raises the reward's target
  tokens; strength = the size of that push);
- **direction ablation** and **weight orthogonalisation** of the contrastive direction (base model) and
  of the fine-tuning direction (PPO model): all-or-nothing edits, placed at their measured KL;
- **fine-tuning**: every checkpoint of a PPO trajectory, and the last checkpoint of each further run
  (LoRA, first N layers frozen), placed at their measured KL;
- **best-of-n** sampling from the base model (KL measured, and analytic log n - (n-1)/n);
- the **base model** (KL 0).

Equal KL: each edit family's strength is searched until its KL is within 5% of each budget
(`rlhf_interp.frontier.equal_kl`). Gao et al. (2022)'s forms are fitted to best-of-n and to the PPO
trajectory. Collateral: per-token KL on unrelated prompts (code, arithmetic, facts, other languages) and
the tokens whose probability moved most. The KL-budgeted edit search (`rlhf_interp.frontier.edit_search`,
Optuna TPE, two objectives) gives the Pareto front of steering over layer x strength x positions.

Compute is split into resumable parts (``--parts``, ``--resume``): each part's tables are kept in
``--work-dir`` and the report is assembled from them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import pandas as pd

from rlhf_interp.core.stats import FIT_R2_MIN
from rlhf_interp.frontier.parts import (Context, compute, floats, ints, moved_for, run_families,
                                        steering_families, with_collateral)
from rlhf_interp.frontier.tables import tidy_points
from rlhf_interp.report import write_tables

REPORT_DIR = Path("reports/edit_vs_finetune")
PARTS = ("base", "best_of_n", "steering", "layer_scan", "rank_one", "ablation", "finetune", "search")
TITLE = "Editing vs fine-tuning: reward bought per nat of KL, every method on one axis"
SUPERSEDED = ("most_reward_at_", "top_two_at_", "editing_vs_finetuning")  # v2 claims the held-out round re-measured
SAMPLES_NOTE = ("Intervals are 95% t intervals over the 16 held-out prompts (one sample each for edits and PPO "
                "checkpoints; best-of-n from a pool per prompt); differences between methods are unpaired (the "
                "per-prompt rows of the edits were not stored), so conservative. Each edit family's layer is chosen "
                "on the prompts it is reported on, and each PPO run is one training seed: re-measuring with held-out "
                "selection, more prompts and seeds is issue 31.")


# ==============================================================================================
# Compute: the study's parts (the machinery is rlhf_interp.frontier.parts)


def part_base(ctx: Context) -> dict[str, pd.DataFrame]:
    from rlhf_interp.measure import evaluate_edit

    row = evaluate_edit(ctx.base, None, ctx.prompts, ctx.args.reward, **ctx.measure_kwargs)
    return {"points": row.assign(method="base model", kind="base", setting="no change")}


def part_best_of_n(ctx: Context) -> dict[str, pd.DataFrame]:
    from rlhf_interp.frontier import evaluate_best_of_n

    summary, per_prompt, _ = evaluate_best_of_n(ctx.base, ctx.prompts, ctx.args.reward, ctx.args.best_of_n,
                                                pool_size=ctx.args.pool_size, batch_size=ctx.args.sample_batch,
                                                **ctx.measure_kwargs)
    points = summary.rename(columns={"kl_mean": "kl_exact_mean", "kl_stderr": "kl_exact_stderr"}).assign(
        method="best-of-n", kind="best-of-n", setting=[f"n={n}" for n in summary["n"]])
    return {"points": points, "bon_prompts": per_prompt}


def part_steering(ctx: Context) -> dict[str, pd.DataFrame]:
    return run_families(ctx, list(steering_families(ctx, list(ctx.vectors()), ctx.args.layers)), ctx.args.budgets,
                        "steering")


def part_layer_scan(ctx: Context) -> dict[str, pd.DataFrame]:
    from rlhf_interp.edits import resolve_layers

    layers = resolve_layers(ctx.base, ctx.args.scan_layers if ctx.args.scan_layers != ["all"] else "all")
    out = run_families(ctx, list(steering_families(ctx, [ctx.args.scan_vector], layers)), [ctx.args.scan_budget],
                       "layer_scan", collateral=False, warm_start=True)
    return {"layer_scan": out["points"], "evaluations": out["evaluations"]} if out else {}


def part_rank_one(ctx: Context) -> dict[str, pd.DataFrame]:
    from rlhf_interp.frontier import EditFamily, rank_one_edit, target_tokens_for_reward
    from rlhf_interp.reward import get_reward

    targets = target_tokens_for_reward(ctx.base.tokenizer, get_reward(ctx.args.reward))
    ctx.note("rank_one", f"target class: {len(targets)} tokens the reward scores above the empty string, e.g. "
                         f"{[ctx.base.tokenizer.decode([t]) for t in targets[:6]]}")
    norms = ctx.resid_norms()
    families = []
    for layer in ctx.args.rank_one_layers:
        edit = rank_one_edit(ctx.base, layer, ctx.prompts, strength=1.0, target_tokens=targets,
                             covariance_texts=ctx.direction_prompts)
        families.append(EditFamily("rank-one edit", edit.with_strength,
                                   {"kind": "rank-one", "layer": layer, "setting": f"layer {layer}"},
                                   start=ctx.args.steer_start * norms[layer]))
    return run_families(ctx, families, ctx.args.budgets, "rank_one")


def part_ablation(ctx: Context) -> dict[str, pd.DataFrame]:
    """Direction ablation (hooks) and weight orthogonalisation (a new model) of one layer's direction, removed
    everywhere; KL always against the base model."""
    from rlhf_interp.edits import DirectionAblation, orthogonalize_weights
    from rlhf_interp.frontier import collateral_kl
    from rlhf_interp.measure import evaluate_edit

    layer = ctx.args.ablation_layer if ctx.args.ablation_layer >= 0 else int(ctx.base.cfg.n_layers) * 2 // 3
    cases = [("contrastive", ctx.base, "base model")]
    if ctx.tuned() is not None:
        cases.append(("fine-tuning direction", ctx.tuned(), "PPO last checkpoint"))
    else:
        ctx.note("ablation", "no --trajectory run: the fine-tuning direction cannot be ablated from a PPO model")
    rows, moved = [], []
    for name, model, on in cases:
        if name not in ctx.vectors() or layer not in ctx.vectors()[name].layers:
            ctx.note("ablation", f"no usable {name} direction at layer {layer}: its ablation is skipped")
            continue
        direction = ctx.vectors()[name][layer]
        for method in ("direction ablation", "weight orthogonalisation"):
            if method == "direction ablation":
                target, make = model, (lambda: DirectionAblation(direction, "all"))
            else:
                target, make = orthogonalize_weights(model, direction), (lambda: None)
            row = evaluate_edit(target, make(), ctx.prompts, ctx.args.reward, reference=ctx.base,
                                **ctx.measure_kwargs).iloc[0].to_dict()
            row.update(collateral_kl(target, make(), reference=ctx.base, cache=ctx.collateral_cache))
            labels = {"method": method, "kind": "ablation", "vector": name, "layer": layer,
                      "setting": f"{name} (layer {layer}) removed from the {on}"}
            rows.append({**labels, **row})
            moved.append(moved_for(ctx, make(), {"method": method, "setting": labels["setting"],
                                                 "kl_exact_mean": row["kl_exact_mean"]},
                                   model=target, reference=ctx.base))
            del target
    return {"points": pd.DataFrame(rows), "moved_tokens": pd.concat(moved, ignore_index=True)} if rows else {}


def part_finetune(ctx: Context) -> dict[str, pd.DataFrame]:
    """PPO checkpoints at their measured KL: every checkpoint of --trajectory, the last one of each --run.
    Absent run directories are noted (the page says so) and skipped."""
    from rlhf_interp.frontier import checkpoint_points, collateral_kl, read_run, top_moved_tokens

    frames, moved = [], []
    runs = ([(ctx.args.trajectory, "all", True)] if ctx.args.trajectory else []) + \
           [(path, "last", False) for path in ctx.args.run]
    if not runs:
        ctx.note("finetune", "no PPO run directories were given (--trajectory, --run): no fine-tuning points")
    for path, steps, is_trajectory in runs:
        try:
            run = read_run(path)
        except FileNotFoundError as err:
            ctx.note("finetune", f"{err} Skipped." if path.exists() else f"run directory {path} is absent: skipped")
            continue
        last_step = max(run.checkpoints)

        def on_model(tuned, row, last_step=last_step):
            if row["step"] == last_step:
                moved.append(top_moved_tokens(tuned, None, reference=ctx.base, k=ctx.args.top_k,
                                              cache=ctx.collateral_cache)
                             .assign(method=row["method"], setting=f"step {row['step']}",
                                     kl_exact_mean=row["kl_exact_mean"]))
            return collateral_kl(tuned, None, reference=ctx.base, cache=ctx.collateral_cache)

        df = checkpoint_points(ctx.base, run, ctx.prompts, ctx.args.reward, steps=steps, on_model=on_model,
                               **ctx.measure_kwargs)
        frames.append(df.assign(kind="fine-tuning", trajectory=is_trajectory, last=df["step"] == last_step,
                                setting=[f"step {s}" for s in df["step"]]))
    out: dict[str, pd.DataFrame] = {}
    if frames:
        out["points"] = pd.concat(frames, ignore_index=True)
    if moved:
        out["moved_tokens"] = pd.concat(moved, ignore_index=True)
    return out


def part_search(ctx: Context) -> dict[str, pd.DataFrame]:
    from rlhf_interp.edits import resolve_layers
    from rlhf_interp.frontier import edit_search

    vectors = {n: v for n, v in ctx.vectors().items() if n in ("contrastive", "PCA")}
    layers = resolve_layers(ctx.base, ctx.args.search_layers if ctx.args.search_layers != ["all"] else "all")
    result = edit_search(ctx.base, vectors, ctx.prompts, ctx.args.reward, layers=layers,
                         coef_range=tuple(ctx.args.search_coefs), n_trials=ctx.args.search_trials,
                         seed=ctx.args.seed, kl_budget=max(ctx.args.budgets), max_new_tokens=ctx.args.max_new_tokens)
    return {"search_trials": result.trials}


PART_FUNCTIONS: dict[str, Callable[[Context], dict[str, pd.DataFrame]]] = {
    "base": part_base, "best_of_n": part_best_of_n, "steering": part_steering, "layer_scan": part_layer_scan,
    "rank_one": part_rank_one, "ablation": part_ablation, "finetune": part_finetune, "search": part_search,
}


# ==============================================================================================
# Render (CSVs in, page out; no model)


def _kl_range(series) -> tuple[float, float]:
    xs = [x for s in series for x in s.x if x > 0]
    return min(xs) / 1.4, max(xs) * 1.4


def optional_table(report_dir: Path, name: str) -> pd.DataFrame | None:
    path = report_dir / f"{name}.csv"
    return pd.read_csv(path) if path.exists() else None


def render(report_dir: Path):
    """The page, from the CSVs in ``report_dir`` alone: the answer chart first, per-layer detail one click away."""
    from rlhf_interp.frontier import figures as F
    from rlhf_interp.frontier import tables as T
    from rlhf_interp.frontier.plot import (answer_spec, detail_spec, fit_series, frontier_figure,
                                           spec_to_matplotlib, spec_to_plotly)
    from rlhf_interp.report import Report, read_config, read_table
    from rlhf_interp.report.frontier_claims import frontier_claims

    report_dir = Path(report_dir)
    config = read_config(report_dir)
    from rlhf_interp.frontier.v3 import capability_section, heldout_section
    from rlhf_interp.report.frontier_heldout_claims import heldout_claims

    v3 = {n: optional_table(report_dir, f"v3_{n}") for n in ("at_budget", "comparisons", "points")}
    meta = config.get("v3", {})  # the held-out round's settings (written by frontier_v3_points.py)
    points = T.tidy_points(read_table(report_dir, "points"))  # the v2 round; derived columns recomputed
    notes, scan, trials, moved, timings = (optional_table(report_dir, n) for n in
                                           ("notes", "layer_scan", "search_trials", "moved_tokens", "timings"))
    budgets = [float(b) for b in config.get("budgets", sorted(points["budget"].dropna().unique()))]
    reward_label = f"reward ({config.get('reward', 'reward')}) per continuation"
    fits = T.fits_table(points)
    table = T.budget_table(points, budgets, optional_table(report_dir, "bon_prompts"))
    freezing = T.freezing_table(points)
    claims = frontier_claims(points, table, scan, freezing, [b for b in (1.0, 2.0, 4.0) if b in budgets] or budgets[:3],
                             tokens=int(config.get("max_new_tokens", 24)))
    if v3["at_budget"] is not None:  # the held-out round supersedes the v2 round's headline comparisons
        claims = [c for c in claims if not c.id.startswith(SUPERSEDED)]
        claims = heldout_claims(v3["at_budget"], v3["comparisons"], v3["points"], meta.get("budgets", [1, 2, 4]),
                                int(meta.get("samples_per_prompt", 1))) + claims
    report = Report.at(report_dir, TITLE, source=Path(__file__), claims=claims)
    missing = notes[notes["part"].isin(["finetune", "ablation"]) | notes["note"].str.contains("not computed")] \
        if notes is not None and len(notes) else None
    if missing is not None and len(missing):
        report.text("**Missing pieces.** " + " ".join(f"{r.part}: {r.note}." for r in missing.itertuples()))
    if v3["at_budget"] is not None:
        heldout_section(report, v3["at_budget"], v3["comparisons"], v3["points"], meta, reward_label)
    lines = T.family_lines(table, points)
    series, base = answer_spec(lines, points)
    xlabel = "KL(changed ‖ base) per sequence, nats (log axis)"
    title = "Reward at equal KL: each method family's best setting per budget"
    report.section("The v2 round: reward at equal KL (16 prompts, layers chosen on them)")
    report.figure("answer", spec_to_matplotlib(series, base, xlabel=xlabel, ylabel=reward_label, title=title,
                                               budgets=budgets),
                  chart=spec_to_plotly(series, base, xlabel=xlabel, ylabel=reward_label, title=title, budgets=budgets),
                  chart_height=540, caption=(
                      f"Reward against KL per sequence at the budgets {', '.join(f'{b:g}' for b in budgets)} nats. "
                      "Each edit family's line joins its best layer at each budget, **chosen on the same prompts it is "
                      "reported on** (the CSVs hold no per-prompt rows to choose on held-out prompts: optimistic); "
                      "best-of-n is interpolated between its measured n within its measured KL range; shaded: 95% "
                      "intervals over prompts. PPO checkpoints sit at their measured KL with 95% bars, not joined; so do the "
                      "The held-out round above supersedes this chart's comparisons. "
                      f"{SAMPLES_NOTE} Ablations (at {', '.join(sorted({f'{k:.0f}' for k in points.loc[points['kind'] == 'ablation', 'kl_exact_mean']}))} nats) "
                      "are off this axis: see the detail below."))
    report.table("reward_at_budget", table, caption="Reward at each KL budget per method, with its 95% interval over "
                 "prompts (reward_low, reward_high): the numbers the answer chart draws. Edit families: the best of "
                 "their layers bisected to within 5% of the budget, chosen on the same prompts (selected_from: how "
                 "many layers it is the best of). Best-of-n: each prompt's reward interpolated in sqrt(KL) between "
                 "the two n around the budget, never extrapolated. The PPO trajectory is not interpolated (its KL is "
                 "not monotone in the training step). reward_per_nat = (reward - base) / budget.", show=60)
    if v3["at_budget"] is None:
        capability_section(report, points, config.get("new_methods", {}))
    detail = detail_spec(points)
    drawn = fits[fits["drawn"]] if len(fits) else fits
    report.figure("frontier", frontier_figure(points, drawn, reward_label), fold=(
                  f"Every point, per layer ({len(detail)} series: colour = method family, marker = layer), with "
                  "the Gao et al. fits and the ablations"),
                  chart=spec_to_plotly(detail + fit_series(drawn, *_kl_range(detail)), base, xlabel=xlabel, ylabel=reward_label, height=620,
                                       title="Every measured point (click a legend entry to hide it)"),
                  caption=("Every point at its measured KL with s.e. bars on both axes; edit families are joined per "
                           "layer (rank-one dashed); Gao et al. fits dotted, drawn where R² ≥ "
                           f"{FIT_R2_MIN:g}. In the PNG: points at KL 0 on the left edge, budget misses circled."))
    report.table("fits", fits, caption="Gao et al. (2022) forms fitted by weighted least squares to the reward gain "
                 "over the base model, d = sqrt(KL): best-of-n R = d (alpha - beta d), PPO R = d (alpha - beta log d). "
                 f"drawn: R² ≥ {FIT_R2_MIN:g}, the one criterion for drawing a fit on the figure.")
    report.table("points", points, caption="Every point (one row per model or edit setting).", show=25)
    if scan is not None and len(scan):
        report.section("Does a later layer cost less KL for the same reward?")
        report.figure("layer_scan", F.layer_scan_figure(scan, reward_label),
                      caption=f"Steering with the {scan['vector'].iloc[0]} vector at every scanned layer, strength "
                              f"bisected to {scan['budget'].iloc[0]:g} nats per sequence: reward reached (left panel) "
                              "and the strength that spends the budget (right panel).")
        report.table("layer_scan", scan, show=0)
    if trials is not None and len(trials):
        report.section("KL-budgeted edit search (Pareto front)")
        report.figure("pareto", F.pareto_figure(trials, reward_label),
                      caption=f"{len(trials)} Optuna TPE trials (seed {config.get('seed')}) over vector x layer x "
                              "strength x positions; red: the Pareto front (max reward, min KL) among trials within "
                              f"{max(budgets):g} nats.")
        report.table("search_trials", trials.sort_values("number"), caption="All trials; pareto marks the front.",
                     show=0)
    report.section("Freezing study")
    if len(freezing):
        report.figure("freezing", F.freezing_figure(freezing),
                      caption="Last checkpoint of each PPO run: reward gain per nat of KL (left panel) and training "
                              "wall time (right panel) against the number of frozen bottom layers.")
        report.table("freezing", freezing, caption="Last checkpoint of each PPO run of the freezing study (the "
                                                   "trajectory's runs are longer and are not in this comparison).")
    else:
        report.text("No PPO runs were given (see the missing pieces above): no freezing study.")
    report.section("Side effects on unrelated prompts")
    if points["collateral_kl_mean"].notna().any():
        report.figure("collateral", F.collateral_figure(points),
                      caption="Per-token KL(changed ‖ base) teacher-forced on 16 unrelated prompts (code, arithmetic, "
                              "facts, instructions, French), against the KL spent on the target prompts. Best-of-n "
                              "does not change the model's per-token distribution and is not shown.")
    if moved is not None and len(moved):
        top = moved[moved["rank"] <= 5]
        report.table("moved_tokens", moved, caption=f"Tokens whose probability on the unrelated prompts moved most "
                     f"(mean over positions), per method near {config.get('collateral_budget')} nats (PPO: last "
                     "checkpoint; ablations: their only point). Preview: top 5 each way (folded: long).", preview=top,
                     show=len(top))
    if timings is not None and len(timings):
        wall_min = config.get("wall_seconds_total", float("nan")) / 60
        cpu_min = config.get("cpu_seconds_total", float("nan")) / 60
        report.table("timings", timings, caption=f"Compute per part (seconds): {wall_min:.1f} min wall, {cpu_min:.1f} "
                     "min CPU (all threads of the process) in total.")
    if notes is not None and len(notes):
        report.table("notes", notes, caption="What each part recorded (and what was skipped).")
    report.section("How it was measured", __doc__.split("\n\n", 2)[2].split("Compute is split")[0])
    return report


# ==============================================================================================


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="smollm2-135m", help="the model every method starts from")
    p.add_argument("--trajectory", type=Path, default=None, help="PPO run directory: every checkpoint is a point")
    p.add_argument("--run", type=Path, action="append", default=[],
                   help="another PPO run directory (LoRA, frozen layers): its last checkpoint (repeatable)")
    p.add_argument("--prompts", default="default")
    p.add_argument("--n-prompts", type=int, default=16, help="held-out prompts every method is measured on")
    p.add_argument("--direction-prompts", type=int, default=64, help="other prompts, for vectors and covariances")
    p.add_argument("--pair-samples", type=int, default=4, help="base samples per direction prompt for reward pairs")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--reward", default="char_count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budgets", type=floats, default=floats("0.5,1,2,4,8"), help="KL budgets, nats per sequence")
    p.add_argument("--rel-tol", type=float, default=0.05, help="budget tolerance (relative)")
    p.add_argument("--layers", type=ints, default=ints("4,12,20,28"), help="steering layers bisected at every budget")
    p.add_argument("--rank-one-layers", type=ints, default=ints("4,12,20,28"))
    p.add_argument("--steer-start", type=float, default=0.1,
                   help="first strength tried (push / residual norm); rank-one: times the residual norm")
    p.add_argument("--scan-layers", type=lambda t: ["all"] if t == "all" else ints(t), default=["all"])
    p.add_argument("--scan-budget", type=float, default=2.0)
    p.add_argument("--scan-vector", default="contrastive")
    p.add_argument("--ablation-layer", type=int, default=-1, help="layer whose direction is ablated (-1: 2/3 depth)")
    p.add_argument("--best-of-n", type=ints, default=ints("1,2,4,8,16,32"))
    p.add_argument("--pool-size", type=int, default=64)
    p.add_argument("--sample-batch", type=int, default=128, help="sequences per generate call for best-of-n")
    p.add_argument("--search-trials", type=int, default=40)
    p.add_argument("--search-layers", type=lambda t: ["all"] if t == "all" else ints(t), default=["all"])
    p.add_argument("--search-coefs", type=floats, default=floats("0.01,1"), help="strength range (push / resid norm)")
    p.add_argument("--collateral-budget", type=float, default=2.0)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--parts", type=lambda t: t.split(","), default=["all"], help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--resume", action="store_true", help="skip parts already finished in --work-dir")
    p.add_argument("--work-dir", type=Path, default=Path("runs/frontier"))
    p.add_argument("--out", type=Path, default=REPORT_DIR)
    p.add_argument("--render-only", action="store_true", help="redraw the page from the CSVs in --out")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if not args.render_only:
        compute(args, PARTS, PART_FUNCTIONS, tidy_points, write_tables)
    out = render(args.out).save()
    print(f"report: {out}/index.html")


if __name__ == "__main__":
    main()
