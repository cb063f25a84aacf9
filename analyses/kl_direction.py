"""The wrong-way-around KL, measured: PPO with KL(pi||ref), three kinds of KL(ref||pi), or no penalty.

    python analyses/kl_direction.py base   --study runs/kl_direction    # reference samples, base rates, behaviour X
    python analyses/kl_direction.py train  --study runs/kl_direction    # 2 tasks x 3 penalties x 2 seeds, resumable
    python analyses/kl_direction.py calibrate --study runs/kl_direction   # the coefficient, measured first
    python analyses/kl_direction.py train  --study runs/kl_direction --only suppress-ref_pi_seq-s0 suppress-none-s0
    python analyses/kl_direction.py report --study runs/kl_direction    # tables -> reports/kl_direction/ + the page
    python analyses/kl_direction.py render                              # the page again, from its CSVs alone
    python analyses/kl_direction.py all    --study runs/kl_direction    # base, train, report
    (add --tiny to any of them for a seconds-long run on the tiny random model: a smoke test of the pipeline)

A KL is named by its argument order: pi_ref = KL(pi || ref) (Ziegler et al.), ref_pi = KL(ref || pi); "forward"
and "reverse" are not used (the field uses them both ways round; the first version of this study did).
Penalties (`PENALTY_KL`): pi_ref (exact, in the reward: the sequence-level KL(pi||ref)), ref_pi_reward (exact
per-token KL(ref||pi) in the reward, over the policy's moving states), ref_pi_loss (the same in the loss, at the
rollout's states), ref_pi_seq (KL(ref||pi) of whole sequences: a loss term on a bank of reference samples per
prompt), all with one fixed coefficient (measured first by ``calibrate``), and none (coefficient 0). The first
version of the study (its report is what `render` shows when the CSVs are that study's) compared pi_ref_loss with
ref_pi_loss (exact, in the loss, coefficient 0.3).

Two tasks: **periods** (reward = number of '.' in the continuation: RL pushes a behaviour up) and
**suppress** (reward = -(number of occurrences of a behaviour X): RL pushes a behaviour of the reference
down). X is the word "I" (first-person narration, ~18% of base continuations; `Study.behaviour`), or given
with --behaviour, or with ``--behaviour auto`` chosen in the ``base`` step from `measure.behaviour.CANDIDATES` as
the one whose rate in the base model's continuations of the shipped prompts is closest to 20% within 10-30%.

Measured per phase (from the rollout, free): reward, exact KL both directions per token and per sequence,
entropy, token-id distinct-1/2/3, the rate of X. Every ``eval_every`` phases (and at the end) on fixed
prompts with a fixed seed (the same random numbers for every run): the same on more samples, plus coverage
of the reference (`measure.coverage`: N pre-drawn reference samples per prompt scored under the policy), plus
the per-token scores that `analyses/kl_estimators.py` audits. Runs are PPOTrainer run directories and resume
from their last checkpoint; evaluations are written per phase and redone if missing.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml

from rlhf_interp.core.io import (
    append_jsonl,
    atomic_path,
    atomic_write_json,
    read_jsonl,
    trim_jsonl,
    write_jsonl,
)
from rlhf_interp.measure.behaviour import (
    CANDIDATES,
    Behaviour,
    behaviour_rates,
    chunked_distinct,
    collapse_onset,
    token_distinct,
)
from rlhf_interp.measure.matched_runs import common_level, matched, seed_spread
from rlhf_interp.report import Report, read_config, read_table, write_tables
from rlhf_interp.report.plots import series_style

NAME = "kl_direction"
# Penalty -> (kl_direction, kl_estimator, kl_placement). KL(pi||ref) in the reward (the sequence-level KL(pi||ref),
# mode-seeking) against the three ways of KL(ref||pi): per token in the reward (over the policy's moving states),
# per token in the loss (at the rollout's states), and of whole sequences (a loss term on the reference's samples).
PENALTY_KL = {"pi_ref": ("pi_ref", "exact", "reward"), "ref_pi_reward": ("ref_pi", "exact", "reward"),
              "ref_pi_loss": ("ref_pi", "exact", "loss"), "ref_pi_seq": ("ref_pi", "k1", "sequence")}
PENALTIES = (*PENALTY_KL, "none")
ALL_PENALTIES = ("pi_ref", "pi_ref_loss", "ref_pi_reward", "ref_pi_loss", "ref_pi_seq", "none")  # page order, both studies
TASKS = ("periods", "suppress")
PENALTY_LABEL = {"pi_ref": "KL(π‖ref) per token in the reward (= sequence-level)",
                 "ref_pi_reward": "KL(ref‖π) per token in the reward", "ref_pi_loss": "KL(ref‖π) per token in the loss",
                 "ref_pi_seq": "KL(ref‖π) of sequences (reference bank)", "none": "no KL penalty",
                 # the first study (2026-11, exact per-token KL in the loss for both directions, coefficient 0.3)
                 "pi_ref_loss": "KL(π‖ref) per token in the loss"}


# ----------------------------------------------------------------------------------------------
# The study's settings


@dataclass
class Study:
    """Everything that defines the study; saved as ``<study>/study.json`` and in the report's config."""

    model: str = "smollm2-135m"
    seeds: tuple[int, ...] = (0, 1, 2)
    tasks: tuple[str, ...] = ("suppress",)
    penalties: tuple[str, ...] = PENALTIES
    kl_coef: float = 0.1  # the same fixed coefficient for every penalty; `calibrate` measures the choice
    phases: int = 12
    batch_size: int = 8
    minibatch_size: int = 4
    ppo_epochs: int = 2
    max_new_tokens: int = 24
    lr: float = 1e-4
    head_lr: float = 5e-4
    freeze_layers: int = 15
    eval_every: int = 12  # evaluations: the base model, and the end of each run
    eval_prompts: int = 32  # fixed prompts for evaluations and coverage
    eval_samples: int = 8  # policy samples per eval prompt: 256 per evaluation
    ref_samples: int = 8  # reference samples per eval prompt (coverage): 256
    kl_bank_size: int = 4  # reference samples per training prompt for the sequence-level penalty
    base_prompts: int = 160  # base continuations measured for the behaviour rates (one per prompt)
    eval_seed: int = 1234
    # X, a CANDIDATES name (None: chosen in the base step). "word_I" from 300 base continuations already in
    # reports/ (reward_hacking/heldout.csv and the base samples of ppo_periods, steering_sweep, reward_hacking):
    # rate 17.7% (dash 17.0%, digit 12.3%, newline 28.0%); the base step measures it again on base_prompts.
    behaviour: str | None = "word_I"
    extra: dict[str, Any] = field(default_factory=dict)  # further PPOConfig fields

    @classmethod
    def tiny(cls) -> Study:
        """Seconds per run on the tiny random model: checks the pipeline, not the science."""
        return cls(model="tiny-test", phases=4, batch_size=4, minibatch_size=2, ppo_epochs=1, max_new_tokens=8,
                   lr=1e-3, head_lr=1e-3, freeze_layers=0, eval_every=2, eval_prompts=3, eval_samples=2,
                   ref_samples=3, base_prompts=24, kl_coef=0.3, seeds=(0,), kl_bank_size=2)

    def run_names(self) -> list[str]:
        return [run_name(t, p, s) for t in self.tasks for p in self.penalties for s in self.seeds]


