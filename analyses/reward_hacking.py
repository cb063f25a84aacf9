"""Reward hacking, measured: train a reward model to imitate the period count, then optimise a policy against it.

    python analyses/reward_hacking.py                      # defaults sized for a 2-core CPU (~1 hour)
    python analyses/reward_hacking.py --n-pairs 300 --ppo-phases 2 --name reward_hacking_smoke   # a quick look

Steps (each one's output is kept in ``--work-dir`` and reused with ``--reuse``):
1. synthetic preferences: two completions per prompt from the base model, labelled by ``char_count('.')``,
   ties dropped (`rlhf_interp.preference_data.synthesize_pairs`);
2. a Bradley-Terry reward model on them (`train_reward_model`; most blocks frozen, cached once);
3. held-out texts freshly sampled from the base model: the RM's rank correlation (Spearman) with the truth;
4. PPO (configs/periods.yaml, reward = the RM) while a callback records the true period count and the RM's
   score of every rollout sample — where the two part, the policy is exploiting the RM.

Writes ``reports/<name>/`` (markdown + HTML + PNG + CSV). Tables (tidy):
- ``rm_training``: epoch, split, loss, accuracy, seconds;
- ``heldout``: text, true_reward, rm_reward (one row per held-out text);
- ``ppo_samples``: phase, sample, completion, true_reward, rm_reward (one row per rollout sample);
- ``ppo_phases``: phase, true_reward, rm_reward, true_reward_z, rm_reward_z, spearman, kl_forward_per_token;
- ``probes``: suffix, true_delta, rm_delta, rm_delta_stderr (what appending a string is worth to each reward);
- ``proxy_counts``: phase (0 = base texts), feature (period, question, ...), mean_count (per sample);
- ``exploits``: the late samples the RM overrates most;
- ``summary``: quantity, value (the measured figures).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import pandas as pd
import torch

from rlhf_interp.generation import generate
from rlhf_interp.models import load_model
from rlhf_interp.plots import plot_learned_vs_true, plot_reward_hacking, plot_reward_model_training
from rlhf_interp.ppo import PPOConfig, PPOTrainer
from rlhf_interp.preference_data import read_preferences, synthesize_pairs, write_preferences
from rlhf_interp.prompts import load_prompts
from rlhf_interp.report import Report
from rlhf_interp.reward_model import (
    METRICS_FILE,
    MODEL_SUBDIR,
    RewardTrainingConfig,
    load_reward_model,
    train_reward_model,
)
from rlhf_interp.rewards import get_reward, score

# A weaker, slower-adapting KL penalty and a higher lr than periods.yaml: the settings that moved the period
# count fastest in the lead's CPU-sized runs, so 20 phases show where the policy goes.
DEFAULT_PPO_OVERRIDES = ["kl_coef=0.05", "kl_horizon=2000", "lr=5e-5"]


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
                   help=f"PPO config overrides, after the defaults {DEFAULT_PPO_OVERRIDES} (repeatable)")
    p.add_argument("--work-dir", default="runs/reward_hacking")
    p.add_argument("--name", default="reward_hacking", help="report name (reports/<name>/)")
    p.add_argument("--reuse", action="store_true", help="reuse pairs / RM / PPO run already in --work-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def spearman(a: pd.Series, b: pd.Series) -> float:
    return float(a.corr(b, method="spearman"))


def make_pairs(args, reward, max_new_tokens: int, path: Path) -> dict:
    if args.reuse and path.exists():
        info = json.loads(path.with_suffix(".info.json").read_text()) if path.with_suffix(".info.json").exists() else {}
        return {**info, "reused": True}
    sampler = load_model(args.model, dtype=args.synth_dtype)
    pairs, stats = synthesize_pairs(sampler, reward, load_prompts(), args.n_pairs, max_new_tokens=max_new_tokens,
                                    batch_size=args.synth_batch_size, label_noise=args.label_noise, seed=args.seed,
                                    progress=not args.no_progress)
    write_preferences(pairs, path)
    info = {**stats.to_dict(), "dtype": args.synth_dtype, "max_new_tokens": max_new_tokens}
    path.with_suffix(".info.json").write_text(json.dumps(info, indent=2))
    return info


def train_rm(args, pairs_path: Path, rm_dir: Path) -> tuple[pd.DataFrame, float]:
    timing = rm_dir / "train_seconds.json"  # wall time of the whole training (prefix cache, epochs, save)
    if args.reuse and (rm_dir / MODEL_SUBDIR / "meta.json").exists():
        frame = pd.DataFrame([json.loads(x) for x in (rm_dir / METRICS_FILE).read_text().splitlines() if x.strip()])
        seconds = json.loads(timing.read_text())["seconds"] if timing.exists() else float(frame.seconds.sum())
        return frame, seconds
    start = time.perf_counter()
    config = RewardTrainingConfig(epochs=args.epochs, batch_size=args.rm_batch_size, lr=args.lr, head_lr=args.head_lr,
                                  freeze_layers=args.freeze_layers, head=args.head, seed=args.seed)
    _, frame = train_reward_model(pairs_path, args.model, rm_dir, config, progress=not args.no_progress,
                                  overwrite=True)
    seconds = time.perf_counter() - start
    timing.write_text(json.dumps({"seconds": seconds}))
    return frame, seconds


def heldout_texts(args, rm, reward, max_new_tokens: int) -> pd.DataFrame:
    """Fresh completions of the base model (another seed than the pairs): truth vs RM."""
    sampler = load_model(args.model, dtype=args.synth_dtype)
    prompts = load_prompts(seed=args.seed + 1)
    texts: list[str] = []
    call = 0
    while len(texts) < args.heldout:
        batch = [prompts[(call * args.synth_batch_size + i) % len(prompts)] for i in range(args.synth_batch_size)]
        texts += generate(sampler, batch, max_new_tokens=max_new_tokens, stop_at_eos=False,
                          seed=10_000 + args.seed * 1000 + call).texts
        call += 1
    texts = texts[:args.heldout]
    return pd.DataFrame({"text": texts, "true_reward": score(reward, texts).tolist(), "rm_reward": rm.score(texts).tolist()})


def run_ppo(args, rm_dir: Path, run_dir: Path, reward) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PPO against the RM; returns per-sample and per-phase-metric tables."""
    samples_path = run_dir / "reward_hacking_samples.jsonl"
    if not (args.reuse and samples_path.exists() and (run_dir / "metrics.jsonl").exists()):
        overrides = [f"reward=reward_model:{rm_dir}", "reward_kwargs={}", f"phases={args.ppo_phases}",
                     f"model={args.model}", "checkpoint_every=0", f"seed={args.seed}", *DEFAULT_PPO_OVERRIDES,
                     *args.ppo_set]
        config = PPOConfig.load(args.ppo_config, overrides)
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)

        def record(trainer, metrics, rollout) -> None:
            true = score(reward, rollout.completions).tolist()
            with open(samples_path, "a") as f:
                for i, (text, t, r) in enumerate(zip(rollout.completions, true, rollout.scores.tolist())):
                    f.write(json.dumps({"phase": metrics["phase"], "sample": i, "completion": text,
                                        "true_reward": t, "rm_reward": r}) + "\n")

        PPOTrainer(config, run_dir, callbacks=[record], progress=not args.no_progress).train()
    samples = pd.DataFrame([json.loads(x) for x in samples_path.read_text().splitlines() if x.strip()])
    metrics = pd.DataFrame([json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()])
    return samples, metrics


