"""The KL-direction study's runs: the base step, evaluations of a policy, and training (or resuming) one run.

Why here: these are the study's measurements of a model (samples on fixed prompts, X's rate, KL both ways,
coverage of the reference, per-token scores for the estimator audit). Training itself belongs to ``ppo``, which
``measure`` must not import (one layer, no sideways imports): the caller hands in its trainer and config classes
as a `Training` (``analyses/kl_direction.py`` passes ``Training(PPOTrainer, PPOConfig)``), and the probe reads
the trainer only through its public attributes (``policy``, ``reference_logits``, ``phase``, ``config``).
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from rlhf_interp.core.io import append_jsonl, atomic_path, atomic_write_json, trim_jsonl, write_jsonl
from rlhf_interp.measure.behaviour import CANDIDATES, Behaviour, behaviour_rates, chunked_distinct, token_distinct
from rlhf_interp.measure.coverage import (
    ReferenceSamples,
    coverage_summary,
    draw_reference_samples,
    measure_coverage,
)
from rlhf_interp.measure.kl_study import (
    Study,
    choose_behaviour,
    config_fields,
    eval_prompt_list,
    parse_run_name,
    read_base,
    run_done,
    task_rewards,
)
from rlhf_interp.measure.token_scores import forward_of, score_tokens


@dataclass(frozen=True)
class Training:
    """The training side, handed in: ``trainer(config, run_dir, callbacks=..., progress=...)`` with ``.train()``
    and ``trainer.resume(run_dir, overrides=..., callbacks=..., progress=...)``; ``config.from_dict(fields)``."""

    trainer: Any
    config: Any


def run_base(study: Study, study_dir: Path) -> None:
    """Reference samples for coverage, base rates of every candidate X, X, and the base model's evaluation."""
    import torch

    from rlhf_interp.bridge import generate, load_model
    from rlhf_interp.prompts import load_prompts

    base_dir = Path(study_dir) / "base"
    if (base_dir / "base.json").exists():
        print(f"base: {base_dir} already measured")
        return
    base_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = load_model(study.model, device="cpu")
    prompts = load_prompts(limit=study.base_prompts)
    texts, tokens, masks = [], [], []
    for i in range(0, len(prompts), 32):
        gen = generate(model, prompts[i:i + 32], max_new_tokens=study.max_new_tokens, seed=study.eval_seed + i,
                       stop_at_eos=False)
        texts += gen.texts
        tokens.append(gen.tokens[:, gen.prompt_len:])
        masks.append(gen.generated_mask[:, gen.prompt_len:])
    rates = behaviour_rates(texts)
    with atomic_path(base_dir / "base_rates.csv") as tmp:
        rates.to_csv(tmp, index=False)
    write_jsonl(base_dir / "base_samples.jsonl", [{"prompt": p, "completion": t} for p, t in zip(prompts, texts)])
    name = study.behaviour or choose_behaviour(rates)
    if name not in CANDIDATES:
        raise ValueError(f"Unknown behaviour {name!r}; use one of {sorted(CANDIDATES)}.")
    rate = float(rates.set_index("behaviour").loc[name, "rate"])
    if not 0.1 <= rate <= 0.3:
        print(f"note: X = {name!r} has a base rate of {rate:.3f}, outside 10-30%; `--behaviour auto` picks one inside.",
              file=sys.stderr)
    eos = model.tokenizer.eos_token_id
    diversity = chunked_distinct(torch.cat(tokens), torch.cat(masks), chunk=study.batch_size, exclude=[eos])
    refs = draw_reference_samples(model, eval_prompt_list(study), n_per_prompt=study.ref_samples,
                                  max_new_tokens=study.max_new_tokens, seed=study.eval_seed)
    refs.save(base_dir / "reference_samples.pt")
    atomic_write_json(base_dir / "base.json", {
        "behaviour": name, "pattern": CANDIDATES[name].pattern, "description": CANDIDATES[name].description,
        "base_rate": rate, "n_base_texts": len(texts), "chosen": "given" if study.behaviour else "auto",
        "diversity_at_batch_size": diversity, "seconds": time.perf_counter() - start})
    evaluate(model, forward_of(model), refs, study, CANDIDATES[name], base_dir / "evals", 0,
             rewards=task_rewards(CANDIDATES[name]))
    print(f"base: behaviour X = {name!r} ({CANDIDATES[name].description}), base rate {rate:.3f} over {len(texts)} "
          f"continuations; {time.perf_counter() - start:.0f} s")


