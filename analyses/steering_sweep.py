"""At equal KL, which layer buys the most reward, and is a later layer cheaper? Steer SmolLM2 toward periods at
early and late layers and measure what each setting buys (periods in the continuation) and what it costs (KL from
the unedited model).

    python analyses/steering_sweep.py --equal-kl            # the headline: 6 layers bisected to 1 and 2 nats on 32
                                                            # selection prompts, measured on 128 x 2 (resumable)
    python analyses/steering_sweep.py                      # the grid: 16 prompts x 24 tokens, 5 layers x 5 coefs
    python analyses/steering_sweep.py --model tiny-test --n-prompts 6 --max-new-tokens 4 --layers 0,1 --coefs 0,1
    python analyses/steering_sweep.py --from-csv           # re-render the page from its CSVs (no model)

Writes reports/steering_sweep/ (README.md, index.html, CSV tables, PNG figures, config.json, the vector). The
equal-KL round (`rlhf_interp.frontier.layer_round`) keeps every finished step under ``--work-dir``; killed, it
resumes where it stopped. The grid run keeps the round's ``equal_kl`` settings in ``config.json``.

The period direction is a difference of means over contrastive pairs: short sentences ending in
periods ("I came. I saw. I left.") minus the same words joined by commas ("I came, I saw, I left"),
each text reduced to the mean of its non-BOS ``hook_resid_post`` activations, one vector per layer.
Steering adds ``coef x vector_L`` to ``blocks.L.hook_resid_post`` at every real token (prompt and
generated). A coefficient of 1 therefore moves the activations by the observed difference between
period-heavy and comma-joined text *at that layer*, so coefficients mean the same thing across
layers; the report also gives the size of each push relative to the residual stream's norm.

Coefficient 0 adds nothing, so it is sampled once and its row is shared by every layer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from rlhf_interp import load_model, load_prompts
from rlhf_interp.edits import NoEdit, Steering, mean_difference, residual_norms
from rlhf_interp.measure import LogitsCache, sweep
from rlhf_interp.report import Report, read_config, read_table, write_tables
from rlhf_interp.report.rebuild import rerender
from rlhf_interp.report.steering_page import equal_kl_parts, equal_kl_section, sweep_claims
from rlhf_interp.report.panels import Line, Panel, to_matplotlib, to_plotly
from rlhf_interp.report.plots import plot_sweep_curves
from rlhf_interp.report.style import cycle

NAME = "steering_sweep"
SWEEP_COLUMNS = ["layer", "coef", "n_sequences", "reward_mean", "reward_stderr", "kl_exact_mean", "kl_exact_stderr",
                 "kl_k1_mean", "kl_k1_stderr", "kl_k3_mean", "kl_k3_stderr", "kl_per_token", "kl_prompt_mean",
                 "entropy_mean", "distinct_1", "distinct_2", "new_tokens_mean", "push_over_resid", "seconds"]
SEQUENCE_COLUMNS = ["layer", "coef", "prompt_idx", "continuation", "n_new_tokens", "reward", "kl_k1", "kl_k3",
                    "kl_exact", "entropy_mean"]

PERIOD_SENTENCES = [
    "I came. I saw. I left.", "It rained. We stayed in. The fire was warm.", "Stop. Look. Listen.",
    "She ran. He followed. Nobody spoke.", "The door opened. A man walked in. He sat down.", "Yes. No. Maybe.",
    "We ate. We slept. We woke early.", "The sun rose. Birds sang. The day began.",
    "He paused. Then he smiled. It was over.", "Read the book. Write the essay. Hand it in.",
    "The car stopped. The engine died. We waited.", "Cold. Dark. Quiet.",
    "The dog barked. The cat hissed. The bird flew away.", "Time passed. Things changed. People moved on.",
    "I know. I understand. I agree.", "Open the box. Take the key. Close the lid.",
]


def comma_joined(text: str) -> str:
    """The same words without periods: sentences joined by commas, no final period."""
    return text.replace(". ", ", ").rstrip(".")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--layers", default="2,8,14,20,26")
    p.add_argument("--coefs", default="0,0.5,1,2,4")
    p.add_argument("--n-prompts", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-root", default="reports")
    p.add_argument("--from-csv", "--rebuild", dest="from_csv", action="store_true",
                   help="re-render the page from the CSVs of an earlier run in OUT_ROOT/steering_sweep (no model)")
    q = p.add_argument_group("equal KL (the page's headline): every layer bisected to each budget, paired layers")
    q.add_argument("--equal-kl", action="store_true", help="run (or resume) the equal-KL round instead of the grid")
    q.add_argument("--kl-layers", default="2,8,14,20,26,28")
    q.add_argument("--budgets", default="1,2", help="KL budgets, nats per sequence")
    q.add_argument("--report-prompts", type=int, default=128)
    q.add_argument("--selection-prompts", type=int, default=32)
    q.add_argument("--samples", type=int, default=2, help="continuations per report prompt")
    q.add_argument("--work-dir", default="runs/steering_equal_kl", help="finished points, cached per setting")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out_root) / NAME
    if args.from_csv:
        return rerender(render, out)
    if args.equal_kl:
        run_equal_kl(args, out)
        render(out).save()
        return 0
    start = time.perf_counter()
    layers = [int(x) for x in args.layers.split(",")]
    coefs = sorted({float(x) for x in args.coefs.split(",")})
    model = load_model(args.model, device="cpu")
    prompts = load_prompts(limit=args.n_prompts, seed=args.seed)
    pairs = [(s, comma_joined(s)) for s in PERIOD_SENTENCES]
    vector = mean_difference(model, [p for p, _ in pairs], [n for _, n in pairs], layers, "resid_post", "mean")
    norms = vector.norms().merge(residual_norms(model, prompts, layers), on=["layer", "hook"])
    norms = norms.rename(columns={"norm": "vector_norm"})
    norms["vector_over_resid"] = norms["vector_norm"] / norms["resid_norm"]

    settings = [({"layer": -1, "coef": 0.0}, NoEdit())]
    settings += [({"layer": layer, "coef": coef}, Steering(vector, [layer], coef)) for layer in layers
                 for coef in coefs if coef != 0.0]
    print(f"[steering_sweep] {len(settings)} settings on {args.model}: {len(prompts)} prompts x "
          f"{args.max_new_tokens} new tokens", file=sys.stderr)
    df, seqs = sweep(model, settings, prompts, "char_count", max_new_tokens=args.max_new_tokens, seed=args.seed,
                     cache=LogitsCache(max_entries=2), keep_sequences=True, desc="steering sweep")
    baseline = df[df.layer == -1].iloc[0]
    shared = pd.DataFrame([{**baseline.to_dict(), "layer": layer} for layer in layers]) if 0.0 in coefs else None
    table = pd.concat([shared, df[df.layer != -1]], ignore_index=True) if shared is not None else df[df.layer != -1]
    table = table.merge(norms[["layer", "vector_norm", "resid_norm"]], on="layer")
    table["push_over_resid"] = table["coef"] * table["vector_norm"] / table["resid_norm"]
    table = table.sort_values(["layer", "coef"]).reset_index(drop=True)
    table["layer"] = table["layer"].astype(int)
    seqs = seqs.assign(layer=seqs["layer"].astype(int))
    grid_args = ("model", "layers", "coefs", "n_prompts", "max_new_tokens", "seed", "out_root")
    earlier = read_config(out) if (out / "config.json").exists() else {}
    config = {**{k: getattr(args, k) for k in grid_args}, "seconds": time.perf_counter() - start,
              "period_pairs": PERIOD_SENTENCES, **({"equal_kl": earlier["equal_kl"]} if "equal_kl" in earlier else {})}
    write_tables(out, {"sweep": table[SWEEP_COLUMNS], "vector_norms": norms, "sequences": seqs[SEQUENCE_COLUMNS]},
                 config=config)
    vector.save(out / "period_vector.safetensors")
    render(out).save()
    print(f"[steering_sweep] wrote {out}/ in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


def run_equal_kl(args: argparse.Namespace, out: Path) -> None:
    """The equal-KL round (`rlhf_interp.frontier.layer_round`): the frontier's held-out splits of the shipped prompts
    (seed-shuffled: the first ``report_prompts`` report, the next ``selection_prompts`` select), the period vector
    at every layer, every step cached under ``work_dir/<settings digest>``; writes ``equal_kl_*.csv`` and the round's
    settings under ``config.json``'s ``equal_kl`` key (the grid's settings are kept)."""
    import hashlib
    import json

    from rlhf_interp.core.hashing import tensor_digest, text_digest
    from rlhf_interp.core.io import atomic_write_json
    from rlhf_interp.frontier.layer_round import collect, run_layers
    from rlhf_interp.frontier.new_methods import Setup
    from rlhf_interp.frontier.v3_round import Round

    model = load_model(args.model, frozen=True)
    n_layers = int(model.cfg.n_layers)
    layers = [x for x in (int(t) for t in args.kl_layers.split(",")) if x < n_layers] or [n_layers - 1]
    budgets = [float(b) for b in args.budgets.split(",")]
    shuffled = load_prompts("default", seed=args.seed)
    r, s = args.report_prompts, args.selection_prompts
    report, selection = shuffled[:r], shuffled[r:r + s]
    vector = mean_difference(model, PERIOD_SENTENCES, [comma_joined(t) for t in PERIOD_SENTENCES], "all",
                             "resid_post", "mean")
    settings = {"model": args.model, "report": text_digest(report), "selection": text_digest(selection),
                "samples": args.samples, "max_new_tokens": args.max_new_tokens, "seed": args.seed, "budgets": budgets,
                "vector": tensor_digest(*(vector[k] for k in vector.layers)), "reward": "char_count"}
    work = Path(args.work_dir) / hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    setup = Setup(model, report, selection, "char_count", args.max_new_tokens, args.seed, args.samples)
    rnd = Round(setup, work, budgets)
    atomic_write_json(work / "settings.json", settings)
    cpu_path, cpu_start = work / "cpu_seconds.json", time.process_time()
    spent = json.loads(cpu_path.read_text())["cpu_seconds"] if cpu_path.exists() else 0.0
    try:
        run_layers(rnd, vector, layers, log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:  # a killed part keeps its CPU time in the total
        atomic_write_json(cpu_path, {"cpu_seconds": spent + time.process_time() - cpu_start})
    tables = collect(rnd)
    config = read_config(out) if (out / "config.json").exists() else {}
    config["equal_kl"] = {"layers": layers, "budgets": budgets, "report_prompts": len(report),
                          "selection_prompts": len(selection), "samples": args.samples, "selection_samples": 1,
                          "model": args.model, "max_new_tokens": args.max_new_tokens, "seed": args.seed,
                          "cpu_seconds": json.loads(cpu_path.read_text())["cpu_seconds"]}
    write_tables(out, {f"equal_kl_{k}": v for k, v in tables.items()}, config=config)


def kl_scaling(table: pd.DataFrame, push: float = 0.1) -> pd.DataFrame:
    """Per layer, a power law fitted to the non-zero coefficients: ``KL = a * coef^slope``.

    Columns: layer, kl_slope, kl_at_coef_1 (fitted), kl_at_push (fitted KL when the push is ``push`` times
    the residual norm), push.
    """
    rows = []
    for layer, g in table[(table.coef > 0) & (table.kl_exact_mean > 0)].groupby("layer"):
        if len(g) < 2:
            continue
        y = np.log(g.kl_exact_mean.to_numpy())
        slope, icpt = np.polyfit(np.log(g.coef.to_numpy()), y, 1)
        slope_p, icpt_p = np.polyfit(np.log(g.push_over_resid.to_numpy()), y, 1)
        rows.append({"layer": int(layer), "kl_slope": slope, "kl_at_coef_1": float(np.exp(icpt)),
                     "kl_at_push": float(np.exp(icpt_p + slope_p * np.log(push))), "push": push})
    return pd.DataFrame(rows, columns=["layer", "kl_slope", "kl_at_coef_1", "kl_at_push", "push"])


def scaling_phrase(scaling: pd.DataFrame) -> str:
    """'coef^a-b', or why there is no fit (a power law needs two non-zero coefficients with KL > 0)."""
    if scaling.empty:
        return "an unknown power of the coefficient (a fit needs two non-zero coefficients with KL > 0 per layer)"
    return f"coef^{scaling.kl_slope.min():.2f}-{scaling.kl_slope.max():.2f}"


def answer(table: pd.DataFrame, layers: list[int], baseline: pd.Series) -> str:
    """The early-vs-late comparison, computed from the table (no number here is typed in by hand)."""
    early, late = min(layers), max(layers)
    pivot_kl = table.pivot_table(index="coef", columns="layer", values="kl_exact_mean")
    pivot_r = table.pivot_table(index="coef", columns="layer", values="reward_mean")
    lines = [f"| coef | KL at layer {early} | KL at layer {late} | periods at layer {early} | "
             f"periods at layer {late} |",
             "| --- | --- | --- | --- | --- |"]
    smaller = 0
    nonzero = [c for c in pivot_kl.index if c != 0]
    for coef in pivot_kl.index:
        kl_e, kl_l = pivot_kl.loc[coef, early], pivot_kl.loc[coef, late]
        lines.append(f"| {coef:g} | {kl_e:.3g} | {kl_l:.3g} | {pivot_r.loc[coef, early]:.3g} | "
                     f"{pivot_r.loc[coef, late]:.3g} |")
        smaller += int(coef != 0 and kl_l < kl_e)
    scaling = kl_scaling(table)
    spread = [(pivot_kl.loc[c].max() - pivot_kl.loc[c].min()) / pivot_kl.loc[c].mean() for c in nonzero]
    text = ["\n".join(lines), ""]
    verdict = "no" if smaller == 0 else ("yes" if smaller == len(nonzero) else "mixed")
    text.append(f"**In coefficient units: {verdict}.** At the same coefficient (a multiple of the period-vs-comma "
                f"difference observed at that layer) layer {late} cost less KL than layer {early} at {smaller} of "
                f"{len(nonzero)} non-zero coefficients, and across all {len(layers)} layers the KL at one coefficient "
                f"varies by {min(spread):.0%}-{max(spread):.0%} of its mean"
                + ("" if scaling.empty else f", while one doubling of the coefficient multiplies it by "
                   f"{2 ** scaling.kl_slope.min():.1f}-{2 ** scaling.kl_slope.max():.1f}")
                + f": KL grows like {scaling_phrase(scaling)} (fitted per layer; a small perturbation's KL grows like "
                f"coef^2).")
    if not scaling.empty:
        by_push = scaling.sort_values("layer")
        first, last = by_push.iloc[0], by_push.iloc[-1]
        cheapest = by_push.sort_values("kl_at_push").iloc[0]
        text.append(f"\n**Per unit of relative push:** the same vectors are a different share of the residual "
                    f"stream at each layer (see the norms table). A push of {int(first.push * 100)}% of the residual "
                    f"norm costs, by the per-layer fits: "
                    + ", ".join(f"layer {r.layer}: {r.kl_at_push:.2g}" for r in by_push.itertuples())
                    + f" nats per sequence — layer {int(last.layer)} "
                    + ("less" if last.kl_at_push < first.kl_at_push else "more")
                    + f" than layer {int(first.layer)} ({last.kl_at_push:.2g} vs {first.kl_at_push:.2g}); cheapest: "
                    f"layer {int(cheapest.layer)}.")
    n_seq = int(table.n_sequences.iloc[0]) if "n_sequences" in table else "these"
    gains = table[table.coef > 0].copy()
    se0 = float(baseline.reward_stderr)
    gains["z"] = (gains.reward_mean - baseline.reward_mean) / np.sqrt(gains.reward_stderr ** 2 + se0 ** 2)
    rel_se = gains.kl_exact_stderr / gains.kl_exact_mean
    best = gains.sort_values("reward_mean", ascending=False).iloc[0]
    worst = gains.sort_values("reward_mean").iloc[0]
    text.append(f"\n**Reward.** Unsteered: {baseline.reward_mean:.3g} ± {se0:.2g} periods. The most (the best of "
                f"{len(gains)} settings on the same prompts, so optimistic; the claims above choose on half the "
                f"prompts and report on the other half): layer "
                f"{int(best.layer)}, coefficient {best.coef:g}: {best.reward_mean:.3g} ± {best.reward_stderr:.2g} "
                f"({best.z:.1f} standard errors above the baseline) for {best.kl_exact_mean:.3g} nats. "
                f"{int((gains.z > 2).sum())} of {len(gains)} settings are more than 2 standard errors above the "
                f"baseline; the fewest periods: layer {int(worst.layer)}, coefficient {worst.coef:g}: "
                f"{worst.reward_mean:.3g} (distinct-2 {worst.distinct_2:.2f} vs {baseline.distinct_2:.2f} unsteered). "
                f"With {n_seq} sequences per setting the reward differences are noisy; the KL estimates much less "
                f"so (standard errors {rel_se.min():.0%}-{rel_se.max():.0%} of the mean).")
    return "\n".join(text)


def sweep_panels(table: pd.DataFrame, baseline: pd.Series) -> list[Panel]:
    """KL vs coefficient, periods vs coefficient and periods vs KL, one line per layer (the PNG and the interactive
    chart are drawn from these panels); the unsteered setting is a dashed reference line."""
    steered = table[table.coef > 0]
    lines = {key: [] for key in ("kl", "reward", "frontier")}
    for i, (layer, g) in enumerate(steered.groupby("layer")):
        st, g = cycle(i), g.sort_values("coef")
        for key, x, y, err in (("kl", "coef", "kl_exact_mean", "kl_exact_stderr"),
                               ("reward", "coef", "reward_mean", "reward_stderr"),
                               ("frontier", "kl_exact_mean", "reward_mean", "reward_stderr")):
            lines[key].append(Line(f"layer {layer}", g[x].tolist(), g[y].tolist(), st["color"], st["marker"],
                                   st["symbol"], yerr=g[err].fillna(0).tolist()))
    unsteered = [(float(baseline.reward_mean), "unsteered (coefficient 0)")]
    kl_label = "KL(steered ‖ unsteered) per sequence (nats)"
    return [Panel("KL cost by coefficient", "steering coefficient", kl_label, lines["kl"], log_y=True, log_x=True),
            Panel("periods by coefficient", "steering coefficient", "periods per continuation", lines["reward"],
                  log_x=True, hlines=unsteered),
            Panel("periods against KL (coefficient rising)", kl_label, "periods per continuation", lines["frontier"],
                  log_x=True, hlines=unsteered)]


def render(report_dir: Path) -> Report:
    """The page from ``sweep.csv``, ``vector_norms.csv``, ``sequences.csv`` and ``config.json`` (no model)."""
    report_dir = Path(report_dir)
    config = read_config(report_dir)
    args = argparse.Namespace(**{k: config[k] for k in ("model", "n_prompts", "max_new_tokens", "seed")})
    table = read_table(report_dir, "sweep")
    norms = read_table(report_dir, "vector_norms")
    seqs = read_table(report_dir, "sequences", keep_default_na=False)
    prompts = load_prompts(limit=args.n_prompts, seed=args.seed)
    seqs["prompt"] = [prompts[i] for i in seqs.prompt_idx]
    baseline = table[table.coef == 0].iloc[0]
    seconds = float(config["seconds"])
    layers = sorted(table.layer.unique().tolist())
    ekl = equal_kl_parts(report_dir, config)
    claims = (ekl["claims"] if ekl else []) + sweep_claims(table, seqs, baseline, seed=int(args.seed))
    report = Report.at(report_dir, "Steering toward periods: which layer buys the most reward at equal KL?",
                       source=__file__, claims=claims)
    per_setting = table[table.coef != 0].seconds
    report.text(f"""
