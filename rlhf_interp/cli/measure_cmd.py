"""``rlhf-interp measure``: the KL shift of one edit (or of one model against another), per token on the
prompts and per sequence on samples, with reward, entropy and diversity. Also holds the arguments the
``steer`` and ``ablate`` commands share."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_common_args(parser: argparse.ArgumentParser, *, default_out: str) -> None:
    """Model, prompts, sampling, reward and output options shared by steer / ablate / measure."""
    parser.add_argument("--model", default="smollm2-135m", help="alias, local directory, run directory or HF id")
    parser.add_argument("--prompts", default="default", help="'default' (shipped openings), a .txt or .jsonl file")
    parser.add_argument("--n-prompts", type=int, default=16, help="how many prompts (a seeded sample)")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="tokens sampled per prompt")
    parser.add_argument("--reward", default="char_count",
                        help="char_count (periods), sentiment, length, module:function or reward_model:PATH")
    parser.add_argument("--seed", type=int, default=0, help="prompt sample and sampling seed")
    parser.add_argument("--out", default=default_out, help="output directory (CSV, PNG, config.json)")


def load_prompt_set(args: argparse.Namespace) -> list[str]:
    from rlhf_interp.prompts import load_prompts

    return load_prompts(args.prompts, limit=args.n_prompts, seed=args.seed)


def parse_floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ValueError(f"Expected comma-separated numbers, e.g. '0,1,2,4'; got {text!r}.") from err


def parse_layers(text: str) -> list[int] | str:
    if text == "all":
        return "all"
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ValueError(f"Expected comma-separated layer numbers or 'all', got {text!r}.") from err


def write_config(out: Path, args: argparse.Namespace, **extra) -> None:
    out.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    (out / "config.json").write_text(json.dumps({**config, **extra, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")},
                                                indent=2, default=str))


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("measure", help="KL shift of an edit, or between two models: per token and per sequence")
    add_common_args(parser, default_out="runs/measure")
    parser.add_argument("--reference", default=None, help="reference model (default: the model without the edit)")
    parser.add_argument("--steer", default=None, help="steering vector file (.safetensors) to add")
    parser.add_argument("--layers", default=None, help="layers for --steer (comma-separated; default: the file's)")
    parser.add_argument("--coef", type=float, default=1.0, help="steering coefficient")
    parser.add_argument("--positions", default="all", choices=["all", "prompt", "generated"])
    parser.add_argument("--ablate", default=None, help="ablation targets, e.g. '3.attn,5.2' or '7'")
    parser.add_argument("--kind", default="zero", choices=["zero", "mean", "resample"])
    parser.add_argument("--ablate-direction", default=None,
                        help="steering vector file whose (normalized) vector at --layers is projected out everywhere")
    parser.set_defaults(func=_measure)


def build_edit(args: argparse.Namespace):
    """The edit named by --steer / --ablate / --ablate-direction (combined when several are given)."""
    from rlhf_interp.edits import Ablation, Combined, DirectionAblation, Steering
    from rlhf_interp.steering import SteeringVector

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
    from rlhf_interp.measure import evaluate_edit, kl_shift
    from rlhf_interp.models import load_model

    out = Path(args.out)
    edit = build_edit(args)
    model = load_model(args.model)
    reference = load_model(args.reference) if args.reference else None
    if edit is None and reference is None:
        raise ValueError("Nothing to measure: give an edit (--steer, --ablate, --ablate-direction) and/or --reference.")
    if edit is not None:
        edit.on(model)
    prompts = load_prompt_set(args)
    per_token = kl_shift(model, edit, prompts, reference=reference)
    out.mkdir(parents=True, exist_ok=True)
    per_token.to_csv(out / "kl_shift.csv", index=False)
    print(f"per-token KL on {len(prompts)} prompts ({len(per_token)} positions), nats:")
    print(per_token[["kl_forward", "kl_reverse", "js", "entropy_edited", "entropy_reference"]]
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
