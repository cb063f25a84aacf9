"""The freezing study (issue 31): how many of SmolLM2's first blocks to freeze for the most reward per nat,
answered over three seeds per N on the frontier v3 report prompts.

    python analyses/freezing.py train                   # every run, seed-major; resumes a killed run, skips finished
    python analyses/freezing.py train --only N10_s1     # one run (comma-separated names for several)
    python analyses/freezing.py measure                 # each finished run's last checkpoint (resumable per run)
    python analyses/freezing.py report                  # tables, claims and the page in reports/freezing/
    python analyses/freezing.py report --from-csv       # the page again from its CSVs

The study's choices (the mechanics are `rlhf_interp.frontier.freezing`, `v3_round.Round` and
`new_methods.measure_point`):
- runs: `rlhf-interp train configs/periods.yaml --set freeze_layers=N seed=S phases=12` (the config's adaptive KL
  controller kept), N in 0, 10, 20, 25 and seeds 0, 1, 2, in ``runs/freezing/N{n}_s{seed}``, trained one after the
  other in this process, seed-major (every N of seed 0 first) so a study cut short is balanced. Only the newest
  checkpoint is kept, and a finished run's optimiser state is deleted (``--keep-state`` keeps it): the study
  measures weights, and twelve runs' optimiser states would not fit the disk.
- measuring: like the frontier v3 round's fine-tuning points: the last checkpoint sampled on the v3 report split
  (the shipped prompts shuffled with seed 0, the first 128) x 2 samples, 24 new tokens, temperature 1, sampling
  seed 0 for every run and the base model (common random numbers); reward = periods, exact KL(tuned || base) per
  sequence, capability on 128 held-out texts. Points in ``runs/freezing/measure/points`` (one per run).
- the answer: per run, reward gain over the base (paired by prompt) / mean KL = periods per nat; per N the mean
  over seeds with a t interval over seeds; the best N against the runner-up paired by seed, decided or bounded
  against the issue's target of ±0.15 periods per nat.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from rlhf_interp.frontier import freezing as fz
from rlhf_interp.ppo import runs as ppo_runs
from rlhf_interp.report import freezing_claims as fc

NAME = "freezing"
NS, SEEDS, PHASES = (0, 10, 20, 25), (0, 1, 2), 12
CONFIG = Path("configs/periods.yaml")
RUNS = Path("runs/freezing")
TARGET = 0.15  # periods per nat: the half-width for "which N buys the most per nat"
REPORT_PROMPTS, SAMPLES, SEED, MAX_NEW_TOKENS, CAPABILITY_TEXTS = 128, 2, 0, 24, 128  # the v3 round's report split


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def selected(args) -> list[tuple[str, int, int]]:
    runs = fz.study_runs(args.ns, args.seeds)
    if args.only:
        names = {x.strip() for x in args.only.split(",") if x.strip()}
        unknown = names - {r[0] for r in runs}
        if unknown:
            raise SystemExit(f"--only {sorted(unknown)}: not runs of this study ({', '.join(r[0] for r in runs)}).")
        runs = [r for r in runs if r[0] in names]
    return runs


# ----------------------------------------------------------------------------------------------- train


def train(args) -> None:
    from rlhf_interp.ppo import PPOConfig

    for name, n, seed in selected(args):
        run_dir = args.runs / name
        overrides = [f"freeze_layers={n}", f"seed={seed}", f"phases={args.phases}", "keep_checkpoints=1",
                     *args.set]
        config = PPOConfig.load(args.config, overrides)
        how = ppo_runs.plan(run_dir, config.phases)
        wall, cpu = ppo_runs.train_or_resume(config, run_dir, keep_state=args.keep_state, progress=False)
        print(f"{time.strftime('%H:%M:%S')} {name}: {how}"
              + ("" if how == "done" else f" ({wall:.0f} s, {cpu:.0f} s CPU in this call; "
                                          f"{ppo_runs.run_seconds(run_dir):.0f} s logged)"), flush=True)


# ----------------------------------------------------------------------------------------------- measure


def report_split(seed: int, size: int) -> list[str]:
    """The frontier v3 round's report prompts: the shipped set shuffled with ``seed``, its first ``size``."""
    from rlhf_interp.prompts import load_prompts

    return load_prompts("default", seed=seed)[:size]


