"""PPO, GRPO, RLOO and DPO on the period task at matched KL: reports/algorithms/.

    python analyses/algorithms.py run --runs runs/algorithms          # train every (algorithm, seed); resumable
    python analyses/algorithms.py report --runs runs/algorithms      # tables, claims and the page
    python analyses/algorithms.py diff --runs runs/algorithms        # where each run's change lives (vs the base)
    python analyses/algorithms.py report --rebuild                   # the page again from the committed CSVs

Each run is `rlhf-interp train configs/periods[_grpo|_rloo|_dpo].yaml` as shipped (same model, reward, KL penalty
and optimiser; only the algorithm differs) with ``phases`` and ``seed`` set; DPO trains on period pairs
synthesised from the base model (`rlhf-interp reward-model synth`, char_count ".": the pair with more periods is
chosen). Every phase of every run logs the same measurements of its own rollout: reward (periods per 24 tokens),
the exact per-token KL(pi||ref) and KL(ref||pi) at the sampled states, entropy, seconds. CPU seconds per run are
measured by ``/usr/bin/time`` (user + system) and written to ``RUN/cpu_seconds.txt``, one line per invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from rlhf_interp.core.style import mark
from rlhf_interp.measure.trajectory_fit import per_run_fits, run_difference, run_interval

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"ppo": "configs/periods.yaml", "grpo": "configs/periods_grpo.yaml", "rloo": "configs/periods_rloo.yaml",
           "dpo": "configs/periods_dpo.yaml"}
REPORT = ROOT / "reports" / "algorithms"


# ----------------------------------------------------------------------------------------------- running


def _phases_logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip().endswith("}"))


def run_one(run: Path, algorithm: str, seed: int, phases: int, pairs: Path, extra: list[str]) -> str:
    """Train (or resume, or skip) one run; its CPU time is appended to RUN/cpu_seconds.txt."""
    done = run / f"checkpoint-{phases:06d}"
    if done.exists():
        return f"{run.name}: done"
    sets = [f"phases={phases}", f"seed={seed}", f"checkpoint_every={max(1, phases // 3)}", "keep_checkpoints=1",
            "sample_every=0", "kl_direction=pi_ref", *extra]
    if algorithm == "dpo":
        sets.append(f"preference_data={pairs}")
        while not pairs.exists():  # being synthesised
            time.sleep(10)
    resume = any(run.glob("checkpoint-*"))
    cmd = [sys.executable, "-m", "rlhf_interp.cli", "train", "--out", str(run), "--no-progress"]
    cmd += ["--resume"] if resume else [CONFIGS[algorithm], "--overwrite", *[x for s in sets for x in ("--set", s)]]
    run.mkdir(parents=True, exist_ok=True)
    timing = run / ".time"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1"}
    with open(run.parent / f"{run.name}.log", "a", encoding="utf-8") as log:
        code = subprocess.run(["/usr/bin/time", "-f", "%U %S %e", "-o", str(timing), *cmd], cwd=ROOT, env=env,
                              stdout=log, stderr=log).returncode
    if timing.exists():
        user, system, wall = timing.read_text().split()[-3:]
        with open(run / "cpu_seconds.txt", "a", encoding="utf-8") as f:
            f.write(f"{float(user) + float(system):.1f} {float(wall):.1f} {'resume' if resume else 'fresh'}\n")
    return f"{run.name}: exit {code}"


def run_all(runs: Path, algorithms: list[str], seeds: list[int], phases: int, jobs: int, extra: list[str]) -> None:
    pairs = runs / "period_pairs.jsonl"
    todo = [(runs / f"{alg}_s{seed}", alg, seed) for seed in seeds for alg in algorithms]  # every algorithm, seed by seed
    if "dpo" in algorithms and not pairs.exists():
        print(f"waiting for {pairs} before the DPO runs (rlhf-interp reward-model synth --reward char_count "
              f"--reward-arg char=. --n-pairs 256 --max-new-tokens 24 --out {pairs})", flush=True)
    with ThreadPoolExecutor(jobs) as pool:
        for message in pool.map(lambda job: run_one(job[0], job[1], job[2], phases, pairs.resolve(), extra), todo):
            print(time.strftime("%H:%M:%S"), message, flush=True)


DIFF_PROMPTS, DIFF_SEED = 32, 7  # the texts every run is diffed on: base-model continuations of shipped prompts


def diff_all(runs: Path, report_dir: Path) -> None:
    """Where each run's change lives: every run's final checkpoint diffed against the base model on the same
    texts (the base model's own seeded continuations, so no run is favoured), written as two tidy tables."""
    from rlhf_interp import load_model, load_prompts
    from rlhf_interp.diff import policy_samples
    from rlhf_interp.diff.across_runs import where_change_lives
    from rlhf_interp.report import write_tables

    found = {p.name: p for p in sorted(runs.iterdir()) if p.is_dir() and any(p.glob("checkpoint-*"))}
    files = {"residual": report_dir / "where_residual.csv", "weights": report_dir / "where_weights.csv"}
    done = pd.read_csv(files["residual"]) if files["residual"].exists() else pd.DataFrame(columns=["algorithm", "seed"])
    done_runs = {f"{a}_s{s}" for a, s in zip(done.algorithm, done.seed)}  # resumable: diffed runs are kept
    todo = {k: v for k, v in found.items() if k not in done_runs}
    if not todo:  # nothing left: no model is loaded
        return
    base = load_model("smollm2-135m", device="cpu", frozen=True)
    prompts = load_prompts(limit=DIFF_PROMPTS, seed=DIFF_SEED)
    texts = policy_samples(base, prompts, max_new_tokens=24, seed=DIFF_SEED)
    tables = where_change_lives(base, todo, texts, progress=True)
    for name, df in tables.items():
        parts = df.run.str.rsplit("_s", n=1, expand=True)
        new = df.drop(columns="run").assign(algorithm=parts[0], seed=parts[1].astype(int))
        tables[name] = pd.concat([pd.read_csv(files[name]), new]) if files[name].exists() else new
        tables[name] = tables[name].sort_values(["algorithm", "seed"], key=_algorithm_order, kind="stable")
    write_tables(report_dir, {"where_residual": tables["residual"], "where_weights": tables["weights"]})


# ----------------------------------------------------------------------------------------------- tables

ORDER = ["ppo", "grpo", "rloo", "dpo"]
LATE = 3  # "end of run": the mean of the last LATE phases (one phase's batch of 16 is noisy)


def collect(runs: Path) -> dict[str, pd.DataFrame]:
    """Tidy tables from the run directories: ``phases`` (one row per run and phase) and ``runs`` (one per run)."""
    rows, per_run = [], []
    for run in sorted(p for p in runs.iterdir() if p.is_dir() and (p / "metrics.jsonl").exists()):
        algorithm, _, seed = run.name.rpartition("_s")
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
        for m in metrics:
            rows.append({"algorithm": algorithm, "seed": int(seed), "phase": m["phase"],
                         "reward": m["reward_mean"], "kl_pi_ref_per_token": m["kl_pi_ref_per_token"],
                         "kl_ref_pi_per_token": m["kl_ref_pi_per_token"], "entropy": m["entropy"],
                         "gen_tokens": m["gen_tokens_per_sample"], "seconds": m["seconds"],
                         "kl_coef": m["kl_coef"], "policy_loss": m.get("policy_loss")})
        cpu = run / "cpu_seconds.txt"
        lines = [line.split() for line in cpu.read_text().splitlines()] if cpu.exists() else []
        per_run.append({"algorithm": algorithm, "seed": int(seed), "phases": len(metrics),
                        "cpu_seconds": sum(float(x[0]) for x in lines), "wall_seconds": sum(float(x[1]) for x in lines),
                        "invocations": len(lines)})
    for run in sorted(p for p in runs.iterdir() if p.is_dir() and not (p / "metrics.jsonl").exists()):
        if (run / ".time").exists():  # started, never finished a phase (stopped): its CPU still counts
            user, system, wall = (run / ".time").read_text().split()[-3:]
            per_run.append({"algorithm": "abandoned", "seed": int(run.name.rpartition("_s")[2]), "phases": 0,
                            "cpu_seconds": float(user) + float(system), "wall_seconds": float(wall), "invocations": 1})
    synth = runs / "synth.log"  # the DPO pairs: `/usr/bin/time -v rlhf-interp reward-model synth ...`
    if synth.exists():
        text = synth.read_text(encoding="utf-8", errors="replace")
        cpu = sum(float(line.split(":")[1]) for line in text.splitlines()
                  if line.strip().startswith(("User time", "System time")))
        per_run.append({"algorithm": "dpo_pairs", "seed": 0, "phases": 0, "cpu_seconds": cpu, "wall_seconds": float("nan"),
                        "invocations": 1})
    phases = pd.DataFrame(rows)
    phases["kl_pi_ref_per_sequence"] = phases.kl_pi_ref_per_token * phases.gen_tokens
    phases = phases.sort_values(["algorithm", "seed", "phase"], key=_algorithm_order).reset_index(drop=True)
    return {"phases": phases, "runs": pd.DataFrame(per_run).sort_values(["algorithm", "seed"], key=_algorithm_order)}


def _algorithm_order(col: pd.Series) -> pd.Series:
    return col.map(lambda a: ORDER.index(a) if a in ORDER else len(ORDER)) if col.name == "algorithm" else col


def claims_for(per_run: pd.DataFrame, matched: float, runs: pd.DataFrame) -> list:
    from rlhf_interp.core import stats
    from rlhf_interp.report.claims import Claim

    claims = []
    present = [a for a in ORDER if a in set(per_run.algorithm)]
    n_seeds = int(per_run.groupby("algorithm").seed.nunique().min())
    per = {"tokens": 24}
    for a in present:
        iv = run_interval(per_run[per_run.algorithm == a], "reward_at_matched_kl")
        claims.append(Claim.estimate(f"{a}_reward_at_matched_kl", f"{a.upper()}: {{value}} periods per {{tokens}} "
                                     f"tokens {{ci}} at the matched KL(π‖ref) of {{kl}} nats per sequence ({{n}}).",
                                     iv, params={"kl": round(matched, 3), **per}))
    for a in present:
        iv = run_interval(per_run[per_run.algorithm == a], "reward_per_nat")
        claims.append(Claim.estimate(f"{a}_reward_per_nat", f"{a.upper()} gains {{value}} periods per nat of "
                                     f"sequence KL(π‖ref) {{ci}} ({{n}}).", iv, headline=False))
    base = per_run[per_run.algorithm == "ppo"]
    for a in present:
        if a == "ppo" or base.empty:
            continue
        diff = run_difference(per_run[per_run.algorithm == a], base, "reward_at_matched_kl")
        claims.append(Claim.compare(f"{a}_minus_ppo", f"{a.upper()} minus PPO at the matched KL: {{value}} {{ci}}; "
                                    f"{{verdict}}.", diff, a.upper(), "PPO", headline=False))
    for a in present:
        r = per_run[per_run.algorithm == a]
        if len(r) >= 2:
            iv = stats.seeds_interval(r.seconds_per_nat, r.seed, n={"seeds": len(r)})
            claims.append(Claim.estimate(f"{a}_seconds_per_nat", f"{a.upper()}: {{value}} s of training per nat "
                                         f"of sequence KL {{ci}} ({{n}}).", iv, fmt=".0f", headline=False))
            iv = stats.seeds_interval(r.entropy_end - r.entropy_start, r.seed, n={"seeds": len(r)})
            claims.append(Claim.estimate(f"{a}_entropy_change", f"{a.upper()}: entropy change {{value}} nats/token "
                                         f"{{ci}} ({{n}}).", iv, fmt=".3f", headline=False))
        else:
            claims.append(Claim.fact(f"{a}_seconds_per_nat", f"{a.upper()}, one run: {{s}} s of training per nat of "
                                     f"sequence KL (wall clock on a shared CPU); entropy {{e0}} -> {{e1}} nats/token.",
                                     params={"s": round(float(r.seconds_per_nat.iloc[0])),
                                             "e0": round(float(r.entropy_start.iloc[0]), 3),
                                             "e1": round(float(r.entropy_end.iloc[0]), 3)},
                                     n={"runs": 1}, headline=False))
    trained = runs[runs.phases > 0]
    claims.append(Claim.fact("cpu", "CPU time of the study: {cpu} CPU-minutes ({pairs} of them synthesising the DPO "
                             "pairs, {abandoned} in runs of further seeds stopped before their first phase) over "
                             "{runs} runs ({seeds} seed(s) per algorithm, at least {phases} phases each).",
                             params={"cpu": round(float(runs.cpu_seconds.sum()) / 60, 1),
                                     "pairs": round(float(runs[runs.algorithm == "dpo_pairs"].cpu_seconds.sum()) / 60, 1),
                                     "abandoned": round(float(runs[runs.algorithm == "abandoned"].cpu_seconds.sum()) / 60, 1),
                                     "runs": len(trained), "seeds": n_seeds, "phases": int(trained.phases.min())},
                             n={"runs": len(trained)}))
    return claims


def where_claims(residual: pd.DataFrame, weights: pd.DataFrame) -> list:
    """Where each algorithm's change lives, over seeds: the last layer's residual change, the share of the weight
    change in MLPs, and each algorithm minus PPO on the first."""
    from rlhf_interp.core import stats
    from rlhf_interp.report.claims import Claim

    last = residual[(residual.hook == "hook_resid_post") & (residual.layer == residual.layer.max())]
    w = weights[weights.layer >= 0].assign(diff_sq=lambda d: d.diff_norm ** 2)
    mlp_share = (w[w.group == "mlp"].groupby(["algorithm", "seed"]).diff_sq.sum()
                 / w.groupby(["algorithm", "seed"]).diff_sq.sum()).rename("mlp_share").reset_index()
    n_texts = {"texts": DIFF_PROMPTS}
    claims = []
    for a in [a for a in ORDER if a in set(last.algorithm)]:
        r = last[last.algorithm == a]
        if r.seed.nunique() < 2:  # the interval is over seeds (no per-text values are kept)
            claims.append(Claim.not_measured(f"{a}_where", f"Where {a.upper()}'s change lives: not yet measured with "
                                             "enough samples (one seed diffed).", headline=False))
            continue
        iv = stats.seeds_interval(r.rel_diff_norm, r.seed, n={"seeds": r.seed.nunique(), **n_texts})
        claims.append(Claim.estimate(f"{a}_last_layer_change", f"{a.upper()} moved the last layer's residual "
                                     f"(hook_resid_post) by {{value}} of its norm {{ci}} ({{n}}).", iv, fmt=".3f",
                                     headline=False))
        m = mlp_share[mlp_share.algorithm == a]
        iv = stats.seeds_interval(m.mlp_share, m.seed, n={"seeds": m.seed.nunique()})
        claims.append(Claim.estimate(f"{a}_mlp_share", f"{a.upper()}: share of the squared weight change in MLP "
                                     f"weights {{value}} {{ci}} ({{n}}).", iv, headline=False))
        ppo_share = mlp_share[mlp_share.algorithm == "ppo"].mlp_share
        if a != "ppo" and len(ppo_share) >= 2 and len(m) >= 2:
            diff = stats.welch_difference(m.mlp_share, ppo_share, n={"seeds": len(m) + len(ppo_share)})
            claims.append(Claim.compare(f"{a}_minus_ppo_mlp_share", f"{a.upper()} minus PPO in the MLP share of the "
                                        f"weight change: {{value}} {{ci}}; {{verdict}}.", diff, a.upper(), "PPO",
                                        fmt=".3f", headline=False))
        if a != "ppo" and (last.algorithm == "ppo").any() and len(r) >= 2:
            diff = stats.welch_difference(r.rel_diff_norm, last[last.algorithm == "ppo"].rel_diff_norm,
                                          n={"seeds": len(r) + int((last.algorithm == "ppo").sum()), **n_texts})
            claims.append(Claim.compare(f"{a}_minus_ppo_last_layer_change", f"{a.upper()} minus PPO in the last "
                                        f"layer's residual change: {{value}} {{ci}}; {{verdict}}.", diff, a.upper(),
                                        "PPO", fmt=".3f", headline=False))
    return claims


def plot_where(residual: pd.DataFrame, weights: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    res = residual[residual.hook == "hook_resid_post"]
    w = weights[weights.layer >= 0].groupby(["algorithm", "seed", "layer"], as_index=False)[["diff_norm", "base_norm"]]
    w = w.agg(lambda x: float(np.sqrt((x ** 2).sum()))).assign(rel=lambda d: d.diff_norm / d.base_norm)
    for ax, table, column in ((axes[0], res, "rel_diff_norm"), (axes[1], w, "rel")):
        for a in (a for a in ORDER if a in set(table.algorithm)):
            per_layer = table[table.algorithm == a].groupby("layer")[column]
            mean = per_layer.mean()
            ax.plot(mean.index, mean.values, lw=2, label=a.upper(), markersize=4, **mark(a.upper()).mpl())
            ax.fill_between(mean.index, per_layer.min().values, per_layer.max().values, color=mark(a.upper()).color,
                            alpha=0.2)
        ax.legend(fontsize=8)
    axes[0].set(xlabel="layer", ylabel="||tuned − base|| / ||base||", title="residual (hook_resid_post) change")
    axes[1].set(xlabel="layer", ylabel="||ΔW||_F / ||W||_F", title="weight change per block")
    fig.tight_layout()
    return fig


def plot_curves(phases: pd.DataFrame, per_run: pd.DataFrame, matched: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    colors = {a: mark(a.upper()).color for a in ORDER}  # the site's family colours
    for (a, seed), g in phases.groupby(["algorithm", "seed"], sort=False):
        axes[0].plot(g.phase, g.kl_pi_ref_per_token, color=colors.get(a), alpha=0.35, lw=1)
        axes[1].scatter(g.kl_pi_ref_per_sequence, g.reward, color=colors.get(a), s=8, alpha=0.4)
        axes[2].plot(g.phase, g.entropy, color=colors.get(a), alpha=0.35, lw=1)
    for a, g in phases.groupby("algorithm", sort=False):
        mean = g.groupby("phase").mean(numeric_only=True)
        axes[0].plot(mean.index, mean.kl_pi_ref_per_token, color=colors.get(a), lw=2.5, label=a.upper())
        axes[2].plot(mean.index, mean.entropy, color=colors.get(a), lw=2.5, label=a.upper())
        r = per_run[per_run.algorithm == a]
        xs = np.linspace(0, g.kl_pi_ref_per_sequence.max(), 20)
        axes[1].plot(xs, r.reward_at_matched_kl.mean() + r.reward_per_nat.mean() * (xs - matched), color=colors.get(a),
                     lw=2, label=a.upper())
    axes[1].axvline(matched, color="grey", ls=":", lw=1)
    axes[0].set(xlabel="phase", ylabel="KL(π‖ref) per token (nats)", title="KL trajectory (thin: seeds)")
    axes[1].set(xlabel="KL(π‖ref) per sequence (nats)", ylabel="periods per 24 tokens",
                title="reward vs KL (dots: phases; lines: mean fit)")
    axes[2].set(xlabel="phase", ylabel="entropy (nats/token)", title="entropy")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def render(report_dir: Path):
    from rlhf_interp.report import Report, read_table

    phases, runs = read_table(report_dir, "phases"), read_table(report_dir, "runs")
    # Every run compared over the same phases: the first `common` (the shortest run's); longer runs' later phases
    # are in the curves and in per_run_all_phases.
    common = int(phases.groupby(["algorithm", "seed"]).phase.max().min())
    per_run, matched = per_run_fits(phases[phases.phase <= common], runs, late=LATE)
    per_run_all, _ = per_run_fits(phases, runs, late=LATE)
    claims = claims_for(per_run, matched, runs)
    report = Report.at(report_dir, "PPO, GRPO, RLOO and DPO on the period task at matched KL", source=__file__)
    report.claim(*claims)
    n_phases = common
    report.text(f"""
Four ways of fine-tuning SmolLM2-135M-Instruct for the period task (reward = number of `.` in 24 new tokens) against
the same frozen reference, each run as shipped (`configs/periods.yaml`, `periods_grpo.yaml`, `periods_rloo.yaml`,
`periods_dpo.yaml`: same model, optimiser, frozen blocks and -- for the three online methods -- the same KL
penalty, the exact KL(π‖ref) per token as a loss term with an adaptive coefficient), compared over their first
{n_phases} phases (seed 0 ran longer: its later phases are in the curves and the all-phases table). **PPO**: value head + GAE. **GRPO**: 4 prompts × 4 samples, score minus the group mean over the group's
std. **RLOO**: 4 × 4, leave-one-out baseline. **DPO**: 16 synthetic period pairs per phase (base-model samples,
more periods chosen), beta 0.1; its phases also sample 16 continuations to measure it like the others.

Every number below is measured the same way for every method: the policy's own 16 samples of each phase, the
exact per-token KL(π‖ref) and KL(ref‖π) of the sampled distributions, entropy. **Matched KL**: each run's reward
is regressed on its KL(π‖ref) per sequence over its phases, and read at the smallest end-of-run KL of any run
(no run extrapolated); **reward per nat** is that slope. Intervals: t over the per-seed values (so wide with
few seeds); with one seed, the fit's own t interval over its phases. Short runs on a 2-core CPU shared with four
other jobs (each run got 5-7% of a core): these are early-training slopes, not converged policies.
""")
    report.figure("curves", plot_curves(phases, per_run, matched), title="KL trajectory, reward vs KL, entropy")
    if (report_dir / "where_residual.csv").exists():
        residual, weights = read_table(report_dir, "where_residual"), read_table(report_dir, "where_weights")
        report.claim(*where_claims(residual, weights))
        report.text(f"""
**Where each change lives.** Every run's final checkpoint diffed against the base model on the same
{DIFF_PROMPTS} texts (shipped prompts with the base model's own seeded 24-token continuations): the relative
change of the residual stream at each layer's `hook_resid_post` (mean over tokens), and of each block's weights.
Lines: mean over seeds; bands: min-max over seeds. Each run is diffed at its own last checkpoint, so magnitudes
are at each run's own final KL (the runs differ in length and KL); the profile's shape over depth and the MLP share
of the weight change do not depend on how far a run went.
""")
        report.figure("where", plot_where(residual, weights), title="Where the change lives, by algorithm")
        report.table("where_residual", residual, title="Residual change per run and layer", show=0)
        report.table("where_weights", weights, title="Weight change per run, layer and group", show=0)
    report.table("per_run", per_run, title=f"Per run, its first {common} phases (what the claims use)", show=20)
    report.table("per_run_all_phases", per_run_all, title="Per run, all its phases", show=20)
    report.table("phases", phases, title="Per run and phase", show=0)
    report.table("runs", runs, title="CPU and wall seconds per run (model loading included; /usr/bin/time)")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--runs", default="runs/algorithms")
    p.add_argument("--algorithms", nargs="+", default=list(CONFIGS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--phases", type=int, default=12)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--set", dest="extra", action="append", default=[])
    r = sub.add_parser("report")
    r.add_argument("--runs", default="runs/algorithms")
    r.add_argument("--rebuild", action="store_true", help="only re-render from the committed CSVs")
    d = sub.add_parser("diff", help="where each run's change lives (final checkpoints vs the base model)")
    d.add_argument("--runs", default="runs/algorithms")
    args = parser.parse_args(argv)
    if args.command == "run":
        run_all(Path(args.runs), args.algorithms, args.seeds, args.phases, args.jobs, args.extra)
    elif args.command == "diff":
        diff_all(Path(args.runs), REPORT)
    elif args.rebuild:
        from rlhf_interp.report.rebuild import rerender

        raise SystemExit(rerender(render, REPORT))
    else:
        tables = collect(Path(args.runs))
        from rlhf_interp.report import write_tables

        write_tables(REPORT, tables, {"runs": str(args.runs), "configs": CONFIGS})
        report = render(REPORT)
        report.save()
        print(report.headline)


if __name__ == "__main__":
    main()