def run_name(task: str, penalty: str, seed: int) -> str:
    return f"{task}-{penalty}-s{seed}"


def parse_run_name(name: str) -> tuple[str, str, int]:
    task, penalty, seed = name.rsplit("-", 2)
    return task, penalty, int(seed.lstrip("s"))


def load_study(study_dir: Path) -> Study:
    path = study_dir / "study.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python analyses/kl_direction.py base --study {study_dir}` "
                                f"first.")
    data = json.loads(path.read_text())
    for key in ("seeds", "tasks", "penalties"):
        data[key] = tuple(data[key])
    return Study(**data)


def ppo_config(study: Study, task: str, penalty: str, seed: int, behaviour: Behaviour):
    """The PPOConfig of one run."""
    from rlhf_interp.ppo import PPOConfig

    if task == "periods":
        reward = {"reward": "char_count", "reward_kwargs": {"char": "."}, "reward_scale": 1.0}
    elif task == "suppress":
        reward = behaviour.reward_config()
    else:
        raise ValueError(f"Unknown task {task!r}; use one of {TASKS}.")
    if penalty == "none":
        kl = {"kl_coef": 0.0, "kl_direction": "pi_ref", "kl_estimator": "k1", "kl_placement": "reward"}
    elif penalty in PENALTY_KL:
        direction, estimator, placement = PENALTY_KL[penalty]
        kl = {"kl_coef": study.kl_coef, "kl_direction": direction, "kl_estimator": estimator,
              "kl_placement": placement, "kl_bank_size": study.kl_bank_size}
    else:
        raise ValueError(f"Unknown penalty {penalty!r}; use one of {PENALTIES}.")
    fields = {"model": study.model, "seed": seed, **reward, **kl, "adaptive_kl": False, "normalize_reward": True,
              "phases": study.phases, "batch_size": study.batch_size, "minibatch_size": study.minibatch_size,
              "ppo_epochs": study.ppo_epochs, "max_new_tokens": study.max_new_tokens, "temperature": 1.0,
              "lr": study.lr, "head_lr": study.head_lr, "lr_decay": False, "freeze_layers": study.freeze_layers,
              "gamma": 1.0, "gae_lambda": 0.95, "whiten_advantages": True, "checkpoint_every": min(study.eval_every, 4),
              "keep_checkpoints": 1, "sample_every": study.eval_every, **study.extra}
    return PPOConfig.from_dict(fields)


# ----------------------------------------------------------------------------------------------
# Base step: reference samples, base rates of the candidate behaviours, X


def eval_prompt_list(study: Study) -> list[str]:
    from rlhf_interp.prompts import load_prompts

    return load_prompts(seed=study.eval_seed, limit=study.eval_prompts)


def choose_behaviour(rates: pd.DataFrame, target: float = 0.2, low: float = 0.1, high: float = 0.3) -> str:
    """The candidate whose base rate is closest to ``target`` within [low, high]."""
    inside = rates[(rates["rate"] >= low) & (rates["rate"] <= high)]
    if inside.empty:
        raise ValueError(f"No candidate behaviour has a base rate in [{low}, {high}]: rates are "
                         f"{dict(zip(rates.behaviour, rates.rate.round(3)))}. Pass --behaviour NAME to pick one.")
    return str(inside.iloc[(inside["rate"] - target).abs().argsort()].iloc[0]["behaviour"])


def run_base(study: Study, study_dir: Path) -> None:
    """Reference samples for coverage, base rates of every candidate X, X, and the base model's evaluation."""
    import torch

    from rlhf_interp.bridge import generate, load_model
    from rlhf_interp.measure.coverage import draw_reference_samples
    from rlhf_interp.prompts import load_prompts

    base_dir = study_dir / "base"
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
    write_tables(base_dir, {"base_rates": rates})
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
        "base_rate": float(rates.set_index("behaviour").loc[name, "rate"]), "n_base_texts": len(texts),
        "chosen": "given" if study.behaviour else "auto",
        "diversity_at_batch_size": diversity, "seconds": time.perf_counter() - start})
    evaluate(model, lambda t, m: model(t, attention_mask=m), refs, study, CANDIDATES[name], base_dir / "evals", 0,
             rewards=_task_rewards(CANDIDATES[name]))
    print(f"base: behaviour X = {name!r} ({CANDIDATES[name].description}), base rate "
          f"{rates.set_index('behaviour').loc[name, 'rate']:.3f} over {len(texts)} continuations; "
          f"{time.perf_counter() - start:.0f} s")


def read_base(study_dir: Path) -> dict:
    path = study_dir / "base" / "base.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python analyses/kl_direction.py base --study {study_dir}`.")
    return json.loads(path.read_text())


def _task_rewards(behaviour: Behaviour) -> dict:
    """Each task's reward (as optimised: higher is better) as a function of texts."""
    from rlhf_interp.reward import char_count

    return {"periods": lambda texts: char_count(texts, "."), "suppress": lambda texts: -behaviour.counts(texts)}


# ----------------------------------------------------------------------------------------------
# Evaluations (base and every eval_every phases of a run)


def evaluate(policy, reference_forward, refs, study: Study, behaviour: Behaviour, out_dir: Path, updates: int,
             rewards: dict) -> dict:
    """Sample the policy on the eval prompts (fixed seed), score against the reference, measure coverage.

    Writes ``out_dir/<updates>/``: ``samples.jsonl``, ``coverage.csv``, ``tokens.csv.gz`` (per-token scores
    of policy and reference samples, for the estimator audit) and, last, ``summary.json`` (its presence
    marks the evaluation complete).
    """
    from rlhf_interp.bridge import generate
    from rlhf_interp.measure.coverage import coverage_summary, measure_coverage
    from rlhf_interp.measure.token_scores import forward_of, score_tokens

    target = out_dir / f"{updates:04d}"
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
    """PPOTrainer callback: cheap measurements of every rollout, and an evaluation every ``eval_every`` phases."""

    def __init__(self, study: Study, run_dir: Path, behaviour: Behaviour, refs):
        self.study, self.run_dir, self.behaviour, self.refs = study, run_dir, behaviour, refs
        self.rewards = _task_rewards(behaviour)

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


