"""Reward hacking, measured: train a reward model to imitate the period count, then optimise a policy against it.

    python analyses/reward_hacking.py                      # defaults sized for a 2-core CPU (~1 hour)
    python analyses/reward_hacking.py --n-pairs 300 --ppo-phases 2 --name reward_hacking_smoke   # a quick look
    python analyses/reward_hacking.py --from-csv           # re-render the page from reports/reward_hacking/*.csv

Steps (each one's output is kept in ``--work-dir`` and reused with ``--reuse``):
1. synthetic preferences: two completions per prompt from the base model, labelled by ``char_count('.')``,
   ties dropped (`rlhf_interp.reward.synthetic.synthesize_pairs`);
2. a Bradley-Terry reward model on them (`train_reward_model`; most blocks frozen, cached once);
3. held-out texts freshly sampled from the base model: the RM's rank correlation (Spearman) with the truth;
4. PPO (configs/periods.yaml, reward = the RM) while a callback records the true period count and the RM's
   score of every rollout sample — where the two part, the policy is exploiting the RM.

Writes ``reports/<name>/`` (markdown + HTML + PNG + CSV). Tables (tidy):
- ``rm_training``: epoch, split, loss, accuracy, seconds;
- ``heldout``: text, true_reward, rm_reward (one row per held-out text);
- ``ppo_samples``: phase, sample, completion, true_reward, rm_reward (one row per rollout sample);
- ``ppo_phases``: phase, true_reward, rm_reward, true_reward_z, rm_reward_z, spearman, kl_pi_ref_per_token;
- ``probes``: suffix, true_delta, rm_delta, rm_delta_stderr (what appending a string is worth to each reward);
- ``proxy_counts``: phase (0 = base texts), feature (period, question, ...), mean_count (per sample);
- ``exploits``: the late samples the RM overrates most;
- ``summary``: quantity, value (the measured figures).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from rlhf_interp.bridge import RunDir
from rlhf_interp.core.io import append_jsonl, read_jsonl
from rlhf_interp.ppo import PPOConfig
from rlhf_interp.ppo.runs import phases_done, train_or_resume
from rlhf_interp.report import Report, read_config, read_table, write_tables
from rlhf_interp.report.rebuild import rerender
from rlhf_interp.report.charts import xy_chart
from rlhf_interp.report.plots import plot_learned_vs_true, plot_reward_hacking, plot_reward_model_training
from rlhf_interp.reward import MODEL_SUBDIR, get_reward, load_reward_model, read_preferences, score
from rlhf_interp.reward.hacking import (
    PPO_OVERRIDES,
    RMRecipe,
    exploits,
    phase_table,
    probe_suffixes,
    proxy_counts,
    spearman,
)



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="sampler, RM backbone and PPO policy")
    p.add_argument("--char", default=".", help="the character whose count is the true reward")
    p.add_argument("--n-pairs", type=int, default=2000, help="synthetic preference pairs")
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
    p.add_argument("--heldout", type=int, default=256, help="fresh base-model texts for the rank correlation")
    p.add_argument("--ppo-config", default="configs/periods.yaml")
    p.add_argument("--ppo-phases", type=int, default=20)
    p.add_argument("--ppo-set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"PPO config overrides, after the defaults {PPO_OVERRIDES} (repeatable)")
    p.add_argument("--work-dir", default="runs/reward_hacking")
    p.add_argument("--name", default="reward_hacking", help="report name (reports/<name>/)")
    p.add_argument("--reuse", action="store_true", help="reuse pairs / RM / PPO run already in --work-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--root", default="reports", help="reports root")
    p.add_argument("--from-csv", action="store_true", help="re-render reports/<name>/ from its CSVs (no model)")
    return p.parse_args(argv)


def run_ppo(args, rm_dir: Path, run_dir: Path, reward) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PPO against the RM while a callback records the true count and the RM's score of every rollout sample;
    returns per-sample and per-phase-metric tables (with ``--reuse``, a finished run is read back)."""
    samples_path = run_dir / "reward_hacking_samples.jsonl"
    overrides = [f"reward=reward_model:{rm_dir}", "reward_kwargs={}", f"phases={args.ppo_phases}",
                 f"model={args.model}", "checkpoint_every=0", f"seed={args.seed}", *PPO_OVERRIDES, *args.ppo_set]
    config = PPOConfig.load(args.ppo_config, overrides)
    reuse = args.reuse and samples_path.exists() and phases_done(run_dir) >= config.phases
    if not reuse:
        samples_path.unlink(missing_ok=True)

        def record(trainer, metrics, rollout) -> None:
            true = score(reward, rollout.completions).tolist()
            for i, (text, t, r) in enumerate(zip(rollout.completions, true, rollout.scores.tolist())):
                append_jsonl(samples_path, {"phase": metrics["phase"], "sample": i, "completion": text,
                                            "true_reward": t, "rm_reward": r})

        train_or_resume(config, run_dir, reuse=False, callbacks=[record], progress=not args.no_progress)
    return pd.DataFrame([r for _, r in read_jsonl(samples_path)]), RunDir(run_dir).metrics()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.root) / args.name
    if args.from_csv:
        return rerender(render, out)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    reward = get_reward("char_count", char=args.char)
    ppo_preview = PPOConfig.load(args.ppo_config, [f"phases={args.ppo_phases}", *PPO_OVERRIDES, *args.ppo_set])
    max_new_tokens = args.max_new_tokens or ppo_preview.max_new_tokens

    pairs_path, rm_dir, run_dir = work / "pairs.jsonl", work / "rm", work / "ppo"
    recipe = RMRecipe.from_namespace(args)
    synth = recipe.pairs(pairs_path, reward, max_new_tokens, reuse=args.reuse, progress=not args.no_progress)
    n_pairs = len(read_preferences(pairs_path))
    rm_metrics, rm_seconds = recipe.train(pairs_path, rm_dir, reuse=args.reuse, progress=not args.no_progress)
    rm = load_reward_model(rm_dir)
    heldout = recipe.heldout(rm, reward, args.heldout, max_new_tokens)
    rho = spearman(heldout.true_reward, heldout.rm_reward)
    probes = probe_suffixes(rm, reward, heldout.text.tolist())
    del rm
    samples, metrics = run_ppo(args, rm_dir, run_dir, reward)
    phases = phase_table(samples, metrics, heldout)
    proxies = proxy_counts(samples, heldout)

    best = rm_metrics[(rm_metrics.split == "val")].sort_values("loss").iloc[0]
    first, last = phases.iloc[0], phases.iloc[-1]
    tail = phases.tail(min(5, len(phases)))
    summary = pd.DataFrame([
        ("synthetic pairs", n_pairs), ("sampled pairs (two completions of one prompt)", synth.get("sampled_pairs")),
        ("ties dropped", synth.get("ties")), ("label noise", args.label_noise),
        ("completion tokens", max_new_tokens), ("synthesis seconds", synth.get("seconds")),
        ("RM training seconds (incl. prefix cache)", rm_seconds),
        ("RM frozen layers",
         json.loads((rm_dir / MODEL_SUBDIR / "meta.json").read_text())["training"]["frozen_layers"]),
        ("RM best epoch", int(best.epoch)), ("RM validation accuracy", float(best.accuracy)),
        ("RM validation loss", float(best.loss)), ("held-out texts", len(heldout)),
        ("Spearman(RM, true) on held-out base texts", rho),
        ("PPO phases", int(phases.phase.max())),
        ("true reward, phase 1", float(first.true_reward)), ("true reward, last phase", float(last.true_reward)),
        ("true reward, mean of last 5 phases", float(tail.true_reward.mean())),
        ("RM reward, phase 1", float(first.rm_reward)), ("RM reward, last phase", float(last.rm_reward)),
        ("RM reward, mean of last 5 phases", float(tail.rm_reward.mean())),
        ("Spearman(RM, true) on policy samples, last 5 phases", float(tail.spearman.mean())),
        ("true reward z, mean of last 5 phases", float(tail.true_reward_z.mean())),
        ("RM reward z, mean of last 5 phases", float(tail.rm_reward_z.mean())),
    ], columns=["quantity", "value"])
    config = {**{k: v for k, v in vars(args).items() if k != "from_csv"}, "ppo_overrides": PPO_OVERRIDES}
    write_tables(out, {"summary": summary, "rm_training": rm_metrics, "heldout": heldout, "ppo_phases": phases,
                       "probes": probes, "proxy_counts": proxies, "ppo_samples": samples}, config=config)
    report = render(out)
    report.save()
    print(summary.to_string(index=False))
    print(f"report: {out}")
    return 0


