"""``rlhf-interp ablate``: ablate targets (heads, attention or MLP outputs, whole layers) one at a time and
write reward and KL per target (CSV + PNG)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlhf_interp.cli.common import add_common_args, load_prompt_set, parse_layers, write_config


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
    from rlhf_interp.edits import resolve_layers
    from rlhf_interp.measure import ablation_sweep, all_heads
    from rlhf_interp.plots import plot_ablation_sweep
    from rlhf_interp.prompts import load_prompts

    given = [args.targets, args.heads_of_layer, args.layers]
    if sum(x is not None for x in given) != 1:
        raise ValueError("Give exactly one of --targets, --heads-of-layer, --layers.")
    model = load_model(args.model)
    if args.targets is not None:
        targets = [t.strip() for t in args.targets.split(";") if t.strip()]
    elif args.heads_of_layer is not None:
        targets = all_heads(model, parse_layers(args.heads_of_layer))
    else:
        targets = [str(layer) for layer in resolve_layers(model, parse_layers(args.layers))]
    references = load_prompts(args.reference_prompts) if args.reference_prompts else None
    out = Path(args.out)
    df = ablation_sweep(model, targets, load_prompt_set(args), args.reward, kind=args.kind,
                        reference_prompts=references, max_new_tokens=args.max_new_tokens, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "ablation_sweep.csv", index=False)
    plot_ablation_sweep(df).savefig(out / "ablation_sweep.png", dpi=110, bbox_inches="tight")
    write_config(out, args, targets=targets)
    cols = ["target", "kind", "reward_mean", "kl_exact_mean", "kl_prompt_mean", "entropy_mean", "seconds"]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {out}/ablation_sweep.csv and ablation_sweep.png")
    return 0