def run_done(study: Study, run_dir: Path) -> bool:
    return (run_dir / "evals" / f"{study.phases:04d}" / "summary.json").exists()


def train_run(study: Study, study_dir: Path, name: str, progress: bool = True) -> None:
    """Train one run to ``study.phases`` (resuming from its latest checkpoint), with the probe attached."""
    from rlhf_interp.checkpoints import latest_checkpoint
    from rlhf_interp.ppo import PPOTrainer
    from rlhf_interp.measure.coverage import ReferenceSamples

    task, penalty, seed = parse_run_name(name)
    base = read_base(study_dir)
    behaviour = CANDIDATES[base["behaviour"]]
    run_dir = study_dir / "runs" / name
    if run_done(study, run_dir):
        print(f"{name}: done")
        return
    refs = ReferenceSamples.load(study_dir / "base" / "reference_samples.pt")
    probe = StudyProbe(study, run_dir, behaviour, refs)
    start = time.perf_counter()
    if latest_checkpoint(run_dir) is not None:
        # phases from the study: a finished study can be extended (lr_decay is off, so nothing else changes)
        trainer = PPOTrainer.resume(run_dir, overrides=[f"phases={study.phases}"], callbacks=[probe],
                                    progress=progress)
        trim_jsonl(run_dir / "probes.jsonl", lambda r: r["phase"] <= trainer.phase)
        if trainer.phase % study.eval_every == 0 and not probe.has_eval(trainer.phase):
            probe.evaluate(trainer)  # killed between the checkpoint and its evaluation
        print(f"{name}: resumed at phase {trainer.phase}")
    else:
        if run_dir.exists():  # a start that never reached its first checkpoint: begin again
            shutil.rmtree(run_dir)
        trainer = PPOTrainer(ppo_config(study, task, penalty, seed, behaviour), run_dir, callbacks=[probe],
                             progress=progress)
    trainer.train()
    if not run_done(study, run_dir):
        probe.evaluate(trainer)
    print(f"{name}: {trainer.phase} phases, {time.perf_counter() - start:.0f} s in this call")


def calibrate(study: Study, study_dir: Path, betas: tuple[float, ...] = (0.3, 0.1, 0.03), phases: int = 5,
              seed: int = 100, penalties: tuple[str, ...] = ("ref_pi_loss", "pi_ref"), progress: bool = False
              ) -> pd.DataFrame:
    """Measure the coefficient first: short runs (``phases``, a seed the study does not use) without a penalty and
    with ``penalties`` at each of ``betas``; ``<study>/calibration.csv`` holds KL(pi||ref) per token and seconds per
    phase. Resumable: runs already in the table are skipped."""
    from rlhf_interp.ppo import PPOTrainer

    base = read_base(study_dir)
    behaviour = CANDIDATES[base["behaviour"]]
    path = study_dir / "calibration.csv"
    done = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["penalty", "kl_coef"])
    settings = [("none", 0.0)] + [(p, b) for p in penalties for b in betas]
    rows = [done]
    for penalty, beta in settings:
        if ((done["penalty"] == penalty) & (done["kl_coef"] == beta)).any():
            continue
        run_dir = study_dir / "calibration" / f"{penalty}-b{beta:g}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        config = ppo_config(replace(study, phases=phases, kl_coef=beta if beta else study.kl_coef), "suppress",
                            penalty, seed, behaviour)
        config = replace(config, checkpoint_every=0, sample_every=0, keep_checkpoints=None).validate()
        trainer = PPOTrainer(config, run_dir, progress=progress)
        metrics = trainer.train()
        shutil.rmtree(run_dir, ignore_errors=True)  # only the numbers are kept
        table = pd.DataFrame(metrics)[["phase", "kl_pi_ref_per_token", "kl_ref_pi_per_token", "reward_mean", "seconds"]]
        rows.append(table.assign(penalty=penalty, kl_coef=beta))
        out = pd.concat(rows, ignore_index=True)
        out.to_csv(path, index=False)
        print(f"calibrate: {penalty} beta {beta:g}: KL(pi||ref) {table.kl_pi_ref_per_token.iloc[-1]:.4f} at phase "
              f"{phases}, {table.seconds.mean():.1f} s/phase", flush=True)
    return pd.concat(rows, ignore_index=True)


# ----------------------------------------------------------------------------------------------
# Tables from the study directory (compute) -> reports/kl_direction/*.csv


def _read_jsonl(path: Path) -> pd.DataFrame:
    from rlhf_interp.core.kl import upgrade_kl_record  # logs of the first study: kl_forward_* -> kl_pi_ref_*

    return pd.DataFrame([upgrade_kl_record(r) for _, r in read_jsonl(path)]) if path.exists() else pd.DataFrame()


def collect_tables(study: Study, study_dir: Path) -> dict[str, pd.DataFrame]:
    """Tidy tables of every finished run (unfinished runs are skipped with a note)."""
    base = read_base(study_dir)
    trajectories, evals, coverage, samples = [], [], [], []
    base_eval = json.loads((study_dir / "base" / "evals" / "0000" / "summary.json").read_text())
    base_samples = _read_jsonl(study_dir / "base" / "evals" / "0000" / "samples.jsonl")
    for name in study.run_names():
        run_dir = study_dir / "runs" / name
        if not run_done(study, run_dir):
            print(f"note: {name} is not finished; left out of the tables", file=sys.stderr)
            continue
        task, penalty, seed = parse_run_name(name)
        keys = {"task": task, "penalty": penalty, "seed": seed}
        scale = float(yaml.safe_load((run_dir / "config.yaml").read_text())["reward_scale"])  # as optimised
        metrics = _read_jsonl(run_dir / "metrics.jsonl")
        probes = _read_jsonl(run_dir / "probes.jsonl")
        traj = metrics[["phase", "reward_mean", "kl_pi_ref_per_token", "kl_ref_pi_per_token", "entropy",
                        "kl_coef", "seconds"]].merge(probes, on="phase", how="inner")
        traj["reward"] = traj.pop("reward_mean") * scale
        trajectories.append(traj.assign(**keys))
        rows = [{**base_eval, "updates": 0}]
        for path in sorted((run_dir / "evals").glob("*/summary.json")):
            rows.append(json.loads(path.read_text()))
        ev = pd.DataFrame(rows)
        ev["reward"] = ev[f"reward_{task}"]
        evals.append(ev.assign(**keys))
        final = run_dir / "evals" / f"{study.phases:04d}"
        coverage.append(pd.read_csv(final / "coverage.csv").assign(**keys))
        samples.append(_read_jsonl(final / "samples.jsonl").assign(**keys))
    if not evals:
        raise FileNotFoundError(f"No finished run in {study_dir / 'runs'}: run the train step first.")
    trajectory = pd.concat(trajectories, ignore_index=True)
    evals_df = pd.concat(evals, ignore_index=True)
    tables = {"trajectory": trajectory, "evals": evals_df,
              "coverage_final": pd.concat(coverage, ignore_index=True),
              "base_rates": read_table(study_dir / "base", "base_rates")}
    tables.update(matched_tables(evals_df))
    tables["end"] = end_table(evals_df, study.phases)
    tables["collapse"] = collapse_table(trajectory, base["diversity_at_batch_size"]["distinct_2"])
    tables["samples"] = side_by_side(pd.concat(samples, ignore_index=True), base_samples)
    prompts = per_prompt_table(study, study_dir)
    tables["per_prompt"] = prompts
    tables["levels"], tables["comparisons"] = comparisons(prompts)
    return tables


