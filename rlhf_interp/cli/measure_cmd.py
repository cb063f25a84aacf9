"""``rlhf-interp measure``: the KL shift of one edit (or of one model against another), per token on the
prompts and per sequence on samples, with reward, entropy and diversity."""

from __future__ import annotations

import argparse

from rlhf_interp.cli.common import add_common_args, claim_out, finite_float, load_prompt_set, parse_layers, write_config

OUTPUTS = ("kl_shift.csv", "summary.csv", "sequences.csv", "config.json")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("measure", help="KL shift of an edit, or between two models: per token and per sequence")
    add_common_args(parser, default_out="runs/measure")
    parser.add_argument("--reference", default=None, help="reference model (default: the model without the edit)")
    parser.add_argument("--steer", default=None, help="steering vector file (.safetensors) to add")
    parser.add_argument("--layers", default=None, help="layers for --steer (comma-separated; default: the file's)")
    parser.add_argument("--coef", type=finite_float, default=1.0, help="steering coefficient")
    parser.add_argument("--positions", default="all", choices=["all", "prompt", "generated"])
    parser.add_argument("--ablate", default=None, help="ablation targets, e.g. '3.attn,5.2' or '7'")
    parser.add_argument("--kind", default="zero", choices=["zero", "mean", "resample"])
    parser.add_argument("--ablate-direction", default=None,
                        help="steering vector file whose (normalized) vector at --layers is projected out everywhere")
    parser.set_defaults(func=_measure)


def build_edit(args: argparse.Namespace):
    """The edit named by --steer / --ablate / --ablate-direction (combined when several are given)."""
    from rlhf_interp.edits import Ablation, Combined, DirectionAblation, Steering, SteeringVector

    edits = []
    layers = parse_layers(args.layers) if args.layers else None
    if args.steer:
        vector = SteeringVector.load(args.steer)
        edits.append(Steering(vector, layers, args.coef, positions=args.positions))
    if args.ablate:
        edits.append(Ablation(args.ablate, args.kind))
    if args.ablate_direction:
        vector = SteeringVector.load(args.ablate_direction)
        picked = layers if isinstance(layers, list) else vector.layers
        if len(picked) != 1:
            raise ValueError(f"--ablate-direction needs one layer to take the direction from (--layers L); "
                             f"the file has layers {vector.layers}.")
        edits.append(DirectionAblation(vector[picked[0]]))
    return Combined(*edits) if len(edits) > 1 else (edits[0] if edits else None)


def _measure(args: argparse.Namespace) -> int:
    from rlhf_interp.bridge import load_model
    from rlhf_interp.measure import evaluate_edit, kl_shift

    edit = build_edit(args)
    if edit is None and args.reference is None:
        raise ValueError("Nothing to measure: give an edit (--steer, --ablate, --ablate-direction) and/or --reference.")
    prompts = load_prompt_set(args)
    out = claim_out(args, "measure", OUTPUTS)  # before any compute
    model = load_model(args.model)
    reference = load_model(args.reference) if args.reference else None
    if edit is not None:
        edit.on(model)
    per_token = kl_shift(model, edit, prompts, reference=reference)
    per_token.to_csv(out / "kl_shift.csv", index=False)
    print(f"per-token KL on {len(prompts)} prompts ({len(per_token)} positions), nats:")
    print(per_token[["kl_pi_ref", "kl_ref_pi", "js", "entropy_edited", "entropy_reference"]]
          .agg(["mean", "max"]).to_string(float_format=lambda v: f"{v:.4g}"))
    if args.max_new_tokens > 0:
        summary, seqs = evaluate_edit(model, edit, prompts, args.reward, reference=reference,
                                      max_new_tokens=args.max_new_tokens, seed=args.seed, return_sequences=True)
        summary.to_csv(out / "summary.csv", index=False)
        seqs.to_csv(out / "sequences.csv", index=False)
        print(f"\nper-sequence, {args.max_new_tokens} new tokens sampled from the edited model:")
        print(summary.T.to_string(header=False, float_format=lambda v: f"{v:.4g}"))
    write_config(out, args, edit=repr(edit))
    print(f"\nwrote {out}/")
    return 0
