"""Where does PPO fine-tuning live, causally? Patch tuned into base (and back) per layer and component, along
the run's checkpoints, swap weights layer by layer, and try to undo RLHF with one direction.

    python analyses/causal_ppo.py --base smollm2-135m --tuned runs/periods     # compute + write reports/causal_ppo/
    python analyses/causal_ppo.py --from-csv                                   # redraw the page from its CSVs alone

Texts: the tuned policy's own samples (prompt + ``--samples`` sampled tokens), where its behaviour differs
from the base. Every statistic counts the real, non-pad, non-BOS positions of these texts
(`rlhf_interp.patching.scores` states the conventions). The compute path (`compute`) returns tidy tables;
they are saved as CSVs and the page is drawn from the CSVs alone (`render(report_dir)`, no model).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd
import torch

from rlhf_interp import load_model, load_prompts
from rlhf_interp.checkpoints import list_checkpoints
from rlhf_interp.diff import check_compatible, checkpoint_step, policy_samples
from rlhf_interp.patching import (
    activation_patching,
    attribution_layers,
    patching_trajectory,
    residual_attribution,
    rewarded_token_ids,
    undo_rlhf,
    weight_patching,
)
from rlhf_interp.patching.figures import figure_attribution, figure_patching, figure_trajectory, figure_weights
from rlhf_interp.report import Report, read_config, read_table, write_tables

NAME = "causal_ppo"
TABLES = ("activation_patching", "residual_attribution", "weight_patching", "trajectory", "trajectory_attribution",
          "undo", "texts")
REQUIRED = ("activation_patching", "residual_attribution", "undo", "texts")
SUBLAYERS = ("hook_attn_out", "hook_mlp_out")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="smollm2-135m")
    p.add_argument("--tuned", help="a PPO run dir (its latest checkpoint; all of them for the trajectory) or one "
                                   "checkpoint / HF dir")
    p.add_argument("--from-csv", action="store_true", help="re-render <root>/<name>/ from its CSVs (no model)")
    p.add_argument("--n-prompts", type=int, default=8, help="prompts (one batch of 8 by default)")
    p.add_argument("--samples", type=int, default=32, help="sampled tokens per prompt (0: patch on prompts only)")
    p.add_argument("--reward-substring", default=".", help="reward proxy: next token contains this (periods task)")
    p.add_argument("--reward", default="char_count", help="sampled reward for the undo table (rlhf_interp reward)")
    p.add_argument("--trajectory-texts", type=int, default=8, help="texts per checkpoint in the trajectory")
    p.add_argument("--max-checkpoints", type=int, default=6, help="evenly spaced checkpoints (always the last)")
    p.add_argument("--no-weights", action="store_true", help="skip the weight-swap table")
    p.add_argument("--undo-layers", default="auto", help="comma-separated layers for the fine-tuning direction, or "
                                                         "'auto': the 2 layers with the largest attribution")
    p.add_argument("--undo-prompts", type=int, default=16, help="prompts sampled for the undo table's reward")
    p.add_argument("--undo-tokens", type=int, default=24, help="sampled tokens per prompt in the undo table")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=NAME, help="report name: <root>/<name>/")
    p.add_argument("--root", default="reports", help="reports root: the report goes to ROOT/<name>/")
    args = p.parse_args(argv)
    if not args.from_csv and not args.tuned:
        p.error("pass --tuned RUN_OR_CKPT_DIR (or --from-csv to redraw an existing report)")
    return args


def evenly_spaced(items: list, k: int) -> list:
    if len(items) <= k:
        return items
    return [items[i] for i in sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})]


# ----------------------------------------------------------------------------------------------
# Compute: models -> tables


def compute(args: argparse.Namespace) -> tuple[dict[str, pd.DataFrame], dict]:
    started = time.time()
    torch.manual_seed(args.seed)
    checkpoints = list_checkpoints(args.tuned)
    final = checkpoints[-1] if checkpoints else Path(args.tuned)
    base = load_model(args.base, device="cpu")
    tuned = load_model(str(final), device="cpu")
    check_compatible(base, tuned)
    ids = rewarded_token_ids(base.tokenizer, args.reward_substring)
    prompts = load_prompts(limit=args.n_prompts, seed=args.seed)
    texts = (policy_samples(tuned, prompts, max_new_tokens=args.samples, seed=args.seed, batch_size=args.batch_size)
             if args.samples > 0 else prompts)
    common = {"reward_token_ids": ids, "batch_size": args.batch_size}
    tables: dict[str, pd.DataFrame] = {"texts": pd.DataFrame({"text": texts})}
    timings: dict[str, float] = {}

    def timed(name, fn, *fn_args, **fn_kwargs):
        t0 = time.time()
        out = fn(*fn_args, **fn_kwargs)
        timings[name] = round(time.time() - t0, 1)
        print(f"[causal_ppo] {name}: {timings[name]} s", file=sys.stderr)
        return out

    act = timed("activation_patching", activation_patching, base, tuned, texts, **common)
    tables["activation_patching"] = act
    if not (act["kl_clean"] > 0).all():
        raise SystemExit(f"{final} gives the same next-token distributions as {args.base} on these texts (KL 0): "
                         f"nothing to attribute. Is it really a tuned checkpoint of this base model?")
    tables["residual_attribution"] = residual_attribution(act)
    if not args.no_weights:
        tables["weight_patching"] = timed("weight_patching", weight_patching, base, tuned, texts, **common)
    layers = (attribution_layers(act, k=2) if args.undo_layers == "auto"
              else [int(x) for x in args.undo_layers.split(",") if x.strip()])
    undo_prompts = load_prompts(limit=args.undo_prompts, seed=args.seed + 1)
    tables["undo"] = timed("undo", undo_rlhf, base, tuned, texts, layers, prompts=undo_prompts, reward=args.reward,
                           max_new_tokens=args.undo_tokens, seed=args.seed, **common)
    del tuned
    chosen = []
    if len(checkpoints) > 1:
        chosen = evenly_spaced([(checkpoint_step(c), c) for c in checkpoints], args.max_checkpoints)
        traj = timed("trajectory", patching_trajectory, base, args.tuned, texts[: args.trajectory_texts],
                     checkpoints=chosen, components=["hook_resid_post"], directions=["into_base"], **common)
        tables["trajectory"] = traj
        tables["trajectory_attribution"] = residual_attribution(traj)
    config = {**{k: v for k, v in vars(args).items() if k != "from_csv"}, "tuned_checkpoint": str(final),
              "n_checkpoints": len(checkpoints), "trajectory_steps": [s for s, _ in chosen],
              "undo_layers_used": layers, "n_rewarded_tokens": len(ids), "n_texts": len(texts),
              "seconds": round(time.time() - started, 1), "seconds_by_part": timings}
    return tables, config


# ----------------------------------------------------------------------------------------------
# The page: CSVs in (no model)


def read_tables(report_dir: Path) -> dict[str, pd.DataFrame]:
    """The measured tables of a report directory (those the run produced)."""
    tables = {name: read_table(report_dir, name, keep_default_na=False, na_values=[""])
              for name in TABLES if (report_dir / f"{name}.csv").exists() or name in REQUIRED}
    tables["undo"]["layer"] = tables["undo"]["layer"].astype("Int64")  # empty for the unedited rows
    return tables


def _fmt_parts(df: pd.DataFrame, value: str) -> str:
    label = {"hook_attn_out": "attn_out", "hook_mlp_out": "mlp_out"}
    return ", ".join(f"L{int(r.layer)} {label.get(r.component, r.component)} ({getattr(r, value):.3f})"
                     for r in df.itertuples())


def findings(tables: dict[str, pd.DataFrame], config: dict) -> list[str]:
    """The headline in numbers; each is read from a table of the report."""
    act = tables["activation_patching"]
    into = act[act["direction"] == "into_base"]
    back = act[act["direction"] == "into_tuned"]
    kl_bt, kl_tb = into["kl_clean"].iloc[0], back["kl_clean"].iloc[0] if len(back) else float("nan")
    top = into[into["component"].isin(SUBLAYERS)].nlargest(3, "fraction_recovered")
    lines = [(f"Without a patch, KL(base||tuned) = {kl_bt:.4g} and KL(tuned||base) = {kl_tb:.4g} nats per token "
              f"(mean over {int(into['n_tokens'].iloc[0])} positions of {config.get('n_texts', '?')} texts)."),
             ("Top 3 single patches (tuned's sublayer output into base; fraction of KL(base||tuned) recovered): "
              + _fmt_parts(top, "fraction_recovered") + "; they recover "
              + ", ".join(f"{r:.3f}" for r in top["reward_proxy_recovered"]) + " of the reward proxy's gap.")]
    if len(back):
        top_back = back[back["component"].isin(SUBLAYERS)].nlargest(3, "fraction_recovered")
        lines.append("Reverse (base's sublayer output into tuned; fraction of KL(tuned||base) removed): "
                     + _fmt_parts(top_back, "fraction_recovered") + ".")
    resid = into[into["component"] == "hook_resid_post"].sort_values("layer")
    for level in (0.5, 0.9):
        hit = resid[resid["fraction_recovered"] >= level]
        if len(hit):
            lines.append(f"Patching tuned's hook_resid_post into base first recovers >= {level:.0%} of the KL at layer "
                         f"{int(hit['layer'].iloc[0])} ({hit['fraction_recovered'].iloc[0]:.3f}).")
    parts = tables["residual_attribution"]
    pb = parts[(parts["direction"] == "into_base")]
    lines.append("Additive attribution along the residual stream (increments sum to 1): largest "
                 + ", ".join(f"L{int(r.layer)} {r.component} ({r.increment:.3f})"
                             for r in pb.nlargest(3, "increment").itertuples())
                 + f"; embedding {pb.loc[pb['component'] == 'embed', 'increment'].sum():.3f}, "
                 f"ln_final + unembed {pb.loc[pb['component'] == 'unembed', 'increment'].sum():.3f}.")
    if "weight_patching" in tables:
        w = tables["weight_patching"]
        wtop = w[(w["direction"] == "into_base") & (w["component"] != "block")].nlargest(3, "fraction_recovered")
        lines.append("Weight swaps (one layer's tuned attn / mlp weights in base): "
                     + ", ".join(f"L{int(r.layer)} {r.component} ({r.fraction_recovered:.3f})" for r in wtop.itertuples())
                     + ".")
    if "trajectory_attribution" in tables:
        ta = tables["trajectory_attribution"]
        blocks = ta[ta["component"] == "block"].dropna(subset=["increment"])  # NaN: a checkpoint equal to base
        peaks = blocks.loc[blocks.groupby("step")["increment"].idxmax()].set_index("step")
        kl = tables["trajectory"].groupby("step")["kl_clean"].first()
        lines.append("Along the run (per checkpoint: KL(base||tuned), layer with the largest increment): "
                     + "; ".join(f"step {int(step)}: {value:.3g}" + (f", L{int(peaks.loc[step, 'layer'])} "
                                 f"({peaks.loc[step, 'increment']:.2f})" if step in peaks.index else ", no change")
                                 for step, value in kl.items()) + ".")
    lines += undo_findings(tables["undo"])
    return lines


def undo_findings(undo: pd.DataFrame) -> list[str]:
    lines = []
    tuned = undo[(undo["model"] == "tuned") & (undo["method"] == "none")].iloc[0]
    sampled = "reward_mean" in undo
    base = undo[(undo["model"] == "base") & (undo["method"] == "none")].iloc[0]
    if sampled:
        lines.append(f"Sampled reward: base {base.reward_mean:.2f}, tuned {tuned.reward_mean:.2f} "
                     f"(KL(tuned||base) on its samples {tuned.kl_sample_per_token:.4g} nats per token).")
    for method, label in (("ablate_mean", "ablating the mean-difference direction (every layer)"),
                          ("ablate_mean_local", "ablating the mean-difference direction (that layer only)"),
                          ("ablate_pcs1", "ablating the top principal direction"),
                          ("subtract_mean", "subtracting the mean difference")):
        for r in undo[undo["method"] == method].itertuples():
            text = (f"{label[0].upper() + label[1:]} of layer {int(r.layer)} from tuned: teacher-forced KL to base "
                    f"{r.kl_tf_base:.4g} ({r.kl_removed:+.2f} of KL(tuned||base) removed), reward proxy gain kept "
                    f"{r.proxy_gain_kept:.2f}")
            if sampled:
                text += (f"; sampled reward {r.reward_mean:.2f} ± {r.reward_stderr:.2f} (gain removed "
                         f"{r.reward_gain_removed:.2f}), KL to base on its samples {r.kl_sample_per_token:.4g}/token")
            lines.append(text + ".")
    for r in undo[undo["method"] == "add_mean"].itertuples():
        text = (f"Reverse, adding layer {int(r.layer)}'s mean difference to base: teacher-forced KL to tuned "
                f"{r.kl_tf_tuned:.4g} (base: {base.kl_tf_tuned:.4g}), reward proxy gain reproduced {r.proxy_gain_kept:.2f}")
        if sampled:
            text += (f"; sampled reward {r.reward_mean:.2f} ± {r.reward_stderr:.2f} (gain reproduced "
                     f"{r.reward_gain_kept:.2f}), KL to base on its samples {r.kl_sample_per_token:.4g}/token")
        lines.append(text + ".")
    return lines


def causal_claims(tables: dict[str, pd.DataFrame], config: dict) -> list:
    """The page's claims. Patching fractions have no interval (they were measured on a few fixed texts and no
    per-text values were stored), so where the change lives is stated as not yet measured; the sampled rewards
    have standard errors over prompts and are compared with their verdicts."""
    from rlhf_interp.core import stats
    from rlhf_interp.report.claims import Claim

    out = []
    act = tables["activation_patching"]
    n_texts = int(config.get("n_texts", len(tables["texts"])))
    positions = int(act["n_tokens"].iloc[0])
    samples = int(config.get("samples", 0) or 0)
    where = ("bare prompts, not the policy's generated continuations where its behaviour changed" if samples == 0
             else "prompts with the policy's own continuations")
    out.append(Claim.not_measured(
        "where_the_change_lives", "Whether one sublayer carries the change: not yet measured with enough samples "
        "(activation patching ran on {texts} {where}, {positions} positions, with no per-text values for an "
        "interval; the per-patch fractions below are descriptive).",
        n={"prompts": n_texts, "positions": positions},
        params={"texts": n_texts, "where": where, "positions": positions}))
    undo = tables["undo"]
    if "reward_mean" in undo:
        n_prompts = int(config.get("undo_prompts", 8))
        n = {"prompts": n_prompts, "samples_per_prompt": 1, "seeds": 1}
        tuned = undo[(undo["model"] == "tuned") & (undo["method"] == "none")].iloc[0]
        base = undo[(undo["model"] == "base") & (undo["method"] == "none")].iloc[0]
        diff = stats.summary_difference(tuned.reward_mean, tuned.reward_stderr, n_prompts, base.reward_mean,
                                        base.reward_stderr, n_prompts)
        out.append(Claim.compare(
            "tuned_vs_base_reward", "Sampled reward of checkpoint {step} minus the base model ({tokens} tokens per "
            "prompt): {value} {ci} periods; {verdict}.", diff, "tuned", "base", n=n,
            params={"step": int(str(config.get("tuned_checkpoint", "0")).rsplit("-", 1)[-1] or 0),
                    "tokens": int(config.get("undo_tokens", 16))}, headline=False))
        edits = undo[(undo["model"] == "tuned") & (undo["method"] == "subtract_mean")]
        if len(edits):
            r = edits.loc[edits["kl_removed"].idxmax()]
            diff = stats.summary_difference(r.reward_mean, r.reward_stderr, n_prompts, tuned.reward_mean,
                                            tuned.reward_stderr, n_prompts)
            out.append(Claim.compare(
                "undo_reward", "Subtracting layer {layer}'s mean tuned-minus-base difference from the tuned model "
                "changed its sampled reward by {value} {ci} periods per continuation; {verdict}. The share of the "
                "reward gain it removes is not yet measured with enough samples.", diff, "undone", "tuned", n=n,
                params={"layer": int(r.layer)}))
    return out


def render(report_dir: str | Path) -> Report:
    """The page from the CSV tables and ``config.json`` in ``report_dir`` (no model)."""
    report_dir = Path(report_dir)
    if not (report_dir / "activation_patching.csv").exists():
        raise FileNotFoundError(f"{report_dir} has no activation_patching.csv: run the analysis first "
                                f"(python analyses/causal_ppo.py --base smollm2-135m --tuned RUN_DIR).")
    config = read_config(report_dir)
    tables = read_tables(report_dir)
    lines = findings(tables, config)
    swaps = "weight_patching" in tables
    title = ("Where PPO fine-tuning lives, causally: patching, weight swaps, undoing RLHF" if swaps else
             "Where PPO fine-tuning lives, causally: activation patching and undoing RLHF")
    report = Report.at(report_dir, title, source=__file__, claims=causal_claims(tables, config))
    samples = int(config.get("samples", 0) or 0)
    texts = (f"the tuned policy's own samples ({samples} sampled tokens after each prompt)" if samples else
             "the bare prompts alone (`samples: 0`: no sampled continuations, so the positions patched are the "
             "prompts' own, not where the policy's behaviour changed)")
    report.text(
        f"Base `{config.get('base', '?')}` vs tuned `{config.get('tuned_checkpoint', '?')}`, on "
        f"{config.get('n_texts', '?')} texts: {texts}. "
        + ("" if swaps else "Weight swaps were not run (`no_weights`). ") + "Every statistic counts each real, non-pad, non-BOS position's next-token "
        "distribution once. **Directions:** `into_base` runs the base model with one activation (or one layer's "
        "weights) of the tuned model on the same tokens; `into_tuned` the other way round. **Fraction recovered** = "
        "1 - KL(patched || donor) / KL(receiver || donor), a ratio of means over positions: into base, "
        "1 - KL(patched||tuned) / KL(base||tuned). **Reward proxy** = mean log P(next token contains "
        f"{config.get('reward_substring', '.')!r}); `reward_proxy_recovered` is the patch's share of the gap "
        "between receiver and donor. KL in nats (`rlhf_interp.core.kl.kl_divergence`, exact over the vocabulary).")
    act = tables["activation_patching"]
    report.section("Where the change lives", "Each cell patches one activation of one model into the other at every "
                   "position (the colour bar gives the fraction recovered). The rows `hook_resid_mid` / "
                   "`hook_resid_post` carry every change up to that layer, the sublayer rows only their own output.")
    zero = sorted(int(layer) for layer, g in act.groupby("layer") if (g["fraction_recovered"].fillna(0) == 0).all())
    zero_note = f"; 0 at layers {zero[0]}-{zero[-1]}, where no patch changes anything" if zero else ""
    report.figure("patching_heatmap", figure_patching(act), title="Fraction of the KL recovered, per layer and component",
                  caption=f"Each cell: one patch, `fraction_recovered` of `activation_patching.csv` (1: the patch "
                          "recovers all of the KL to the donor). The colour scale runs over the values' own range "
                          f"(sequential when no value is negative beyond a tenth of the maximum; diverging around 0 otherwise{zero_note}).")
    report.section("Findings", f"Descriptive, on these {config.get('n_texts', '?')} texts (no intervals: per-text "
                   "values were not stored):\n\n" + "\n".join(f"- {line}" for line in lines))
    report.section("Activation patching", "One patch at a time, at every position. A sublayer-output patch "
                "(`hook_attn_out`, `hook_mlp_out`) imports that component's output as the donor computed it, so "
                "it also carries the effect of earlier changes on it (its *total* effect; these overlap). "
                "`hook_resid_mid` is the residual after attention, patched as `hook_resid_pre` + `hook_attn_out` "
                "(in TransformerLens 4's bridge `hook_resid_mid` is the MLP input only, and replacing it would "
                "leave the skip connection unpatched). The layer-0 `hook_resid_pre` row is the embedding.")
    report.table("top_patches", act[act["component"].isin(SUBLAYERS)].sort_values("fraction_recovered", ascending=False)
                 .groupby("direction").head(8), title="Strongest sublayer patches per direction",
                 caption="The 8 sublayer-output patches with the largest fraction recovered, per direction.")
    report.table("activation_patching", act, title="Every patch", show=0)

    parts = tables["residual_attribution"]
    report.section("Additive attribution along the residual stream", "Patching the residual stream just after a "
                "component carries every change up to it; the *increment* of the fraction recovered from just "
                "before the component to just after it is what that component adds given everything earlier. "
                "With the embedding (layer -1) and the final `ln_final` + unembedding step (layer n), the "
                "increments of one direction sum to exactly 1. Negative increments: the component moves the "
                "output away from the donor given the earlier changes.")
    report.figure("residual_attribution", figure_attribution(parts),
                  caption="`increment` of `residual_attribution.csv` per layer (attention left, MLP right).")
    report.table("residual_attribution", parts, title="Increments (share of the KL)",
                 preview=parts.sort_values("increment", ascending=False).groupby("direction").head(6),
                 caption="The 6 largest increments per direction.")

    if "weight_patching" in tables:
        report.section("Weight swaps", "One layer's tuned weights (`attn`: attention + its input norm; `mlp`: MLP + "
                    "its input norm; `block`: both) copied into the base model, restored exactly afterwards. Unlike "
                    "an activation patch, the swapped component runs on the base model's own inputs: where the two "
                    "agree, the change is local to that component's function.")
        report.figure("weight_swaps", figure_weights(tables["weight_patching"], act),
                      title="Weight swap vs activation patch (into base)",
                      caption="Solid: `fraction_recovered` of `weight_patching.csv`; dotted: the sublayer-output "
                              "activation patches of `activation_patching.csv`.")
        report.table("weight_patching", tables["weight_patching"], title="Every swap", show=0)

    if "trajectory" in tables:
        report.section("Along the run", "The same attribution (tuned's `hook_resid_post` into base, layer by layer) "
                    f"for checkpoints {config.get('trajectory_steps', '')}, on the first "
                    f"{config.get('trajectory_texts', '?')} texts. Left: each layer's increment (where the change "
                    "forms); right: the cumulative fraction recovered.")
        report.figure("trajectory_heatmap", figure_trajectory(tables["trajectory_attribution"], tables["trajectory"]),
                      title="Checkpoint x layer",
                      caption="Left: `increment` of `trajectory_attribution.csv` (component `block`); right: "
                              "`fraction_recovered` of `trajectory.csv`.")
        report.table("trajectory_attribution", tables["trajectory_attribution"], show=0)
        report.table("trajectory", tables["trajectory"], show=0)

    undo = tables["undo"]
    report.section("Undo RLHF with one direction", "From the tuned model, at the layers the attribution points to "
                f"({config.get('undo_layers_used', '')}): `ablate_mean` projects the unit mean-difference direction "
                "(tuned - base, `hook_resid_post`) out of every layer's input and outputs (`DirectionAblation`), "
                "`ablate_mean_local` out of that layer's only; "
                "`ablate_pcs<k>` does the same for the top k principal directions of the difference; "
                "`subtract_mean` adds minus the mean difference at that layer (`Steering`, non-BOS positions); "
                "`add_mean` adds it to the *base* model (the other way round; steering the base along the fine-tuning "
                "direction at equal KL is the subject of [edit_vs_finetune](../edit_vs_finetune/README.md)). "
                "`kl_tf_base`: teacher-forced KL(edited || base) per token on the texts; `kl_removed` = 1 - "
                "kl_tf_base / KL(tuned||base); `proxy_gain_kept` and `reward_gain_kept` = (value - base) / "
                "(tuned - base); the sampled columns come from the edited model's own continuations "
                f"({config.get('undo_tokens', '?')} tokens, {config.get('undo_prompts', '?')} prompts, same seed).")
    report.table("undo", undo, title="Undo-RLHF table", show=40)
    report.table("texts", tables["texts"], title="Texts patched on", show=3)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.root) / args.name
    if not args.from_csv:
        tables, config = compute(args)
        write_tables(out, tables, config=config)
    render(out).save()
    print("\n".join(f"- {line}" for line in findings(read_tables(out), read_config(out))))
    print(f"report: {out}/README.md and index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