def phase_table(samples: pd.DataFrame, metrics: pd.DataFrame, heldout: pd.DataFrame) -> pd.DataFrame:
    """Per phase: mean true and RM reward, both also in held-out base-text standard units, and their Spearman."""
    rows = []
    t_mean, t_std = heldout.true_reward.mean(), heldout.true_reward.std()
    r_mean, r_std = heldout.rm_reward.mean(), heldout.rm_reward.std()
    for phase, group in samples.groupby("phase"):
        rows.append({"phase": int(phase), "true_reward": group.true_reward.mean(), "rm_reward": group.rm_reward.mean(),
                     "true_reward_z": (group.true_reward.mean() - t_mean) / t_std,
                     "rm_reward_z": (group.rm_reward.mean() - r_mean) / r_std,
                     "spearman": spearman(group.true_reward, group.rm_reward)})
    table = pd.DataFrame(rows)
    keep = [c for c in ("phase", "kl_forward_per_token", "entropy", "kl_coef") if c in metrics]
    return table.merge(metrics[keep], on="phase", how="left")


def exploits(samples: pd.DataFrame, heldout: pd.DataFrame, k: int = 12) -> pd.DataFrame:
    """Late-phase samples the RM overrates most relative to their true count (both in held-out z units)."""
    late = samples[samples.phase > samples.phase.max() - max(3, samples.phase.max() // 4)].copy()
    late["rm_z"] = (late.rm_reward - heldout.rm_reward.mean()) / heldout.rm_reward.std()
    late["true_z"] = (late.true_reward - heldout.true_reward.mean()) / heldout.true_reward.std()
    late["overrating"] = late.rm_z - late.true_z
    return late.sort_values("overrating", ascending=False).head(k)[
        ["phase", "completion", "true_reward", "rm_reward", "overrating"]]


PROBE_SUFFIXES = [".", " .", "?", "!", "...", "\n", " and"]
PROXY_CHARS = {"period": ".", "question": "?", "exclamation": "!", "newline": "\n"}


def probe_suffixes(rm, reward, texts: list[str], suffixes: list[str] = PROBE_SUFFIXES) -> pd.DataFrame:
    """What the RM pays for one appended string vs what the true reward pays: mean change over ``texts``.

    Columns: suffix, true_delta, rm_delta (normalised RM units), rm_delta_stderr. A suffix with rm_delta > 0
    but true_delta == 0 is something a policy can buy RM reward with, without the true reward.
    """
    base_true, base_rm = score(reward, texts), rm.score(texts)
    rows = []
    for suffix in suffixes:
        edited = [t + suffix for t in texts]
        d_true, d_rm = score(reward, edited) - base_true, rm.score(edited) - base_rm
        rows.append({"suffix": suffix, "true_delta": float(d_true.mean()), "rm_delta": float(d_rm.mean()),
                     "rm_delta_stderr": float(d_rm.std() / len(texts) ** 0.5)})
    return pd.DataFrame(rows)


def proxy_counts(samples: pd.DataFrame, heldout: pd.DataFrame) -> pd.DataFrame:
    """Mean count per sample of each proxy character: the base texts (phase 0) and every PPO phase.

    Columns: phase (0 = held-out base-model texts), feature, mean_count.
    """
    rows = []
    frames = [(0, heldout.text)] + [(int(p), g.completion) for p, g in samples.groupby("phase")]
    for phase, texts in frames:
        texts = texts.fillna("")
        for name, char in PROXY_CHARS.items():
            rows.append({"phase": phase, "feature": name, "mean_count": float(texts.str.count(re.escape(char)).mean())})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    reward = get_reward("char_count", char=args.char)
    ppo_preview = PPOConfig.load(args.ppo_config, [f"phases={args.ppo_phases}", *DEFAULT_PPO_OVERRIDES, *args.ppo_set])
    max_new_tokens = args.max_new_tokens or ppo_preview.max_new_tokens

    pairs_path, rm_dir, run_dir = work / "pairs.jsonl", work / "rm", work / "ppo"
    synth = make_pairs(args, reward, max_new_tokens, pairs_path)
    n_pairs = len(read_preferences(pairs_path))
    rm_metrics, rm_seconds = train_rm(args, pairs_path, rm_dir)
    rm = load_reward_model(rm_dir)
    heldout = heldout_texts(args, rm, reward, max_new_tokens)
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
        ("RM frozen layers", json.loads((rm_dir / MODEL_SUBDIR / "meta.json").read_text())["training"]["frozen_layers"]),
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
    free = probes[(probes.true_delta == 0) & (probes.rm_delta > 2 * probes.rm_delta_stderr)]
    period = probes[probes.suffix == args.char]
    late = proxies[proxies.phase > int(phases.phase.max()) - 5].groupby("feature").mean_count.mean()
    base = proxies[proxies.phase == 0].set_index("feature").mean_count
    gap = float(tail.rm_reward_z.mean() - tail.true_reward_z.mean())
    free_text = ", ".join(f"`{row.suffix!r}` (+{row.rm_delta:.2f})" for row in free.itertuples()) or "none"

    report = Report(args.name, "Reward hacking, measured: PPO against a learned period-count reward model",
                    config={k: v for k, v in vars(args).items()})
    report.text(f"""
A reward model (RM) was trained to imitate the true reward — the number of `{args.char}` characters in a
completion — from {n_pairs} synthetic preference pairs (two samples of `{args.model}` per prompt, labelled by the
count, ties dropped). Then PPO ({args.ppo_config} with {DEFAULT_PPO_OVERRIDES + args.ppo_set},
{int(phases.phase.max())} phases) optimised the policy against the RM alone, while the true count of every rollout
sample was recorded. The RM never sees the prompt (PPO scores completions only), and it was trained on texts like
the base model's; what the policy learns to write drifts outside that distribution, which is where a learned
reward can be exploited.

- **RM**: validation accuracy **{best.accuracy:.3f}** (chance 0.5) at epoch {int(best.epoch)}; Spearman with the
  true count on {len(heldout)} fresh base-model texts **{rho:.3f}**.
- **PPO**: true period count **{first.true_reward:.2f}** at phase 1 → **{last.true_reward:.2f}** at the last phase
  (mean of the last 5: {tail.true_reward.mean():.2f}); the RM's score {first.rm_reward:.2f} → {last.rm_reward:.2f}
  (normalised units of the RM's training texts).
- **Learned vs true, late in training** (held-out standard units, last 5 phases): true {tail.true_reward_z.mean():.2f},
  RM {tail.rm_reward_z.mean():.2f} — the RM {"overrates" if gap > 0 else "underrates"} the policy's samples by
  {abs(gap):.2f} units relative to the truth{" (it saturates above the counts it was trained on)" if gap < 0 else ""};
  within-phase Spearman {tail.spearman.mean():.2f} (base texts: {rho:.2f}).
- **What the RM pays for without the truth**: appending one `{args.char}` moves the RM by
  {float(period.rm_delta.iloc[0]) if len(period) else float("nan"):+.2f}; strings that move it reliably (> 2 standard
  errors) while the true count stays put: {free_text}.
- **Does the policy buy them?** `?` per sample {base.get("question", float("nan")):.3f} in base texts →
  {late.get("question", float("nan")):.3f} in the last 5 phases; `!` {base.get("exclamation", float("nan")):.3f} →
  {late.get("exclamation", float("nan")):.3f}; newlines {base.get("newline", float("nan")):.3f} →
  {late.get("newline", float("nan")):.3f} (periods {base.get("period", float("nan")):.2f} →
  {late.get("period", float("nan")):.2f}).
""")
    report.table("summary", summary, title="Measured figures")
    report.figure("rm_training", plot_reward_model_training(rm_metrics), title="Reward-model training")
    report.table("rm_training", rm_metrics, title="Reward-model training (per epoch)")
    report.figure("heldout", plot_learned_vs_true(heldout, title=f"RM vs true count on held-out texts "
                                                  f"(Spearman {rho:.3f})"), title="Does the RM rank like the truth?")
    report.table("heldout", heldout, title="Held-out base-model texts", max_rows=15)
    report.figure("hacking", plot_reward_hacking(phases), title="True vs learned reward during PPO")
    report.text("Both curves are in standard units of the held-out base-model texts (0 = the base model's mean, "
                "1 = one standard deviation), so they are comparable: a learned reward rising faster than the "
                "true one, or a falling within-phase Spearman, is the policy finding what the RM overrates.")
    report.table("ppo_phases", phases, title="Per PPO phase")
    report.table("probes", probes, title="What one appended string is worth: true reward vs RM "
                 "(mean change over the held-out texts)")
    report.table("proxy_counts", proxies, title="Proxy characters per sample (phase 0 = held-out base-model texts)",
                 max_rows=12)
    report.table("exploits", exploits(samples, heldout), title="Late samples the RM overrates most "
                 "(RM z-score minus true z-score)")
    report.table("ppo_samples", samples, title="Every rollout sample", max_rows=10)
    out = report.save()
    print(summary.to_string(index=False))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
