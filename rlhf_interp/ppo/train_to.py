"""Train a run to a given phase whatever state its directory is in: the step a study of many runs repeats until
every run is done, one run after the other in one process.

Why a module: a study that is killed part-way (a session ends, a CPU slot is taken back) must pick each run up
where it stopped without the caller telling a fresh run from a killed or a finished one. `PPOTrainer.resume`
restores a run exactly from its latest checkpoint; this decides which of start / resume / skip applies, and can
drop a finished run's optimiser state when the study only needs its weights (disk: ~0.5 GB per SmolLM2 run).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence


def finished(run_dir: Path, phases: int) -> bool:
    """Whether the run's latest checkpoint holds its last phase."""
    from rlhf_interp.bridge.run_dirs import latest_checkpoint, read_meta

    latest = latest_checkpoint(run_dir) if Path(run_dir).exists() else None
    return latest is not None and int(read_meta(latest).get("step", -1)) >= phases


def train_or_resume(config: str | Path, run_dir: Path, overrides: Sequence[str], phases: int,
                    progress: bool = False, keep_state: bool = True) -> str:
    """Train one run to ``phases`` in this process: skipped when finished, resumed from its latest checkpoint
    when it has one (a killed run; the trainer restores weights, optimiser, KL controller and logs), else started
    (over a run killed before its first checkpoint). Without ``keep_state`` the finished run's optimiser state is
    deleted (a study that only measures the weights; the run can then not be trained further). Returns what was
    done."""
    from rlhf_interp.bridge.run_dirs import latest_checkpoint
    from rlhf_interp.ppo import PPOConfig, PPOTrainer

    run_dir = Path(run_dir)
    if finished(run_dir, phases):
        return "done"
    if run_dir.exists() and latest_checkpoint(run_dir) is not None:
        trainer = PPOTrainer.resume(run_dir, overrides=[f"phases={phases}"], progress=progress)
        how = f"resumed at phase {trainer.phase}"
    else:
        cfg = PPOConfig.load(config, list(overrides))
        trainer = PPOTrainer(cfg, run_dir, progress=progress, overwrite=run_dir.exists())
        how = "started"
    trainer.train()
    del trainer
    if not keep_state:
        drop_optimizer_state(run_dir)
    return how


def drop_optimizer_state(run_dir: Path) -> None:
    """Delete the trainer state (optimiser moments, ~0.5 GB for SmolLM2) of a run's latest checkpoint."""
    from rlhf_interp.bridge.run_dirs import latest_checkpoint
    from rlhf_interp.ppo.run_dir import TRAINER_STATE

    latest = latest_checkpoint(run_dir)
    if latest is not None:
        (latest / TRAINER_STATE).unlink(missing_ok=True)


def run_seconds(run_dir: Path) -> float:
    """The run's training seconds: the sum of ``seconds`` over its logged phases (metrics.jsonl)."""
    from rlhf_interp.core.io import read_jsonl

    path = Path(run_dir) / "metrics.jsonl"
    return float(sum(r.get("seconds", 0.0) for _, r in read_jsonl(path))) if path.exists() else math.nan


__all__ = ["drop_optimizer_state", "finished", "run_seconds", "train_or_resume"]
