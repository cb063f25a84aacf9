"""``rlhf-interp patch --base A --tuned B --out DIR``: causal attribution of the fine-tuning, as CSV tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlhf_interp.cli.common import add_overwrite_arg, positive_int

OUTPUTS = ("activation_patching.csv", "residual_attribution.csv", "weight_patching.csv", "trajectory.csv",
           "trajectory_attribution.csv")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("patch", help="activation patching between a base and a tuned model (both directions, per "
                                     "layer and component), weight swaps, and the same along a run's checkpoints")
    p.add_argument("--base", required=True, help="base model: alias (smollm2-135m, tiny-test), HF dir or Hub id")
    p.add_argument("--tuned", required=True, help="tuned model: HF dir, checkpoint dir, or a run dir (its latest "
                                                  "checkpoint; every one with --trajectory)")
    p.add_argument("--out", required=True, type=Path, help="directory for the CSV tables (created; files overwritten)")
    p.add_argument("--prompts", default=None, help="prompt file (.txt one per line, or .jsonl with 'prompt'); "
                                                   "default: the shipped prompts")
    p.add_argument("--n-prompts", type=positive_int, default=16, help="how many prompts (a seeded random subset; default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=0, metavar="N_NEW_TOKENS",
                   help="patch on the tuned policy's own samples: prompt + N sampled tokens (default 0: prompts only)")
    p.add_argument("--components", nargs="+", default=None, metavar="HOOK",
                   help="hook points to patch per layer (default: hook_attn_out hook_mlp_out hook_resid_mid "
                        "hook_resid_post)")
    p.add_argument("--directions", nargs="+", default=["into_base", "into_tuned"], choices=["into_base", "into_tuned"],
                   help="into_base: base run with the tuned model's activation; into_tuned: the reverse (default both)")
    p.add_argument("--reward-substring", default=".", help="reward proxy: log-prob of the next token containing "
                                                           "this text (default '.', the period task)")
    p.add_argument("--weights", action="store_true", help="also swap each layer's attn / mlp / whole-block weights")
    p.add_argument("--trajectory", action="store_true", help="patch every checkpoint of the run dir given as --tuned "
                                                             "(hook_resid_post per layer, into base; adds a step column)")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, help="float32 (default), bfloat16, float16")
    add_overwrite_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rlhf_interp.bridge import RunDir, load_model
    from rlhf_interp.diff import check_compatible, policy_samples
    from rlhf_interp.patching import (
        COMPONENTS,
        activation_patching,
        patching_trajectory,
        residual_attribution,
        rewarded_token_ids,
        weight_patching,
    )
    from rlhf_interp.prompts import load_prompts

    from rlhf_interp.cli.common import input_paths
    from rlhf_interp.core.outdir import claim_dir

    if args.samples < 0:
        raise ValueError(f"--samples {args.samples}: give a number of new tokens >= 0 (0: prompts only).")
    checkpoints = RunDir(args.tuned).checkpoints  # [] for a checkpoint or HF directory
    if args.trajectory and not checkpoints:
        raise ValueError(f"--trajectory needs a run directory with checkpoint-NNNNNN/ folders; {args.tuned} has none.")
    if not args.reward_substring:
        raise ValueError("--reward-substring is empty: give the text the rewarded tokens contain (default '.').")
    texts = load_prompts(args.prompts, limit=args.n_prompts, seed=args.seed)
    claim_dir(args.out, "patch", OUTPUTS, overwrite=args.overwrite,  # before any compute; never an input
              inputs=input_paths(args))
    base = load_model(args.base, device=args.device, dtype=args.dtype)
    tuned = load_model(args.tuned, device=args.device, dtype=args.dtype)  # a run dir: its latest checkpoint
    check_compatible(base, tuned)  # before any forward pass
    if args.samples > 0:
        texts = policy_samples(tuned, texts, max_new_tokens=args.samples, seed=args.seed)
    kwargs = {"reward_token_ids": rewarded_token_ids(base.tokenizer, args.reward_substring),
              "batch_size": args.batch_size, "directions": args.directions}
    table = activation_patching(base, tuned, texts, components=args.components or COMPONENTS, **kwargs)
    tables = {"activation_patching": table}
    if "hook_resid_post" in set(table["component"]):
        tables["residual_attribution"] = residual_attribution(table)
    if args.weights:
        tables["weight_patching"] = weight_patching(base, tuned, texts, **kwargs)
    if args.trajectory:
        del tuned
        traj = patching_trajectory(base, args.tuned, texts, components=["hook_resid_post"], **kwargs)
        tables["trajectory"] = traj
        tables["trajectory_attribution"] = residual_attribution(traj)
    for name, df in tables.items():
        df.to_csv(args.out / f"{name}.csv", index=False)
    print(_summary(tables))
    print(f"wrote {len(tables)} tables to {args.out}")
    return 0


def _summary(tables: dict) -> str:
    """The strongest patches in words: what a user reads in the terminal."""
    table = tables["activation_patching"]
    lines = []
    for direction in table["direction"].unique():
        sub = table[(table["direction"] == direction) & table["component"].isin(["hook_attn_out", "hook_mlp_out"])]
        top = sub.nlargest(3, "fraction_recovered")
        if len(top):
            lines.append(f"{direction}: sublayer outputs that recover most of the KL: "
                         + ", ".join(f"L{r.layer} {r.component} ({r.fraction_recovered:.3g})" for r in top.itertuples())
                         + f" (KL without a patch {top['kl_clean'].iloc[0]:.4g} nats/token)")
    parts = tables.get("residual_attribution")
    if parts is not None:
        into = parts[parts["direction"] == parts["direction"].iloc[0]]
        top = into.nlargest(3, "increment")
        lines.append(f"additive attribution along the residual stream ({into['direction'].iloc[0]}): "
                     + ", ".join(f"L{r.layer} {r.component} {r.increment:.3g}" for r in top.itertuples())
                     + " of the KL recovered")
    return "\n".join(lines)