def measure(args) -> None:
    from rlhf_interp.bridge import RunDir, load_model
    from rlhf_interp.core.io import atomic_write_json
    from rlhf_interp.frontier.new_methods import Setup
    from rlhf_interp.frontier.v3_round import Round
    from rlhf_interp.measure.capability import load_capability_texts, text_nll

    work = args.runs / "measure"
    work.mkdir(parents=True, exist_ok=True)
    runs = [(name, n, seed) for name, n, seed in selected(args) if ppo_runs.finished(args.runs / name, args.phases)]
    texts = load_capability_texts(args.capability_texts, seed=args.seed).texts if args.capability_texts else []
    base = load_model(args.base, frozen=True)
    cap_path = work / "base_capability.csv"
    if len(texts) and not cap_path.exists():
        text_nll(base, None, list(texts)).to_csv(cap_path, index=False)
    setup = Setup(base, report_split(args.seed, args.report_prompts), [], args.reward, args.max_new_tokens, args.seed,
                  args.samples, texts, pd.read_csv(cap_path) if len(texts) else None)
    rnd = Round(setup, work, [])
    atomic_write_json(work / "setup.json", {
        "base": args.base, "report_prompts": args.report_prompts, "samples_per_prompt": args.samples, "seed": args.seed,
        "max_new_tokens": args.max_new_tokens, "reward": args.reward, "capability_texts": len(texts)})
    rnd.measure("base", {"method": "base model", "kind": "base", "setting": "no change"}, base)
    for name, n, seed in runs:
        run = RunDir(args.runs / name)
        step = run.steps[-1]
        if rnd.points.done(name):
            continue
        tuned = load_model(run.checkpoint(step), device=base.cfg.device, frozen=True)
        rnd.measure(name, {"method": f"PPO first {n} layers frozen", "kind": "freezing", "n": n, "seed": seed,
                           "step": step, "run": str(args.runs / name), "train_seconds": ppo_runs.run_seconds(run.path)},
                    tuned, None, reference=base)
        del tuned
    missing = [name for name, _, _ in selected(args) if not ppo_runs.finished(args.runs / name, args.phases)]
    if missing:
        print(f"not finished, not measured: {', '.join(missing)}", flush=True)


# ----------------------------------------------------------------------------------------------- report


def collect(args) -> dict[str, pd.DataFrame]:
    """The study's tables from the measured points: per run, per N, pairs of Ns."""
    from rlhf_interp.frontier.v3_round import Points

    points = Points(args.runs / "measure")
    if not points.done("base"):
        raise SystemExit(f"{points.dir}/base.json is missing: run `python analyses/freezing.py measure` first.")
    rows = {r["key"]: r for r in points.rows() if r.get("kind") == "freezing"}
    labels = {k: {"n": int(r["n"]), "seed": int(r["seed"]), "step": int(r["step"]),
                  "train_seconds": r.get("train_seconds"), "measure_cpu_seconds": r.get("cpu_seconds"),
                  "capability_nll_delta_mean": r.get("capability_nll_delta_mean")} for k, r in rows.items()}
    per_run = fz.per_run_table(points.sequences("base"), {k: points.sequences(k) for k in rows}, labels)
    if per_run.empty:
        raise SystemExit("no run is measured yet: run `python analyses/freezing.py measure` after training.")
    per_run = per_run.sort_values(["n", "seed"]).reset_index(drop=True)
    return {"per_run": per_run, "per_n": fz.per_n_table(per_run), "pairs": fz.pairwise_table(per_run, target=TARGET)}