def evaluate(policy, reference_forward, refs: ReferenceSamples, study: Study, behaviour: Behaviour, out_dir: Path,
             updates: int, rewards: dict) -> dict:
    """Sample the policy on the eval prompts (fixed seed), score against the reference, measure coverage.

    Writes ``out_dir/<updates>/``: ``samples.jsonl``, ``coverage.csv``, ``tokens.csv.gz`` (per-token scores
    of policy and reference samples, for the estimator audit) and, last, ``summary.json`` (its presence
    marks the evaluation complete).
    """
    from rlhf_interp.bridge import generate

    target = Path(out_dir) / f"{updates:04d}"
    target.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    prompts = [p for p in refs.prompts for _ in range(study.eval_samples)]
    gen = generate(policy, prompts, max_new_tokens=study.max_new_tokens, seed=study.eval_seed, stop_at_eos=False)
    policy_forward = forward_of(policy)
    scores = score_tokens(policy_forward, gen.tokens, gen.attention_mask, gen.generated_mask, gen.prompt_len,
                          reference=reference_forward)
    coverage, ref_scores = measure_coverage(policy_forward, refs, reference=reference_forward)
    eos = policy.tokenizer.eos_token_id
    summary = {
        "updates": updates, "n_samples": len(gen.texts), "x_rate": behaviour.rate(gen.texts),
        **{f"reward_{task}": float(fn(gen.texts).float().mean()) for task, fn in rewards.items()},
        "kl_pi_ref_per_token": scores.per_token("kl_pi_ref"), "kl_ref_pi_per_token": scores.per_token("kl_ref_pi"),
        "kl_pi_ref_seq": float(scores.sums("kl_pi_ref").mean()),
        "kl_ref_pi_seq_policy_states": float(scores.sums("kl_ref_pi").mean()),
        "entropy": scores.per_token("entropy"),
        **token_distinct(gen.tokens[:, gen.prompt_len:], gen.generated_mask[:, gen.prompt_len:], exclude=[eos]),
        **coverage_summary(coverage),
    }
    counts = behaviour.counts(gen.texts).tolist()
    write_jsonl(target / "samples.jsonl", [{"updates": updates, "prompt": p, "completion": t, "x_count": c}
                                          for p, t, c in zip(gen.prompts, gen.texts, counts)])
    with atomic_path(target / "coverage.csv") as tmp:
        coverage.assign(updates=updates).to_csv(tmp, index=False)
    tokens = pd.concat([scores.to_frame(sampling="policy"), ref_scores.to_frame(sampling="reference")],
                       ignore_index=True).assign(updates=updates)
    with atomic_path(target / "tokens.csv.gz") as tmp:
        tokens.to_csv(tmp, index=False, compression="gzip", float_format="%.6g")
    summary["seconds"] = time.perf_counter() - start
    atomic_write_json(target / "summary.json", summary)
    return summary


class StudyProbe:
    """Trainer callback: cheap measurements of every rollout (``probes.jsonl``), and an evaluation every
    ``eval_every`` phases and at the end."""

    def __init__(self, study: Study, run_dir: Path, behaviour: Behaviour, refs: ReferenceSamples):
        self.study, self.run_dir, self.behaviour, self.refs = study, Path(run_dir), behaviour, refs
        self.rewards = task_rewards(behaviour)

    def __call__(self, trainer, metrics: dict, rollout) -> None:
        mask = rollout.gen_mask
        eos = trainer.policy.tokenizer.eos_token_id
        append_jsonl(self.run_dir / "probes.jsonl", {
            "phase": metrics["phase"], "updates": metrics["phase"] - 1, "x_rate": self.behaviour.rate(rollout.completions),
            "kl_pi_ref_seq": float((rollout.kl_pi_ref * mask).sum(-1).mean()),
            "kl_ref_pi_seq_policy_states": float((rollout.kl_ref_pi * mask).sum(-1).mean()),
            **token_distinct(rollout.gen_tokens, mask, exclude=[eos])})
        if trainer.phase % self.study.eval_every == 0 or trainer.phase == trainer.config.phases:
            self.evaluate(trainer)

    def evaluate(self, trainer) -> dict:
        return evaluate(trainer.policy, trainer.reference_logits, self.refs, self.study, self.behaviour,
                        self.run_dir / "evals", trainer.phase, self.rewards)

    def has_eval(self, updates: int) -> bool:
        return (self.run_dir / "evals" / f"{updates:04d}" / "summary.json").exists()