KEEP_T = math.log(10)  # a reference sample is kept when the policy's log-likelihood of it fell by less than log 10


def per_prompt_table(study: Study, study_dir: Path) -> pd.DataFrame:
    """One row per (penalty, seed, eval prompt) at the final evaluation (and the base model, penalty "base"):
    X's rate over the policy's samples of that prompt, and the share of that prompt's reference samples the
    policy keeps within 10x likelihood (delta >= -log 10) or loses by 100x."""
    rows = []

    def add(penalty: str, seed: int, eval_dir: Path) -> None:
        samples = _read_jsonl(eval_dir / "samples.jsonl")
        cov = pd.read_csv(eval_dir / "coverage.csv")
        cov = cov[cov["kind"] == "sample"]
        prompts = list(dict.fromkeys(samples["prompt"]))
        x = samples.assign(x=samples["x_count"] > 0).groupby("prompt", sort=False)["x"].agg(["mean", "size"])
        kept = cov.assign(kept=cov["delta"] >= -KEEP_T, lost_100x=cov["delta"] < -math.log(100)).groupby(
            "prompt_idx")[["kept", "lost_100x"]].agg(["mean", "size"])
        for i, prompt in enumerate(prompts):
            rows.append({"penalty": penalty, "seed": seed, "prompt_idx": i, "x_rate": float(x.loc[prompt, "mean"]),
                         "n_samples": int(x.loc[prompt, "size"]), "kept_10x": float(kept.loc[i, ("kept", "mean")]),
                         "lost_100x": float(kept.loc[i, ("lost_100x", "mean")]),
                         "n_reference": int(kept.loc[i, ("kept", "size")])})

    add("base", -1, study_dir / "base" / "evals" / "0000")
    for name in study.run_names():
        run_dir = study_dir / "runs" / name
        if run_done(study, run_dir):
            _, penalty, seed = parse_run_name(name)
            add(penalty, seed, run_dir / "evals" / f"{study.phases:04d}")
    return pd.DataFrame(rows)


# The comparisons the study is for: (metric, A, B). X's rate against the base model; each KL(ref||pi) variant
# against KL(pi||ref); the sequence-level KL(ref||pi) against the per-token one in the reward on coverage.
COMPARISONS = [("x_rate", p, "base") for p in PENALTIES] + \
    [(m, p, "pi_ref") for m in ("x_rate", "kept_10x") for p in ("ref_pi_reward", "ref_pi_loss", "ref_pi_seq", "none")] + \
    [("kept_10x", "ref_pi_seq", "ref_pi_reward"), ("kept_10x", "ref_pi_seq", "ref_pi_loss")]


def comparisons(prompts: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``levels``: each penalty's X rate and kept-within-10x share with a 95% interval (t over seed means; one
    seed: over prompts, noted); ``comparisons``: A - B paired by seed and prompt (the base model: by prompt), its
    interval and verdict (`core.stats.verdict`: decided, or the largest difference not ruled out)."""
    from rlhf_interp.core.stats import mean_interval, paired_difference, seeds_interval, verdict

    levels, comps = [], []
    for penalty, g in prompts.groupby("penalty", sort=False):
        for metric in ("x_rate", "kept_10x", "lost_100x"):
            iv = mean_interval(g[metric]) if penalty == "base" else seeds_interval(g[metric], g["seed"])
            levels.append({"penalty": penalty, "metric": metric, "value": iv.value, "low": iv.low, "high": iv.high,
                           "seeds": g["seed"].nunique() if penalty != "base" else 0, "prompts": g["prompt_idx"].nunique(),
                           "per_prompt": int(g["n_samples" if metric == "x_rate" else "n_reference"].min()),
                           "method": iv.method if penalty != "base" else "t over prompts", "note": iv.note})
    for metric, a, b in COMPARISONS:
        ga, gb = prompts[prompts["penalty"] == a], prompts[prompts["penalty"] == b]
        if ga.empty or gb.empty:
            continue
        if b == "base":
            base = gb.set_index("prompt_idx")[metric]
            diff_b = ga["prompt_idx"].map(base)
            pairs = ga.assign(b=diff_b.to_numpy())
        else:
            pairs = ga.merge(gb[["seed", "prompt_idx", metric]].rename(columns={metric: "b"}), on=["seed", "prompt_idx"])
        if pairs.empty:
            continue
        iv = paired_difference(pairs[metric], pairs["b"], seeds=pairs["seed"])
        v = verdict(iv, a, b, fmt=".2f")
        comps.append({"metric": metric, "a": a, "b": b, "a_value": float(pairs[metric].mean()),
                      "b_value": float(pairs["b"].mean()), "difference": iv.value, "low": iv.low, "high": iv.high,
                      "seeds": pairs["seed"].nunique(), "prompts": pairs["prompt_idx"].nunique(),
                      "method": iv.method, "note": iv.note, "decided": v.decided, "verdict": v.text})
    return pd.DataFrame(levels), pd.DataFrame(comps)


EVAL_METRICS = ["reward", "x_rate", "kl_pi_ref_per_token", "kl_ref_pi_per_token", "kl_pi_ref_seq",
                "kl_ref_pi_seq_policy_states", "kl_ref_pi_seq_k1", "kl_ref_pi_seq_exact", "entropy", "distinct_1",
                "distinct_2", "distinct_3", "lost_10x", "lost_100x", "lost_1000x", "delta_median", "greedy_delta",
                "greedy_logprob_policy"]
RUN_KEYS = ["task", "penalty", "seed"]


def matched_tables(evals: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Every run read at a common exact KL(pi||ref) per token, and at a common reward (per task), from its
    evaluations (first crossing, linear interpolation). Levels: 0.8 x the smallest peak over the task's runs."""
    per_run, summary = [], []
    for task, g in evals.groupby("task", sort=False):
        base_reward = float(g.loc[g["updates"] == 0, "reward"].mean())
        for match_on, start in (("kl_pi_ref_per_token", 0.0), ("reward", base_reward)):
            level = common_level(g, RUN_KEYS, match_on, start=start)
            if math.isnan(level):
                continue
            table = matched(g, RUN_KEYS, match_on, level, EVAL_METRICS + ["updates"], order="updates")
            per_run.append(table)
            summary.append(seed_spread(table, ["task", "penalty", "match_on", "level"], EVAL_METRICS + ["updates"]))
    return {"matched": pd.concat(per_run, ignore_index=True) if per_run else pd.DataFrame(),
            "matched_summary": pd.concat(summary, ignore_index=True) if summary else pd.DataFrame()}


