"""Would a later layer make a smaller change? Steer SmolLM2 toward periods at early and late layers and
measure what each setting buys (periods in the continuation) and what it costs (KL from the unedited model).

    python analyses/steering_sweep.py                      # the measured run: 16 prompts x 24 tokens, 5 x 5 grid
    python analyses/steering_sweep.py --model tiny-test --n-prompts 3 --max-new-tokens 4 --layers 0,1 --coefs 0,1

Writes reports/steering_sweep/ (README.md, index.html, CSV tables, PNG figures, config.json, the vector).

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

import pandas as pd
import torch

from rlhf_interp import Report, load_model, load_prompts
from rlhf_interp.edits import NoEdit, Steering
from rlhf_interp.measure import LogitsCache, sweep
from rlhf_interp.plots import plot_steering_sweep, plot_sweep_curves
from rlhf_interp.steering import mean_difference, residual_norms

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
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(2)
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

    report = build_report(args, table, norms, seqs, baseline, time.perf_counter() - start)
    out = report.save()
    vector.save(out / "period_vector.safetensors")
    print(f"[steering_sweep] wrote {out}/ in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


def answer(table: pd.DataFrame, layers: list[int], baseline_reward: float) -> str:
    """The early-vs-late comparison, computed from the table."""
    early, late = min(layers), max(layers)
    lines = ["| coef | KL at layer %d | KL at layer %d | periods at layer %d | periods at layer %d |" % (early, late, early, late),
             "| --- | --- | --- | --- | --- |"]
    pivot_kl = table.pivot_table(index="coef", columns="layer", values="kl_exact_mean")
    pivot_r = table.pivot_table(index="coef", columns="layer", values="reward_mean")
    smaller = 0
    nonzero = [c for c in pivot_kl.index if c != 0]
    for coef in pivot_kl.index:
        kl_e, kl_l = pivot_kl.loc[coef, early], pivot_kl.loc[coef, late]
        lines.append(f"| {coef:g} | {kl_e:.3g} | {kl_l:.3g} | {pivot_r.loc[coef, early]:.3g} | {pivot_r.loc[coef, late]:.3g} |")
        if coef != 0 and kl_l < kl_e:
            smaller += 1
    ranked = table[table.coef > 0].groupby("layer")["kl_exact_mean"].mean().sort_values()
    best = table[table.coef > 0].assign(per_nat=lambda d: (d.reward_mean - baseline_reward)
                                        / d.kl_exact_mean.clip(lower=1e-9)).sort_values("per_nat", ascending=False)
    top = best.iloc[0] if len(best) else None
    verdict = (f"At the same coefficient, layer {late} cost less KL than layer {early} in {smaller} of {len(nonzero)} "
               f"non-zero coefficients. Mean KL over the non-zero coefficients, lowest first: "
               + ", ".join(f"layer {int(k)}: {v:.3g}" for k, v in ranked.items()) + " nats per sequence.")
    if top is not None and top.per_nat <= 0:
        verdict += " No setting raised the period count above the unsteered baseline."
    elif top is not None:
        verdict += (f" The most extra periods per nat of KL came from layer {int(top.layer)} at coefficient "
                    f"{top.coef:g} ({top.reward_mean:.3g} periods vs {baseline_reward:.3g} unsteered, for "
                    f"{top.kl_exact_mean:.3g} nats).")
    return "\n".join(lines) + "\n\n" + verdict


def build_report(args, table: pd.DataFrame, norms: pd.DataFrame, seqs: pd.DataFrame, baseline: pd.Series,
                 seconds: float) -> Report:
    layers = sorted(table.layer.unique().tolist())
    report = Report("steering_sweep", "Steering toward periods: reward and KL shift by layer and coefficient",
                    root=Path(args.out_root), config={**vars(args), "seconds": seconds,
                                                      "period_pairs": PERIOD_SENTENCES})
    per_setting = table[table.coef != 0].seconds
    report.text(f"""
Model `{args.model}`; {args.n_prompts} shipped prompts x {args.max_new_tokens} sampled tokens (temperature 1,
seed {args.seed}, the same random numbers for every setting). Reward: `char_count`, the number of `.` in the
continuation. KL: `KL(steered || unsteered)` of the continuation, per sequence, in nats — the exact per-token KL
summed along the steered model's own samples (`kl_exact`), with the k1 and k3 sample estimators beside it
(`kl_k1`, `kl_k3`) and standard errors over the {args.n_prompts} sequences; `kl_prompt_mean` is the mean
per-token KL teacher-forced on the prompts alone.

Steering vector: difference of means of `blocks.L.hook_resid_post` between {len(PERIOD_SENTENCES)} period-heavy
sentences and the same sentences joined by commas (one vector per layer, added at every real token).
Coefficient 1 = the observed period-vs-comma difference at that layer.

Unsteered baseline: {baseline.reward_mean:.3g} ± {baseline.reward_stderr:.2g} periods per continuation, entropy
{baseline.entropy_mean:.3g} nats per token, distinct-2 {baseline.distinct_2:.3g}.
Time per setting: {per_setting.median():.0f} s median ({per_setting.min():.0f}-{per_setting.max():.0f} s) on a
shared 2-core CPU; whole run {seconds / 60:.1f} min.
""")
    report.text("## Would a later layer make a smaller change?\n\n" + answer(table, layers, float(baseline.reward_mean)))
    report.figure("sweep", plot_steering_sweep(table, reward_label="periods (char_count '.')"),
                  title="KL and reward by layer and coefficient")
    fig = plot_sweep_curves(table, "kl_exact_mean", x="push_over_resid", err="kl_exact_stderr",
                            title="KL per sequence vs size of the push relative to the residual stream")
    fig.axes[0].set_xlabel("coef x |vector_L| / mean |resid_post_L|")
    report.figure("kl_vs_relative_push", fig, title="The same KL against the relative size of the push")
    fig = plot_sweep_curves(table, "kl_prompt_mean", err=None, title="mean per-token KL on the prompts (teacher-forced)")
    report.figure("kl_prompt", fig, title="Per-token KL on the prompts")
    cols = ["layer", "coef", "reward_mean", "reward_stderr", "kl_exact_mean", "kl_exact_stderr", "kl_k1_mean",
            "kl_k1_stderr", "kl_k3_mean", "kl_k3_stderr", "kl_per_token", "kl_prompt_mean", "entropy_mean",
            "distinct_1", "distinct_2", "new_tokens_mean", "push_over_resid", "seconds"]
    report.table("sweep", table[cols], title="All settings (one row per layer x coefficient)", max_rows=60)
    report.table("vector_norms", norms, title="Steering vector norms vs residual-stream norms")
    examples = seqs.copy()
    examples["layer"] = examples["layer"].astype(int)
    strongest = table[table.coef > 0].sort_values("reward_mean", ascending=False).head(2)
    picks = [(-1, 0.0)] + [(int(r.layer), float(r.coef)) for r in strongest.itertuples()]
    shown = pd.concat([examples[(examples.layer == layer) & (examples.coef == coef)].head(3) for layer, coef in picks])
    report.table("examples", shown[["layer", "coef", "prompt", "continuation", "reward", "kl_exact"]],
                 title="Sample continuations (layer -1 = unsteered)")
    report.table("sequences", examples[["layer", "coef", "prompt_idx", "continuation", "n_new_tokens", "reward",
                                        "kl_k1", "kl_k3", "kl_exact", "entropy_mean"]],
                 title="Every sampled sequence", max_rows=0)
    return report


if __name__ == "__main__":
    sys.exit(main())