LATE = 5  # phases averaged for "late in training"


def hacking_claims(quantity: pd.Series, rm_metrics: pd.DataFrame, heldout: pd.DataFrame, samples: pd.DataFrame,
                   phases: pd.DataFrame, late_from: int, char: str, val_fraction: float = 0.1) -> list:
    """The page's claims: the RM's accuracy (Wilson) and Spearman (bootstrap over texts); PPO's true count at phase 1
    and late (t over phase means: one seed); the hacking test as a difference of gains in held-out std units; the
    free-bonus characters as rates with intervals."""
    import numpy as np

    from rlhf_interp.core import stats
    from rlhf_interp.report.claims import Claim

    out = []
    best = rm_metrics[rm_metrics.split == "val"].sort_values("loss").iloc[0]
    n_val = int(round(val_fraction * float(quantity["synthetic pairs"])))
    acc = stats.proportion_interval(int(round(best.accuracy * n_val)), n_val, n={"pairs": n_val})
    out.append(Claim.estimate(
        "rm_accuracy", "A Bradley-Terry RM on {pairs} synthetic pairs ranks {value} {ci} of its validation pairs "
        "right", acc, fmt=".3f", params={"pairs": int(quantity["synthetic pairs"])}))
    xy = heldout[["true_reward", "rm_reward"]].to_numpy(dtype=float)
    rho = stats.bootstrap_interval(xy, lambda a: pd.Series(a[:, 0]).corr(pd.Series(a[:, 1]), method="spearman"),
                                   n_boot=1000, n={"texts": len(xy)})
    out.append(Claim.estimate(
        "rm_spearman", "and has Spearman {value} {ci} with the true count on fresh base-model texts.", rho,
        n={"texts": len(xy)}))
    first = samples[samples.phase == samples.phase.min()]
    late = samples[samples.phase >= late_from]
    n_late = {"phases": int(late.phase.nunique()), "samples_per_phase": int(late.groupby("phase").size().min()),
              "seeds": 1}
    out.append(Claim.estimate(
        "true_start", "PPO against it raised the true count from {value} {ci} periods per sample (phase {phase})",
        stats.mean_interval(first.true_reward), n={"phases": 1, "samples_per_phase": len(first), "seeds": 1},
        params={"phase": int(first.phase.iloc[0])}))
    out.append(Claim.estimate(
        "true_late", "to {value} {ci} (phases {span}; one seed, interval over phase means).",
        stats.seeds_interval(late.true_reward, late.phase, n=n_late),
        params={"span": f"{late_from}-{int(samples.phase.max())}"}))
    m_t, s_t = heldout.true_reward.mean(), heldout.true_reward.std(ddof=1)
    m_r, s_r = heldout.rm_reward.mean(), heldout.rm_reward.std(ddof=1)
    z = samples.assign(gap=(samples.rm_reward - m_r) / s_r - (samples.true_reward - m_t) / s_t)
    g_first, g_late = z[z.phase == z.phase.min()].gap, z[z.phase >= late_from]
    per_phase = g_late.groupby("phase").gap.mean()
    diff = stats.summary_difference(per_phase.mean(), per_phase.std(ddof=1) / np.sqrt(len(per_phase)), len(per_phase),
                                    g_first.mean(), g_first.std(ddof=1) / np.sqrt(len(g_first)), len(g_first),
                                    units=n_late)
    out.append(Claim.compare(
        "hacking_test", "The page's test for hacking (the RM's score rising faster than the true count, in held-out "
        "std units): the RM's rise minus the truth's is {value} {ci}; {verdict}.", diff, "RM rise", "true rise"))
    late_texts = late.completion.astype(str)
    for feature, mark in (("exclamation", "!"), ("question", "?")):
        k_late = int(late_texts.str.contains(mark, regex=False).sum())
        k_base = int(heldout.text.astype(str).str.contains(mark, regex=False).sum())
        d = stats.proportion_difference(k_late, len(late_texts), k_base, len(heldout),
                                        n={"samples": len(late_texts), "texts": len(heldout)})
        moved = "fell" if d.value < 0 else "rose"
        out.append(Claim.compare(
            f"{feature}_rate", "`{mark}` {moved}: share of texts containing one, base {base} → late policy {late}, "
            "a change of {value} {ci}; {verdict}.", d, "late", "base", fmt=".3f",
            params={"mark": mark, "moved": moved, "base": f"{k_base / len(heldout):.3f}",
                    "late": f"{k_late / len(late_texts):.3f}"}))
    sp = phases[phases.phase >= late_from].spearman
    out.append(Claim.estimate(
        "policy_spearman", "Within-phase Spearman of RM and true count on the policy's samples, phases {span}: {value} "
        "{ci} (per phase {lo} to {hi}).", stats.mean_interval(sp, n=n_late),
        params={"span": f"{late_from}-{int(phases.phase.max())}", "lo": f"{sp.min():.2f}", "hi": f"{sp.max():.2f}"},
        headline=False))
    return out