def end_table(evals: pd.DataFrame, phases: int) -> pd.DataFrame:
    """Mean / min / max over seeds of the final evaluation of each task x penalty (matched by coefficient)."""
    final = evals[evals["updates"] == phases]
    return seed_spread(final, ["task", "penalty"], EVAL_METRICS)


def collapse_table(trajectory: pd.DataFrame, base_distinct_2: float) -> pd.DataFrame:
    """Mode-collapse onset per run: the first phase whose rollout distinct-2 (token ids, one batch) is below half
    the base model's (measured on base continuations pooled in batch-sized chunks); smoothed over 3 phases."""
    rows = []
    for key, g in trajectory.groupby(RUN_KEYS, sort=True):
        g = g.sort_values("phase")
        smooth = g["distinct_2"].rolling(3, min_periods=1).mean()
        onset = collapse_onset(g["phase"].tolist(), smooth.tolist(), base_distinct_2)
        rows.append({**dict(zip(RUN_KEYS, key)), "base_distinct_2": base_distinct_2,
                     "final_distinct_2": float(smooth.iloc[-1]), "collapse_phase": onset if onset is not None else np.nan})
    return pd.DataFrame(rows)


def side_by_side(final_samples: pd.DataFrame, base_samples: pd.DataFrame, n_prompts: int = 4) -> pd.DataFrame:
    """For the first ``n_prompts`` eval prompts: the base model's and each penalty's first sample (seed 0)."""
    prompts = list(dict.fromkeys(base_samples["prompt"]))[:n_prompts]
    rows = []
    for prompt in prompts:
        b = base_samples[base_samples["prompt"] == prompt].iloc[0]
        rows.append({"task": "(base)", "penalty": "(base model)", "prompt": prompt, "completion": b["completion"]})
        for (task, penalty), g in final_samples[(final_samples["prompt"] == prompt) & (final_samples["seed"] ==
                                                                                          final_samples["seed"].min())
                                                ].groupby(["task", "penalty"], sort=False):
            rows.append({"task": task, "penalty": penalty, "prompt": prompt, "completion": g.iloc[0]["completion"]})
    out = pd.DataFrame(rows)
    out["completion"] = out["completion"].str.replace("\n", " ⏎ ", regex=False)
    return out


def compute(study: Study, study_dir: Path, report_dir: Path) -> None:
    """Measured tables -> ``report_dir``; an empty table (e.g. no common matching level) is not written."""
    tables = collect_tables(study, study_dir)
    base = read_base(study_dir)
    for name, table in tables.items():
        if table.empty:
            (report_dir / f"{name}.csv").unlink(missing_ok=True)
    write_tables(report_dir, {k: v for k, v in tables.items() if not v.empty},
                 config={"study": asdict(study), "study_dir": str(study_dir), "base": base})


def _optional_table(report_dir: Path, name: str) -> pd.DataFrame:
    """A table that may be absent (not every study reaches a common level to match at)."""
    return read_table(report_dir, name) if (report_dir / f"{name}.csv").exists() else pd.DataFrame()


# ----------------------------------------------------------------------------------------------
# The page, from the CSVs alone


COLORS = {p: series_style(i) for i, p in enumerate(ALL_PENALTIES)}


def _fmt_spread(row: pd.Series, pct: bool = False, digits: int = 3) -> str:
    f = (lambda v: f"{100 * v:.0f}%") if pct else (lambda v: f"{v:.{digits}g}")
    if row["n"] <= 1 or row["min"] == row["max"]:
        return f(row["mean"])
    return f"{f(row['mean'])} [{f(row['min'])}–{f(row['max'])}]"


def _pick(summary: pd.DataFrame, **where) -> pd.Series | None:
    g = summary
    for k, v in where.items():
        g = g[g[k] == v]
    return g.iloc[0] if len(g) else None


def _rates(table: pd.DataFrame, task: str, metric: str, pct: bool, penalties=ALL_PENALTIES, **where) -> str:
    out = []
    for penalty in penalties:
        row = _pick(table, task=task, penalty=penalty, metric=metric, **where)
        if row is not None and not pd.isna(row["mean"]):
            out.append(f"{penalty} {_fmt_spread(row, pct=pct)}")
    return ", ".join(out)


def _pct(row) -> str:
    return f"{100 * row['value']:.1f}% [{100 * row['low']:.1f}, {100 * row['high']:.1f}]"