def render(report_dir: Path):
    """The page from ``per_run.csv``, ``per_n.csv``, ``pairs.csv`` and ``config.json`` alone."""
    from rlhf_interp.report import Report, read_config, read_table

    config = read_config(report_dir)
    per_run, per_n, pairs = (read_table(report_dir, t) for t in ("per_run", "per_n", "pairs"))
    target = float(config.get("target", TARGET))
    unit = "periods" if config.get("reward", "char_count") == "char_count" else "reward"
    best, facts = fc.best_n_claim(per_run, target, unit=unit)
    claims = [best, *fc.per_n_claims(per_n, unit=unit), fc.cpu_claim(per_run)]
    report = Report.at(report_dir, "Freezing the first N layers: which N buys the most reward per nat",
                       source=__file__, claims=claims,
                       question="How many of the first transformer blocks should PPO freeze to buy the most reward "
                                "per nat of KL from the base model?")
    seeds = ", ".join(f"N={int(r.n)}: {int(r.seeds)}" for r in per_n.itertuples())
    report.text(
        f"PPO (`{config.get('config', CONFIG)}` with `freeze_layers=N`, `seed=S`, "
        f"`phases={config.get('phases', PHASES)}`; its adaptive KL controller kept) with the first N transformer "
        f"blocks frozen; seeds per N: {seeds}. Each run's last checkpoint is measured like the frontier v3 round's "
        f"fine-tuning points: {config.get('report_prompts')} report prompts x {config.get('samples_per_prompt')} "
        f"samples of {config.get('max_new_tokens')} new tokens at temperature 1 with sampling seed "
        f"{config.get('seed')} for every run and for the base model (common random numbers); reward = "
        f"{'the number of periods' if unit == 'periods' else '`' + str(config.get('reward')) + '`'}, KL = "
        "the exact KL(tuned || base) summed over each continuation. A run's reward per nat is its reward gain over "
        "the base model (paired by prompt) divided by its mean KL: one value per run. Per N the interval is "
        "Student's t over the seeds; Ns are compared seed by seed (paired by seed). **Read with care:** the runs "
        "share a training budget (phases), not a KL budget, so each N ends at its own KL (the `kl_exact_mean` column), "
        "and reward per nat is not constant along a run: where reward grows slower than KL (as on the PPO "
        "trajectories of `edit_vs_finetune`), a run that ends at a smaller KL scores more per nat whatever its N. "
        "This table answers 'per nat after 12 phases'; reward at equal KL needs each run read at a common budget.")
    report.section("Reward per nat per N")
    report.figure("per_nat", per_nat_figure(per_run, per_n, unit),
                  caption=f"Reward gain over the base model per nat of KL, per N: each seed's run (dots) and the mean "
                          f"over seeds with its 95% t interval over seeds (bar; none with one seed). Best: N="
                          f"{facts.get('first', '-')}; the claim compares it with N={facts.get('second', '-')} "
                          f"seed by seed.")
    report.table("per_n", per_n, title="Per N, over seeds",
                 caption="Per N: the mean over seeds of each run's reward per nat, reward gain and KL, with the 95% t "
                         "interval over seeds (blank with one seed).")
    report.table("pairs", pairs, title="Pairs of N, paired by seed",
                 caption="Reward per nat of N=a minus N=b over the seeds both have, with the 95% t interval over "
                         "those seeds and the verdict (decided, or the largest difference not ruled out). The "
                         f"target is ±{target:g} {unit} per nat; `sd`: the spread of the per-seed differences, "
                         "`seeds_for_target`: the seeds a t interval with that spread needs to be within the target "
                         "(the sizing of a next round; an estimate from few seeds).")
    report.table("per_run", per_run, title="Every run",
                 caption="One row per run: reward and KL with t intervals over prompts, the gain over the base paired "
                         "by prompt, reward per nat, training seconds (sum of `seconds` in metrics.jsonl) and the "
                         "measuring CPU seconds.")
    return report


def per_nat_figure(per_run: pd.DataFrame, per_n: pd.DataFrame, unit: str):
    """Per N: each run's reward per nat and the mean over seeds with its t interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = {int(n): i for i, n in enumerate(sorted(per_n["n"]))}
    for r in per_run.itertuples():
        ax.plot(xs[int(r.n)] + 0.08 * (int(r.seed) - 1), r.reward_per_nat, "o", color="0.55", ms=4)
    for r in per_n.itertuples():
        low, high = r.reward_per_nat_low, r.reward_per_nat_high
        err = [[r.reward_per_nat - low], [high - r.reward_per_nat]] if np.isfinite(low) else None
        ax.errorbar(xs[int(r.n)] + 0.25, r.reward_per_nat, yerr=err, fmt="s", color="C0", capsize=4, ms=6)
    ax.set_xticks(list(xs.values()), [f"N={n}" for n in xs])
    ax.axhline(0, color="0.8", lw=0.8)
    ax.set_xlabel("first N blocks frozen")
    ax.set_ylabel(f"{unit} gained per nat of KL")
    fig.tight_layout()
    return fig


def report(args) -> None:
    from rlhf_interp.report import write_tables

    out = args.root / NAME
    if not args.from_csv:
        tables = collect(args)
        setup = json.loads((args.runs / "measure" / "setup.json").read_text())
        write_tables(out, tables, config={**setup, "config": str(args.config), "phases": args.phases,
                                          "ns": list(args.ns), "seeds": list(args.seeds), "target": TARGET,
                                          "runs": str(args.runs)})
    page = render(out)
    page.save()
    print(page.headline)
    print(f"report: {out}/index.html")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("train", "measure", "report"))
    p.add_argument("--runs", type=Path, default=RUNS)
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--ns", type=_ints, default=list(NS))
    p.add_argument("--seeds", type=_ints, default=list(SEEDS))
    p.add_argument("--phases", type=int, default=PHASES)
    p.add_argument("--only", default="", help="comma-separated run names (N10_s1, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another config override")
    p.add_argument("--keep-state", action="store_true", help="keep a finished run's optimiser state")
    p.add_argument("--base", default="smollm2-135m")
    p.add_argument("--reward", default="char_count")
    p.add_argument("--seed", type=int, default=SEED, help="prompt shuffle and sampling seed (the v3 round's)")
    p.add_argument("--report-prompts", type=int, default=REPORT_PROMPTS)
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    p.add_argument("--capability-texts", type=int, default=CAPABILITY_TEXTS)
    p.add_argument("--root", type=Path, default=Path("reports"))
    p.add_argument("--from-csv", action="store_true")
    args = p.parse_args(argv)
    {"train": train, "measure": measure, "report": report}[args.step](args)


if __name__ == "__main__":
    main()
