"""Frontier v3, the held-out paired round (issues 31 and 32): every way of changing the model on one set of report
prompts with the same sampling seed, each edit's strength chosen on other prompts, fine-tuning from 3 seeds, and
reward, KL(changed || base) per sequence, capability and fluency for every point.

    python analyses/frontier_v3_points.py                       # resumable, part by part; one SmolLM2 process
    python analyses/frontier_v3_points.py --parts base,algorithms
    python analyses/frontier_v3_points.py --assemble-only       # the tables from the finished points

The study's choices (everything else is `rlhf_interp.frontier.v3_round` / `heldout` / `new_methods`):
- prompts: the shipped set shuffled with seed 0; the first 128 are the report split, the next 32 the selection
  split, the next 64 build the steering vectors (direction split). Sized from the noise of the 16-prompt round
  (reward sd 0.6-1.0 per sample, almost all of it within a prompt): 128 prompts x 2 samples put a paired
  difference's 95% half-width near 0.15 periods.
- reward: periods in 24 new tokens, temperature 1, sampling seed 0 for every method (common random numbers).
- budgets: 1, 2 and 4 nats per sequence.
- steering: the contrastive vector (base samples' best minus worst under the reward) at layer 20 and the
  fine-tuning direction (PPO seed 0's step-20 checkpoint minus base; the work dir keeps the vector) at layer 28,
  each the v2 round's best layer for its vector; a rank-one edit at layer 20 (the v2 round's best at 1 and 4 nats);
  the prompting library; logit amplification of PPO seed 0's step-20 checkpoint (`TUNED_STEP`). Each family's
  strength is bisected to each budget on the selection split and the family with the highest selection reward is
  reported.
- fine-tuning: three PPO runs (`configs/periods.yaml`, 25 phases, KL target 0.2 nats/token, seeds 0-2,
  checkpoints every 5 phases; steps 10-25 measured, the base model standing for step 0), interpolated per prompt
  between checkpoints to each budget and averaged over seeds;
  the algorithms study's last checkpoints of seed 0 (PPO, GRPO, RLOO, DPO: the CPU budget of this round).
- best-of-n from a pool of 16 base samples per report prompt, n = 1, 2, 4, 8.
- top_two (run after the others): the top two edits at 1 and 2 nats sampled again with seeds 1, 2, ... up to 12 and
  16 samples per report prompt (`TOP_TWO_SAMPLES`), so that their paired difference is decided or within +-0.15.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

PARTS = ("base", "algorithms", "trajectory", "prompting", "steering", "rank_one", "amplification", "best_of_n",
         "top_two")
TRAJECTORY = [Path(f"runs/frontier_ppo_s{s}") for s in (0, 1, 2)]
ALGORITHMS = {a: [Path(f"runs/algorithms/{a.lower()}_s0")] for a in ("PPO", "GRPO", "RLOO", "DPO")}
STEERING = (("contrastive", 20), ("fine-tuning direction", 28))  # v2's best layer of each vector
LAYERS = (20,)  # rank-one: the v2 round's best layer at 1 and 4 nats (one layer: the CPU budget of this round)


def layers(model) -> list[int]:
    """The study's layers that the model has (a smaller model, e.g. the tiny test one: its last layer)."""
    n = int(model.cfg.n_layers)
    return [layer for layer in LAYERS if layer < n] or [n - 1]
BEST_OF_N, POOL = (1, 2, 4, 8), 16
# Samples per report prompt for the top two methods at a budget (part top_two). The 2-sample round: steering minus
# rank-one 0.04 [-0.20, 0.28] at 1 nat and 0.12 [-0.16, 0.41] at 2 nats. The interval shrinks about as
# 1/sqrt(samples) (the noise is almost all within a prompt): 12 samples put 1 nat's half-width near 0.10 (bounded
# within +-0.15 if the difference stays near 0.04) and 16 put 2 nats' near 0.10 (decided if it stays near 0.12).
TOP_TWO_SAMPLES = {1.0: 12, 2.0: 16}


