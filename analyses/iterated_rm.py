"""Iterated online RLHF, measured: the same PPO budget against a frozen reward model and against the same RM
refreshed every N phases on labelled pairs of the policy's own samples (Bai et al. 2022; issue 20).

    python analyses/iterated_rm.py                                  # SmolLM2, 4 seeds: ~40 CPU-min (one thread)
    python analyses/iterated_rm.py --rm runs/reward_hacking/rm      # reuse reward_hacking.py's RM (and its pairs)
    python analyses/iterated_rm.py --model tiny-test --char e --ppo-config configs/tiny.yaml --n-pairs 40 \\
        --heldout 32 --ppo-phases 4 --refresh-every 2 --refresh-pairs 8 --root /tmp/reports   # seconds-long smoke
    python analyses/iterated_rm.py --from-csv                       # re-render reports/iterated_rm/ from its CSVs

Steps (kept in ``--work-dir``; with ``--reuse`` finished steps are not redone, a killed PPO run resumes):
1. the reward model: ``--rm DIR``, or synthetic pairs labelled by ``char_count(--char)`` and a Bradley-Terry RM
   on them (the same code as `analyses/reward_hacking.py`); held-out base-model texts for the RM's yardstick;
2. per seed, two PPO runs from one config: ``frozen`` (reward = the RM) and ``refreshed`` (the same, with
   ``rm_refresh_every``: fresh pairs of the policy's samples labelled by the true count, as many label
   flips as the RM's data had, fine-tune, next version; `rlhf_interp.ppo.rm_refresh`);
3. offline: the true count of every sample, the starting RM's (v0) score of every sample, every RM version's
   scores of the held-out texts (its yardstick), what appending '?', '!', '.' or a newline is worth to v0
   and to each run's last version.

Tables (tidy; ``setting`` is frozen / refreshed):
- ``phases``: setting, seed, phase, rm_version, true_reward, rm_reward, rm0_reward, true_z, rm_z, rm0_z, gap
  (rm_z - true_z), gap_rm0, accuracy (the scoring RM on the phase's own samples), accuracy_rm0,
  kl_pi_ref_per_token, entropy, seconds, rm_refresh_seconds;
- ``end``: the same per run, averaged over the last ``--late`` phases; ``summary``: setting, quantity, mean, sd,
  seeds (mean and sample std over seeds of ``end``);
- ``versions``: setting, seed, version, phase, heldout_mean, heldout_std, heldout_spearman, refresh figures;
- ``probes``: rm, suffix, true_delta, rm_delta, rm_delta_stderr; ``proxy_counts``: setting, seed, phase,
  feature, mean_count; ``heldout``; ``samples``; ``runs`` (wall seconds per run); ``rm_training``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import pandas as pd

from rlhf_interp.bridge import RunDir
from rlhf_interp.report import Report, read_config, read_table, write_tables
from rlhf_interp.report.charts import facet_lines
from rlhf_interp.report.refresh_figures import plot_probe_bars, plot_setting_curves
from rlhf_interp.report.rebuild import rerender
from rlhf_interp.reward.hacking import PPO_OVERRIDES

# CPU-sized, after reward_hacking.py's defaults: half its batch, the last 6 of SmolLM2's 30 blocks trained, so the
# lr is doubled (fewer samples, fewer weights); ~40 min of one core for the whole default study (4 seeds).
STUDY_OVERRIDES = ["batch_size=8", "freeze_layers=24", "lr=1e-4"]
SETTINGS = ("frozen", "refreshed")
PROBES = [".", "?", "!", "\n"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="sampler, RM backbone and PPO policy")
    p.add_argument("--char", default=".", help="the character whose count is the true reward")
    p.add_argument("--rm", default=None, help="an RM directory to use (default: train one in --work-dir)")
    p.add_argument("--n-pairs", type=int, default=400, help="synthetic pairs for the RM (without --rm)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="completion length (default: the PPO config's)")
    p.add_argument("--synth-batch-size", type=int, default=64)
    p.add_argument("--synth-dtype", default="bfloat16")
    p.add_argument("--label-noise", type=float, default=0.0, help="for the RM's pairs and every refresh's")
    p.add_argument("--epochs", type=int, default=6, help="RM training epochs")
    p.add_argument("--rm-batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4, help="RM backbone learning rate (refreshes use it too)")
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--freeze-layers", type=int, default=None, help="RM frozen blocks (default: all but the last 2)")
    p.add_argument("--head", choices=["linear", "mlp"], default="linear")
    p.add_argument("--heldout", type=int, default=128, help="fresh base-model texts: each RM version's yardstick")
    p.add_argument("--rm-seed", type=int, default=0, help="seed of the RM's pairs, training and held-out texts")
    p.add_argument("--ppo-config", default="configs/periods.yaml")
    p.add_argument("--ppo-phases", type=int, default=12)
    p.add_argument("--ppo-set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"PPO overrides after reward_hacking.py's defaults and {STUDY_OVERRIDES} (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3],
                   help="PPO seeds (each runs both settings; 4: a t interval over seeds with 3 degrees of freedom)")
    p.add_argument("--refresh-every", type=int, default=3, help="rm_refresh_every of the refreshed runs")
    p.add_argument("--refresh-pairs", type=int, default=32)
    p.add_argument("--refresh-epochs", type=int, default=2)
    p.add_argument("--refresh-replay", type=int, default=32)
    p.add_argument("--late", type=int, default=3, help="phases averaged for the end of training")
    p.add_argument("--work-dir", default="runs/iterated_rm")
    p.add_argument("--name", default="iterated_rm", help="report name (ROOT/<name>/)")
    p.add_argument("--root", default="reports", help="reports root")
    p.add_argument("--reuse", action="store_true", help="reuse what --work-dir already holds; resume killed runs")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--from-csv", action="store_true", help="re-render ROOT/<name>/ from its CSVs (no model)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------------------
# Measuring


def ppo_overrides(args, rm_dir: Path, seed: int, setting: str) -> list[str]:
    """The one PPO config of both settings; the refreshed one adds the rm_refresh_* fields."""
    common = [f"reward=reward_model:{rm_dir}", "reward_kwargs={}", f"phases={args.ppo_phases}", f"model={args.model}",
              f"seed={seed}", "sample_every=1", f"checkpoint_every={args.refresh_every}", "keep_checkpoints=1",
              *PPO_OVERRIDES, *STUDY_OVERRIDES, *args.ppo_set]
    if setting == "frozen":
        return common
    return [*common, f"rm_refresh_every={args.refresh_every}", f"rm_refresh_pairs={args.refresh_pairs}",
            "rm_refresh_source=char_count", f"rm_refresh_source_kwargs={json.dumps({'char': args.char})}",
            f"rm_refresh_label_noise={args.label_noise}", f"rm_refresh_epochs={args.refresh_epochs}",
            f"rm_refresh_replay={args.refresh_replay}"]


def measure_runs(args, rm_dir: Path, work: Path, reward, heldout: pd.DataFrame
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Run every (seed, setting), resuming killed runs with ``--reuse``; score the samples offline. Returns samples,
    metrics, versions, runs."""
    from rlhf_interp.ppo import PPOConfig
    from rlhf_interp.ppo.refresh_tables import version_table
    from rlhf_interp.ppo.runs import train_or_resume
    from rlhf_interp.reward import load_reward_model, score

    runs, samples, metrics = [], [], []
    for seed, setting in itertools.product(args.seeds, SETTINGS[::-1]):  # refreshed first: its errors show early
        run_dir = work / f"{setting}-s{seed}"
        config = PPOConfig.load(args.ppo_config, ppo_overrides(args, rm_dir, seed, setting))
        wall, cpu = train_or_resume(config, run_dir, reuse=args.reuse, progress=not args.no_progress)
        timing = run_dir / "analysis_seconds.json"  # the run's time, summed over resumptions
        before = json.loads(timing.read_text()) if timing.exists() else {"wall_seconds": 0.0, "cpu_seconds": 0.0}
        total = {"wall_seconds": before["wall_seconds"] + wall, "cpu_seconds": before["cpu_seconds"] + cpu}
        timing.write_text(json.dumps(total))
        runs.append({"setting": setting, "seed": seed, **total})
        samples.append(RunDir(run_dir).samples().assign(setting=setting, seed=seed))
        metrics.append(RunDir(run_dir).metrics().assign(setting=setting, seed=seed))
    samples = pd.concat(samples, ignore_index=True).rename(columns={"reward": "rm_reward"})
    samples["completion"] = samples.completion.fillna("")
    samples["sample"] = samples.groupby(["setting", "seed", "phase"]).cumcount()
    samples["true_reward"] = score(reward, samples.completion.tolist()).tolist()
    metrics = pd.concat(metrics, ignore_index=True)

    rm = load_reward_model(rm_dir)  # v0, then each version put on it in turn
    samples["rm0_reward"] = rm.score(samples.completion.tolist()).tolist()
    keyed = [({"setting": setting, "seed": seed}, work / f"{setting}-s{seed}")
             for seed, setting in itertools.product(args.seeds, SETTINGS)]
    return samples, metrics, version_table(rm, keyed, heldout), pd.DataFrame(runs)