Two studies of one steering vector. **At equal KL** (the headline): every layer's coefficient bisected to the same
KL budget on selection prompts, then every layer measured on the same held-out report prompts and samples and
compared prompt by prompt. **At equal coefficient** (the grid below it): {len(layers)} layers x
{table.coef.nunique()} coefficients on {args.n_prompts} prompts, which shows how KL grows with the coefficient but
cannot say which layer is cheaper (an equal coefficient is a different KL at each layer).

The grid: model `{args.model}`; {args.n_prompts} shipped prompts x {args.max_new_tokens} sampled tokens (temperature 1,
seed {args.seed}, the same random numbers for every setting). Reward: `char_count`, the number of `.` in the
continuation. KL: `KL(steered || unsteered)` of the continuation, per sequence, in nats — the exact per-token KL
summed along the steered model's own samples (`kl_exact`), with the k1 and k3 sample estimators beside it
(`kl_k1`, `kl_k3`) and standard errors over the {args.n_prompts} sequences; `kl_prompt_mean` is the mean
per-token KL teacher-forced on the prompts alone.

Steering vector: difference of means of `blocks.L.hook_resid_post` between {len(config["period_pairs"])} period-heavy
sentences and the same sentences joined by commas (one vector per layer, added at every real token).
Coefficient 1 = the observed period-vs-comma difference at that layer.