def checkpoint_points(rnd, name: str, kind: str, runs: list[Path], which: str, only: list[int] | None = None) -> None:
    """Every checkpoint (``which = "all"``; ``only``: of these steps) or the last one of each run, measured against
    the base model."""
    from rlhf_interp.bridge import RunDir, load_model

    for path in runs:
        if not path.exists():
            rnd.notes.append(f"{name}: {path} is absent, not measured")
            continue
        run = RunDir(path)
        seed = int(run.config().get("seed", 0))
        steps = [t for t in run.steps if only is None or t in only] if which == "all" else run.steps[-1:]
        for step in steps:
            key = f"{kind}_{name}_s{seed}_step{step}"
            if rnd.points.done(key):
                continue
            tuned = load_model(run.checkpoint(step), device=rnd.setup.base.cfg.device, frozen=True)
            rnd.measure(key, {"method": name, "kind": kind, "setting": f"seed {seed} step {step}", "seed": seed,
                              "step": step, "run": str(path)}, tuned, None, reference=rnd.setup.base)
            del tuned


TUNED_STEP = 20  # the PPO seed-0 checkpoint amplified and steered along (the vectors and selection were made on it)


def last_tuned(rnd):
    from rlhf_interp.bridge import RunDir, load_model

    path = RunDir(TRAJECTORY[0]).checkpoint(TUNED_STEP)
    return load_model(path, device=rnd.setup.base.cfg.device, frozen=True), f"{TRAJECTORY[0]} step {TUNED_STEP}"


def report_choices(rnd, part: str, chosen: pd.DataFrame, make, model=None, reference=None, labels=None) -> None:
    """Measure each budget's chosen setting on the report split; record which point stands for which budget."""
    choices = []
    for c in chosen.to_dict("records"):
        setting = str(c.get("setting", ""))
        key = f"{part}_{c.get('family', 0)}_{float(c['strength']):.4g}"
        extra = labels(c) if labels else {}
        edit = make(c)
        rnd.makers[key] = (model if model is not None else rnd.setup.base, edit, reference)  # for part top_two
        rnd.measure(key, {"method": c["method"], "kind": part, "setting": setting, "strength": float(c["strength"]),
                          "selected_on": "selection split", **extra}, *rnd.makers[key])
        choices.append({"key": key, "budget": c["budget"], "hit": bool(c["hit"]), "selection_kl": c["selection_kl"],
                        "selection_reward": c["selection_reward"], "selected_from": c.get("selected_from")})
    rnd.save_choices(part, choices)


def part_base(rnd, ctx) -> None:
    rnd.measure("base", {"method": "base model", "kind": "base", "setting": "no change"}, rnd.setup.base)


def part_algorithms(rnd, ctx) -> None:
    for name, runs in ALGORITHMS.items():
        checkpoint_points(rnd, name, "algorithm", runs, "last")


def part_trajectory(rnd, ctx) -> None:
    runs = [TRAJECTORY[s] for s in ctx.args.trajectory_seeds if s < len(TRAJECTORY)]  # TRAJECTORY[s]: seed s
    checkpoint_points(rnd, "PPO", "trajectory", runs, "all", ctx.args.trajectory_steps)


def part_prompting(rnd, ctx) -> None:
    from rlhf_interp.frontier.new_methods import prompting_family, prompting_library

    library = prompting_library()
    chosen = rnd.select("prompting", rnd.setup.base, [prompting_family(library)], max_evals_per_budget=6)
    chosen["setting"] = [library[int(round(s))].label for s in chosen["strength"]]
    report_choices(rnd, "prompting", chosen, lambda c: library[int(round(c["strength"]))])


def part_steering(rnd, ctx) -> None:
    from rlhf_interp.edits import Steering
    from rlhf_interp.frontier.parts import steering_families

    families = [f for name, layer in STEERING
                for f in steering_families(ctx, [name], [min(layer, int(rnd.setup.base.cfg.n_layers) - 1)])]
    chosen = rnd.select("steering", rnd.setup.base, families)
    vectors = ctx.vectors()
    report_choices(rnd, "steering", chosen,
                   lambda c: Steering(vectors[c["vector"]], [int(c["layer"])], float(c["strength"])),
                   labels=lambda c: {"vector": c["vector"], "layer": int(c["layer"])})