def train_run(study: Study, study_dir: Path, name: str, training: Training, progress: bool = True) -> None:
    """Train one run to ``study.phases`` (resuming from its latest checkpoint), with the probe attached."""
    from rlhf_interp.checkpoints import latest_checkpoint

    task, penalty, seed = parse_run_name(name)
    base = read_base(study_dir)
    behaviour = CANDIDATES[base["behaviour"]]
    run_dir = Path(study_dir) / "runs" / name
    if run_done(study, run_dir):
        print(f"{name}: done")
        return
    refs = ReferenceSamples.load(Path(study_dir) / "base" / "reference_samples.pt")
    probe = StudyProbe(study, run_dir, behaviour, refs)
    start = time.perf_counter()
    if latest_checkpoint(run_dir) is not None:
        # phases from the study: a finished study can be extended (lr_decay is off, so nothing else changes)
        trainer = training.trainer.resume(run_dir, overrides=[f"phases={study.phases}"], callbacks=[probe],
                                          progress=progress)
        trim_jsonl(run_dir / "probes.jsonl", lambda r: r["phase"] <= trainer.phase)
        if trainer.phase % study.eval_every == 0 and not probe.has_eval(trainer.phase):
            probe.evaluate(trainer)  # killed between the checkpoint and its evaluation
        print(f"{name}: resumed at phase {trainer.phase}")
    else:
        if run_dir.exists():  # a start that never reached its first checkpoint: begin again
            shutil.rmtree(run_dir)
        config = training.config.from_dict(config_fields(study, task, penalty, seed, behaviour))
        trainer = training.trainer(config, run_dir, callbacks=[probe], progress=progress)
    trainer.train()
    if not run_done(study, run_dir):
        probe.evaluate(trainer)
    print(f"{name}: {trainer.phase} phases, {time.perf_counter() - start:.0f} s in this call")


def calibrate(study: Study, study_dir: Path, training: Training, betas: tuple[float, ...] = (0.3, 0.1, 0.03),
              phases: int = 5, seed: int = 100, penalties: tuple[str, ...] = ("ref_pi_loss", "pi_ref"),
              progress: bool = False) -> pd.DataFrame:
    """Measure the coefficient first: short runs (``phases``, a seed the study does not use) without a penalty and
    with ``penalties`` at each of ``betas``; ``<study>/calibration.csv`` holds KL(pi||ref) per token and seconds per
    phase. Resumable: runs already in the table are skipped."""
    base = read_base(study_dir)
    behaviour = CANDIDATES[base["behaviour"]]
    path = Path(study_dir) / "calibration.csv"
    done = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["penalty", "kl_coef"])
    settings = [("none", 0.0)] + [(p, b) for p in penalties for b in betas]
    rows = [done]
    for penalty, beta in settings:
        if ((done["penalty"] == penalty) & (done["kl_coef"] == beta)).any():
            continue
        run_dir = Path(study_dir) / "calibration" / f"{penalty}-b{beta:g}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        fields = config_fields(replace(study, phases=phases, kl_coef=beta if beta else study.kl_coef), "suppress",
                               penalty, seed, behaviour)
        config = training.config.from_dict({**fields, "checkpoint_every": 0, "sample_every": 0,
                                            "keep_checkpoints": None})
        metrics = training.trainer(config, run_dir, progress=progress).train()
        shutil.rmtree(run_dir, ignore_errors=True)  # only the numbers are kept
        table = pd.DataFrame(metrics)[["phase", "kl_pi_ref_per_token", "kl_ref_pi_per_token", "reward_mean", "seconds"]]
        rows.append(table.assign(penalty=penalty, kl_coef=beta))
        out = pd.concat(rows, ignore_index=True)
        with atomic_path(path) as tmp:
            out.to_csv(tmp, index=False)
        print(f"calibrate: {penalty} beta {beta:g}: KL(pi||ref) {table.kl_pi_ref_per_token.iloc[-1]:.4f} at phase "
              f"{phases}, {table.seconds.mean():.1f} s/phase", flush=True)
    return pd.concat(rows, ignore_index=True)
