"""Where and when did PPO change the model? Diff a PPO policy (or every checkpoint of its run) against its base.

    python analyses/diff_ppo.py --base smollm2-135m --tuned runs/periods            # a run dir: latest + trajectory
    python analyses/diff_ppo.py --base smollm2-135m --tuned runs/periods/checkpoint-000200
    python analyses/diff_ppo.py --base smollm2-135m --demo-tuned                    # no PPO run yet: see below

Writes reports/diff_ppo/ (README.md, index.html, CSV tables, PNG figures, a circuitsvis view of the heads
whose attention changed most, directions.pt with the difference directions for steering).

Texts: by default the tuned policy's own samples (prompt + ``--samples`` sampled tokens), because the
tuned behaviour shows where the policy writes, not in the prompt openings; ``--samples 0`` diffs on
the shipped prompts alone.

``--demo-tuned`` stands in for a PPO checkpoint until one exists: it copies the base model into a
temporary run directory and takes a few Adam steps that raise log p(".") at every position of a few
prompts (a hand-written "period" objective, no PPO, no KL penalty), saving checkpoints along the way,
so every part of the analysis (trajectory included) runs end to end. The report says so at the top.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from rlhf_interp import Report, load_model, load_prompts, save_hf_model, tokenize
from rlhf_interp.checkpoints import list_checkpoints
from rlhf_interp.diff import (
    attention_diff_view,
    check_compatible,
    diff_models,
    diff_trajectory,
    most_changed_heads,
    policy_samples,
)
from rlhf_interp.diff.lens import token_id
from rlhf_interp.diff.trajectory import trajectory_checkpoints
from rlhf_interp.plots import diff_figures

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
    args = p.parse_args(argv)
    if bool(args.tuned) == args.demo_tuned:
        p.error("pass exactly one of --tuned RUN_OR_CKPT_DIR and --demo-tuned")
    args.watch_token = args.watch_token or ["."]
    return args


# ----------------------------------------------------------------------------------------------
# The stand-in tuned run (only with --demo-tuned)


def make_demo_run(base_name: str, run_dir: Path, *, steps: int, lr: float, seed: int) -> Path:
    """Adam on -mean log p('.') over every real position of 8 prompts; checkpoints at steps/4, steps/2, steps."""
    from rlhf_interp.models import load_hf_model

    model, tokenizer, _ = load_hf_model(base_name, device="cpu")
    bridge_for_tokens = load_model(base_name, device="cpu")
    tokens, mask = tokenize(bridge_for_tokens, load_prompts(limit=8, seed=seed + 1000))
    del bridge_for_tokens
    dot = tokenizer(".", add_special_tokens=False)["input_ids"][0]
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    save_at = sorted({max(1, steps // 4), max(1, steps // 2), steps})
    for step in range(1, steps + 1):
        logprobs = torch.log_softmax(model(input_ids=tokens, attention_mask=mask).logits, dim=-1)[..., dot]
        loss = -(logprobs * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"[demo] step {step}: mean log p('.') = {-loss.item():.3f}", file=sys.stderr)
        if step in save_at:
            save_hf_model(model, tokenizer, run_dir / f"checkpoint-{step:06d}",
                          meta={"step": step, "base_model": base_name, "demo": "gradient ascent on log p('.')",
                                "lr": lr, "mean_logp_period": -loss.item()})
    return run_dir


# ----------------------------------------------------------------------------------------------
# Reading the tables


def evenly_spaced(items: list, k: int) -> list:
    if len(items) <= k:
        return items
    picks = {round(i * (len(items) - 1) / (k - 1)) for i in range(k)}
    return [items[i] for i in sorted(picks)]


def findings(result, watch: list[str]) -> list[str]:
    """The headline numbers, as markdown bullets (also printed)."""
    res = result.residual
    post = res[res["hook"] == HOOK].set_index("layer")["rel_diff_norm"]
    first = int(post[post >= 0.1 * post.max()].index.min()) if post.max() > 0 else None
    top = post.nlargest(5)
    writes = res[res["hook"].isin(["hook_attn_out", "hook_mlp_out"])].nlargest(5, "diff_norm")
    out = result.output_summary.iloc[0]
    up = result.token_shifts.query("direction == 'up'").nsmallest(5, "rank")
    down = result.token_shifts.query("direction == 'down'").nsmallest(5, "rank")
    lines = [
        f"Largest {HOOK} change (rel_diff_norm = ||tuned-base||/||base||): layers "
        + ", ".join(f"{layer} ({value:.3g})" for layer, value in top.items())
        + (f"; the change first reaches 10% of its maximum at layer {first}." if first is not None else "."),
        "Sublayer outputs that changed most in absolute terms (diff_norm): "
        + ", ".join(f"L{r.layer} {r.hook} ({r.diff_norm:.3g})" for r in writes.itertuples()) + ".",
        f"Mean KL per token: forward KL(tuned||base) = {out.kl_forward:.4g}, reverse = {out.kl_reverse:.4g} "
        f"(over {int(out.n_tokens)} tokens).",
        "Next-token probability rose most for " + ", ".join(f"{t!r} ({d:+.3g})" for t, d in zip(up.token, up.prob_diff))
        + "; fell most for " + ", ".join(f"{t!r} ({d:+.3g})" for t, d in zip(down.token, down.prob_diff)) + ".",
    ]
    ranks = result.logit_lens_tokens
    for token in watch:
        tuned = ranks[(ranks["token"] == token) & (ranks["model"] == "tuned")].set_index("layer")["rank"]
        best = tuned.nsmallest(3)
        lines.append(f"Logit lens of the mean difference ({HOOK}, tuned model's ln_final/W_U): {token!r} ranks "
                     + ", ".join(f"#{int(r)} at layer {layer}" for layer, r in best.items())
                     + f" (best layers of {len(tuned)}); at the last layer #{int(tuned.iloc[-1])}.")
    lens = result.logit_lens
    last = int(lens["layer"].max())
    promoted = lens.query("layer == @last and model == 'tuned' and kind == 'promoted'").nsmallest(8, "rank")
    lines.append(f"Tokens the last layer's mean difference promotes most: {', '.join(map(repr, promoted.token))}.")
    heads = result.attention.nlargest(3, "js_divergence")
    lines.append("Attention heads that changed most (mean JS divergence, nats): "
                 + ", ".join(f"L{r.layer}H{r.head} ({r.js_divergence:.3g})" for r in heads.itertuples()) + ".")
    weights = result.weights_summary.nlargest(5, "rel_diff_norm")
    lines.append("Weights that moved most (relative Frobenius): "
                 + ", ".join(f"L{r.layer} {r.component} ({r.rel_diff_norm:.3g})" for r in weights.itertuples()) + ".")
    return lines


def trajectory_summary(traj, watch: list[str]) -> pd.DataFrame:
    """One row per step: where the residual change peaks, its size, KL, and the watched token's best lens rank."""
    rows = []
    for step, group in traj.residual[traj.residual["hook"] == HOOK].groupby("step"):
        peak = group.loc[group["rel_diff_norm"].idxmax()]
        out = traj.output_summary.query("step == @step").iloc[0]
        row = {"step": step, "peak_layer": int(peak["layer"]), "peak_rel_diff_norm": peak["rel_diff_norm"],
               "mean_rel_diff_norm": group["rel_diff_norm"].mean(), "kl_forward": out["kl_forward"],
               "kl_reverse": out["kl_reverse"]}
        if not traj.weights_summary.empty:
            w = traj.weights_summary.query("step == @step")
            row["weights_rel_diff_norm"] = (w["diff_norm"] ** 2).sum() ** 0.5 / (w["base_norm"] ** 2).sum() ** 0.5
        for token in watch:
            r = traj.logit_lens_tokens.query("step == @step and token == @token and model == 'tuned'")
            row[f"best_lens_rank_{token}"] = r["rank"].min()
            row[f"last_layer_lens_rank_{token}"] = r.loc[r["layer"].idxmax(), "rank"]
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="diff_ppo_demo_") as tmp:
        tuned_path = Path(args.tuned) if args.tuned else make_demo_run(
            args.base, Path(tmp) / "run", steps=args.demo_steps, lr=args.demo_lr, seed=args.seed)
        checkpoints = list_checkpoints(tuned_path)
        final_path = checkpoints[-1] if checkpoints else tuned_path

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
        view = attention_diff_view(base, tuned, texts[0], heads)
        del tuned

        traj, chosen = None, []
        if len(checkpoints) > 1:
            chosen = evenly_spaced(trajectory_checkpoints(tuned_path), args.max_checkpoints)
            traj = diff_trajectory(base, tuned_path, texts[: args.trajectory_texts], checkpoints=chosen,
                                   analyses=("residual", "directions", "output", "weights"),
                                   batch_size=args.batch_size, watch_tokens=args.watch_token, per_token=False)

    lines = findings(result, args.watch_token)
    print("\n".join(f"- {line}" for line in lines))
    report = build_report(args, result, traj, lines, final_path, checkpoints, chosen, texts, view, heads)
    report.config.update({"seconds": round(time.time() - started, 1)})
    out = report.save()
    result.vectors.save(out / "directions.pt")
    print(f"report: {out}/README.md and index.html ({time.time() - started:.0f} s)")
    return 0


