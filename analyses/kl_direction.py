"""The wrong-way-around KL, measured: PPO with KL(pi||ref), three kinds of KL(ref||pi), or no penalty.

    python analyses/kl_direction.py base   --study runs/kl_direction_v2   # reference samples, base rates, X
    python analyses/kl_direction.py calibrate --study runs/kl_direction_v2   # the coefficient, measured first
    python analyses/kl_direction.py train  --study runs/kl_direction_v2 [--resume] [--only suppress-ref_pi_seq-s0]
    python analyses/kl_direction.py report --study runs/kl_direction_v2   # tables + claims -> reports/kl_direction/
    python analyses/kl_direction.py report --rebuild                      # the page again, from its CSVs alone
    python analyses/kl_direction.py all    --study runs/kl_direction_v2   # base, train, report
    (add --tiny to base/all for a seconds-long study on the tiny random model: a smoke test of the pipeline)

A KL is named by its argument order: pi_ref = KL(pi || ref) (Ziegler et al.), ref_pi = KL(ref || pi); "forward"
and "reverse" are not used (the field uses them both ways round; the first version of this study did). The study
(settings, penalties, runs, evaluations, tables) is `rlhf_interp.measure.kl_study*`; its claims and figures are
`rlhf_interp.report.kl_study_claims` / `kl_study_figures`. This script holds the study's choices and its page.

The question (issue 29): rewarding the absence of a behaviour X of the reference (the word "I"), does a
mass-covering KL(ref||pi) keep X and the reference's other samples alive where the mode-seeking KL(pi||ref) lets
them go, and does it matter how KL(ref||pi) is placed (per token in the reward, per token in the loss, or of whole
sequences on the reference's samples)?
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from rlhf_interp.core.io import atomic_write_json
from rlhf_interp.measure.behaviour import CANDIDATES
from rlhf_interp.measure.kl_study import PENALTY_KL, PENALTY_LABEL, RUN_KEYS, Study, load_study, read_base
from rlhf_interp.measure.kl_study_runs import Training, calibrate, run_base, train_run
from rlhf_interp.measure.kl_study_tables import collect_tables, finished_runs
from rlhf_interp.report import Report, read_config, read_table, write_tables
from rlhf_interp.report.kl_study_claims import pilot_claims, study_claims
from rlhf_interp.report.kl_study_figures import (
    figure_coverage,
    pilot_section,
    figure_levels,
    figure_matched,
    figure_over_training,
    figure_trajectories,
)

NAME = "kl_direction"
# The study's choices (written to study.json by the base step; a study directory keeps its own).
# 3 seeds x 5 penalties, 8 phases of 8 prompts x 24 tokens, one fixed kl_coef 0.1 (from `calibrate`: KL(pi||ref)
# grows enough within 8 phases for the directions to differ), X = the word "I" (base rate ~20% on the shipped
# prompts), evaluations at the base model and at the end: 32 prompts x 8 samples (256), 8 reference samples each.
STUDY = Study(phases=8, eval_every=8)
# Pilots at stronger coefficients (the main study's question): both placements at kl_coef 1 (one seed) and 5 (three
# seeds), the sequence-level penalty at 5 averaging 4 of 8 bank samples per prompt in each step (a less noisy
# gradient; one seed), both placements at 25 with all 8 bank samples per step (one seed), and at 5 the
# sequence-level penalty with the exact estimator (the reference's whole next-token distribution at its own states
# instead of its sampled token; three seeds, beside the same three ref_pi_reward runs as the k1 pilot at 5). Each
# directory is a study like the main one (same base, prompts, evaluation).
PILOTS = (Path("runs/kl_direction_strong"), Path("runs/kl_direction_b5"), Path("runs/kl_direction_b5_ps4"),
          Path("runs/kl_direction_b25"), Path("runs/kl_direction_b5_exact"))


def training() -> Training:
    from rlhf_interp.ppo import PPOConfig, PPOTrainer

    return Training(PPOTrainer, PPOConfig)


def pilot_tables(pilots=PILOTS) -> dict[str, pd.DataFrame]:
    """End-of-training coverage and X's rate of each pilot's finished runs, and its ref_pi_seq - ref_pi_reward
    comparison, tagged with the pilot's coefficient and bank size."""
    levels, comparisons = [], []
    for pilot in pilots:
        if not (pilot / "study.json").exists():
            continue
        study = load_study(pilot)
        if not finished_runs(study, pilot):
            continue
        t = collect_tables(study, pilot)
        tag = {"kl_coef": study.kl_coef, "kl_bank_size": study.kl_bank_size,
               "kl_bank_per_step": int(study.extra.get("kl_bank_per_step", 1)),
               "seq_estimator": study.extra.get("kl_estimator", PENALTY_KL["ref_pi_seq"][1]), "study_dir": str(pilot)}
        lv, cp = t["levels"], t["comparisons"]
        levels.append(lv[(lv["at"] == "end") & lv["metric"].isin(["kept_10x", "x_rate"]) & (lv["penalty"] != "base")]
                      .assign(**tag))
        comparisons.append(cp[(cp["at"] == "end") & (cp["metric"] == "kept_10x")].assign(**tag))
    return {"pilot_levels": pd.concat(levels, ignore_index=True) if levels else pd.DataFrame(),
            "pilot_comparisons": pd.concat(comparisons, ignore_index=True) if comparisons else pd.DataFrame()}


