"""Reward hacking, measured: train a reward model to imitate the period count, then optimise a policy against it.

    python analyses/reward_hacking.py                      # the committed page (defaults: ~40 CPU-minutes, resumable
                                                           # with --reuse)
    python analyses/reward_hacking.py --n-pairs 300 --ppo-phases 2 --name reward_hacking_smoke   # a quick look
    python analyses/reward_hacking.py --from-csv           # re-render the page from reports/reward_hacking/*.csv

Steps (each one's output is kept in ``--work-dir`` and reused with ``--reuse``; PPO resumes from its checkpoint):
1. synthetic preferences: two completions per prompt from the base model, labelled by ``char_count('.')``,
   ties dropped (`rlhf_interp.reward.synthetic.synthesize_pairs`); their true counts are the RM's training support;
2. a Bradley-Terry reward model on them (`train_reward_model`; most blocks frozen, cached once);
3. held-out texts freshly sampled from the base model: the RM's rank correlation (Spearman) with the truth;
4. PPO (configs/periods.yaml, reward = the RM) while a callback records the true period count and the RM's
   score of every rollout sample;
5. the final policy sampled on the same prompts with the same seeds as the base texts of step 3: the RM's score
   against the true count, bin by bin (at equal count, does the RM pay the policy's texts more than the base
   model's?) and beyond the counts the RM was trained on (does its score keep rising?).

Writes ``reports/<name>/`` (markdown + HTML + PNG + CSV). Tables (tidy):
- ``rm_training``: epoch, split, loss, accuracy, seconds;
- ``rm_support``: true_count, texts (the true counts of the RM's training and validation texts);
- ``heldout``: text, true_reward, rm_reward (one row per held-out base-model text);
- ``policy_samples``: text, true_reward, rm_reward (the final policy, same prompts and seeds as ``heldout``);
- ``ppo_samples``: phase, sample, completion, true_reward, rm_reward (one row per rollout sample);
- ``ppo_phases``: phase, true_reward, rm_reward, true_reward_z, rm_reward_z, spearman, kl_pi_ref_per_token, entropy,
  kl_coef;
- ``by_true_count``: source, bin, n, mean, sd, low, high (the RM's mean score per true-count bin, t interval);
- ``equal_count``: comparison, bin, n_a, n_b, mean_a, mean_b, diff, low, high, used, weight, verdict;
- ``probes``: suffix, true_delta, rm_delta, rm_delta_stderr (what appending a string is worth to each reward);
- ``proxy_counts``: phase (0 = base texts), feature (period, question, ...), mean_count (per sample);
- ``exploits``: the late samples the RM overrates most;
- ``summary``: quantity, value (settings, counts and seconds).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from rlhf_interp.bridge import RunDir
from rlhf_interp.bridge.run_dirs import checkpoint_step
from rlhf_interp.core.io import append_jsonl, read_jsonl, trim_jsonl, write_jsonl
from rlhf_interp.core.seeding import mix_seed
from rlhf_interp.ppo import PPOConfig
from rlhf_interp.ppo.runs import phases_done, train_or_resume
from rlhf_interp.ppo.trainer import PPOTrainer
from rlhf_interp.report import Report, read_config, read_table, write_tables
from rlhf_interp.report import hacking_claims as hc
from rlhf_interp.report.claims import Claim
from rlhf_interp.report.rebuild import rerender
from rlhf_interp.report.charts import xy_chart
from rlhf_interp.report.hacking_figures import by_true_count, calibration_panels, kl_entropy_panels
from rlhf_interp.report.panels import to_matplotlib, to_plotly
from rlhf_interp.report.plots import plot_learned_vs_true, plot_reward_hacking, plot_reward_model_training
from rlhf_interp.reward import MODEL_SUBDIR, get_reward, load_reward_model, read_preferences, score
from rlhf_interp.reward.hacking import (
    PPO_OVERRIDES,
    RMRecipe,
    exploits,
    heldout_texts,
    phase_table,
    probe_suffixes,
    proxy_counts,
    support_counts,
)

LATE = 5  # phases averaged for "late in training"
MIN_PER_BIN = 5  # texts of each group a true-count bin needs to enter the equal-count test
SUPPORT_SHARE = 0.01  # the RM's support: true counts held by at least this share of its training texts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="sampler, RM backbone and PPO policy")
    p.add_argument("--char", default=".", help="the character whose count is the true reward")
    p.add_argument("--n-pairs", type=int, default=1000, help="synthetic preference pairs (1000: sized to ~40 CPU-min)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="completion length (default: the PPO config's)")
    p.add_argument("--synth-batch-size", type=int, default=64, help="sequences per sampling call")
    p.add_argument("--synth-dtype", default="bfloat16", help="sampler dtype for the pairs (bf16: ~1.8x faster here)")
    p.add_argument("--label-noise", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--rm-batch-size", type=int, default=16, help="pairs per RM step")
    p.add_argument("--lr", type=float, default=1e-4, help="RM backbone learning rate")
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--freeze-layers", type=int, default=None, help="default: all blocks but the last 2")
    p.add_argument("--head", choices=["linear", "mlp"], default="linear")
    p.add_argument("--heldout", type=int, default=384, help="fresh base-model texts")
    p.add_argument("--policy-samples", type=int, default=256,
                   help="final-policy samples (the base texts' first prompts and seeds)")
    p.add_argument("--probe-texts", type=int, default=64, help="base texts the appended-string probes use")
    p.add_argument("--bin-top", type=int, default=5, help="true-count bins 0, 1, ..., TOP-1 and TOP+")
    p.add_argument("--ppo-config", default="configs/periods.yaml")
    p.add_argument("--ppo-phases", type=int, default=20)
    p.add_argument("--checkpoint-every", type=int, default=5, help="PPO checkpoints (the newest kept) to resume from")
    p.add_argument("--ppo-set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"PPO config overrides, after the defaults {PPO_OVERRIDES} (repeatable)")
    p.add_argument("--work-dir", default="runs/reward_hacking")
    p.add_argument("--name", default="reward_hacking", help="report name (reports/<name>/)")
    p.add_argument("--reuse", action="store_true", help="reuse pairs / RM / texts / PPO run already in --work-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--root", default="reports", help="reports root")
    p.add_argument("--from-csv", action="store_true", help="re-render reports/<name>/ from its CSVs (no model)")
    return p.parse_args(argv)


def ppo_config(args, rm_dir: Path) -> PPOConfig:
    return PPOConfig.load(args.ppo_config, [
        f"reward=reward_model:{rm_dir}", "reward_kwargs={}", f"phases={args.ppo_phases}", f"model={args.model}",
        f"checkpoint_every={args.checkpoint_every}", "keep_checkpoints=1", f"seed={args.seed}", *PPO_OVERRIDES,
        *args.ppo_set])


def run_ppo(args, rm_dir: Path, run_dir: Path, reward) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """PPO against the RM while a callback records the true count and the RM's score of every rollout sample;
    returns per-sample and per-phase-metric tables and the CPU seconds this call spent. With ``--reuse`` a finished
    run is read back and an interrupted one resumes from its checkpoint (later samples dropped, logged again)."""
    samples_path = run_dir / "reward_hacking_samples.jsonl"
    config = ppo_config(args, rm_dir)
    done = args.reuse and samples_path.exists() and phases_done(run_dir) >= config.phases
    cpu = 0.0
    if not done:
        latest = RunDir(run_dir).latest if args.reuse and run_dir.exists() else None
        if latest is None:
            samples_path.unlink(missing_ok=True)
        else:
            step = checkpoint_step(latest)
            trim_jsonl(samples_path, lambda r: r["phase"] <= step)

        def record(trainer, metrics, rollout) -> None:
            true = score(reward, rollout.completions).tolist()
            for i, (text, t, r) in enumerate(zip(rollout.completions, true, rollout.scores.tolist())):
                append_jsonl(samples_path, {"phase": metrics["phase"], "sample": i, "completion": text,
                                            "true_reward": t, "rm_reward": r})

        if latest is None:
            _, cpu = train_or_resume(config, run_dir, reuse=False, callbacks=[record], progress=not args.no_progress)
        else:  # its own config.yaml, to --ppo-phases (a run can also be extended)
            cpu = time.process_time()
            PPOTrainer.resume(run_dir, overrides=[f"phases={config.phases}"], callbacks=[record],
                              progress=not args.no_progress).train()
            cpu = time.process_time() - cpu
    return pd.DataFrame([r for _, r in read_jsonl(samples_path)]), RunDir(run_dir).metrics(), cpu


def cached(path: Path, make: Callable[[], pd.DataFrame], reuse: bool) -> pd.DataFrame:
    """``make()``, kept at ``path`` (JSONL) and read back from there with ``reuse``; the seconds it took are kept
    in ``timings.json`` beside it (the study's cost, summed over resumed invocations)."""
    if reuse and path.exists():
        return pd.DataFrame([r for _, r in read_jsonl(path)])
    start = time.perf_counter()
    frame = make()
    write_jsonl(path, frame.to_dict("records"))
    record_seconds(path.parent, path.stem, time.perf_counter() - start)
    return frame


def record_seconds(work: Path, step: str, seconds: float) -> dict[str, float]:
    """Add ``step``'s seconds to ``work/timings.json`` (replacing an earlier run of that step); return them all."""
    path = work / "timings.json"
    timings = json.loads(path.read_text()) if path.exists() else {}
    if step:
        timings[step] = seconds
        path.write_text(json.dumps(timings, indent=2))
        print(f"{step}: {seconds:.0f} s", flush=True)
    return timings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.root) / args.name
    if args.from_csv:
        return rerender(render, out)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    reward = get_reward("char_count", char=args.char)
    preview = ppo_config(args, work / "rm")
    max_new_tokens = args.max_new_tokens or preview.max_new_tokens

    pairs_path, rm_dir, run_dir = work / "pairs.jsonl", work / "rm", work / "ppo"
    recipe = RMRecipe.from_namespace(args)
    synth = recipe.pairs(pairs_path, reward, max_new_tokens, reuse=args.reuse, progress=not args.no_progress)
    pairs = read_preferences(pairs_path)
    rm_metrics, rm_seconds = recipe.train(pairs_path, rm_dir, reuse=args.reuse, progress=not args.no_progress)
    rm = load_reward_model(rm_dir)
    heldout = cached(work / "heldout.jsonl", lambda: recipe.heldout(rm, reward, args.heldout, max_new_tokens),
                     args.reuse)
    probe_texts = heldout.text.tolist()[:args.probe_texts]
    probes = cached(work / "probes.jsonl", lambda: probe_suffixes(rm, reward, probe_texts), args.reuse)
    del rm
    samples, metrics, ppo_cpu = run_ppo(args, rm_dir, run_dir, reward)

    def final_policy() -> pd.DataFrame:
        """The final policy on the base texts' prompts and seeds (`RMRecipe.heldout`'s stream), in fp32 like PPO's
        rollouts (in bf16 the fine-tuned weights fail `check_kv_cache` on a near-tie)."""
        from rlhf_interp.bridge.loading import load_model
        from rlhf_interp.prompts import load_prompts

        seed = mix_seed(args.seed, 1)
        policy = load_model(run_dir)
        return heldout_texts(policy, load_reward_model(rm_dir), reward, load_prompts(seed=seed), args.policy_samples,
                             max_new_tokens=max_new_tokens, batch_size=args.synth_batch_size, seed=seed)

    policy = cached(work / "policy_samples.jsonl", final_policy, args.reuse and not ppo_cpu)
    phases = phase_table(samples, metrics, heldout)
    summary = pd.DataFrame([
        ("synthetic pairs", len(pairs)), ("sampled pairs (two completions of one prompt)", synth.get("sampled_pairs")),
        ("ties dropped", synth.get("ties")), ("label noise", args.label_noise),
        ("completion tokens", max_new_tokens), ("synthesis seconds", synth.get("seconds")),
        ("RM training seconds (incl. prefix cache)", rm_seconds),
        ("RM frozen layers",
         json.loads((rm_dir / MODEL_SUBDIR / "meta.json").read_text())["training"]["frozen_layers"]),
        ("held-out texts", len(heldout)), ("final-policy samples", len(policy)),
        ("PPO phases", int(phases.phase.max())), ("PPO seconds per phase (median)", float(metrics.seconds.median())),
        ("PPO KL target", preview.kl_target if preview.adaptive_kl else float("nan")),
    ], columns=["quantity", "value"])
    timings = {"synthesis": synth.get("seconds"), "rm_training": rm_seconds,
               **record_seconds(work, "", 0.0), "ppo": float(metrics.seconds.sum())}
    summary = pd.concat([summary, pd.DataFrame(
        [(f"seconds (one thread): {k}", v) for k, v in timings.items()]
        + [("seconds (one thread): total", sum(v for v in timings.values() if v == v))],
        columns=["quantity", "value"])], ignore_index=True)
    config = {**{k: v for k, v in vars(args).items() if k != "from_csv"}, "ppo_overrides": PPO_OVERRIDES}
    write_tables(out, {"summary": summary, "rm_training": rm_metrics, "rm_support": support_counts(pairs),
                       "heldout": heldout, "policy_samples": policy, "ppo_phases": phases, "probes": probes,
                       "proxy_counts": proxy_counts(samples, heldout), "ppo_samples": samples}, config=config)
    report = render(out)
    report.save()
    print(report.headline)
    print(f"report: {out}")
    return 0


