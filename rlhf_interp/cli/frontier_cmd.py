"""``rlhf-interp frontier``: one method's points on the equal-KL frontier (reward against KL from the base model).

- ``steering``: a steering vector (sources as in ``edit-search``) at each ``--layers``, its strength
  bisected to each KL budget;
- ``rank-one``: a ROME-style rank-one edit of each layer's MLP output matrix, value pushed towards the
  tokens the reward scores highest, strength bisected to each budget;
- ``best-of-n``: best-of-n sampling for each ``--n`` (KL measured and analytic);
- ``checkpoints``: every checkpoint of each ``--run`` (PPO run directories) at its measured KL.

The base model is always measured too (the origin). Writes points.csv (+ evaluations.csv for bisected methods)
and frontier.png. The full comparison of every method is ``analyses/frontier.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rlhf_interp.cli.common import (add_common_args, claim_out, load_prompt_set, parse_floats, parse_layers,
                                    require_samples, write_config)
from rlhf_interp.cli.edit_search_cmd import add_vector_source_args, vector_from_args

METHODS = ("steering", "rank-one", "best-of-n", "checkpoints")
OUTPUTS = ("points.csv", "evaluations.csv", "frontier.png", "config.json")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("frontier", help="reward at equal KL: steering, rank-one edit, best-of-n or PPO checkpoints")
    add_common_args(parser, default_out="runs/frontier_cmd")
    parser.add_argument("what", choices=METHODS, help="which way of changing the model to measure")
    parser.add_argument("--budgets", default="0.5,1,2,4,8", help="KL budgets, nats per sequence (steering, rank-one)")
    parser.add_argument("--rel-tol", type=float, default=0.05, help="relative tolerance on each budget")
    parser.add_argument("--layers", default="12,20", help="layers (steering, rank-one)")
    parser.add_argument("--start", type=float, default=0.1,
                        help="first strength tried: push / residual norm (rank-one: times the residual norm)")
    parser.add_argument("--n", default="1,2,4,8,16", help="best-of-n sizes")
    parser.add_argument("--pool-size", type=int, default=None, help="best-of-n samples per prompt (default 2 max n)")
    parser.add_argument("--run", action="append", default=[], help="PPO run directory (checkpoints; repeatable)")
    add_vector_source_args(parser)
    parser.set_defaults(func=_frontier)


def _frontier(args: argparse.Namespace) -> int:
    import pandas as pd

    from rlhf_interp.bridge import load_model
    from rlhf_interp.edits import resolve_layers
    from rlhf_interp.measure import evaluate_edit

    require_samples(args)
    if args.what in ("steering", "rank-one"):
        parse_layers(args.layers)
        budgets = parse_floats(args.budgets, what="KL budgets")
        if min(budgets) <= 0:
            raise ValueError(f"--budgets must be positive KL values (nats per sequence), got {args.budgets!r}.")
    elif args.what == "best-of-n":
        ns = parse_floats(args.n, what="best-of-n sizes")
        if any(n < 1 or n != int(n) for n in ns):
            raise ValueError(f"--n takes whole numbers >= 1, e.g. '1,2,4,8'; got {args.n!r}.")
    elif not args.run:
        raise ValueError("frontier checkpoints needs at least one --run RUN_DIR (a PPO run directory).")
    prompts = load_prompt_set(args)
    out = claim_out(args, "frontier", OUTPUTS)  # before any compute
    model = load_model(args.model)
    kwargs = {"max_new_tokens": args.max_new_tokens, "seed": args.seed}
    base = evaluate_edit(model, None, prompts, args.reward, **kwargs).assign(method="base model", kind="base")
    frames, evaluations = [base], []
    if args.what in ("steering", "rank-one"):
        layers = resolve_layers(model, parse_layers(args.layers))
        points, evaluations = _equal_kl_points(args, model, layers, prompts, kwargs)
        frames.append(points)
    elif args.what == "best-of-n":
        from rlhf_interp.frontier import evaluate_best_of_n

        ns = [int(n) for n in parse_floats(args.n)]
        summary, _, _ = evaluate_best_of_n(model, prompts, args.reward, ns, pool_size=args.pool_size, **kwargs)
        frames.append(summary.rename(columns={"kl_mean": "kl_exact_mean", "kl_stderr": "kl_exact_stderr"})
                      .assign(method="best-of-n", kind="best-of-n"))
    else:
        from rlhf_interp.frontier import checkpoint_points, read_run

        for run_dir in args.run:
            frames.append(checkpoint_points(model, read_run(run_dir), prompts, args.reward, **kwargs)
                          .assign(kind="fine-tuning"))
    points = pd.concat(frames, ignore_index=True)
    _write(out, args, points, evaluations)
    return 0


def _equal_kl_points(args, model, layers, prompts, kwargs):
    import pandas as pd

    from rlhf_interp.edits import Steering, residual_norms
    from rlhf_interp.frontier import EditFamily, equal_kl, rank_one_edit, target_tokens_for_reward
    from rlhf_interp.reward import get_reward

    families = []
    if args.what == "steering":
        vector, _, dropped = vector_from_args(args, model, layers, prompts)
        if dropped:
            print(f"the vector is zero at layer(s) {dropped}: skipped")
        for layer in [layer for layer in layers if layer in vector.layers]:
            families.append(EditFamily("steering", lambda s, layer=layer: Steering(vector, [layer], s),
                                       {"kind": "steering", "layer": layer}, start=args.start))
    else:
        targets = target_tokens_for_reward(model.tokenizer, get_reward(args.reward))
        norms = {int(r.layer): float(r.resid_norm) for r in residual_norms(model, prompts, layers).itertuples()}
        for layer in layers:
            edit = rank_one_edit(model, layer, prompts, strength=1.0, target_tokens=targets)
            families.append(EditFamily("rank-one edit", edit.with_strength, {"kind": "rank-one", "layer": layer},
                                       start=args.start * norms[layer]))
    if not families:
        raise ValueError("Nothing to measure: no usable layer.")
    points, evaluations = [], []
    for family in families:
        pts, ev = equal_kl(model, family, prompts, args.reward, parse_floats(args.budgets), rel_tol=args.rel_tol,
                           **kwargs)
        points.append(pts)
        evaluations.append(ev)
    return pd.concat(points, ignore_index=True), [pd.concat(evaluations, ignore_index=True)]


def _write(out: Path, args, points, evaluations) -> None:
    from rlhf_interp.frontier import frontier_figure
    from rlhf_interp.report.plots import save_figure

    points.to_csv(out / "points.csv", index=False)
    for ev in evaluations:
        ev.to_csv(out / "evaluations.csv", index=False)
    save_figure(frontier_figure(points, reward_label=f"reward ({args.reward})"), out / "frontier.png")
    write_config(out, args)
    cols = [c for c in ("method", "layer", "n", "step", "budget", "strength", "hit", "reward_mean", "reward_stderr",
                        "kl_exact_mean", "kl_exact_stderr", "kl_analytic") if c in points]
    print(points[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {out}/points.csv and frontier.png")