def build_report(args, result, traj, lines, final_path, checkpoints, chosen, texts, view, heads) -> Report:
    report = Report(args.name, "Model diff: PPO policy vs base model")
    report.config = {**vars(args), "tuned_checkpoint": str(final_path), "n_checkpoints": len(checkpoints),
                     "trajectory_steps": [s for s, _ in chosen], "diff_config": result.config}
    if args.demo_tuned:
        report.text(
            f"> **Demo run, not PPO.** No PPO checkpoint was given, so the tuned model here is the base model after "
            f"{args.demo_steps} Adam steps (lr {args.demo_lr}) that raise log p(\".\") at every position of 8 "
            f"prompts, saved as a run directory with checkpoints at steps {[s for s, _ in chosen] or 'n/a'}. It checks "
            f"the analysis end to end; re-run with `--tuned runs/periods` for the real result.")
    source = f"the tuned policy's own samples ({args.samples} sampled tokens after each prompt)" if args.samples \
        else "the shipped prompts"
    report.text(
        f"Base `{args.base}` vs tuned `{final_path}`, on {len(texts)} texts: {source}. Both models read the same "
        f"tokens (BOS prepended, left-padded, padding and BOS masked out of every statistic). Tables are tidy; "
        f"column meanings are in `rlhf_interp.diff.ModelDiff`.\n\nExample text: {texts[0]!r}")
    report.text("## Findings\n\n" + "\n".join(f"- {line}" for line in lines))

    figs = diff_figures(result.tables())
    res = result.residual
    report.figure("residual_rel_diff_norm", figs.pop("residual_rel_diff_norm"),
                  title="Residual stream: relative size of the change, by layer and hook point")
    report.table("residual_resid_post", res[res["hook"] == HOOK], title=f"Residual metrics per layer at {HOOK} "
                 "(token means; every hook point in residual.csv)", max_rows=40)
    report.table("residual", res, max_rows=5)
    report.figure("residual_cosine_sim", figs.pop("residual_cosine_sim"))
    report.figure("residual_norm_ratio", figs.pop("residual_norm_ratio"))
    report.figure("position_rel_diff_norm", figs.pop("position_rel_diff_norm"),
                  title=f"Per token position ({HOOK})")
    report.table("residual_by_position", result.residual_by_position, max_rows=5)

    report.text("## Difference directions\n\nPer layer, the mean of (tuned - base) at "
                f"{HOOK} and the principal components of the difference (exact, from the streamed d_model x d_model "
                "second-moment matrix). `mean_share` = ||E[d]||^2 / E||d||^2: 1 means the change is one constant "
                "shift, as a steering vector would be.")
    report.figure("direction_shares", figs.pop("direction_shares"))
    report.table("directions", result.directions, max_rows=40)
    report.table("components", result.components, max_rows=5)

    report.text("## Logit lens of the difference\n\nEach layer's mean-difference direction v is scored as "
                "W_U^T (ln_final.w * v), centred over the vocabulary (the final RMSNorm's 1/rms is one positive "
                "number and changes no ranking). Projected through the tuned and through the base model.")
    if "logit_lens_token_rank" in figs:
        report.figure("logit_lens_token_rank", figs.pop("logit_lens_token_rank"))
    ranks = result.logit_lens_tokens.pivot_table(index="layer", columns=["token", "model"], values="rank")
    ranks.columns = [f"rank of {token!r} via {model}" for token, model in ranks.columns]
    report.table("logit_lens_token_rank_by_layer", ranks.reset_index(), title="Rank of the watched tokens in each "
                 "layer's mean difference (1 = most promoted of the vocabulary)", max_rows=64)
    report.table("logit_lens_tokens", result.logit_lens_tokens, max_rows=5)
    lens = result.logit_lens
    last_layers = sorted(lens["layer"].unique())[-3:]
    wide = (lens[(lens["model"] == "tuned") & lens["layer"].isin(last_layers) & (lens["rank"] <= 10)]
            .assign(cell=lambda d: d["token"].map(repr) + " " + d["score"].map(lambda s: f"{s:+.2f}"))
            .pivot_table(index="rank", columns=["layer", "kind"], values="cell", aggfunc="first"))
    wide.columns = [f"L{layer} {kind}" for layer, kind in wide.columns]
    report.table("logit_lens_last_layers", wide.reset_index(), title="Top tokens of the last layers' mean difference "
                 "(tuned model's unembedding)")
    report.table("logit_lens", lens, max_rows=5)

    report.text("## Next-token distributions")
    report.table("output_summary", result.output_summary)
    report.figure("token_shifts", figs.pop("token_shifts"))
    report.table("token_shifts", result.token_shifts, max_rows=20)
    by_pos = (result.output_tokens.groupby("position", as_index=False)[["kl_forward", "kl_reverse"]].mean()
              .assign(n_tokens=result.output_tokens.groupby("position").size().values))
    report.table("kl_by_position", by_pos, title="Mean KL by token position", max_rows=15)
    report.table("output_tokens", result.output_tokens, max_rows=5)

    report.text("## Attention patterns")
    report.figure("attention_js", figs.pop("attention_js"))
    report.table("attention", result.attention.sort_values("js_divergence", ascending=False),
                 title="Heads by mean Jensen-Shannon divergence (nats)", max_rows=12)
    report.circuitsvis("attention_most_changed", view, title="Most-changed heads on the example text: "
                       + ", ".join(f"L{layer}H{head}" for layer, head in heads) + " (base, then tuned)")

    report.text("## Weights")
    report.figure("weights_rel_diff_norm", figs.pop("weights_rel_diff_norm"))
    report.table("weights_summary", result.weights_summary.sort_values("rel_diff_norm", ascending=False),
                 title="Per layer and component, largest relative change first", max_rows=15)
    report.table("weights", result.weights, max_rows=5)

    if traj is not None:
        report.text(f"## Trajectory over {len(chosen)} checkpoints\n\nThe same diff (residual, directions, logit "
                    f"lens, output, weights) for each checkpoint, on the first {args.trajectory_texts} texts.")
        tfigs = diff_figures(traj.tables())
        for name in ("trajectory_rel_diff_norm", "trajectory_rel_diff_norm_curves"):
            report.figure(name, tfigs[name])
        report.table("trajectory_summary", trajectory_summary(traj, args.watch_token))
        for name in ("residual", "directions", "logit_lens_tokens", "output_summary", "weights_summary"):
            report.table(f"trajectory_{name}", getattr(traj, name), max_rows=5)
    return report


if __name__ == "__main__":
    sys.exit(main())
