"""``rlhf-interp steer``: build (or load) a steering vector, sweep layers x coefficients, and write the
tidy table (CSV) and a figure (PNG) of reward and KL per setting."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlhf_interp.cli.common import (add_common_args, claim_out, input_paths, load_prompt_set, parse_floats,
                                    parse_layers, require_samples, write_config)

OUTPUTS = ("steering_sweep.csv", "steering_sweep.png", "config.json")


def add_vector_args(parser: argparse.ArgumentParser, *, title: str, contrastive_for: str) -> None:
    """Where a steering vector comes from: the arguments `build_vector` reads (steer, edit-search, frontier)."""
    source = parser.add_argument_group(title)
    source.add_argument("--vector", default=None, help="a saved steering vector (.safetensors)")
    source.add_argument("--positive", nargs="+", default=None, help="texts with the property (or one .txt file)")
    source.add_argument("--negative", nargs="+", default=None, help="texts without it (or one .txt file)")
    source.add_argument("--pairs", default=None, help='.jsonl of {"positive": ..., "negative": ...} pairs')
    source.add_argument("--base", default=None, help="with --tuned: the fine-tuning direction (tuned - base)")
    source.add_argument("--tuned", default=None)
    parser.add_argument("--method", default=None, choices=["mean_difference", "contrastive", "pca"],
                        help=f"how to combine texts (default: mean_difference for --positive/--negative, "
                             f"contrastive for {contrastive_for})")
    parser.add_argument("--reduce", default="mean", choices=["mean", "last"],
                        help="per text: mean over non-BOS tokens, or the last token")
    parser.add_argument("--hook", default="resid_post", help="resid_pre, resid_mid, resid_post, attn_out, mlp_out")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("steer", help="build or load a steering vector; sweep layers x coefficients; CSV + PNG")
    add_common_args(parser, default_out="runs/steer")
    add_vector_args(parser, title="vector (one of)", contrastive_for="--pairs")
    parser.add_argument("--layers", default="0", help="comma-separated layers to sweep")
    parser.add_argument("--coefs", default="0,1,2,4", help="comma-separated coefficients")
    parser.add_argument("--positions", default="all", choices=["all", "prompt", "generated"])
    parser.add_argument("--save-vector", default=None, help="also save the built vector here (.safetensors)")
    parser.set_defaults(func=_steer)


def _texts(values: list[str]) -> list[str]:
    """The texts given, or the lines of the one file given."""
    from rlhf_interp.core.io import text_lines

    if len(values) == 1 and Path(values[0]).is_file():
        texts = [ln for _, ln in text_lines(values[0]) if ln.strip()]
        if not texts:
            raise ValueError(f"{values[0]} holds no texts (one a line).")
        return texts
    return values


def build_vector(args: argparse.Namespace, model, layers):
    """The steering vector the arguments describe."""
    from rlhf_interp.bridge import load_model
    from rlhf_interp.core.io import read_jsonl
    from rlhf_interp.edits import vectors

    given = [args.vector is not None, bool(args.positive or args.negative), args.pairs is not None,
             bool(args.base or args.tuned)]
    if sum(given) != 1:
        raise ValueError("Give exactly one vector source: --vector FILE, --positive/--negative TEXTS, --pairs FILE, "
                         "or --base MODEL --tuned MODEL.")
    if args.vector:
        return vectors.SteeringVector.load(args.vector)
    if args.positive or args.negative:
        if not (args.positive and args.negative):
            raise ValueError("--positive and --negative go together.")
        pos, neg = _texts(args.positive), _texts(args.negative)
        method = args.method or "mean_difference"
        if method == "mean_difference":
            return vectors.mean_difference(model, pos, neg, layers, args.hook, args.reduce)
        if len(pos) != len(neg):
            raise ValueError(f"--method {method} pairs texts: got {len(pos)} positive and {len(neg)} negative.")
        pairs = list(zip(pos, neg))
    elif args.pairs:
        pairs = []
        for number, record in read_jsonl(args.pairs):
            if not isinstance(record, dict) or not {"positive", "negative"} <= set(record):
                raise ValueError(f"{args.pairs}:{number}: expected an object with 'positive' and 'negative'.")
            if not all(isinstance(record[k], str) for k in ("positive", "negative")):
                raise ValueError(f"{args.pairs}:{number}: 'positive' and 'negative' must be strings.")
            pairs.append((record["positive"], record["negative"]))
        if not pairs:
            raise ValueError(f"{args.pairs} holds no pairs.")
        method = args.method or "contrastive"
    else:
        if not (args.base and args.tuned):
            raise ValueError("--base and --tuned go together.")
        base = model if args.base == args.model else load_model(args.base)
        tuned = model if args.tuned == args.model else load_model(args.tuned)
        return vectors.finetuning_direction(base, tuned, load_prompt_set(args), layers, args.hook)
    if method == "pca":
        return vectors.pca_direction(model, pairs, layers, args.hook, args.reduce)
    if method == "mean_difference":
        return vectors.mean_difference(model, [p for p, _ in pairs], [n for _, n in pairs], layers, args.hook,
                                        args.reduce)
    return vectors.contrastive(model, pairs, layers, args.hook, args.reduce)


def _steer(args: argparse.Namespace) -> int:
    from rlhf_interp.bridge import load_model
    from rlhf_interp.core.outdir import check_writable_file
    from rlhf_interp.edits import SteeringVector, resolve_layers
    from rlhf_interp.measure import steering_sweep
    from rlhf_interp.report.plots import plot_steering_sweep, save_figure

    require_samples(args)
    layer_arg, coefs = parse_layers(args.layers), parse_floats(args.coefs, what="coefficients")
    prompts = load_prompt_set(args)
    if args.vector is not None:
        SteeringVector.load(args.vector)  # a bad file fails here, before the model is loaded
    if args.save_vector:
        check_writable_file(args.save_vector, overwrite=args.overwrite, flag="--save-vector",
                            inputs=input_paths(args))
    out = claim_out(args, "steer", OUTPUTS)  # before any compute
    model = load_model(args.model)
    layers = resolve_layers(model, layer_arg)
    vector = build_vector(args, model, layers)
    if args.save_vector:
        print(f"saved vector: {vector.save(args.save_vector)}")
    df = steering_sweep(model, vector, layers, coefs, prompts, args.reward, positions=args.positions,
                        hook=vector.hook, max_new_tokens=args.max_new_tokens, seed=args.seed)
    df.to_csv(out / "steering_sweep.csv", index=False)
    save_figure(plot_steering_sweep(df, reward_label=args.reward), out / "steering_sweep.png")
    write_config(out, args, vector_source=vector.source, vector_layers=vector.layers)
    cols = ["layer", "coef", "reward_mean", "kl_exact_mean", "kl_k3_mean", "kl_prompt_mean", "entropy_mean", "seconds"]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {out}/steering_sweep.csv and steering_sweep.png")
    return 0