def part_rank_one(rnd, ctx) -> None:
    from rlhf_interp.frontier import EditFamily, rank_one_edit, target_tokens_for_reward
    from rlhf_interp.reward import get_reward

    base = rnd.setup.base
    targets = target_tokens_for_reward(base.tokenizer, get_reward(rnd.setup.reward))
    norms = ctx.resid_norms()
    edits = {layer: rank_one_edit(base, layer, ctx.direction_prompts, strength=1.0, target_tokens=targets,
                                  covariance_texts=ctx.direction_prompts) for layer in layers(base)}
    families = [EditFamily("rank-one edit", edits[layer].with_strength,
                           {"kind": "rank-one", "layer": layer, "setting": f"layer {layer}"},
                           start=0.1 * norms[layer]) for layer in edits]
    chosen = rnd.select("rank_one", base, families)
    report_choices(rnd, "rank_one", chosen, lambda c: edits[int(c["layer"])].with_strength(float(c["strength"])),
                   labels=lambda c: {"layer": int(c["layer"])})


def part_amplification(rnd, ctx) -> None:
    from rlhf_interp.edits import LogitAmplification
    from rlhf_interp.frontier.new_methods import amplification_family

    tuned, where = last_tuned(rnd)
    chosen = rnd.select("amplification", tuned, [amplification_family(rnd.setup.base)], reference=rnd.setup.base)
    chosen["setting"] = [f"a={s - 1:.3g} on {where}" for s in chosen["strength"]]
    report_choices(rnd, "amplification", chosen, lambda c: LogitAmplification(rnd.setup.base, float(c["strength"]) - 1),
                   model=tuned, reference=rnd.setup.base, labels=lambda c: {"run": where})


def part_best_of_n(rnd, ctx) -> None:
    """A pool of base samples per report prompt; per prompt the expected best of n and the measured KL."""
    from rlhf_interp.frontier import evaluate_best_of_n

    path = rnd.work / "best_of_n_per_prompt.csv"
    if path.exists():
        return
    s = rnd.setup
    _, per_prompt, _ = evaluate_best_of_n(s.base, s.report_prompts, s.reward, BEST_OF_N, pool_size=POOL,
                                          max_new_tokens=s.max_new_tokens, seed=s.seed)
    per_prompt.to_csv(path, index=False)


