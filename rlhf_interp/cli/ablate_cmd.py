"""``rlhf-interp ablate``: ablate targets (heads, attention or MLP outputs, whole layers) one at a time and
write reward and KL per target (CSV + PNG)."""

from __future__ import annotations

import argparse
from rlhf_interp.cli.common import add_common_args, claim_out, load_prompt_set, parse_layers, require_samples, write_config

OUTPUTS = ("ablation_sweep.csv", "ablation_sweep.png", "config.json")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("ablate", help="ablate heads / attention / MLPs / layers one at a time; CSV + PNG")
    add_common_args(parser, default_out="runs/ablate")
    what = parser.add_argument_group("targets (one of)")
    what.add_argument("--targets", default=None,
                      help="semicolon-separated settings, each a comma-separated target list: '3.attn;3.mlp;5.2,5.3'")
    what.add_argument("--heads-of-layer", default=None, help="every head of these layers, one at a time ('3,4')")
    what.add_argument("--layers", default=None, help="whole layers, one at a time ('all' or '0,5,10')")
    parser.add_argument("--kind", default="zero", choices=["zero", "mean", "resample"])
    parser.add_argument("--reference-prompts", default=None,
                        help="prompt file for mean / resample statistics (default: 32 shipped prompts)")
    parser.set_defaults(func=_ablate)


def _ablate(args: argparse.Namespace) -> int:
    from rlhf_interp.bridge import load_model
    from rlhf_interp.edits import parse_targets, resolve_layers
    from rlhf_interp.measure import ablation_sweep, all_heads
    from rlhf_interp.report.plots import plot_ablation_sweep, save_figure
    from rlhf_interp.prompts import load_prompts

    require_samples(args)
    given = [args.targets, args.heads_of_layer, args.layers]
    if sum(x is not None for x in given) != 1:
        raise ValueError("Give exactly one of --targets, --heads-of-layer, --layers.")
    targets: list[str] = []
    if args.targets is not None:
        targets = [t.strip() for t in args.targets.split(";") if t.strip()]
        if not targets:
            raise ValueError(f"--targets {args.targets!r} names no target; e.g. '3.attn;3.mlp;5.2,5.3'.")
        for target in targets:
            parse_targets(target)  # the syntax, before loading anything
    else:
        layer_arg = parse_layers(args.heads_of_layer if args.heads_of_layer is not None else args.layers)
    references = load_prompts(args.reference_prompts) if args.reference_prompts else None
    if references is not None and args.kind == "zero":
        print("--reference-prompts is used only by --kind mean or resample; ignored for zero ablation.")
    prompts = load_prompt_set(args)
    out = claim_out(args, "ablate", OUTPUTS)  # before any compute
    model = load_model(args.model)
    if args.heads_of_layer is not None:
        targets = all_heads(model, layer_arg)
    elif args.layers is not None:
        targets = [str(layer) for layer in resolve_layers(model, layer_arg)]
    df = ablation_sweep(model, targets, prompts, args.reward, kind=args.kind,
                        reference_prompts=references, max_new_tokens=args.max_new_tokens, seed=args.seed)
    df.to_csv(out / "ablation_sweep.csv", index=False)
    save_figure(plot_ablation_sweep(df), out / "ablation_sweep.png")
    write_config(out, args, targets=targets)
    cols = ["target", "kind", "reward_mean", "kl_exact_mean", "kl_prompt_mean", "entropy_mean", "seconds"]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {out}/ablation_sweep.csv and ablation_sweep.png")
    return 0