def probe_table(args, rm_dir: Path, work: Path, reward, heldout: pd.DataFrame) -> pd.DataFrame:
    """What one appended string is worth to v0 and to each refreshed run's last version."""
    from rlhf_interp.ppo.refresh_tables import version_probes
    from rlhf_interp.reward import load_reward_model

    runs = [(f"refreshed, seed {seed}", work / f"refreshed-s{seed}") for seed in args.seeds]
    return version_probes(load_reward_model(rm_dir), reward, heldout.text.tolist(), runs, PROBES)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.root) / args.name
    if args.from_csv:
        return rerender(render, out)

    from rlhf_interp.core.io import read_jsonl
    from rlhf_interp.ppo import PPOConfig
    from rlhf_interp.ppo.refresh_tables import end_table, phase_table, run_proxy_counts, summary_table
    from rlhf_interp.reward import METRICS_FILE, get_reward, load_reward_model
    from rlhf_interp.reward.hacking import RMRecipe

    clock = time.process_time()
    wall = time.perf_counter()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    reward = get_reward("char_count", char=args.char)
    preview = PPOConfig.load(args.ppo_config, ppo_overrides(args, Path("."), args.seeds[0], "refreshed"))
    max_new_tokens = args.max_new_tokens or preview.max_new_tokens
    recipe = RMRecipe.from_namespace(args, seed=args.rm_seed)
    stages: dict[str, float] = {}

    def stage(name: str) -> None:  # CPU seconds of this process per step, printed and kept in config.json
        stages[name] = time.process_time() - clock - sum(stages.values())
        print(f"[iterated_rm] {name}: {stages[name]:.0f} s CPU, {time.perf_counter() - wall:.0f} s wall so far",
              flush=True)

    if args.rm:
        rm_dir = Path(args.rm)
        metrics_file = rm_dir / METRICS_FILE
        rm_metrics = pd.DataFrame([r for _, r in read_jsonl(metrics_file)]) if metrics_file.exists() else pd.DataFrame()
    else:
        rm_dir = work / "rm"
        recipe.pairs(work / "pairs.jsonl", reward, max_new_tokens, reuse=args.reuse, progress=not args.no_progress)
        rm_metrics, _ = recipe.train(work / "pairs.jsonl", rm_dir, reuse=args.reuse, progress=not args.no_progress)
    stage("reward model")
    heldout_path = work / "heldout.csv"
    if args.reuse and heldout_path.exists():
        heldout = pd.read_csv(heldout_path, keep_default_na=False)
    else:
        heldout = recipe.heldout(load_reward_model(rm_dir), reward, args.heldout, max_new_tokens)
        heldout.to_csv(heldout_path, index=False)
    stage("held-out texts")

    samples, metrics, versions, runs = measure_runs(args, rm_dir, work, reward, heldout)
    stage("PPO runs and offline scoring")
    probes = probe_table(args, rm_dir, work, reward, heldout)
    stage("probes")
    phases = phase_table(samples, metrics, versions, heldout)
    end = end_table(phases, args.late)
    tables = {"summary": summary_table(end), "end": end, "phases": phases, "versions": versions, "probes": probes,
              "proxy_counts": run_proxy_counts(samples, heldout), "heldout": heldout, "runs": runs,
              "rm_training": rm_metrics,
              "samples": samples[["setting", "seed", "phase", "sample", "rm_version", "completion", "true_reward",
                                  "rm_reward", "rm0_reward"]] if "rm_version" in samples else
              samples[["setting", "seed", "phase", "sample", "completion", "true_reward", "rm_reward", "rm0_reward"]]}
    config = {**{k: v for k, v in vars(args).items() if k != "from_csv"},
              "ppo_overrides": {s: ppo_overrides(args, rm_dir, args.seeds[0], s) for s in SETTINGS},
              "tuning_overrides": [*PPO_OVERRIDES, *STUDY_OVERRIDES, *args.ppo_set],
              "cpu_seconds": time.process_time() - clock, "wall_seconds": time.perf_counter() - wall,
              "stage_cpu_seconds": stages}
    write_tables(out, tables, config=config)
    report = render(out)
    report.save()
    print(report.headline)
    print(f"report: {out}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# The page


def _stat(summary: pd.DataFrame, setting: str, quantity: str) -> tuple[float, float]:
    row = summary[(summary.setting == setting) & (summary.quantity == quantity)].iloc[0]
    return float(row["mean"]), float(row["sd"])


def _pm(summary: pd.DataFrame, setting: str, quantity: str, fmt: str = ".2f") -> str:
    mean, sd = _stat(summary, setting, quantity)
    return f"{mean:{fmt}} (sd {sd:{fmt}} over seeds)" if pd.notna(sd) else f"{mean:{fmt}}"  # not an interval


def iterated_claims(end: pd.DataFrame, versions: pd.DataFrame, n_phases: int, batch: int, refresh_every) -> list:
    """The page's claims, from the per-seed rows of ``end`` (the unit is the seed: t intervals over seeds, df =
    seeds - 1, so with two seeds they are wide); frozen vs refreshed as Welch differences over seeds."""
    from rlhf_interp.core import stats
    from rlhf_interp.report.claims import Claim

    out = []
    late_phases = str(end.phases.iloc[0])
    kl = "kl_pi_ref_per_token" if "kl_pi_ref_per_token" in end else "kl_forward_per_token"

    def per_seed(setting, col):
        return end[end.setting == setting].sort_values("seed")[col].to_numpy(dtype=float)

    seeds = int(end.seed.nunique())
    n = {"seeds": seeds, "phases": n_phases, "samples_per_phase": batch}
    for setting, words in (("frozen", "with the frozen RM"), ("refreshed", f"with the RM refreshed every "
                                                                           f"{refresh_every} phases")):
        v = per_seed(setting, "gap")
        iv = stats.seeds_interval(v, range(len(v)), n=n)
        out.append(Claim.estimate(
            f"gap_{setting}", "The RM-minus-true reward gap (held-out std units, mean of phases {late}) {words}: "
            "{value} {ci} (t over {seeds} seeds);" if setting == "frozen" else "{words}: {value} {ci}.", iv,
            params={"late": late_phases, "words": words, "seeds": seeds}))
    diff = stats.welch_difference(per_seed("refreshed", "gap"), per_seed("frozen", "gap"), n=n)
    out.append(Claim.compare(
        "gap_refreshed_vs_frozen", "Refreshed minus frozen: {value} {ci}; {verdict}.", diff, "refreshed", "frozen"))
    diff = stats.welch_difference(per_seed("refreshed", "true_reward"), per_seed("frozen", "true_reward"), n=n)
    out.append(Claim.compare(
        "true_refreshed_vs_frozen", "True count per sample, refreshed minus frozen: {value} {ci}; {verdict}.", diff,
        "refreshed", "frozen"))
    diff = stats.welch_difference(per_seed("refreshed", kl), per_seed("frozen", kl), n=n)
    out.append(Claim.compare(
        "kl_refreshed_vs_frozen", "KL(π‖ref) per token, refreshed minus frozen: {value} {ci} nats; {verdict}.", diff,
        "refreshed", "frozen", fmt=".3f", headline=False))
    refreshes = versions[(versions.setting == "refreshed") & (versions.version > 0)]
    if len(refreshes) and "pairs" in refreshes:
        pairs = refreshes.groupby("seed").pairs.sum()
        out.append(Claim.fact(
            "refresh_labels", "Refreshing cost {pairs} true-labelled pairs per run", params={"pairs": int(pairs.iloc[0])},
            n={"runs": len(pairs)}))
        ratio = per_seed("refreshed", "refresh_seconds") / per_seed("refreshed", "ppo_seconds")
        out.append(Claim.estimate(
            "refresh_time", "and {value} {ci} of the PPO phases' time on top (t over {seeds} seeds).",
            stats.seeds_interval(ratio, range(len(ratio)), n={"seeds": len(ratio)}), fmt=".0%",
            params={"seeds": len(ratio)}))
    return out


def render(report_dir: Path) -> Report:
    """The page from the CSVs alone."""
    report_dir = Path(report_dir)
    config = read_config(report_dir)
    summary, end = read_table(report_dir, "summary"), read_table(report_dir, "end")
    phases, versions = read_table(report_dir, "phases"), read_table(report_dir, "versions")
    probes = read_table(report_dir, "probes", keep_default_na=False)
    proxies, runs = read_table(report_dir, "proxy_counts"), read_table(report_dir, "runs")
    samples = read_table(report_dir, "samples", keep_default_na=False)
    heldout = read_table(report_dir, "heldout", keep_default_na=False)
    char, late = config.get("char", "."), int(config.get("late", 3))
    n_seeds, n_phases = int(end.seed.nunique()), int(phases.phase.max())
    batch = int(samples.groupby(["setting", "seed", "phase"]).size().iloc[0])
    refreshes = versions[(versions.setting == "refreshed") & (versions.version > 0)]
    labels = int(refreshes.pairs.sum()) if "pairs" in refreshes else 0
    frozen_gap, refreshed_gap = _stat(summary, "frozen", "gap"), _stat(summary, "refreshed", "gap")
    cost = _stat(summary, "refreshed", "refresh_seconds")[0] / max(1e-9, _stat(summary, "refreshed", "ppo_seconds")[0])
    late_phases = str(end.phases.iloc[0])
    closes = abs(refreshed_gap[0]) < abs(frozen_gap[0])

    report = Report.at(report_dir, "Iterated online RLHF: a frozen vs a refreshed reward model under PPO",
                       source=__file__, claims=iterated_claims(end, versions, n_phases, batch,
                                                               config.get("refresh_every")))
    q = lambda s, name: _stat(summary, s, name)[0]
    report.text(f"""
Both settings optimise the same policy (`{config.get('model')}`, {config.get('ppo_config')} with the overrides
{config.get('tuning_overrides', [])}) for {n_phases} phases of {batch}
samples against a Bradley-Terry RM that imitates the true reward, the number of `{char}` characters in a completion.
**frozen**: the RM never changes. **refreshed**: before phases {", ".join(str(int(p)) for p in sorted(refreshes.phase.unique())) or "-"}
(every {config.get('refresh_every')} phases), {config.get('refresh_pairs')} pairs of the policy's own samples are labelled
by the true count (label noise {config.get('label_noise')}), {config.get('refresh_replay')} earlier pairs are replayed, and the
RM is fine-tuned {config.get('refresh_epochs')} epochs (`rm_refresh_every`; `rlhf_interp.ppo.rm_refresh`). Rewards are
compared in **held-out std units**: each RM version's scores centred and scaled by its own scores of
{len(heldout)} fresh base-model texts, the true count by theirs; the **gap** is RM minus true, so 0 means the RM
rates the policy's samples as highly as the truth does, relative to base text.
""")
    report.section("Findings", f"""
- **Gap at the end** (phases {late_phases}, mean and sd over {n_seeds} seeds; intervals in the claims above): frozen {_pm(summary, 'frozen', 'gap')},
  refreshed {_pm(summary, 'refreshed', 'gap')}. Judged by the *starting* RM (v0), the refreshed policy's gap is
  {_pm(summary, 'refreshed', 'gap_rm0')} (frozen: the same RM, {_pm(summary, 'frozen', 'gap_rm0')}).
- **True reward**: {_pm(summary, 'frozen', 'true_reward')} (frozen) vs {_pm(summary, 'refreshed', 'true_reward')}
  (refreshed) `{char}` per sample; base texts {heldout.true_reward.mean():.2f}.
- **The RM as a judge of the policy's current samples** (share of sample pairs with different true counts it
  orders right): frozen {_pm(summary, 'frozen', 'accuracy')}, refreshed {_pm(summary, 'refreshed', 'accuracy')}.
- **Cost**: KL to the base {_pm(summary, 'frozen', 'kl_pi_ref_per_token', '.3f')} vs
  {_pm(summary, 'refreshed', 'kl_pi_ref_per_token', '.3f')} nats per token; refreshing took
  {q('refreshed', 'refresh_seconds'):.0f} s per run beside {q('refreshed', 'ppo_seconds'):.0f} s of PPO phases
  ({100 * cost:.0f}%), and {labels // max(1, n_seeds)} labelled pairs per run.

{"**Refreshing narrowed the gap**" if closes else "**Refreshing did not narrow the gap**"} at this budget; with
{n_seeds} seeds and {batch} samples per phase, differences smaller than the seed spread are not findings.
""")
    report.table("summary", summary, title="Measured figures (mean and sd over seeds)", show=40)
    report.table("end", end, title=f"Per run, mean of the last {late} phases")
    report.section("Reward, gap and the RM's accuracy over training")
    panels = [("true_reward", f"true count of '{char}' per sample"),
              ("gap", "RM − true (held-out std units)"),
              ("accuracy", "RM accuracy on the phase's samples")]
    mean = phases.groupby(["setting", "phase"], as_index=False)[[c for c, _ in panels] + ["kl_pi_ref_per_token"]].mean()
    report.figure("curves", plot_setting_curves(phases, panels, "frozen vs refreshed RM (thin: seeds; thick: their mean)"),
                  chart=facet_lines(mean, "phase", panels, series="setting", xlabel="PPO phase",
                                    title="frozen vs refreshed RM (mean over seeds)"),
                  caption="Per phase: the mean true count of the batch's samples; the gap between the scoring RM's "
                          "reward and the true reward, each in held-out std units (0: the RM rates the samples as "
                          "the truth does); the share of the batch's sample pairs with different true counts that the "
                          "scoring RM orders right (0.5: chance).")
    report.figure("cost", plot_setting_curves(phases, [("kl_pi_ref_per_token", "KL(π‖base) per token (nats)"),
                                               ("gap_rm0", "v0 RM − true (held-out std units)")],
                                      "what the refresh costs, and how the starting RM sees each policy"),
                  caption="Left: the exact KL(π‖base) per generated token. Right: the gap measured "
                          "with the starting RM (v0) for both settings: how much of v0's view the refreshed policy "
                          "still exploits.")
    report.table("phases", phases, title="Per run and phase", show=20)
    report.section("Reward-model versions")
    report.table("versions", versions, title="Each RM version: its held-out yardstick and its refresh",
                 caption="heldout_mean/std: the version's raw-score mean and std on the held-out base texts (its "
                         "yardstick); heldout_spearman: its rank correlation with the true count there; pairs, ties, "
                         "replay, accuracy_before/after (on the refresh's fresh pairs), best_epoch: the refresh.")
    report.section("Proxy features")
    report.figure("probes", plot_probe_bars(probes),
                  caption="Mean change of the RM score when one string is appended to each held-out base text "
                          "(error bars: 2 standard errors), for the starting RM and each refreshed run's last "
                          f"version. Only `{char}` changes the true reward.")
    report.table("probes", probes, title="What one appended string is worth")
    late_from = n_phases - late + 1
    view = proxies[(proxies.phase == 0) | (proxies.phase >= late_from)]
    view = view.groupby(["setting", "feature", view.phase >= late_from], as_index=False).mean_count.mean()
    report.table("proxy_counts", proxies, title="Proxy characters per sample",
                 caption=f"Phase 0 = the held-out base texts. Preview: base texts (phase column False) and the mean "
                         f"of phases {late_from}-{n_phases} (True), per setting, over seeds.",
                 preview=view.rename(columns={"phase": f"phase >= {late_from}"}))
    report.table("runs", runs, title="Time per run (s): wall clock and CPU of this process, model loading included",
                 caption=f"The whole study (RM, held-out texts, runs, offline scoring) took "
                         f"{config.get('cpu_seconds', float('nan')):.0f} s of CPU ({config.get('wall_seconds', float('nan')):.0f} s wall).")
    report.table("heldout", heldout, title="Held-out base-model texts", show=10)
    report.table("samples", samples, title="Every rollout sample", show=10)
    rm_training = report_dir / "rm_training.csv"
    if rm_training.exists() and rm_training.stat().st_size > 1:
        report.table("rm_training", read_table(report_dir, "rm_training"), title="Training of the starting RM")
    return report


if __name__ == "__main__":
    raise SystemExit(main())