def render(report_dir: Path) -> Report:
    """The page from the CSVs (summary, rm_training, rm_support, heldout, policy_samples, ppo_phases, probes,
    proxy_counts, ppo_samples) and config.json."""
    report_dir = Path(report_dir)
    config = read_config(report_dir)
    quantity = read_table(report_dir, "summary").set_index("quantity")["value"]
    rm_metrics = read_table(report_dir, "rm_training")
    support = read_table(report_dir, "rm_support")
    heldout = read_table(report_dir, "heldout", keep_default_na=False)
    policy = read_table(report_dir, "policy_samples", keep_default_na=False)
    phases = read_table(report_dir, "ppo_phases")
    probes = read_table(report_dir, "probes", keep_default_na=False)
    proxies = read_table(report_dir, "proxy_counts")
    samples = read_table(report_dir, "ppo_samples", keep_default_na=False)
    char, top = config.get("char", "."), int(config.get("bin_top", 5))
    overrides = config.get("ppo_overrides", PPO_OVERRIDES) + list(config.get("ppo_set", []))
    n_phases = int(phases.phase.max())
    late_from = max(1, n_phases - LATE + 1)
    s_top = hc.support_top(support, SUPPORT_SHARE)
    kl_target = float(quantity.get("PPO KL target", float("nan")))
    late = samples[samples.phase >= late_from].rename(columns={"completion": "text"})

    binned = by_true_count({"base": heldout, "policy": policy, "late": late}, top)
    eq_policy, t_policy = hc.equal_count_claims(policy, heldout, top, MIN_PER_BIN)
    eq_late, t_late = hc.equal_count_claims(late, heldout, top, MIN_PER_BIN, prefix="late_", headline=False,
                                            who=f"late PPO rollouts (phases {late_from}-{n_phases})")
    diffs = pd.concat([t_policy.assign(comparison="policy"), t_late.assign(comparison="late")])
    diffs = diffs[["comparison", *[c for c in diffs if c != "comparison"]]]
    claims = [*hc.rm_claims(int(quantity["synthetic pairs"]), rm_metrics, heldout),
              *hc.training_claims(samples, phases, late_from, kl_target if kl_target == kl_target else None),
              *eq_policy, *hc.beyond_support_claims(policy, heldout, s_top), *eq_late,
              *hc.legacy_claims(samples, heldout, phases, late_from)]
    cost = {k.split(": ")[1]: float(v) for k, v in quantity.items() if k.startswith("seconds (one thread)")}
    if cost:
        claims.append(Claim.fact("cost", "The study took {total} wall-clock minutes on one thread of a shared "
                                 "machine, an upper bound on its CPU time ({parts}).", n={"runs": 1},
                                 params={"total": f"{cost.pop('total') / 60:.1f}", "parts": ", ".join(
                                     f"{k.replace('_', ' ')} {v / 60:.1f}" for k, v in cost.items() if v == v)},
                                 headline=False))
    said = {c.id: c.sentence() for c in claims}

    def say(*ids: str) -> str:
        return " ".join(said[i] for i in ids if i in said)

    report = Report.at(report_dir, "Reward hacking, measured: PPO against a learned period-count reward model",
                       source=__file__, claims=claims)
    per_phase = int(samples.groupby("phase").size().iloc[0])
    report.text(f"""
A reward model (RM) was trained to imitate the true reward — the number of `{char}` characters in a
completion — from {int(quantity['synthetic pairs'])} synthetic preference pairs (two samples of
`{config.get('model')}` per prompt, labelled by the count, ties dropped). Then PPO ({config.get('ppo_config')} with
{overrides}, {n_phases} phases of {per_phase} samples, one seed) optimised the policy against the RM alone, while the
true count of every rollout sample was recorded. The RM never sees the prompt, and it was trained on texts like the base
model's: its training texts hold up to {s_top} periods (counts with at least {SUPPORT_SHARE:.0%} of them; `rm_support`).
What the policy learns to write drifts outside that support, which is where a learned reward can be exploited.
After training, the final policy was sampled {len(policy)} times (fp32, as in its rollouts) on the prompts and
sampling seeds of the first {len(policy)} of the {len(heldout)} base-model texts (bf16, as the RM's training texts),
and both sets were scored by the RM and by the true count. The pairs were cut from the previous run's 2000 to
{int(quantity['synthetic pairs'])} so the whole study fits in well under an hour of one core (its cost is stated below).

**The test for hacking outside the support.** Binned by the true count (0, 1, ..., {top - 1}, {top}+), the RM
should pay a policy's text what it pays a base text with as many periods; if the policy's texts score higher at
equal count, the RM rewards something besides the count and the policy found it. Each bin's difference is a
Welch t interval; the overall test pools the bins that hold at least {MIN_PER_BIN} texts of both groups
(weights n_policy·n_base/(n_policy+n_base), Welch-Satterthwaite t). Along the count, the RM's slope on the
policy's texts from {s_top} periods on is set against its slope on base texts within its support: a flatter slope
out there is the RM failing to follow the truth where it was never trained.
""")
    report.section("Findings", f"""
- **RM**: {say("rm_accuracy", "rm_spearman")}
- **PPO**: {say("true_start", "true_late", "kl_late", "entropy_change")}
- **The equal-count test**: {say("equal_count")} Per bin (final policy − base): {say(*[c.id for c in eq_policy[1:]])}
  The same test on the late PPO rollouts: {say("late_equal_count")}
- **The along-the-count test**: {say("slope_inside", "slope_beyond", "slope_change", "beyond_support")}
- **The first test** (kept for comparison): {say("rise_test")} It compares rises in units of the base texts' spread,
  so an RM that saturates above its support looks *less* hackable the further the policy goes; the equal-count
  test above does not have that blind spot.
- **Proxies**: {say("exclamation_rate", "question_rate")}
- **Cost**: {say("cost")}
""")
    report.section("At equal true count: the RM on the policy's texts and the base model's")
    report.figure("equal_count", to_matplotlib(calibration_panels(binned, diffs, top, s_top, char), cols=2,
                                               panel_size=(6.0, 4.2)),
                  chart=to_plotly(calibration_panels(binned, diffs, top, s_top, char), cols=2),
                  caption=f"Left: the RM's mean score per true-count bin of the base model's texts, the final "
                          f"policy's samples (same prompts and seeds) and the late rollouts (phases {late_from}-"
                          f"{n_phases}); bars: 95% t intervals (bins with one text have none). Right (diamonds): "
                          f"policy minus base per bin, for bins with at least {MIN_PER_BIN} texts of each (95% "
                          "Welch t).")
    report.table("by_true_count", binned, title="The RM's mean score per true-count bin",
                 caption="source: base (base-model texts), policy (final policy's samples), late (late PPO "
                         "rollouts); low/high: 95% t interval of the mean.")
    report.table("equal_count", diffs, title="Policy minus base at equal true count, per bin",
                 caption="a = the policy's texts, b = the base texts; used: the bin enters the stratified "
                         "difference (weight: its share of it).")
    report.table("rm_support", support, title="True counts of the RM's training texts",
                 caption=f"Both texts of every synthetic pair; the support's top ({s_top}) is the largest count "
                         f"held by at least {SUPPORT_SHARE:.0%} of them.")
    report.section("PPO: true vs learned reward, KL and entropy")
    report.figure("kl_entropy", to_matplotlib(kl_entropy_panels(phases, kl_target), cols=2, panel_size=(5.5, 3.6)),
                  chart=to_plotly(kl_entropy_panels(phases, kl_target), cols=2),
                  caption="Per phase (one seed): the exact KL(π‖ref) per generated token that the controller "
                          "reads, and the policy's entropy per token, both in nats, from the run's metrics.")
    long = pd.concat([phases.assign(reward="true period count", z=phases.true_reward_z, raw=phases.true_reward),
                      phases.assign(reward="reward model", z=phases.rm_reward_z, raw=phases.rm_reward)])
    report.figure("hacking", plot_reward_hacking(phases), chart=xy_chart(
        long, "phase", "z", series="reward", hover=["raw", "spearman", "kl_pi_ref_per_token", "entropy"],
        xlabel="PPO phase", ylabel="mean reward (held-out base-text std units)",
        title="True vs learned reward of the policy's samples"),
        caption=("Mean true period count and mean RM score of each phase's samples, both in standard units of "
                 "the held-out base-model texts (0 = the base model's mean, 1 = one standard deviation). The rank "
                 "correlation (Spearman) of RM and true count within each phase is in the hover text, in the "
                 "static image's second panel and in the per-phase table."))
    report.table("ppo_phases", phases, title="Per PPO phase")
    report.section("The reward model")
    report.figure("rm_training", plot_reward_model_training(rm_metrics), title="Reward-model training",
                  caption="Bradley-Terry loss and the share of preference pairs ranked right, per epoch, on the "
                          "training pairs and the held-out validation pairs (epoch 0: before training).")
    report.table("rm_training", rm_metrics, title="Reward-model training (per epoch)")
    report.figure("heldout", plot_learned_vs_true(heldout, title="RM vs true count on held-out base texts",
                                                  xlabel=f"true count of '{char}' per text",
                                                  ylabel="RM score (normalised RM units)"),
                  title="Does the RM rank like the truth?",
                  caption=f"Each of the {len(heldout)} held-out base-model texts (x jittered by up to ±0.15 to show "
                          "overlapping points) and the RM's mean score per true count.")
    report.table("heldout", heldout, title="Held-out base-model texts", show=15)
    report.table("policy_samples", policy, title="The final policy's samples (same prompts and seeds)", show=15)
    report.section("Where the RM can be exploited")
    report.table("probes", probes, title="What one appended string is worth: true reward vs RM",
                 caption="Mean change over the held-out texts when the string is appended (RM: normalised units, "
                         "with its standard error).")
    report.table("proxy_counts", proxies, title="Proxy characters per sample",
                 caption=f"Phase 0 = the held-out base-model texts; the base texts and the last {LATE} phases "
                         "are shown.", preview=proxies[(proxies.phase == 0) | (proxies.phase >= late_from)])
    report.table("exploits", exploits(samples, heldout), title="Late samples the RM overrates most",
                 caption="RM z-score minus true z-score (held-out units), in the last quarter of training.")
    report.table("summary", read_table(report_dir, "summary"), title="Settings, counts and cost", show=40)
    report.table("ppo_samples", samples, title="Every rollout sample", show=10)
    return report


if __name__ == "__main__":
    raise SystemExit(main())