def render(report_dir: Path) -> Report:
    """The page from the CSVs (summary, rm_training, heldout, ppo_phases, probes, proxy_counts, ppo_samples)."""
    report_dir = Path(report_dir)
    config = read_config(report_dir)
    quantity = read_table(report_dir, "summary").set_index("quantity")["value"]
    rm_metrics = read_table(report_dir, "rm_training")
    heldout = read_table(report_dir, "heldout", keep_default_na=False)
    phases = read_table(report_dir, "ppo_phases")
    probes = read_table(report_dir, "probes", keep_default_na=False)
    proxies = read_table(report_dir, "proxy_counts")
    samples = read_table(report_dir, "ppo_samples", keep_default_na=False)
    char = config.get("char", ".")
    overrides = config.get("ppo_overrides", PPO_OVERRIDES) + list(config.get("ppo_set", []))

    best = rm_metrics[rm_metrics.split == "val"].sort_values("loss").iloc[0]
    rho = float(quantity["Spearman(RM, true) on held-out base texts"])
    first, last = phases.iloc[0], phases.iloc[-1]
    tail = phases.tail(min(LATE, len(phases)))
    n_phases = int(phases.phase.max())
    late_from = n_phases - len(tail) + 1
    true_gain, rm_gain = tail.true_reward_z.mean() - first.true_reward_z, tail.rm_reward_z.mean() - first.rm_reward_z
    hacking = rm_gain > true_gain
    free = probes[(probes.true_delta == 0) & (probes.rm_delta > 2 * probes.rm_delta_stderr)]
    period = probes[probes.suffix == char]
    late = proxies[proxies.phase >= late_from].groupby("feature").mean_count.mean()
    base = proxies[proxies.phase == 0].set_index("feature").mean_count
    late_samples = samples[samples.phase >= late_from].completion
    with_q = int(late_samples.str.contains("?", regex=False).sum())
    base_q = int(heldout.text.str.contains("?", regex=False).sum())
    free_text = ", ".join(f"`{row.suffix!r}` (+{row.rm_delta:.2f})" for row in free.itertuples()) or "none"
    verdict = ("**The page's test for hacking is met**" if hacking else "**The page's test for hacking is not met**")

    report = Report.at(report_dir, "Reward hacking, measured: PPO against a learned period-count reward model",
                       source=__file__, claims=hacking_claims(quantity, rm_metrics, heldout, samples, phases, late_from,
                                                              char))
    report.text(f"""
A reward model (RM) was trained to imitate the true reward — the number of `{char}` characters in a
completion — from {int(quantity['synthetic pairs'])} synthetic preference pairs (two samples of `{config.get('model')}`
per prompt, labelled by the count, ties dropped). Then PPO ({config.get('ppo_config')} with {overrides},
{n_phases} phases of {int(samples.groupby('phase').size().iloc[0])} samples) optimised the policy against the RM
alone, while the true count of every rollout sample was recorded. The RM never sees the prompt (PPO scores
completions only), and it was trained on texts like the base model's; what the policy learns to write drifts
outside that distribution, which is where a learned reward can be exploited.
""")
    report.section("Findings", f"""
- **RM**: validation accuracy **{best.accuracy:.3f}** (chance 0.5) at epoch {int(best.epoch)}; Spearman with the
  true count on {len(heldout)} fresh base-model texts **{rho:.3f}**.
- **PPO raised the true count**: **{first.true_reward:.2f}** periods per sample at phase 1 → **{tail.true_reward.mean():.2f}**
  (mean of phases {late_from}-{n_phases}); the last phase alone reached {last.true_reward:.2f}, one batch of
  {int(samples.groupby('phase').size().iloc[-1])} samples. The RM's score {first.rm_reward:.2f} →
  {tail.rm_reward.mean():.2f} (mean of the same phases; normalised units of the RM's training texts).
- **The test for hacking** — the learned reward rising faster than the true one, both in standard units of the
  held-out base texts — **is {"" if hacking else "not "}met**: from phase 1 to phases {late_from}-{n_phases} the true count
  rose by {true_gain:+.2f} units and the RM's score by {rm_gain:+.2f}. The RM
  {"overrates" if tail.rm_reward_z.mean() > tail.true_reward_z.mean() else "underrates"} the policy's late samples
  ({tail.rm_reward_z.mean():.2f} vs {tail.true_reward_z.mean():.2f} units){"" if hacking else ": it saturates above the counts it was trained on"}.
  Within-phase Spearman over phases {late_from}-{n_phases}: {tail.spearman.mean():.2f} (base texts {rho:.2f};
  per phase {tail.spearman.min():.2f}-{tail.spearman.max():.2f} over those phases and
  {phases.spearman.min():.2f}-{phases.spearman.max():.2f} over all {n_phases}, with
  {int(samples.groupby('phase').size().iloc[0])} samples each, so noisy).
- **What the RM pays for without the truth**: appending one `{char}` moves the RM by
  {float(period.rm_delta.iloc[0]) if len(period) else float("nan"):+.2f}; strings that move it reliably (> 2 standard
  errors) while the true count stays put: {free_text}.
- **Did the policy buy them?** Mostly not. `!` per sample {base.get("exclamation", float("nan")):.3f} in base texts →
  {late.get("exclamation", float("nan")):.3f} in phases {late_from}-{n_phases}; newlines
  {base.get("newline", float("nan")):.3f} → {late.get("newline", float("nan")):.3f}; `?`
  {base.get("question", float("nan")):.3f} → {late.get("question", float("nan")):.3f} ({with_q} of {len(late_samples)}
  late samples contain one, vs {base_q} of {len(heldout)} base texts) — the one proxy that moved the way hacking
  would, by a few samples. Periods {base.get("period", float("nan")):.2f} → {late.get("period", float("nan")):.2f}.

{verdict}{"" if hacking else " in these " + str(n_phases) + " phases: PPO against this RM mostly bought true periods. A longer run, or an RM trained on fewer or noisier pairs, may part the curves."}
""")
    report.table("summary", read_table(report_dir, "summary"), title="Measured figures", show=40)
    report.section("The reward model")
    report.figure("rm_training", plot_reward_model_training(rm_metrics), title="Reward-model training",
                  caption="Bradley-Terry loss and the share of preference pairs ranked right, per epoch, on the "
                          "training pairs and the held-out validation pairs (epoch 0: before training).")
    report.table("rm_training", rm_metrics, title="Reward-model training (per epoch)")
    report.figure("heldout", plot_learned_vs_true(heldout, title=f"RM vs true count on held-out texts "
                                                  f"(Spearman {rho:.3f})", xlabel=f"true count of '{char}' per text",
                                                  ylabel="RM score (normalised RM units)"),
                  title="Does the RM rank like the truth?",
                  caption=f"Each of the {len(heldout)} held-out base-model texts (x jittered by up to ±0.15 to show "
                          "overlapping points) and the RM's mean score per true count.")
    report.table("heldout", heldout, title="Held-out base-model texts", show=15)
    report.section("True vs learned reward during PPO")
    long = pd.concat([phases.assign(reward="true period count", z=phases.true_reward_z, raw=phases.true_reward),
                      phases.assign(reward="reward model", z=phases.rm_reward_z, raw=phases.rm_reward)])
    report.figure("hacking", plot_reward_hacking(phases), chart=xy_chart(
        long, "phase", "z", series="reward", hover=["raw", "spearman", "kl_pi_ref_per_token"], xlabel="PPO phase",
        ylabel="mean reward (held-out base-text std units)", title="True vs learned reward of the policy's samples"),
        caption=("Mean true period count and mean RM score of each phase's samples, both in standard units of "
                 "the held-out base-model texts (0 = the base model's mean, 1 = one standard deviation), so they "
                 "are comparable: a learned reward rising faster than the true one is the policy finding what the "
                 "RM overrates. The rank correlation (Spearman) of RM and true count within each phase is in each "
                 "point's hover text, in the static image's second panel and in the per-phase table."))
    report.table("ppo_phases", phases, title="Per PPO phase")
    report.section("Where the RM can be exploited")
    report.table("probes", probes, title="What one appended string is worth: true reward vs RM",
                 caption="Mean change over the held-out texts when the string is appended (RM: normalised units, "
                         "with its standard error).")
    report.table("proxy_counts", proxies, title="Proxy characters per sample",
                 caption=f"Phase 0 = the held-out base-model texts; the base texts and the last {len(tail)} phases "
                         "are shown.", preview=proxies[(proxies.phase == 0) | (proxies.phase >= late_from)])
    report.table("exploits", exploits(samples, heldout), title="Late samples the RM overrates most",
                 caption="RM z-score minus true z-score (held-out units), in the last quarter of training.")
    report.table("ppo_samples", samples, title="Every rollout sample", show=10)
    return report


if __name__ == "__main__":
    raise SystemExit(main())
