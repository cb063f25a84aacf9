"""Frontier v3 points (issue 32): prompting, logit amplification, and the PPO / DPO / GRPO / RLOO checkpoints on
the period task, each with reward, KL(changed || base) per sequence, capability and fluency, n and 95% intervals.

    python analyses/frontier_v3_points.py                       # resumable; one SmolLM2 process
    python analyses/frontier_v3_points.py --parts base,checkpoints

Settings are the v2 frontier's (reports/edit_vs_finetune/config.json): reward char_count ('.'), 24 new tokens,
temperature 1, sampling seed 0, and its 16 report prompts (``load_prompts('default', limit=16, seed=0)``). Each
prompt gets ``--samples`` continuations (intervals over prompts, samples of a prompt averaged first). Strengths
(a prefix of the prompting library, an amplification factor) are chosen on 16 *other* prompts, the KL closest to
each budget (``--selection-samples`` continuations each), and reported on the report prompts. Writes ``new_methods*.csv`` and ``new_methods.json`` into
``--out``; the work (one file per finished point) stays in ``--work-dir``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

PARTS = ("base", "checkpoints", "prompting", "amplification")  # cheapest first: interrupted work keeps the most
RUNS = {"PPO": "runs/algorithms/ppo_s0", "DPO": "runs/algorithms/dpo_s0", "GRPO": "runs/algorithms/grpo_s0",
        "RLOO": "runs/algorithms/rloo_s0"}


class Points:
    """One JSON row + per-sequence and per-text CSVs per finished point in the work dir (resumable)."""

    def __init__(self, work: Path):
        self.dir = work / "points"
        self.dir.mkdir(parents=True, exist_ok=True)

    def done(self, key: str) -> bool:
        return (self.dir / f"{key}.json").exists()

    def save(self, key: str, row: dict, seqs: pd.DataFrame, per_text: pd.DataFrame | None) -> None:
        from rlhf_interp.core.io import atomic_write_json

        seqs.assign(key=key).to_csv(self.dir / f"{key}__sequences.csv", index=False)
        if per_text is not None:
            per_text.assign(key=key).to_csv(self.dir / f"{key}__texts.csv", index=False)
        atomic_write_json(self.dir / f"{key}.json", {"key": key, **row})  # last: its presence means done

    def rows(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.dir.glob("*.json"))]


def measure(ctx, key: str, labels: dict, model, edit=None, reference=None) -> None:
    from rlhf_interp.frontier.new_methods import measure_point

    if ctx["points"].done(key):
        return
    start = time.process_time()
    row, seqs, per_text = measure_point(ctx["setup"], model, edit, reference=reference)
    row = {**labels, **row, "cpu_seconds": time.process_time() - start}
    ctx["points"].save(key, row, seqs, per_text)
    print(f"[{key}] reward {row['reward_mean']:.2f} [{row['reward_low']:.2f}, {row['reward_high']:.2f}]  KL "
          f"{row['kl_exact_mean']:.2f} [{row['kl_exact_low']:.2f}, {row['kl_exact_high']:.2f}]  capability NLL "
          f"{row.get('capability_nll_mean', float('nan')):.3f}  fluency {row['fluency_nll_mean']:.2f}  "
          f"({row['cpu_seconds']:.0f} s CPU)", flush=True)


def part_base(ctx) -> None:
    measure(ctx, "base", {"method": "base model", "kind": "base", "setting": "no change"}, ctx["base"])


def part_prompting(ctx) -> None:
    """Every prefix of the library on the selection prompts; the one closest to each budget on the report prompts."""
    from rlhf_interp.frontier.new_methods import closest_to_budgets, measure_point, prompting_library

    library = prompting_library()
    path = ctx["work"] / "selection_prompting.csv"
    if path.exists():
        candidates = pd.read_csv(path)
    else:
        rows = []
        for i, edit in enumerate(library[1:], start=1):
            row, _, _ = measure_point(ctx["setup"], ctx["base"], edit, split="selection", capability=False)
            rows.append({"strength": i, "setting": edit.label, **row})
            print(f"[prompting selection] {edit.label}: KL {row['kl_exact_mean']:.2f}, reward {row['reward_mean']:.2f}")
        candidates = pd.DataFrame(rows)
        candidates.to_csv(path, index=False)
    choices = []
    for chosen in closest_to_budgets(candidates, ctx["args"].budgets).to_dict("records"):
        edit = library[int(chosen["strength"])]
        key = f"prompting_s{int(chosen['strength'])}"  # a prefix chosen for two budgets is measured once
        measure(ctx, key, {"method": "prompting", "kind": "prompting", "setting": edit.label,
                           "strength": chosen["strength"], "selected_on": "selection split"}, ctx["base"], edit)
        choices.append({"key": key, "budget": chosen["budget"], "hit": chosen["hit"],
                        "selection_kl": chosen["selection_kl"]})
    save_choices(ctx, "prompting", choices)


def save_choices(ctx, part: str, choices: list[dict]) -> None:
    """Which measured point stands for which budget (one row per budget in the assembled table)."""
    from rlhf_interp.core.io import atomic_write_json

    atomic_write_json(ctx["work"] / f"choices_{part}.json", choices)


def tuned_run(ctx) -> Path:
    """The frontier's PPO trajectory run when present, else the algorithms study's PPO run."""
    for path in (ctx["args"].trajectory, Path(RUNS["PPO"])):
        if path is not None and path.exists():
            return path
    raise SystemExit(f"No PPO run found ({ctx['args'].trajectory}, {RUNS['PPO']}): amplification needs a tuned model.")


def part_amplification(ctx) -> None:
    """equal_kl over s = 1 + a on the selection prompts (each repeated --samples times), then the report prompts."""
    from rlhf_interp.bridge import load_model
    from rlhf_interp.edits import LogitAmplification
    from rlhf_interp.frontier import equal_kl, read_run
    from rlhf_interp.frontier.new_methods import amplification_family

    run = read_run(tuned_run(ctx))
    step = max(run.checkpoints)
    tuned = load_model(run.checkpoints[step], device=ctx["base"].cfg.device, frozen=True)
    path = ctx["work"] / "selection_amplification.csv"
    if path.exists():
        chosen = pd.read_csv(path)
    else:
        repeated = [p for p in ctx["setup"].selection_prompts for _ in range(ctx["args"].selection_samples)]
        chosen, evaluations = equal_kl(tuned, amplification_family(ctx["base"]), repeated, ctx["args"].reward,
                                       ctx["args"].budgets, reference=ctx["base"], seed=ctx["args"].seed,
                                       rel_tol=0.15, max_evals_per_budget=4)
        evaluations.to_csv(ctx["work"] / "selection_amplification_evaluations.csv", index=False)
        chosen.to_csv(path, index=False)
    choices = []
    for c in chosen.to_dict("records"):
        a = float(c["strength"]) - 1.0
        key = f"amplification_a{a:.4g}"
        labels = {"method": "logit amplification", "kind": "amplification", "setting": f"a={a:.3g} on {run.path} "
                  f"step {step}", "strength": a, "selected_on": "selection split", "step": step, "run": str(run.path)}
        measure(ctx, key, labels, tuned, LogitAmplification(ctx["base"], a), reference=ctx["base"])
        choices.append({"key": key, "budget": c["budget"], "hit": bool(c["hit"]), "selection_kl": c["kl_exact_mean"]})
    save_choices(ctx, "amplification", choices)
    del tuned


def part_checkpoints(ctx) -> None:
    """The last checkpoint of each algorithm's seed-0 run (and every checkpoint of the frontier's trajectory run)."""
    from rlhf_interp.bridge import load_model
    from rlhf_interp.frontier import read_run

    runs = [(name, Path(path), "last") for name, path in RUNS.items()]
    if ctx["args"].trajectory is not None:
        runs.append(("PPO trajectory", ctx["args"].trajectory, "all"))
    for name, path, which in runs:
        if not path.exists():
            ctx["notes"].append(f"{name}: run directory {path} is absent, not measured")
            continue
        run = read_run(path)
        steps = list(run.checkpoints) if which == "all" else [max(run.checkpoints)]
        for step in steps:
            key = f"{name.replace(' ', '_')}_step{step}"
            if ctx["points"].done(key):
                continue
            tuned = load_model(run.checkpoints[step], device=ctx["base"].cfg.device, frozen=True)
            algorithm = run.config.get("algorithm", name.lower())
            # kind "algorithm" for the algorithms study's runs (8 phases, one seed): not the v2 page's PPO
            # trajectory and not its freezing study, which select kind == "fine-tuning"
            kind = "fine-tuning" if which == "all" else "algorithm"
            labels = {"method": f"{name} (algorithms study, seed {run.config.get('seed', 0)})", "kind": kind,
                      "setting": f"step {step}", "step": step, "run": str(path),
                      "trajectory": which == "all", "last": step == max(run.checkpoints),
                      "freeze_layers": run.freeze_layers, "lora_r": run.lora_r}
            measure(ctx, key, labels, tuned, None, reference=ctx["base"])
            del tuned


def assemble(ctx) -> None:
    from rlhf_interp.core.io import atomic_write_json
    from rlhf_interp.frontier.new_methods import prompting_library
    from rlhf_interp.measure.capability import SOURCE_NOTE

    out: Path = ctx["args"].out
    out.mkdir(parents=True, exist_ok=True)
    measured = {r["key"]: r for r in ctx["points"].rows()}
    chosen = [c for part in ("prompting", "amplification") if (ctx["work"] / f"choices_{part}.json").exists()
              for c in json.loads((ctx["work"] / f"choices_{part}.json").read_text())]
    budget_keys = {c["key"] for c in chosen}
    rows = [r for k, r in measured.items() if k not in budget_keys]
    rows += [{**measured[c["key"]], **{k: v for k, v in c.items() if k != "key"}} for c in chosen if c["key"] in measured]
    points = pd.DataFrame(rows)
    library = prompting_library()  # labels from the library as it is now (rows keep their measured numbers)
    is_prompt = points["kind"] == "prompting"
    points.loc[is_prompt, "setting"] = [library[int(s)].label for s in points.loc[is_prompt, "strength"]]
    is_algo = points["kind"] == "algorithm"
    points.loc[is_algo, "method"] = [m.split(" (")[0] + " (algorithms study, seed 0)"
                                     for m in points.loc[is_algo, "method"]]
    first = ["method", "kind", "setting", "strength", "budget", "hit", "step", "run", "reward_mean", "reward_stderr",
             "reward_low", "reward_high", "kl_exact_mean", "kl_exact_stderr", "kl_exact_low", "kl_exact_high",
             "kl_per_token", "capability_nll_mean", "capability_nll_low", "capability_nll_high",
             "capability_nll_delta_mean", "capability_nll_delta_low", "capability_nll_delta_high",
             "fluency_nll_mean", "fluency_nll_low", "fluency_nll_high"]
    points = points[[c for c in first if c in points] + [c for c in points if c not in first]]
    points.to_csv(out / "new_methods.csv", index=False)
    d = ctx["points"].dir
    pd.concat([pd.read_csv(p) for p in sorted(d.glob("*__sequences.csv"))]).to_csv(
        out / "new_methods_sequences.csv", index=False)
    pd.concat([pd.read_csv(p) for p in sorted(d.glob("*__texts.csv"))]).to_csv(
        out / "new_methods_capability.csv", index=False)
    selection = [pd.read_csv(p).assign(part=p.stem.split("_", 1)[1])
                 for p in (ctx["work"] / "selection_prompting.csv", ctx["work"] / "selection_amplification.csv")
                 if p.exists()]
    if selection:
        sel = pd.concat(selection, ignore_index=True)
        is_prompt = sel["part"] == "prompting"
        sel.loc[is_prompt, "setting"] = [library[int(s)].label for s in sel.loc[is_prompt, "strength"]]
        sel.to_csv(out / "new_methods_selection.csv", index=False)
    setup = ctx["setup"]
    ctx["notes"].append("prompting rows: the capability text is scored after the prefix, which also gives the first "
                        "tokens of each text more context than BOS alone, so part of their lower NLL is that context, "
                        "not a change in what the model knows; compare prompting on fluency and reward, and hook edits "
                        "and tuned models on capability")
    atomic_write_json(out / "new_methods.json", {
        "capability_source": SOURCE_NOTE, "capability_texts": len(setup.texts),
        "capability_tokens": int(ctx["base_capability"]["n_tokens"].sum()),
        "capability_texts_available": ctx["available"], "report_prompts": setup.report_prompts,
        "selection_prompts": setup.selection_prompts, "samples_per_prompt": setup.samples_per_prompt,
        "selection_samples_per_prompt": setup.selection_samples,
        "max_new_tokens": setup.max_new_tokens, "seed": setup.seed, "reward": str(ctx["args"].reward),
        "budgets": ctx["args"].budgets, "notes": ctx["notes"],
        "cpu_seconds_total": float(sum(r.get("cpu_seconds", 0.0) for r in measured.values()))})
    print(f"wrote {out / 'new_methods.csv'} ({len(points)} points)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="smollm2-135m")
    p.add_argument("--trajectory", type=Path, default=Path("runs/periods"), help="the v2 frontier's PPO run, if present")
    p.add_argument("--reward", default="char_count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=4, help="continuations per report prompt")
    p.add_argument("--selection-samples", type=int, default=2, help="continuations per selection prompt")
    p.add_argument("--budgets", type=lambda t: [float(x) for x in t.split(",")], default=[1.0, 2.0, 4.0])
    p.add_argument("--capability-texts", type=int, default=128)
    p.add_argument("--parts", type=lambda t: t.split(","), default=list(PARTS))
    p.add_argument("--work-dir", type=Path, default=Path("runs/frontier_v3"))
    p.add_argument("--out", type=Path, default=Path("reports/edit_vs_finetune"))
    args = p.parse_args(argv)

    from rlhf_interp.bridge import load_model
    from rlhf_interp.frontier.new_methods import Setup
    from rlhf_interp.measure.capability import load_capability_texts, text_nll
    from rlhf_interp.prompts import load_prompts

    args.work_dir.mkdir(parents=True, exist_ok=True)
    base = load_model(args.base, frozen=True)
    report = load_prompts("default", limit=16, seed=args.seed)  # the v2 frontier's prompts
    selection = [q for q in load_prompts("default", seed=args.seed + 1) if q not in set(report)][:16]
    texts = load_capability_texts(args.capability_texts, seed=args.seed)
    cap_path = args.work_dir / "base_capability.csv"
    if cap_path.exists():
        base_capability = pd.read_csv(cap_path)
    else:
        base_capability = text_nll(base, None, list(texts.texts))
        base_capability.to_csv(cap_path, index=False)
    setup = Setup(base, report, selection, args.reward, 24, args.seed, args.samples, texts.texts, base_capability,
                  args.selection_samples)
    ctx = {"args": args, "base": base, "setup": setup, "work": args.work_dir, "points": Points(args.work_dir),
           "notes": [], "base_capability": base_capability, "available": texts.available}
    if args.trajectory is not None and not args.trajectory.exists():
        ctx["notes"].append(f"the v2 frontier's PPO trajectory run {args.trajectory} is absent: its checkpoints have "
                            f"no capability column; amplification uses {RUNS['PPO']}")
        args.trajectory = None
    functions = {"base": part_base, "prompting": part_prompting, "amplification": part_amplification,
                 "checkpoints": part_checkpoints}
    for part in args.parts:
        functions[part](ctx)
    assemble(ctx)


if __name__ == "__main__":
    main()