def part_top_two(rnd, ctx) -> None:
    """More samples for the top two methods at each budget of `TOP_TWO_SAMPLES` (their own settings and report
    prompts, sampling seeds 1, 2, ...; both methods get the same seeds). Edits only: a PPO or best-of-n member of a
    top two is noted and left at its samples (its points are many checkpoints / a pool). New samples can change
    which two lead, so the top two are read again until every edit in them has its samples."""
    import math

    from rlhf_interp.frontier.v3_assemble import EDIT_PARTS, at_budgets

    part_of = {method: part for part, method in EDIT_PARTS.items()}
    per_seed, first = rnd.setup.samples_per_prompt, rnd.setup.seed + 1
    while True:
        at, comparisons, _ = at_budgets(rnd.work, rnd.budgets)
        wanted: dict[str, int] = {}  # key -> samples per prompt
        for budget, samples in TOP_TWO_SAMPLES.items():
            top = comparisons[(comparisons["budget"] == budget) & (comparisons["comparison"] == "top two")]
            for method in (top[["a", "b"]].iloc[0].tolist() if len(top) else []):
                if method not in part_of:
                    rnd.notes.append(f"top_two: {method} at {budget:g} nats is not an edit; left at its samples")
                    continue
                key = at[(at["budget"] == budget) & (at["method"] == method)].iloc[0]["key"]
                wanted[key] = max(wanted.get(key, 0), samples)
        seeds = {key: range(first, rnd.setup.seed + math.ceil(n / per_seed)) for key, n in wanted.items()}
        todo = {key: [s for s in want if s not in rnd.points.extra_seeds(key)] for key, want in seeds.items()}
        if not any(todo.values()):
            return
        unbuilt = [key for key, seeds_left in todo.items() if seeds_left and key not in rnd.makers]
        for part in sorted({part_of[m] for m in at.loc[at["key"].isin(unbuilt), "method"]}):
            globals()[f"part_{part}"](rnd, ctx)  # its points are done: this only rebuilds its edits (rnd.makers)
        for target in sorted(set(wanted.values())):  # seed by seed: a kill leaves the two of a budget level
            for seed in range(first, rnd.setup.seed + math.ceil(target / per_seed)):
                for key in [k for k, n in wanted.items() if n == target and seed in todo[k]]:
                    rnd.measure_extra(key, seed, *rnd.makers[key])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="smollm2-135m")
    p.add_argument("--reward", default="char_count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report-prompts", type=int, default=128)
    p.add_argument("--selection-prompts", type=int, default=32)
    p.add_argument("--samples", type=int, default=2, help="continuations per report prompt")
    p.add_argument("--selection-samples", type=int, default=1, help="continuations per selection prompt")
    p.add_argument("--budgets", type=lambda t: [float(x) for x in t.split(",")], default=[1.0, 2.0, 4.0])
    p.add_argument("--capability-texts", type=int, default=128)
    p.add_argument("--parts", type=lambda t: t.split(","), default=list(PARTS))
    p.add_argument("--work-dir", type=Path, default=Path("runs/frontier_v3_heldout"))
    p.add_argument("--out", type=Path, default=Path("reports/edit_vs_finetune"))
    p.add_argument("--assemble-only", action="store_true")
    p.add_argument("--trajectory-steps", type=lambda t: [int(x) for x in t.split(",")], default=None,
                   help="measure only these checkpoints of each PPO run (default: all)")
    p.add_argument("--trajectory-seeds", type=lambda t: [int(x) for x in t.split(",")], default=[0, 1, 2],
                   help="which PPO seeds the trajectory part measures (split the part over processes)")
    args = p.parse_args(argv)
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"Unknown part(s) {unknown}; the parts are {', '.join(PARTS)}.")

    from rlhf_interp.bridge import load_model
    from rlhf_interp.frontier.new_methods import Setup
    from rlhf_interp.frontier.parts import Context
    from rlhf_interp.frontier.v3_assemble import assemble
    from rlhf_interp.frontier.v3_round import Round
    from rlhf_interp.measure.capability import load_capability_texts, text_nll
    from rlhf_interp.prompts import load_prompts

    args.work_dir.mkdir(parents=True, exist_ok=True)
    shuffled = load_prompts("default", seed=args.seed)
    r, s = args.report_prompts, args.selection_prompts
    report, selection, direction = shuffled[:r], shuffled[r:r + s], shuffled[r + s:r + s + 64]
    texts = load_capability_texts(args.capability_texts, seed=args.seed)
    if not args.assemble_only:
        base = load_model(args.base, frozen=True)
        cap_path = args.work_dir / "base_capability.csv"
        if not cap_path.exists():
            text_nll(base, None, list(texts.texts)).to_csv(cap_path, index=False)
        setup = Setup(base, report, selection, args.reward, 24, args.seed, args.samples, texts.texts,
                      pd.read_csv(cap_path), args.selection_samples)
        rnd = Round(setup, args.work_dir, args.budgets)
        ctx = Context(argparse.Namespace(reward=args.reward, pair_samples=4, max_new_tokens=24, seed=args.seed,
                                         trajectory=TRAJECTORY[0], steer_start=0.1,
                                         trajectory_seeds=args.trajectory_seeds,
                                         trajectory_steps=args.trajectory_steps),
                      base, report, direction, args.work_dir)
        for part in args.parts:
            globals()[f"part_{part}"](rnd, ctx)
    assemble(args.work_dir, args.out, budgets=args.budgets, meta={
        "report_prompts": r, "selection_prompts": s, "direction_prompts": len(direction),
        "samples_per_prompt": args.samples, "selection_samples_per_prompt": args.selection_samples,
        "capability_texts": len(texts.texts), "capability_texts_available": texts.available,
        "reward": args.reward, "seed": args.seed, "best_of_n": list(BEST_OF_N), "pool": POOL,
        "trajectory_runs": [str(t) for t in TRAJECTORY]})


if __name__ == "__main__":
    main()
