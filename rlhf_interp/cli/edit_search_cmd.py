"""``rlhf-interp edit-search``: the cheapest steering edit that does X.

Searches steering vector layer x strength x positions with Optuna (multi-objective TPE: maximise the
reward, minimise the per-sequence KL from the unedited model) and writes every trial and the Pareto front.
The vector comes from a file, from contrastive texts (as in ``steer``), or, by default, from the reward
itself: pairs of the best- and worst-scored base-model samples per prompt. Strengths are fractions of
each layer's residual norm, so one range fits every layer.
"""

from __future__ import annotations

import argparse

from rlhf_interp.cli.common import (add_common_args, claim_out, load_prompt_set, parse_floats, parse_layers,
                                    positive_int, require_samples, write_config)

OUTPUTS = ("trials.csv", "pareto.csv", "config.json")


def add_vector_source_args(parser: argparse.ArgumentParser) -> None:
    """The vector sources of ``steer`` (read by `steer_cmd.build_vector`); none given = from the reward."""
    from rlhf_interp.cli.steer_cmd import add_vector_args

    add_vector_args(parser, title="vector (at most one; default: pairs of best/worst samples under the reward)",
                    contrastive_for="--pairs and for reward pairs")
    parser.add_argument("--direction-prompts", type=int, default=64,
                        help="prompts (other than the measured ones) for reward pairs and residual norms")
    parser.add_argument("--pair-samples", type=int, default=4, help="base samples per prompt for reward pairs")


def vector_from_args(args: argparse.Namespace, model, layers, measured: list[str]):
    """(vector scaled to the residual norm, the direction prompts, layers dropped because the vector is zero)."""
    from rlhf_interp.cli.steer_cmd import build_vector
    from rlhf_interp.edits import contrastive, pca_direction
    from rlhf_interp.frontier import reward_pairs, scale_to_residual
    from rlhf_interp.core.seeding import mix_seed
    from rlhf_interp.prompts import load_prompts

    # another shuffle of the prompt file than the measured prompts' (seed): the direction is fit on other prompts
    others = [p for p in load_prompts(args.prompts, seed=mix_seed(args.seed, 1)) if p not in set(measured)]
    direction_prompts = others[:args.direction_prompts] or measured
    if any([args.vector, args.positive, args.negative, args.pairs, args.base, args.tuned]):
        vector = build_vector(args, model, layers)
    else:
        pairs = reward_pairs(model, direction_prompts, args.reward, samples_per_prompt=args.pair_samples,
                             max_new_tokens=args.max_new_tokens, seed=args.seed)
        make = pca_direction if args.method == "pca" else contrastive
        vector = make(model, pairs, layers, args.hook, args.reduce)
        print(f"vector: {make.__name__} of {len(pairs)} (best, worst) sample pairs under {args.reward}")
    scaled, dropped = scale_to_residual(model, vector, direction_prompts)
    return scaled, direction_prompts, dropped


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("edit-search", help="Optuna search for the cheapest steering edit (reward vs KL Pareto front)")
    add_common_args(parser, default_out="runs/edit_search")
    add_vector_source_args(parser)
    parser.add_argument("--layers", default="all", help="layers to search (comma-separated or 'all')")
    parser.add_argument("--coefs", default="0.01,1", help="LOW,HIGH strength (push / residual norm), log-uniform")
    parser.add_argument("--positions", default="all,prompt,generated", help="positions to search (comma-separated)")
    parser.add_argument("--trials", type=positive_int, default=30, help="Optuna trials (each one sampling pass)")
    parser.add_argument("--kl-budget", type=float, default=None, help="trials above this KL (nats/sequence) are infeasible")
    parser.add_argument("--min-reward", type=float, default=None, help="also report the cheapest trial reaching this")
    parser.set_defaults(func=_edit_search)


def _edit_search(args: argparse.Namespace) -> int:
    from rlhf_interp.bridge import load_model
    from rlhf_interp.edits import resolve_layers
    from rlhf_interp.frontier import edit_search

    from rlhf_interp.edits import check_positions

    require_samples(args)
    coefs = parse_floats(args.coefs)
    if len(coefs) != 2 or not 0 < coefs[0] <= coefs[1]:
        raise ValueError(f"--coefs takes LOW,HIGH with 0 < LOW <= HIGH (strengths are searched log-uniformly), "
                         f"got {args.coefs!r}.")
    positions = [p.strip() for p in args.positions.split(",") if p.strip()]
    if not positions:
        raise ValueError("--positions names none; use some of all,prompt,generated.")
    for position in positions:
        check_positions(position)
    layer_arg = parse_layers(args.layers)
    prompts = load_prompt_set(args)
    out = claim_out(args, "edit-search", OUTPUTS)  # before any compute
    model = load_model(args.model)
    layers = resolve_layers(model, layer_arg)
    vector, _, dropped = vector_from_args(args, model, layers, prompts)
    if dropped:
        print(f"the vector is zero at layer(s) {dropped}: not searched")
    layers = [layer for layer in layers if layer in vector.layers]
    if not layers:
        raise ValueError("The steering vector is zero at every requested layer; nothing to search.")
    result = edit_search(model, vector, prompts, args.reward, layers=layers, coef_range=(coefs[0], coefs[1]),
                         positions=positions, n_trials=args.trials, seed=args.seed, kl_budget=args.kl_budget,
                         max_new_tokens=args.max_new_tokens)
    result.trials.to_csv(out / "trials.csv", index=False)
    result.pareto.to_csv(out / "pareto.csv", index=False)
    write_config(out, args, searched_layers=layers, coef_units="push / residual norm")
    cols = ["number", "layer", "coef", "positions", "reward_mean", "reward_stderr", "kl_mean", "kl_stderr"]
    print(f"Pareto front ({len(result.pareto)} of {len(result.trials)} trials; coef = push / residual norm):")
    print(result.pareto[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.min_reward is not None:
        best = result.cheapest(args.min_reward)
        print(f"\ncheapest edit with reward >= {args.min_reward:g}: " + (
            "none of the trials reaches it" if best is None else
            f"layer {int(best['layer'])}, coef {best['coef']:.3g}, positions {best['positions']}: reward "
            f"{best['reward_mean']:.3g} at {best['kl_mean']:.3g} nats"))
    print(f"wrote {out}/trials.csv, pareto.csv")
    return 0