Unsteered baseline: {baseline.reward_mean:.3g} ± {baseline.reward_stderr:.2g} periods per continuation, entropy
{baseline.entropy_mean:.3g} nats per token, distinct-2 {baseline.distinct_2:.3g}.
Time per setting: {per_setting.median():.0f} s median ({per_setting.min():.0f}-{per_setting.max():.0f} s) on a
shared 2-core CPU; whole run {seconds / 60:.1f} min.
""")
    if ekl:
        equal_kl_section(report, ekl, config["equal_kl"])
    report.section("At equal coefficient: would a later layer make a smaller change?", answer(table, layers, baseline))
    report.section("KL and reward by layer and coefficient (the grid)")
    panels = sweep_panels(table, baseline)
    report.figure("sweep", to_matplotlib(panels, cols=3, panel_size=(5.2, 4.0)), chart=to_plotly(panels, cols=3),
                  chart_height=460, caption=(
        "Left: KL per sequence against the coefficient (log axes; coefficient 0 has KL 0 and is not on them). "
        "Middle: periods per continuation against the coefficient (log coefficient axis; dashed: unsteered). "
        "Right: periods against KL, one line per layer, coefficient rising along each line (log KL axis; dashed: "
        f"the unsteered {baseline.reward_mean:.2f} periods at 0 nats). Error bars: one standard error over the "
        f"{args.n_prompts} sequences. Hover a point for its value."))
    fig = plot_sweep_curves(table[table.coef > 0], "kl_exact_mean", x="push_over_resid", err="kl_exact_stderr",
                            title="KL per sequence vs size of the push relative to the residual stream",
                            ylabel="KL(steered ‖ unsteered) per sequence (nats)")
    fig.axes[0].set_xscale("log")
    fig.axes[0].set_yscale("log")
    fig.axes[0].xaxis.set_minor_formatter(NullFormatter())
    report.figure("kl_vs_relative_push", fig, title="The same KL against the relative size of the push",
                  caption="Non-zero coefficients only (log-log axes): KL per sequence against coef × ‖vector_L‖ / "
                          "mean ‖resid_post_L‖ at each layer; error bars: one standard error.")
    fig = plot_sweep_curves(table, "kl_prompt_mean", err=None, title="mean per-token KL on the prompts "
                            "(teacher-forced)")
    report.figure("kl_prompt", fig, title="Per-token KL on the prompts",
                  caption="Mean per-token KL(steered ‖ unsteered) over the prompt tokens alone, teacher-forced, "
                          "against the coefficient, one line per layer.")
    report.section("Tables")
    report.table("sweep", table, title="All settings (one row per layer x coefficient)", show=60,
                 caption="Coefficient 0 is sampled once and shared by every layer.")
    report.table("vector_norms", norms, title="Steering vector norms vs residual-stream norms")
    report.table("kl_scaling", kl_scaling(table), title="Power-law fit per layer: KL = a * coef^kl_slope",
                 caption="Fitted on the non-zero coefficients; `kl_at_push`: the fitted KL when the push is `push` "
                         "times the residual norm.")
    strongest = table[table.coef > 0].sort_values("reward_mean", ascending=False).head(2)
    picks = [(-1, 0.0)] + [(int(r.layer), float(r.coef)) for r in strongest.itertuples()]
    shown = pd.concat([seqs[(seqs.layer == layer) & (seqs.coef == coef)].head(3) for layer, coef in picks])
    shown = shown.assign(continuation=shown.continuation.astype(str).str.replace("\n", " ⏎ ", regex=False))
    report.table("examples", shown[["layer", "coef", "prompt", "continuation", "reward", "kl_exact"]],
                 title="Sample continuations (layer -1 = unsteered)",
                 caption="Three continuations unsteered and at the two settings with the most periods (⏎ = newline).")
    report.table("sequences", seqs.drop(columns=["prompt"]), title="Every sampled sequence", show=0,
                 caption="One row per setting and prompt (`prompt_idx` indexes the shipped prompts with this seed).")
    return report

if __name__ == "__main__":
    sys.exit(main())
