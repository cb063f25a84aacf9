"""``rlhf-interp diff --base MODEL --tuned MODEL_OR_RUN_DIR --out DIR``: every diff table as CSV, figures as PNG."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from rlhf_interp.cli.common import add_overwrite_arg, positive_int


def _outputs() -> list[str]:
    """What `diff` writes: one CSV per ModelDiff table, directions.pt, config.json and the figures."""
    from rlhf_interp.diff.core import ModelDiff

    return [f"{f.name}.csv" for f in fields(ModelDiff) if f.name not in ("vectors", "config")] + [
        "directions.pt", "config.json", "*.png"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diff", help="compare a tuned model (or every checkpoint of a run) with its base model: "
                                    "residual streams, difference directions, logit lens, weights, attention, KL")
    p.add_argument("--base", required=True, help="base model: alias (smollm2-135m, tiny-test), HF dir or Hub id")
    p.add_argument("--tuned", required=True, help="tuned model: HF dir, checkpoint dir, or a run dir (its latest "
                                                  "checkpoint; all of them with --trajectory)")
    p.add_argument("--out", required=True, type=Path, help="directory for the CSV tables, PNG figures, "
                                                           "directions.pt and config.json (created; files overwritten)")
    p.add_argument("--prompts", default=None, help="prompt file (.txt one per line, or .jsonl with 'prompt'); "
                                                   "default: the shipped prompts")
    p.add_argument("--n-prompts", type=positive_int, default=64, help="how many prompts (a seeded random subset; default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=0, metavar="N_NEW_TOKENS",
                   help="diff on the tuned policy's own samples: prompt + N sampled tokens (default 0: prompts only)")
    p.add_argument("--trajectory", action="store_true", help="diff every checkpoint of the run dir given as --tuned "
                                                             "(adds a step column)")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--hooks", nargs="+", default=None, metavar="HOOK",
                   help="block hook points to compare (default: hook_resid_pre hook_resid_mid hook_resid_post "
                        "hook_attn_out hook_mlp_out)")
    p.add_argument("--watch-token", action="append", default=[], metavar="TOKEN",
                   help="report this token's logit-lens rank per layer (repeatable), e.g. --watch-token .")
    p.add_argument("--include-bos", action="store_true", help="count the BOS position in the statistics")
    p.add_argument("--top-k", type=positive_int, default=15, help="tokens listed per layer / per direction of change")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, help="float32 (default), bfloat16, float16")
    add_overwrite_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rlhf_interp.bridge import RunDir, load_model
    from rlhf_interp.diff import RESID_HOOKS, check_compatible, diff_models, diff_trajectory, policy_samples
    from rlhf_interp.report.plots import diff_figures, save_figure
    from rlhf_interp.prompts import load_prompts

    from rlhf_interp.cli.common import input_paths
    from rlhf_interp.core.outdir import claim_dir

    if args.samples < 0:
        raise ValueError(f"--samples {args.samples}: give a number of new tokens >= 0 (0: prompts only).")
    checkpoints = RunDir(args.tuned).checkpoints  # [] for a checkpoint or HF directory
    if args.trajectory and not checkpoints:
        raise ValueError(f"--trajectory needs a run directory with checkpoint-NNNNNN/ folders; {args.tuned} has none.")
    prompts = load_prompts(args.prompts, limit=args.n_prompts, seed=args.seed)
    claim_dir(args.out, "diff", _outputs(), overwrite=args.overwrite,  # before any compute; never an input
              inputs=input_paths(args))
    base = load_model(args.base, device=args.device, dtype=args.dtype)
    first = load_model(args.tuned, device=args.device, dtype=args.dtype)  # a run dir: its latest checkpoint
    check_compatible(base, first)  # before any forward pass
    if args.samples > 0:
        print(f"sampling {args.samples} tokens per prompt from the tuned model ...")
        prompts = policy_samples(first, prompts, max_new_tokens=args.samples, seed=args.seed)
    kwargs = dict(hooks=tuple(args.hooks or RESID_HOOKS), batch_size=args.batch_size, include_bos=args.include_bos,
                  top_k=args.top_k, watch_tokens=args.watch_token)
    if args.trajectory:
        del first
        result = diff_trajectory(base, args.tuned, prompts, **kwargs)
    else:
        if len(checkpoints) > 1:
            print(f"{args.tuned} holds {len(checkpoints)} checkpoints; diffing the latest ({checkpoints[-1][1].name}). "
                  f"Add --trajectory to diff every one.")
        result = diff_models(base, first, prompts, **kwargs)
    result.config.update({"prompts": args.prompts or "shipped", "seed": args.seed, "samples": args.samples})
    written = result.save(args.out)
    for name, fig in diff_figures(result.tables()).items():
        save_figure(fig, args.out / f"{name}.png")
        written.append(args.out / f"{name}.png")
    print(_summary(result))
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def _summary(result) -> str:
    """A few lines a user can read in the terminal: where the change is largest, and its KL."""
    lines = []
    residual = result.residual
    if not residual.empty:
        if "step" in residual.columns:
            residual = residual[residual["step"] == residual["step"].max()]
        post = residual[residual["hook"] == "hook_resid_post"].nlargest(5, "rel_diff_norm")
        if not post.empty:
            lines.append("layers with the largest hook_resid_post change (rel_diff_norm): "
                         + ", ".join(f"{r.layer} ({r.rel_diff_norm:.3g})" for r in post.itertuples()))
    if not result.output_summary.empty:
        s = result.output_summary.iloc[-1]
        lines.append(f"mean KL per token: KL(tuned||base) {s.kl_pi_ref:.4g}, KL(base||tuned) {s.kl_ref_pi:.4g}")
    if not result.token_shifts.empty:
        shifts = result.token_shifts
        if "step" in shifts.columns:
            shifts = shifts[shifts["step"] == shifts["step"].max()]
        up = shifts[shifts["direction"] == "up"].nsmallest(5, "rank")
        lines.append("tokens made more likely: " + ", ".join(f"{t!r} ({d:+.2g})" for t, d in zip(up.token, up.prob_diff)))
    return "\n".join(lines)
