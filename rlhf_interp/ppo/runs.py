"""Train a run to its end, or finish one a kill interrupted: what every study that trains does before it measures.

Why here and not in each analysis: studies wrote "resume if a checkpoint is there, skip if the run is done,
else start over" several ways (counting log lines, looking for a samples file, globbing checkpoint-*), and differed
on what a half-written run means. One rule now: a run is done when its latest checkpoint holds its last phase (the
trainer always checkpoints the phase it ends on, so a run killed after logging its last phase but before that
checkpoint is resumed, not taken as done). `RunDir` reads the directory; `PPOTrainer` resumes exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf_interp.bridge.run_dirs import RunDir

if TYPE_CHECKING:  # the trainer (torch, transformers) is imported only by the call that trains
    from rlhf_interp.ppo.config import PPOConfig
    from rlhf_interp.ppo.trainer import PhaseCallback


def phases_done(run_dir: str | Path) -> int:
    """How many phases the run has logged (0 for a directory without ``metrics.jsonl``)."""
    run = RunDir(run_dir)
    return len(run.metrics()) if (run.path / "metrics.jsonl").exists() else 0


def _latest_step(run_dir: str | Path) -> int | None:
    """The phase the run's newest checkpoint holds; None without a run directory or a checkpoint."""
    steps = RunDir(run_dir).steps if Path(run_dir).is_dir() else []
    return steps[-1] if steps else None


def finished(run_dir: str | Path, phases: int) -> bool:
    """Whether the run's latest checkpoint holds phase ``phases`` (or a later one)."""
    step = _latest_step(run_dir)
    return step is not None and step >= phases


def plan(run_dir: str | Path, phases: int, *, reuse: bool = True) -> str:
    """What `train_or_resume` will do with the run: "done", "resumed at phase K" or "started" (a study's log line)."""
    step = _latest_step(run_dir) if reuse else None
    if step is not None and step >= phases:
        return "done"
    return f"resumed at phase {step}" if step is not None else "started"


def train_or_resume(config: PPOConfig, run_dir: str | Path, *, reuse: bool = True,
                    callbacks: Sequence[PhaseCallback] = (), progress: bool = True, keep_state: bool = True
                    ) -> tuple[float, float]:
    """Bring ``run_dir`` to ``config.phases``; returns the (wall, CPU) seconds this call spent.

    With ``reuse`` (see `plan`): a finished run is left as it is (0 s); one with a checkpoint is resumed from its
    latest (its own ``config.yaml`` decides, as `PPOTrainer.resume` does, with ``config.phases`` as the end, so
    a study asked for more phases extends its runs); anything else — and everything without ``reuse`` — starts
    again from scratch (``overwrite``: only files a run writes are deleted). Without ``keep_state`` the optimiser
    state of the finished run is deleted (a study that only measures the weights; ~0.5 GB per SmolLM2 run; the
    run can then not be trained further).
    """
    from rlhf_interp.ppo.trainer import PPOTrainer

    start, cpu = time.perf_counter(), time.process_time()
    how = plan(run_dir, config.phases, reuse=reuse)
    if how == "done":
        return 0.0, 0.0
    if how.startswith("resumed"):
        trainer = PPOTrainer.resume(run_dir, overrides=[f"phases={config.phases}"], callbacks=list(callbacks),
                                    progress=progress)
    else:
        trainer = PPOTrainer(config, run_dir, callbacks=list(callbacks), progress=progress, overwrite=True)
    trainer.train()
    del trainer
    if not keep_state:
        drop_optimizer_state(run_dir)
    return time.perf_counter() - start, time.process_time() - cpu


def drop_optimizer_state(run_dir: str | Path) -> None:
    """Delete the trainer state (optimiser moments) of a run's latest checkpoint; its weights stay."""
    from rlhf_interp.ppo.run_dir import TRAINER_STATE

    latest = RunDir(run_dir).latest
    if latest is not None:
        (latest / TRAINER_STATE).unlink(missing_ok=True)


def run_seconds(run_dir: str | Path) -> float:
    """The run's training seconds: the sum of ``seconds`` over its logged phases (NaN without a log)."""
    run = RunDir(run_dir)
    if not (run.path / "metrics.jsonl").exists():
        return math.nan
    metrics = run.metrics()
    return float(metrics["seconds"].sum()) if "seconds" in metrics else 0.0


__all__ = ["drop_optimizer_state", "finished", "phases_done", "plan", "run_seconds", "train_or_resume"]