def compute(study: Study, study_dir: Path, report_dir: Path) -> None:
    """Measured tables -> ``report_dir`` (an empty table is not written and a stale one is removed)."""
    tables = {**collect_tables(study, study_dir), **pilot_tables()}
    for name, table in tables.items():
        if table.empty:
            (report_dir / f"{name}.csv").unlink(missing_ok=True)
    write_tables(report_dir, {k: v for k, v in tables.items() if not v.empty},
                 config={"study": asdict(study), "study_dir": str(study_dir), "base": read_base(study_dir),
                         "finished": finished_runs(study, study_dir), "planned": study.run_names()})


def _optional(report_dir: Path, name: str) -> pd.DataFrame:
    return read_table(report_dir, name) if (report_dir / f"{name}.csv").exists() else pd.DataFrame()


def render(report_dir: Path) -> Report:
    """The page from the CSVs in ``report_dir`` (no model, no run directory)."""
    config = read_config(report_dir)
    study, base = config["study"], config["base"]
    t = {name: _optional(report_dir, name) for name in ("trajectory", "evals", "end", "matched", "matched_summary",
                                                        "coverage_final", "collapse", "samples", "per_prompt",
                                                        "levels", "comparisons", "pilot_levels",
                                                        "pilot_comparisons")}
    finished, planned = config["finished"], config["planned"]
    ms = t["matched_summary"]
    level = float(ms.loc[ms["match_on"] == "kl_pi_ref_per_token", "level"].iloc[0]) if len(ms) and (
        ms["match_on"] == "kl_pi_ref_per_token").any() else None
    claims = study_claims(t["per_prompt"], t["levels"], t["comparisons"], config, len(finished), len(planned), level)
    claims += pilot_claims(t["pilot_levels"], t["pilot_comparisons"])
    report = Report.at(report_dir, "The wrong-way-around KL: KL(π‖ref) vs three kinds of KL(ref‖π) vs no penalty",
                       source=__file__, config=config, claims=claims)
    penalties = list(study["penalties"])
    missing = [n for n in planned if n not in finished]
    report.text(f"""
        PPO on `{study['model']}` rewarding the absence of X = {base['description']} (regex `{base['pattern']}`;
        reward −count(X) per continuation, normalised), with {len(penalties)} penalties:
        {'; '.join(f"**{p}** = {PENALTY_LABEL[p]}" for p in penalties)}. A KL is named by its argument order
        (`pi_ref` = KL(π‖ref), mode-seeking; `ref_pi` = KL(ref‖π), mass-covering); the first version of this study
        called them "forward" and "reverse", words the field uses both ways round (here "forward" meant KL(π‖ref)).
        Every penalty has the same fixed coefficient `kl_coef = {study['kl_coef']}` (the reward placements act through
        whitened advantages, the loss and sequence placements as an absolute loss term, so equal β is not equal
        strength: the equal-KL claims read every run at the same KL(π‖ref)). Planned: {len(study['seeds'])} seeds per
        penalty, {study['phases']} phases of {study['batch_size']} prompts × {study['max_new_tokens']} new tokens,
        {study['ppo_epochs']} epochs, layers below {study['freeze_layers']} frozen; the sequence-level penalty uses
        {study.get('kl_bank_size', 4)} reference samples per training prompt.

        **Status: {len(finished)} of {len(planned)} runs finished** when these tables were made
        ({', '.join(f'`{n}`' for n in finished) or 'none'}).
        {'' if not missing else f"Unfinished runs are left out of every number: {', '.join(f'`{n}`' for n in missing)}. Finish them with `python analyses/kl_direction.py train --study {config['study_dir']} --resume`, then `OMP_NUM_THREADS=2 python analyses/kl_direction.py report --study {config['study_dir']}`."}

        Evaluations (the base model, and each run's end): {study['eval_prompts']} fixed prompts ×
        {study['eval_samples']} samples, one sampling seed for every run, so every comparison is paired by prompt (and
        seed). X's rate is the share of samples with X, its base rate measured on the same prompts. Coverage:
        {study['ref_samples']} reference samples per prompt, drawn once; a sample is *lost by 10×* (100×) when
        log π(y) − log ref(y) < −log 10 (−log 100), *kept* otherwise. **Intervals**: per-prompt values, t over the
        seeds' means (df = seeds − 1, seed-to-seed variation included; one seed: over prompts, noted; where the t
        interval over prompts of the seed-averaged values is wider, that one, since a few close seed means give a
        spuriously narrow interval: three seeds that lose the same reference samples give zero width); differences
        paired by seed and prompt (`core.stats`). **Equal KL**: each run read where its exact KL(π‖ref) per token on
        the evaluation samples reaches 0.8 × the smallest final KL over the runs; with evaluations only at the base
        and the end, each prompt's values are interpolated linearly in KL between the two (an assumption: the
        metrics need not move linearly). Every number, with its n and interval, is in the claims table above and
        in `levels.csv` / `comparisons.csv`.""")
    if len(t["levels"]):
        for at, what in (("end", "at the end of training"), ("equal_kl", "at equal KL(π‖ref)")):
            if (t["levels"]["at"] == at).any() and (t["levels"].query("at == @at")["penalty"] != "base").any():
                report.figure(f"levels_{at}", figure_levels(t["levels"], at),
                              caption=f"Each penalty {what}: mean over seeds of per-prompt values, 95% interval "
                                      "(t over seed means); grey band: the base model's interval over prompts.")
        report.table("levels", t["levels"], title="Each penalty: X's rate, reward and coverage (95% intervals)", show=0)
    if len(t["comparisons"]):
        report.table("comparisons", t["comparisons"], title="A − B, paired by seed and prompt, with a verdict", show=0)
    report.table("per_prompt", t["per_prompt"], title="Per penalty, seed and prompt", show=0)
    tr = t["trajectory"]
    if len(tr):
        train_s = float(tr["seconds"].sum())
        report.text(f"Cost so far: {train_s / 60:.0f} min of PPO phases over {tr.groupby(RUN_KEYS).ngroups} runs "
                    f"(median {tr['seconds'].median():.0f} s per phase), wall time on a shared 2-core CPU "
                    f"(`seconds` in `trajectory.csv`).")
        report.section("Reward against KL")
        report.figure("trajectories", figure_trajectories(tr, t["evals"]),
                      caption=f"Not matched: each run's own path. Thin: every phase's rollout per run "
                              f"({study['batch_size']} samples, 3-phase rolling means; unfinished runs included); "
                              "thick: evaluations, mean over seeds.")
        if finished:
            report.figure("x_rate", figure_over_training(t["evals"], "x_rate", "rate of X in samples (%)", pct=True,
                                                         trajectory=tr),
                          caption="Markers: evaluations (fixed prompts and seed), mean over seeds, band min-max; "
                                  "thin lines: each phase's rollout. Not matched: same coefficient.")
        report.table("trajectory", tr, title="Every phase of every run (rollouts)", show=0)
    if len(ms):
        report.section("Matched comparisons")
        report.figure("matched_kl", figure_matched(ms, "kl_pi_ref_per_token"),
                      caption="Run-level values at equal KL(π‖ref) per token (bars: mean over seeds; whiskers min-max).")
        report.table("matched_summary", ms, title="Matched values (mean, min, max over seeds)", show=0)
        report.table("matched", t["matched"], title="Matched values per run", show=0)
    if len(t["coverage_final"]):
        report.section("Coverage of the reference")
        report.figure("coverage_hist", figure_coverage(t["coverage_final"]),
                      caption="Final checkpoint, all seeds pooled; matched by coefficient, not by KL.")
        report.table("coverage_final", t["coverage_final"], title="Coverage at the end, per reference sample", show=0)
    if len(t["end"]):
        report.table("end", t["end"], title="End of training, run-level (mean, min, max over seeds)", show=0)
    if len(t["collapse"]):
        report.table("collapse", t["collapse"], title="Collapse onset (rollout distinct-2 below half the base's)")
    pilot_section(report, t["levels"], t["pilot_levels"], t["pilot_comparisons"], study["kl_coef"])
    report.section("Samples")
    report.table("samples", t["samples"], title="Side by side: base model and each penalty at the end (lowest seed)",
                 show=40)
    report.section("Data")
    report.table("base_rates", read_table(report_dir, "base_rates"), title="Base rates of the candidate behaviours "
                 f"({base['n_base_texts']} base continuations, one per shipped prompt)", show=20)
    report.table("evals", t["evals"], title="Every evaluation (run-level summaries)", show=0)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["base", "calibrate", "train", "report", "render", "all"])
    parser.add_argument("--study", type=Path, default=Path("runs/kl_direction_v2"), help="study directory")
    parser.add_argument("--report-dir", type=Path, default=Path("reports") / NAME)
    parser.add_argument("--only", nargs="+", default=None, help="train only these runs (e.g. suppress-ref_pi_seq-s0)")
    parser.add_argument("--tiny", action="store_true", help="the tiny random model, a few phases: a smoke test")
    parser.add_argument("--behaviour", default=None,
                        help=f"X: 'auto' (closest to 20%% base rate) or one of {sorted(CANDIDATES)}; default word_I")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--resume", action="store_true", help="continue: finished runs are skipped, unfinished ones "
                        "resume from their last checkpoint (also the default; the flag says so explicitly)")
    parser.add_argument("--rebuild", action="store_true", help="the page from its CSVs only (as the render step)")
    args = parser.parse_args(argv)
    try:
        if args.step == "render" or args.rebuild:
            print(f"report: {render(args.report_dir).save()}/index.html")
            return 0
        if args.step in ("base", "all") and not (args.study / "study.json").exists():
            study = Study.tiny() if args.tiny else STUDY
            if args.behaviour:
                study = replace(study, behaviour=None if args.behaviour == "auto" else args.behaviour)
            args.study.mkdir(parents=True, exist_ok=True)
            atomic_write_json(args.study / "study.json", asdict(study))
        study = load_study(args.study)
        if args.step in ("base", "all"):
            run_base(study, args.study)
        if args.step == "calibrate":
            calibrate(study, args.study, training(), progress=not args.no_progress)
        if args.step in ("train", "all"):
            names = args.only or study.run_names()
            unknown = sorted(set(names) - set(study.run_names()))
            if unknown:
                raise ValueError(f"Unknown run(s) {unknown}; the study's runs are {study.run_names()}.")
            for name in names:
                train_run(study, args.study, name, training(), progress=not args.no_progress)
        if args.step in ("report", "all"):
            compute(study, args.study, args.report_dir)
            print(f"report: {render(args.report_dir).save()}/index.html")
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