def headline_rerun(config: dict, levels: pd.DataFrame, comps: pd.DataFrame) -> str:
    """The re-run's headline: X's rate per penalty and base, coverage of the sequence-level vs the per-token
    reward KL(ref||pi), each with its 95% interval, n beside it, and the verdict."""
    study, base = config["study"], config["base"]
    lv = levels.set_index(["penalty", "metric"])
    seeds = int(levels.loc[levels["penalty"] != "base", "seeds"].max())
    n = f"{int(levels['prompts'].max())} evaluation prompts × {study['eval_samples']} samples"
    parts = []
    if ("base", "x_rate") in lv.index:
        parts.append(f"Rewarding the absence of {base['description']} (X; base model {_pct(lv.loc[('base', 'x_rate')])} "
                     f"of {n})")
    rates = [f"{p} {_pct(lv.loc[(p, 'x_rate')])}" for p in ALL_PENALTIES if (p, "x_rate") in lv.index]
    parts.append(f"after {study['phases']} PPO phases at kl_coef {study['kl_coef']} X's rate is {', '.join(rates)}")
    kept = [f"{p} {_pct(lv.loc[(p, 'kept_10x')])}" for p in ALL_PENALTIES
            if (p, "kept_10x") in lv.index and p != "base"]
    parts.append(f"the share of {study['ref_samples']} reference samples per prompt kept within 10× likelihood is "
                 f"{', '.join(kept)}")
    key = comps[(comps["metric"] == "kept_10x") & (comps["a"] == "ref_pi_seq") & (comps["b"] == "ref_pi_reward")]
    text = "; ".join(parts[:1]) + ", " + "; ".join(parts[1:])
    if len(key):
        r = key.iloc[0]
        text += (f". Sequence-level minus per-token-in-the-reward KL(ref‖π) on that share: {100 * r['difference']:.1f} "
                 f"[{100 * r['low']:.1f}, {100 * r['high']:.1f}] points ({r['verdict']})")
    return text + f" ({seeds} seed{'s' if seeds != 1 else ''} per penalty; 95% intervals, {levels['method'].iloc[-1]}" + \
        (f"; {levels['note'].dropna().iloc[-1]}" if levels["note"].fillna("").str.len().max() else "") + ")."


def headline(config: dict, end: pd.DataFrame, matched_summary: pd.DataFrame) -> str:
    """Two sentences: each task at equal KL(pi||ref) when a common level exists, else at the end of training."""
    base = config["base"]
    x = f"{base['description']} (X, base rate {100 * base['base_rate']:.0f}%)"
    sentences = []
    for task in ("suppress", "periods"):
        m = matched_summary
        if not m.empty:
            m = m[(m["task"] == task) & (m["match_on"] == "kl_pi_ref_per_token")]
        if not m.empty:
            table, where = m, f"at equal KL(π‖ref) = {float(m['level'].iloc[0]):.3g} nats/token"
        else:
            table, where = end[end["task"] == task], f"after {config['study']['phases']} phases (same coefficient)"
        if table.empty:
            continue
        lost = _rates(table, task, "lost_100x", True)
        if task == "suppress":
            sentences.append(f"Rewarding the absence of {x}, {where} X's rate is {_rates(table, task, 'x_rate', True)} "
                             f"and the share of reference samples made 100× less likely is {lost}")
        else:
            sentences.append(f"On the period task {where} the reward ('.' per continuation) is "
                             f"{_rates(table, task, 'reward', False)} and reference samples made 100× less likely "
                             f"{lost}")
    return ". ".join(sentences) + " (penalty: mean [min–max] over seeds)."


