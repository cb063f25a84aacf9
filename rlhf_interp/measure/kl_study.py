"""The KL-direction study as data: which penalties, tasks and seeds, the PPO settings of each run, its names on disk.

Why in the package: the study directory (``study.json``, ``base/``, ``runs/<task>-<penalty>-s<seed>/``) is read by
the training step, the tables, the estimator audit and the tests; one definition keeps them in step. The script
``analyses/kl_direction.py`` keeps only the study's choices (the `Study` it writes) and its page.

A KL is named by its argument order: ``pi_ref`` = KL(pi || ref) (Ziegler et al.), ``ref_pi`` = KL(ref || pi).
Penalties (`PENALTY_KL`): ``pi_ref`` (exact, in the reward: the sequence-level KL(pi||ref)), ``ref_pi_reward``
(exact per-token KL(ref||pi) in the reward, over the policy's moving states), ``ref_pi_loss`` (the same in the
loss, at the rollout's states), ``ref_pi_seq`` (KL(ref||pi) of whole sequences: a loss term on a bank of
reference samples per prompt), and ``none`` (coefficient 0). The first study (2026-11) also had ``pi_ref_loss``.

Directory format (kept stable: a study started by an older version resumes and reports):
``study.json`` = `Study` as JSON; ``base/base.json`` (X, its base rate, diversity), ``base/base_rates.csv``,
``base/reference_samples.pt``, ``base/evals/0000/``; ``runs/<name>/`` = a PPOTrainer run directory plus
``probes.jsonl`` (per phase) and ``evals/<updates:04d>/`` (``samples.jsonl``, ``coverage.csv``, ``tokens.csv.gz``,
``summary.json`` written last).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rlhf_interp.measure.behaviour import Behaviour

# Penalty -> (kl_direction, kl_estimator, kl_placement).
PENALTY_KL: dict[str, tuple[str, str, str]] = {
    "pi_ref": ("pi_ref", "exact", "reward"), "ref_pi_reward": ("ref_pi", "exact", "reward"),
    "ref_pi_loss": ("ref_pi", "exact", "loss"), "ref_pi_seq": ("ref_pi", "k1", "sequence")}
PENALTIES: tuple[str, ...] = (*PENALTY_KL, "none")
ALL_PENALTIES = ("pi_ref", "pi_ref_loss", "ref_pi_reward", "ref_pi_loss", "ref_pi_seq", "none")  # both studies
TASKS = ("periods", "suppress")
PENALTY_LABEL = {"pi_ref": "KL(π‖ref) per token in the reward (= sequence-level)",
                 "ref_pi_reward": "KL(ref‖π) per token in the reward", "ref_pi_loss": "KL(ref‖π) per token in the loss",
                 "ref_pi_seq": "KL(ref‖π) of sequences (reference bank)", "none": "no KL penalty",
                 "pi_ref_loss": "KL(π‖ref) per token in the loss"}
RUN_KEYS = ["task", "penalty", "seed"]


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
    behaviour: str | None = "word_I"  # X, a `behaviour.CANDIDATES` name (None: chosen in the base step)
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
    path = Path(study_dir) / "study.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python analyses/kl_direction.py base --study {study_dir}` "
                                f"first.")
    data = json.loads(path.read_text())
    for key in ("seeds", "tasks", "penalties"):
        data[key] = tuple(data[key])
    return Study(**data)


def read_base(study_dir: Path) -> dict:
    path = Path(study_dir) / "base" / "base.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python analyses/kl_direction.py base --study {study_dir}`.")
    return json.loads(path.read_text())


def run_done(study: Study, run_dir: Path) -> bool:
    """A run is finished when its final evaluation's summary (written last) exists."""
    return (Path(run_dir) / "evals" / f"{study.phases:04d}" / "summary.json").exists()


def config_fields(study: Study, task: str, penalty: str, seed: int, behaviour: Behaviour) -> dict[str, Any]:
    """The PPOConfig fields of one run, as plain data (``PPOConfig.from_dict`` builds it; measure knows no
    training, so the config class is the caller's)."""
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
    return {"model": study.model, "seed": seed, **reward, **kl, "adaptive_kl": False, "normalize_reward": True,
            "phases": study.phases, "batch_size": study.batch_size, "minibatch_size": study.minibatch_size,
            "ppo_epochs": study.ppo_epochs, "max_new_tokens": study.max_new_tokens, "temperature": 1.0,
            "lr": study.lr, "head_lr": study.head_lr, "lr_decay": False, "freeze_layers": study.freeze_layers,
            "gamma": 1.0, "gae_lambda": 0.95, "whiten_advantages": True, "checkpoint_every": min(study.eval_every, 4),
            "keep_checkpoints": 1, "sample_every": study.eval_every, **study.extra}


def eval_prompt_list(study: Study) -> list[str]:
    """The fixed evaluation prompts (the same for every run and the base model)."""
    from rlhf_interp.prompts import load_prompts

    return load_prompts(seed=study.eval_seed, limit=study.eval_prompts)


def choose_behaviour(rates: pd.DataFrame, target: float = 0.2, low: float = 0.1, high: float = 0.3) -> str:
    """The candidate whose base rate is closest to ``target`` within [low, high]."""
    inside = rates[(rates["rate"] >= low) & (rates["rate"] <= high)]
    if inside.empty:
        raise ValueError(f"No candidate behaviour has a base rate in [{low}, {high}]: rates are "
                         f"{dict(zip(rates.behaviour, rates.rate.round(3)))}. Pass --behaviour NAME to pick one.")
    return str(inside.iloc[(inside["rate"] - target).abs().argsort()].iloc[0]["behaviour"])


def task_rewards(behaviour: Behaviour) -> dict:
    """Each task's reward (as optimised: higher is better) as a function of texts."""
    from rlhf_interp.reward import char_count

    return {"periods": lambda texts: char_count(texts, "."), "suppress": lambda texts: -behaviour.counts(texts)}
