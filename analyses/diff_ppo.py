"""Where and when did PPO change the model? Diff a PPO policy (or every checkpoint of its run) against its base.

    python analyses/diff_ppo.py --base smollm2-135m --tuned runs/periods            # a run dir: latest + trajectory
    python analyses/diff_ppo.py --base smollm2-135m --tuned runs/periods/checkpoint-000200
    python analyses/diff_ppo.py --base smollm2-135m --demo-tuned                    # no PPO run yet: see below
    python analyses/diff_ppo.py --from-csv                                          # page from its CSVs, no model

Writes reports/diff_ppo/: the diff's tidy tables as CSV (the attention patterns of the most-changed heads too),
config.json, directions.pt (the difference directions, for steering), and the page rendered from those CSVs
(README.md, index.html, PNG figures, a circuitsvis view: base, tuned, and tuned - base).

Texts: by default the tuned policy's own samples (prompt + ``--samples`` sampled tokens), because the
tuned behaviour shows where the policy writes, not in the prompt openings; ``--samples 0`` diffs on
the shipped prompts alone.

``--demo-tuned`` stands in for a PPO checkpoint until one exists (`rlhf_interp.diff.demo`: a few Adam steps
raising log p(".") in a temporary run directory); the report says so at the top. The library pieces (trajectory,
tidy attention patterns and their views) live in `rlhf_interp.diff`; this script keeps the study's choices and page.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from rlhf_interp import load_model, load_prompts
from rlhf_interp.bridge import RunDir
from rlhf_interp.diff import check_compatible, diff_models, diff_trajectory, most_changed_heads, policy_samples
from rlhf_interp.diff.attention_view import attention_views, head_patterns, pattern_table
from rlhf_interp.diff.demo import make_demo_run
from rlhf_interp.diff.trajectory import evenly_spaced, trajectory_summary
from rlhf_interp.diff.lens import token_id
from rlhf_interp.report import Report, read_config, read_table, write_tables
from rlhf_interp.report.rebuild import rerender
from rlhf_interp.report.charts import xy_chart
from rlhf_interp.report.plots import diff_figures

HOOK = "hook_resid_post"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="smollm2-135m")
    p.add_argument("--tuned", help="a PPO run dir (latest checkpoint + trajectory) or one checkpoint / HF dir")
    p.add_argument("--demo-tuned", action="store_true", help="build a stand-in tuned run (a few gradient steps "
                                                             "raising '.') in a temp dir and diff that")
    p.add_argument("--demo-steps", type=int, default=12)
    p.add_argument("--demo-lr", type=float, default=2e-5)
    p.add_argument("--n-prompts", type=int, default=48)
    p.add_argument("--samples", type=int, default=24, help="sampled tokens per prompt (0: diff on prompts only)")
    p.add_argument("--trajectory-texts", type=int, default=16, help="texts per checkpoint in the trajectory")
    p.add_argument("--max-checkpoints", type=int, default=8, help="evenly spaced checkpoints (always the last)")
    p.add_argument("--watch-token", action="append", default=None, help="default: '.'")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="diff_ppo", help="report name: reports/<name>/")
    p.add_argument("--root", default="reports", help="reports root: the report goes to ROOT/<name>/")
    p.add_argument("--from-csv", action="store_true", help="re-render reports/<name>/ from its CSVs (no model)")
    args = p.parse_args(argv)
    if not args.from_csv and bool(args.tuned) == args.demo_tuned:
        p.error("pass exactly one of --tuned RUN_OR_CKPT_DIR and --demo-tuned")
    args.watch_token = args.watch_token or ["."]
    return args


# ----------------------------------------------------------------------------------------------
# Reading the tables (the same functions serve the full run and the rebuild from CSV)

RESULT_TABLES = ["residual", "residual_by_position", "directions", "components", "logit_lens", "logit_lens_tokens",
                 "attention", "output_summary", "output_tokens", "token_shifts", "weights", "weights_summary"]
TRAJECTORY_TABLES = ["residual", "directions", "logit_lens_tokens", "output_summary", "weights_summary"]


def findings(t: dict[str, pd.DataFrame], watch: list[str]) -> list[str]:
    """The headline numbers, as markdown bullets (also printed)."""
    res = t["residual"]
    post = res[res["hook"] == HOOK].set_index("layer")["rel_diff_norm"]
    first = int(post[post >= 0.1 * post.max()].index.min()) if post.max() > 0 else None
    unchanged = post[post == 0].index
    top = post.nlargest(5)
    writes = res[res["hook"].isin(["hook_attn_out", "hook_mlp_out"])].nlargest(5, "diff_norm")
    out = t["output_summary"].iloc[0]
    shifts = t["token_shifts"]
    up = shifts.query("direction == 'up'").nsmallest(5, "rank")
    down = shifts.query("direction == 'down'").nsmallest(5, "rank")
    lines = [
        (f"Layers {int(unchanged.min())}-{int(unchanged.max())} are unchanged (rel_diff_norm exactly 0, as for "
         f"blocks frozen during training). " if len(unchanged) else "")
        + f"Largest {HOOK} change (rel_diff_norm = token mean of ||tuned-base||/||base||): layers "
        + ", ".join(f"{layer} ({value:.3g})" for layer, value in top.items())
        + (f"; the change first reaches 10% of its maximum at layer {first}." if first is not None else "."),
        "Sublayer outputs that changed most in absolute terms (diff_norm): "
        + ", ".join(f"L{r.layer} {r.hook} ({r.diff_norm:.3g})" for r in writes.itertuples()) + ".",
        f"Mean KL per token: KL(tuned||base) = {out.kl_pi_ref:.4g}, KL(base||tuned) = {out.kl_ref_pi:.4g} "
        f"(over {int(out.n_tokens)} tokens).",
        "Next-token probability (mean over those tokens) rose most for "
        + ", ".join(f"{tok!r} ({d:+.3g})" for tok, d in zip(up.token, up.prob_diff))
        + "; fell most for " + ", ".join(f"{tok!r} ({d:+.3g})" for tok, d in zip(down.token, down.prob_diff)) + ".",
    ]
    ranks = t["logit_lens_tokens"]
    for token in watch:
        tuned = ranks[(ranks["token"] == token) & (ranks["model"] == "tuned")].set_index("layer")["rank"]
        best = tuned.nsmallest(3)
        lines.append(f"Logit lens of the mean difference ({HOOK}, tuned model's ln_final/W_U): {token!r} ranks "
                     + ", ".join(f"#{int(r)} at layer {layer}" for layer, r in best.items())
                     + f" (best layers of {len(tuned)}); at the last layer #{int(tuned.iloc[-1])}.")
    lens = t["logit_lens"]
    last = int(lens["layer"].max())
    promoted = lens[(lens["layer"] == last) & (lens["model"] == "tuned") & (lens["kind"] == "promoted")]
    lines.append(f"Tokens the last layer's mean difference promotes most: "
                 f"{', '.join(map(repr, promoted.nsmallest(8, 'rank').token))}.")
    heads = t["attention"].nlargest(3, "js_divergence")
    lines.append("Attention heads that changed most (mean JS divergence, nats): "
                 + ", ".join(f"L{r.layer}H{r.head} ({r.js_divergence:.3g})" for r in heads.itertuples()) + ".")
    weights = t["weights_summary"].nlargest(5, "rel_diff_norm")
    lines.append("Weights that moved most (relative Frobenius): "
                 + ", ".join(f"L{r.layer} {r.component} ({r.rel_diff_norm:.3g})" for r in weights.itertuples()) + ".")
    return lines


# ----------------------------------------------------------------------------------------------
# The full run: models in, tables out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.root) / args.name
    if args.from_csv:
        return rerender(render, out)
    torch.manual_seed(args.seed)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="diff_ppo_demo_") as tmp:
        tuned_path = Path(args.tuned) if args.tuned else make_demo_run(
            args.base, Path(tmp) / "run", steps=args.demo_steps, lr=args.demo_lr, seed=args.seed)
        checkpoints = RunDir(tuned_path).checkpoints  # (step, path); [] for one checkpoint or HF dir
        final_path = checkpoints[-1][1] if checkpoints else tuned_path

        base = load_model(args.base, device="cpu")
        tuned = load_model(str(final_path), device="cpu")
        check_compatible(base, tuned)
        for token in args.watch_token:
            token_id(base, token)  # a clear error now rather than after the diff
        prompts = load_prompts(limit=args.n_prompts, seed=args.seed)
        texts = (policy_samples(tuned, prompts, max_new_tokens=args.samples, seed=args.seed, batch_size=args.batch_size)
                 if args.samples > 0 else prompts)
        result = diff_models(base, tuned, texts, batch_size=args.batch_size, watch_tokens=args.watch_token)
        heads = most_changed_heads(result.attention, 4)
        tokens, base_patterns = head_patterns(base, texts[0], heads)
        _, tuned_patterns = head_patterns(tuned, texts[0], heads)
        del tuned

        traj, chosen = None, []
        if len(checkpoints) > 1:
            chosen = evenly_spaced(checkpoints, args.max_checkpoints)
            traj = diff_trajectory(base, tuned_path, texts[: args.trajectory_texts], checkpoints=chosen,
                                   analyses=("residual", "directions", "output", "weights"),
                                   batch_size=args.batch_size, watch_tokens=args.watch_token, per_token=False)

    tables = {name: getattr(result, name) for name in RESULT_TABLES}
    if traj is not None:
        tables.update({f"trajectory_{name}": getattr(traj, name) for name in TRAJECTORY_TABLES})
    tables["attention_patterns"] = pattern_table(tokens, heads, {"base": base_patterns, "tuned": tuned_patterns})
    config = {**{k: v for k, v in vars(args).items() if k != "from_csv"}, "tuned_checkpoint": str(final_path),
              "n_checkpoints": len(checkpoints), "trajectory_steps": [s for s, _ in chosen],
              "n_texts": len(texts), "diff_config": result.config, "seconds": round(time.time() - started, 1)}
    write_tables(out, tables, config=config)
    result.vectors.save(out / "directions.pt")
    report = render(out)
    report.save()
    print("\n".join(f"- {line}" for line in findings(tables, args.watch_token)))
    print(f"report: {out}/README.md and index.html ({time.time() - started:.0f} s)")
    return 0


# ----------------------------------------------------------------------------------------------
# The page: CSVs in


def _largest(df: pd.DataFrame, column: str, n: int = 10) -> pd.DataFrame:
    return df.sort_values(column, ascending=False).head(n)


def diff_claims(t: dict[str, pd.DataFrame], n_texts: int) -> list:
    """The page's claims: where the models are identical (exact), the mean KL(tuned‖base) per token with a bootstrap
    interval over prompts (from the per-token rows), and what the stored tables cannot put an interval on."""
    import numpy as np

    from rlhf_interp.core import stats
    from rlhf_interp.report.claims import Claim

    out = []
    res = t["residual"]
    post = res[res["hook"] == HOOK].set_index("layer")["rel_diff_norm"]
    tokens = t["output_tokens"]
    kl = "kl_pi_ref" if "kl_pi_ref" in tokens else "kl_forward"
    n_prompts = int(tokens["prompt_index"].nunique())
    n = {"prompts": n_prompts, "tokens": int(len(tokens))}
    first = int(post[post > 0].index.min())
    if first > 0:
        out.append(Claim.fact(
            "unchanged_layers", "The PPO policy's {hook} equals the base model's exactly in layers {lo}-{hi} (frozen in "
            "training) and differs from layer {first} on.", params={"hook": HOOK, "lo": 0, "hi": first - 1,
                                                                  "first": first}, n=n))
    per_prompt = tokens.groupby("prompt_index")[kl].agg(["sum", "size"]).to_numpy(dtype=float)
    iv = stats.bootstrap_interval(per_prompt, lambda a: a[:, 0].sum() / a[:, 1].sum(), n_boot=2000, n=n)
    out.append(Claim.estimate(
        "kl_tuned_base", "Mean KL(tuned‖base) on the diff's texts: {value} {ci} nats "
        "per token (bootstrap over prompts).", iv, fmt=".3f"))
    out.append(Claim.not_measured(
        "where_and_what", "Where along depth the change peaks and which token gained most: not yet measured with enough "
        "samples (the residual and token tables keep no per-prompt values, so the figures below are descriptive).",
        n=n))
    return out


def render(report_dir: Path) -> Report:
    """The page from the diff's CSV tables and ``config.json`` in ``report_dir`` (no model)."""
    report_dir = Path(report_dir)
    config = read_config(report_dir)
    watch = config.get("watch_token") or ["."]
    names = RESULT_TABLES + [f"trajectory_{n}" for n in TRAJECTORY_TABLES] + ["attention_patterns"]
    t = {name: read_table(report_dir, name, keep_default_na=False, na_values=[""])
         for name in names if (report_dir / f"{name}.csv").exists() or name in RESULT_TABLES}
    for name in ("token_shifts", "logit_lens", "logit_lens_tokens", "output_tokens", "attention_patterns"):
        if name in t:  # token strings such as "nan" or "null" stay strings
            for col in [c for c in t[name].columns if c.endswith("token")]:
                t[name][col] = t[name][col].fillna("").astype(str)
    lines = findings(t, watch)
    res = t["residual"]
    post = res[res["hook"] == HOOK].set_index("layer")["rel_diff_norm"]
    out = t["output_summary"].iloc[0]
    up = t["token_shifts"].query("direction == 'up'").nsmallest(1, "rank").iloc[0]
    n_texts = int(config.get("n_texts", config.get("n_prompts", 0)))
    report = Report.at(report_dir, "Model diff: PPO policy vs base model", source=__file__,
                       claims=diff_claims(t, n_texts))
    if config.get("demo_tuned"):
        report.text(
            f"> **Demo run, not PPO.** No PPO checkpoint was given, so the tuned model here is the base model after "
            f"{config['demo_steps']} Adam steps (lr {config['demo_lr']}) that raise log p(\".\") at every position "
            f"of 8 prompts, saved with checkpoints at steps {config.get('trajectory_steps') or 'n/a'}. It checks the "
            f"analysis end to end; re-run with `--tuned runs/periods` for the real result.")
    samples = config.get("samples", 0)
    source = (f"the tuned policy's own samples ({samples} sampled tokens after each of {config.get('n_prompts')} "
              f"prompts)" if samples else "the shipped prompts")
    example = ""
    if "attention_patterns" in t:
        toks = t["attention_patterns"].drop_duplicates("query_pos").sort_values("query_pos")["query_token"]
        example = "".join(toks.iloc[1:])
    report.text(
        f"Base `{config.get('base')}` vs tuned `{config.get('tuned_checkpoint')}`, on {n_texts} texts: {source}. "
        f"Both models read the same tokens (BOS prepended, left-padded, padding and BOS masked out of every "
        f"statistic). Tables are tidy; column meanings are in `rlhf_interp.diff.ModelDiff`."
        + (f"\n\nExample text: {example!r}" if example else ""))
    report.section("Findings", "\n".join(f"- {line}" for line in lines))

    figs = diff_figures({name: t[name] for name in RESULT_TABLES})
    report.section("Residual stream")
    report.figure("residual_rel_diff_norm", figs.pop("residual_rel_diff_norm"), caption=(
        f"Relative size of the change, ‖tuned − base‖/‖base‖ per token, averaged over the tokens of the {n_texts} "
        "texts, by layer; one line per hook point (resid_pre/mid/post: the residual stream; attn_out/mlp_out: what "
        "each sublayer writes)."))
    report.table("residual_resid_post", res[res["hook"] == HOOK], title=f"Residual metrics per layer at {HOOK}",
                 caption="Token means; every hook point is in `residual.csv`.", show=40)
    report.table("residual", res, caption="All hook points, the 10 largest relative changes shown.",
                 preview=_largest(res, "rel_diff_norm"))
    report.figure("residual_cosine_sim", figs.pop("residual_cosine_sim"),
                  caption="Cosine similarity between tuned and base activations per token, averaged, by layer.")
    report.figure("residual_norm_ratio", figs.pop("residual_norm_ratio"),
                  caption="‖tuned‖/‖base‖ per token, averaged, by layer (1 = same norm).")
    by_pos = t["residual_by_position"]
    report.figure("position_rel_diff_norm", figs.pop("position_rel_diff_norm"), title=f"Per token position ({HOOK})",
                  caption="‖tuned − base‖/‖base‖ by layer (rows) and token position from BOS (columns), averaged over "
                          "the texts that reach that position.")
    report.table("residual_by_position", by_pos, preview=_largest(by_pos[by_pos["hook"] == HOOK], "rel_diff_norm"),
                 caption=f"The 10 largest {HOOK} changes by (layer, position) shown.")

    report.section("Difference directions",
                   f"Per layer, the mean of (tuned - base) at {HOOK} and the principal components of the difference "
                   "(exact, from the streamed d_model x d_model second-moment matrix). `mean_share` = "
                   "‖E[d]‖² / E‖d‖²: 1 means the change is one constant shift, as a steering vector would be.")
    report.figure("direction_shares", figs.pop("direction_shares"), caption=(
        "Per layer: `mean_share`, the share of the difference's second moment that is its mean (a constant shift), "
        "and `top_pc_variance_ratio`, the share of its variance along the top principal component."))
    directions = t["directions"]
    report.table("directions", directions, show=40)
    comps = t["components"]
    report.table("components", comps, preview=comps[comps["layer"] == int(post.idxmax())],
                 caption=f"Principal components of the difference; layer {int(post.idxmax())} (the peak) shown.")

    report.section("Logit lens of the difference",
                   "Each layer's mean-difference direction v is scored as W_U^T (ln_final.w * v), centred over the "
                   "vocabulary (the final RMSNorm's 1/rms is one positive number and changes no ranking). Projected "
                   "through the tuned and through the base model.")
    if "logit_lens_token_rank" in figs:
        report.figure("logit_lens_token_rank", figs.pop("logit_lens_token_rank"), caption=(
            "Rank of each watched token among the whole vocabulary in each layer's mean difference (log axis; "
            "1 = the most promoted token), through the base and the tuned unembedding."))
    lens_tokens = t["logit_lens_tokens"]
    ranks = lens_tokens.pivot_table(index="layer", columns=["token", "model"], values="rank")
    ranks.columns = [f"rank of {token!r} via {model}" for token, model in ranks.columns]
    report.table("logit_lens_token_rank_by_layer", ranks.reset_index(), title="Rank of the watched tokens in each "
                 "layer's mean difference (1 = most promoted of the vocabulary)", show=64)
    report.table("logit_lens_tokens", lens_tokens, show=0)
    lens = t["logit_lens"]
    last_layers = sorted(lens["layer"].unique())[-3:]
    wide = (lens[(lens["model"] == "tuned") & lens["layer"].isin(last_layers) & (lens["rank"] <= 10)]
            .assign(cell=lambda d: d["token"].map(repr) + " " + d["score"].map(lambda s: f"{s:+.2f}"))
            .pivot_table(index="rank", columns=["layer", "kind"], values="cell", aggfunc="first"))
    wide.columns = [f"L{layer} {kind}" for layer, kind in wide.columns]
    report.table("logit_lens_last_layers", wide.reset_index(), title="Top tokens of the last layers' mean difference "
                 "(tuned model's unembedding)", caption="Each cell: token and its centred score.")
    report.table("logit_lens", lens, show=0)

    report.section("Next-token distributions")
    report.table("output_summary", t["output_summary"], caption="Mean KL per token over every scored position.")
    report.figure("token_shifts", figs.pop("token_shifts"), caption=(
        "The 12 tokens whose mean next-token probability (over all scored positions) rose most (green) and the 12 "
        "that fell most (red): tuned minus base."))
    report.table("token_shifts", t["token_shifts"], show=20)
    tokens_df = t["output_tokens"]
    by_pos_kl = (tokens_df.groupby("position", as_index=False)[["kl_pi_ref", "kl_ref_pi"]].mean()
                 .assign(n_tokens=tokens_df.groupby("position").size().values))
    report.table("kl_by_position", by_pos_kl, title="Mean KL by token position", show=15)
    report.table("output_tokens", tokens_df, preview=_largest(tokens_df, "kl_pi_ref"),
                 caption="Per scored token; the 10 with the largest KL(tuned‖base) shown.")

    report.section("Attention patterns")
    attention = t["attention"].sort_values("js_divergence", ascending=False)
    report.figure("attention_js", figs.pop("attention_js"), caption=(
        "Mean Jensen-Shannon divergence (nats, at most ln 2) between the tuned and base attention pattern of each "
        "head, averaged over query rows of all texts."))
    report.table("attention", attention, title="Heads by mean Jensen-Shannon divergence (nats)", show=12)
    if "attention_patterns" in t:
        patterns = t["attention_patterns"]
        js = attention.set_index(["layer", "head"])["js_divergence"]
        shown = patterns[["layer", "head"]].drop_duplicates()
        heads = sorted({(int(r.layer), int(r.head)) for r in shown.itertuples()},
                       key=lambda lh: -js.get(lh, 0.0))
        tokens, side_by_side, difference, bound, moves = attention_views(patterns, heads)
        head_list = ", ".join(f"L{layer}H{head} (JS {js.get((layer, head), float('nan')):.2g})"
                              for layer, head in heads)
        intro = (f"The {len(heads)} heads whose attention pattern changed most (largest mean Jensen-Shannon divergence "
                 f"between tuned and base over the {n_texts} texts): {head_list}. Shown on one text, the tuned "
                 f"policy's sample {''.join(tokens[1:])!r} ({len(tokens)} tokens with BOS).\n\n"
                 "How to read: each small heatmap in the selector is one head; hover one to show it enlarged below "
                 "(click to keep it), hover a cell for its tokens and value. Rows are query (destination) tokens, "
                 "columns key (source) tokens, darker = more attention. First every head as base then tuned; then "
                 f"the difference tuned − base (blue: the tuned head attends more, red: less; colour scale "
                 f"±{bound:.2g}).\n\nOn this text, the key token whose attention changed most per head (mean change "
                 "over the query rows that can see it; most gained, most lost): " + "; ".join(moves) + ".")
        report.circuitsvis("attention_most_changed", side_by_side,
                           title="Most-changed heads on one text: base, then tuned",
                           caption=f"{head_list}; each head as base then tuned.", page_intro=intro,
                           extra_views=[("The same heads: tuned − base", difference,
                                         f"Blue: tuned attends more, red: less (scale ±{bound:.2g}).")])

    report.section("Weights")
    report.figure("weights_rel_diff_norm", figs.pop("weights_rel_diff_norm"), caption=(
        "Relative Frobenius change ‖W_tuned − W_base‖/‖W_base‖ per layer and component (layer -1: embeddings and "
        "the final norm)."))
    report.table("weights_summary", t["weights_summary"].sort_values("rel_diff_norm", ascending=False),
                 title="Per layer and component, largest relative change first", show=15)
    report.table("weights", t["weights"], preview=_largest(t["weights"], "rel_diff_norm"),
                 caption="Per parameter tensor; the 10 largest relative changes shown.")

    if "trajectory_residual" in t:
        steps = sorted(t["trajectory_residual"]["step"].unique())
        report.section(f"Trajectory over {len(steps)} checkpoints",
                       f"The same diff (residual, directions, logit lens, output, weights) for each checkpoint "
                       f"(steps {', '.join(map(str, steps))}), on the first {config.get('trajectory_texts')} texts.")
        traj_tables = {name: t[f"trajectory_{name}"] for name in TRAJECTORY_TABLES if f"trajectory_{name}" in t}
        tfigs = diff_figures(traj_tables)
        one = t["trajectory_residual"][t["trajectory_residual"]["hook"] == HOOK]
        report.figure("trajectory_rel_diff_norm", tfigs["trajectory_rel_diff_norm"], caption=(
            f"{HOOK}: ‖tuned − base‖/‖base‖ by checkpoint step (rows) and layer (columns)."),
            chart=xy_chart(one, "layer", "rel_diff_norm", series="step", series_label="step ",
                           hover=["cosine_sim", "norm_ratio"], xlabel="layer",
                           ylabel="‖tuned − base‖ / ‖base‖ (ratio)", log_y=False,
                           title=f"{HOOK}: relative change by layer, one line per checkpoint step"))
        report.figure("trajectory_rel_diff_norm_curves", tfigs["trajectory_rel_diff_norm_curves"],
                      caption="The same, one line per checkpoint step.")
        traj = {name: t[f"trajectory_{name}"] for name in TRAJECTORY_TABLES if f"trajectory_{name}" in t}
        report.table("trajectory_summary", trajectory_summary(traj, watch, HOOK), caption=(
            "Per step: the layer where the change peaks and its size, the mean over layers, KL per token both ways, "
            "the pooled relative weight change, and the watched token's best and last-layer logit-lens rank."))
        for name in TRAJECTORY_TABLES:
            if f"trajectory_{name}" in t:
                report.table(f"trajectory_{name}", t[f"trajectory_{name}"], show=0)
    return report


if __name__ == "__main__":
    sys.exit(main())