def figure_trajectories(trajectory: pd.DataFrame, evals: pd.DataFrame):
    """Reward against exact KL(pi||ref) per token, one panel per task: thin lines per run from the rollouts
    (3-phase rolling means), thick lines the evaluations' mean over seeds (whiskers: min-max over seeds)."""
    tasks = list(dict.fromkeys(trajectory["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.6 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for penalty in ALL_PENALTIES:
            style = COLORS[penalty]
            runs = trajectory[(trajectory["task"] == task) & (trajectory["penalty"] == penalty)]
            for seed, g in runs.groupby("seed"):
                g = g.sort_values("phase")
                ax.plot(g["kl_pi_ref_per_token"].rolling(3, min_periods=1).mean(),
                        g["reward"].rolling(3, min_periods=1).mean(), color=style["color"], lw=0.8, alpha=0.35)
            ev = evals[(evals["task"] == task) & (evals["penalty"] == penalty)]
            if ev.empty:
                continue
            stats = ev.groupby("updates")[["kl_pi_ref_per_token", "reward"]].agg(["mean", "min", "max"])
            x, y = stats["kl_pi_ref_per_token"], stats["reward"]
            ax.errorbar(x["mean"], y["mean"], xerr=[x["mean"] - x["min"], x["max"] - x["mean"]],
                        yerr=[y["mean"] - y["min"], y["max"] - y["mean"]], color=style["color"],
                        marker=style["marker"], lw=2, capsize=2, label=PENALTY_LABEL[penalty])
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlim(left=0)
        ax.set_xlabel("exact KL(π‖ref) per token (nats)")
        ax.set_ylabel("reward per continuation" + (" (−count of X)" if task == "suppress" else " (count of '.')"))
        ax.set_title(f"task: {task}", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_over_training(evals: pd.DataFrame, metric: str, ylabel: str, pct: bool = False,
                         trajectory: pd.DataFrame | None = None):
    """A metric from the evaluations against PPO updates: mean over seeds, min-max band, per task; with
    ``trajectory``, also the same metric of every phase's rollout (mean over seeds, 3-phase rolling mean, thin)."""
    tasks = list(dict.fromkeys(evals["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.6), squeeze=False)
    scale = 100.0 if pct else 1.0
    for ax, task in zip(axes[0], tasks):
        for penalty in ALL_PENALTIES:
            g = evals[(evals["task"] == task) & (evals["penalty"] == penalty)]
            if g.empty:
                continue
            stats = g.groupby("updates")[metric].agg(["mean", "min", "max"]) * scale
            style = COLORS[penalty]
            ax.plot(stats.index, stats["mean"], color=style["color"], marker=style["marker"], label=PENALTY_LABEL[penalty])
            ax.fill_between(stats.index, stats["min"], stats["max"], color=style["color"], alpha=0.15)
            if trajectory is not None:
                t = trajectory[(trajectory["task"] == task) & (trajectory["penalty"] == penalty)]
                per_phase = t.groupby("updates")[metric].mean().rolling(3, min_periods=1).mean() * scale
                ax.plot(per_phase.index, per_phase, color=style["color"], lw=0.8, alpha=0.5)
        ax.set_xlabel("PPO updates (phases)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"task: {task}", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_coverage(coverage: pd.DataFrame):
    """Histogram of delta = log pi(y) - log ref(y) over the reference's samples y, final checkpoint, per task."""
    samples = coverage[coverage["kind"] == "sample"]
    tasks = list(dict.fromkeys(samples["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        g = samples[samples["task"] == task]
        bins = np.linspace(min(g["delta"].min(), -1.0), max(g["delta"].max(), 1.0), 40)
        for penalty in ALL_PENALTIES:
            d = g.loc[g["penalty"] == penalty, "delta"]
            if len(d):
                ax.hist(d, bins=bins, histtype="step", lw=1.6, color=COLORS[penalty]["color"],
                        label=f"{PENALTY_LABEL[penalty]} (median {d.median():.2f})")
        ax.axvline(-math.log(100), color="grey", ls=":", lw=1)
        ax.set_xlabel("log π(y) − log ref(y) of reference samples y (nats per sequence)")
        ax.set_ylabel("reference samples (all seeds)")
        ax.set_title(f"task: {task} (dotted: 100× less likely)", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_matched(matched_summary: pd.DataFrame, match_on: str):
    metrics = [("reward", "reward"), ("x_rate", "rate of X"), ("lost_100x", "share of ref. samples 100× less likely"),
               ("kl_ref_pi_seq_k1", "sequence KL(ref‖π) (nats)"), ("distinct_2", "distinct-2 (token ids)")]
    m = matched_summary[matched_summary["match_on"] == match_on]
    tasks = list(dict.fromkeys(m["task"]))
    fig, axes = plt.subplots(len(tasks), len(metrics), figsize=(3.0 * len(metrics), 2.8 * len(tasks)), squeeze=False)
    for r, task in enumerate(tasks):
        for c, (metric, title) in enumerate(metrics):
            ax = axes[r][c]
            g = m[(m["task"] == task) & (m["metric"] == metric)].set_index("penalty").reindex(ALL_PENALTIES).dropna(
                subset=["mean"])
            xs = np.arange(len(g))
            ax.bar(xs, g["mean"], color=[COLORS[p]["color"] for p in g.index], alpha=0.8)
            ax.errorbar(xs, g["mean"], yerr=[g["mean"] - g["min"], g["max"] - g["mean"]], fmt="none", color="black",
                        capsize=3)
            ax.set_xticks(xs, g.index, fontsize=8)
            ax.set_title(f"{task}: {title}", fontsize=8)
        level = m.loc[m["task"] == task, "level"]
        if len(level):
            what = "KL(π‖ref)/token" if match_on == "kl_pi_ref_per_token" else match_on
            axes[r][0].set_ylabel(f"at {what} = {float(level.iloc[0]):.3g}", fontsize=8)
    fig.tight_layout()
    return fig


def render(report_dir: Path) -> Report:
    """The page from the CSVs in ``report_dir`` (no model, no run directory)."""
    config = read_config(report_dir)
    trajectory, evals = read_table(report_dir, "trajectory"), read_table(report_dir, "evals")
    end, matched_summary = read_table(report_dir, "end"), _optional_table(report_dir, "matched_summary")
    coverage, rates = read_table(report_dir, "coverage_final"), read_table(report_dir, "base_rates")
    collapse, samples = read_table(report_dir, "collapse"), read_table(report_dir, "samples")
    study, base = config["study"], config["base"]
    penalties = [p for p in ALL_PENALTIES if p in set(end["penalty"])]
    levels, comps = _optional_table(report_dir, "levels"), _optional_table(report_dir, "comparisons")
    rerun = not levels.empty
    report = Report.at(report_dir, "The wrong-way-around KL: KL(π‖ref) vs KL(ref‖π) vs no penalty",
                       headline=headline_rerun(config, levels, comps) if rerun else headline(config, end, matched_summary),
                       source=__file__, config=config)
    if rerun:
        report.text(f"""
        PPO on `{study['model']}` rewarding the absence of X = {base['description']} (regex `{base['pattern']}`;
        reward −count(X), normalised), with {len(penalties)} penalties: {'; '.join(f"**{p}** = {PENALTY_LABEL[p]}" for p in penalties)}.
        A KL is named by its argument order (`pi_ref` = KL(π‖ref), mode-seeking; `ref_pi` = KL(ref‖π),
        mass-covering); the first version of this study called them "forward" and "reverse", words the field uses
        both ways round. Every penalty has the same fixed coefficient {study['kl_coef']} (the reward placements act
        through whitened advantages, the loss and sequence placements as an absolute loss term, so equal β is not equal
        strength: the matched tables read every run at equal KL). {len(study['seeds'])} seeds planned per penalty
        (`levels.csv` says how many finished); {study['phases']} phases of {study['batch_size']} prompts ×
        {study['max_new_tokens']} new tokens, {study['ppo_epochs']} epochs; layers below {study['freeze_layers']}
        frozen; the sequence-level penalty uses {study.get('kl_bank_size', 4)} reference samples per training prompt.

        Evaluations (the base model, and each run's end): {study['eval_prompts']} fixed prompts ×
        {study['eval_samples']} samples with one sampling seed for every run; X's rate is the share of samples with X,
        its base rate measured on the same prompts and samples. Coverage: {study['ref_samples']} reference samples per
        prompt, drawn once; a sample is *kept* when log π(y) − log ref(y) ≥ −log 10. Intervals: per-prompt values,
        t over the seeds' means (one seed: over prompts, and then seed-to-seed variation is not included);
        differences paired by seed and prompt (`core.stats`).""")
        report.section("Comparisons")
        report.table("levels", levels, title="Each penalty: X's rate, share of reference samples kept within 10×, "
                                              "lost by 100× (95% intervals)")
        report.table("comparisons", comps, title="A − B, paired by seed and prompt, with a verdict")
        report.table("per_prompt", _optional_table(report_dir, "per_prompt"), title="Per penalty, seed and prompt",
                     show=0)
    if not rerun:
        report.text(f"""
        PPO on `{study['model']}` with {len(penalties)} penalties: {'; '.join(f"**{p}** = {PENALTY_LABEL[p]}" for p in penalties)}.
        A KL is named by its argument order (`pi_ref` = KL(π‖ref), the usual penalty of Ziegler et al., mode-seeking;
        `ref_pi` = KL(ref‖π), mass-covering); this study's first version called them "forward" and "reverse", words
        the field uses both ways round. Both penalties are the exact per-token KL summed over the vocabulary, as a loss
        term at the rollout's states, coefficient {study['kl_coef']} (fixed): only the direction differs.
        {len(study['seeds'])} seeds per setting; {study['phases']} phases of
        {study['batch_size']} prompts × {study['max_new_tokens']} new tokens; layers below {study['freeze_layers']}
        frozen. The two directions agree to second order near the reference, so the same coefficient is close
        to the same strength at small KL; the matched comparisons below read every run where it first reaches a
        common KL(π‖ref) (or reward), interpolating between evaluations.

        Tasks: **periods** (reward = number of '.') and **suppress** (reward = −number of matches of X =
        {base['description']}, regex `{base['pattern']}`). X's rate in {base['n_base_texts']} base continuations of the
        shipped prompts (one each, {study['max_new_tokens']} tokens): **{100 * base['base_rate']:.1f}%** (X
        {'chosen as the candidate closest to 20% within 10-30%' if base.get('chosen') == 'auto' else 'given'};
        every candidate's rate in `base_rates.csv`).

        Evaluations (every {study['eval_every']} phases): {study['eval_prompts']} fixed prompts × {study['eval_samples']}
        samples with one seed for all runs; coverage on {study['ref_samples']} reference samples per prompt drawn once
        (`measure.coverage`): Δ = log π(y) − log ref(y) per sequence; a sample is *lost* when Δ < −log 100.
        −mean Δ is the sequence-level KL(ref‖π), the quantity a mass-covering penalty controls.""")
    train_s, eval_s = float(trajectory["seconds"].sum()), float(evals["seconds"].sum())
    report.text(f"Cost: {train_s / 60:.0f} min of PPO phases over {trajectory.groupby(RUN_KEYS).ngroups} runs "
                f"(median {trajectory['seconds'].median():.1f} s per phase) and {eval_s / 60:.0f} min of evaluations, "
                f"wall time on a 2-core CPU (`seconds` in `trajectory.csv` and `evals.csv`).")
    report.section("Reward against KL")
    report.figure("trajectories", figure_trajectories(trajectory, evals),
                  caption="Not matched: each run's own path. Thick: evaluations every "
                          f"{study['eval_every']} phases, mean over seeds, whiskers min-max; thin: every phase's rollout "
                          "per run (3-phase rolling means).")
    report.section("Matched comparisons")
    for match_on, what in (("kl_pi_ref_per_token", "equal exact KL(π‖ref) per token"), ("reward", "equal reward")):
        if not matched_summary.empty and (matched_summary["match_on"] == match_on).any():
            report.figure(f"matched_{match_on}", figure_matched(matched_summary, match_on),
                          caption=f"Matched at {what}: each run read where it first reaches the level (0.8 × the "
                                  f"smallest peak over the task's runs), from its evaluations by linear interpolation. "
                                  f"Bars: mean over seeds; whiskers: min-max.")
    if matched_summary.empty:
        report.text("No common level: some run never moved away from the base model's KL or reward.")
    else:
        report.table("matched_summary", matched_summary, title="Matched values (mean, min, max over seeds)", show=0)
        report.table("matched", read_table(report_dir, "matched"), title="Matched values per run", show=0)
    report.section("The behaviour X over training")
    report.figure("x_rate", figure_over_training(evals, "x_rate", "rate of X in samples (%)", pct=True,
                                                 trajectory=trajectory),
                  caption="Markers: evaluations (fixed prompts and seed), mean over seeds, band min-max; thin lines: "
                          "each phase's rollout (mean over seeds, 3-phase rolling mean). Not matched: same coefficient.")
    report.figure("lost_modes", figure_over_training(evals, "lost_100x", "reference samples 100× less likely (%)",
                                                     pct=True),
                  caption="Share of the reference's samples whose log-prob under the policy fell by more than log 100.")
    report.section("Coverage of the reference")
    report.figure("coverage_hist", figure_coverage(coverage),
                  caption="Final checkpoint, all seeds pooled; matched by coefficient, not by KL (the end KLs are "
                          "in the table below).")
    end_view = end.pivot_table(index=["task", "penalty"], columns="metric", values="mean").reset_index()
    report.table("end", end, title="End of training (mean, min, max over seeds)",
                 preview=end_view[["task", "penalty", "reward", "x_rate", "kl_pi_ref_per_token", "kl_ref_pi_per_token",
                                   "kl_pi_ref_seq", "kl_ref_pi_seq_k1", "lost_100x", "greedy_delta", "entropy",
                                   "distinct_2"]])
    report.section("Mode collapse")
    report.figure("diversity", figure_over_training(evals, "distinct_2", "distinct-2 of eval samples (token ids)"),
                  caption="Token-id distinct-2 of the evaluation samples.")
    report.table("collapse", collapse, title="Collapse onset (rollout distinct-2 below half the base's)")
    report.section("Samples")
    report.table("samples", samples, title="Side by side: base model and each penalty at the end (seed 0)", show=40)
    report.section("Data")
    report.table("base_rates", rates, title="Base rates of the candidate behaviours", show=20)
    report.table("evals", evals, title="Every evaluation", show=0)
    report.table("trajectory", trajectory, title="Every phase", show=0)
    report.table("coverage_final", coverage, title="Coverage at the end, per reference continuation", show=0)
    return report


# ----------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["base", "calibrate", "train", "report", "render", "all"])
    parser.add_argument("--study", type=Path, default=Path("runs/kl_direction"), help="study directory (runs, samples)")
    parser.add_argument("--report-dir", type=Path, default=Path("reports") / NAME)
    parser.add_argument("--only", nargs="+", default=None, help="train only these runs (e.g. suppress-ref_pi_seq-s0)")
    parser.add_argument("--tiny", action="store_true", help="the tiny random model, a few phases: a smoke test")
    parser.add_argument("--behaviour", default=None,
                        help=f"X: 'auto' (closest to 20%% base rate) or one of {sorted(CANDIDATES)}; default word_I")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--resume", action="store_true", help="continue: finished runs are skipped, unfinished ones "
                        "resume from their last checkpoint (also the default; the flag says so explicitly)")
    parser.add_argument("--rebuild", action="store_true", help="the same as the render step: the page from its CSVs")
    args = parser.parse_args(argv)
    try:
        if args.step == "render" or args.rebuild:
            out = render(args.report_dir).save()
            print(f"report: {out}/index.html")
            return 0
        if args.step in ("base", "all") and not (args.study / "study.json").exists():
            study = Study.tiny() if args.tiny else Study()
            if args.behaviour:
                study = replace(study, behaviour=None if args.behaviour == "auto" else args.behaviour)
            args.study.mkdir(parents=True, exist_ok=True)
            atomic_write_json(args.study / "study.json", asdict(study))
        study = load_study(args.study)
        if args.step in ("base", "all"):
            run_base(study, args.study)
        if args.step == "calibrate":
            calibrate(study, args.study, progress=not args.no_progress)
        if args.step in ("train", "all"):
            names = args.only or study.run_names()
            unknown = sorted(set(names) - set(study.run_names()))
            if unknown:
                raise ValueError(f"Unknown run(s) {unknown}; the study's runs are {study.run_names()}.")
            for name in names:
                train_run(study, args.study, name, progress=not args.no_progress)
        if args.step in ("report", "all"):
            compute(study, args.study, args.report_dir)
            out = render(args.report_dir).save()
            print(f"report: {out}/index.html")
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
