"""Train a run to its end, or finish one a kill interrupted: what every study that trains does before it measures.

Why here and not in each analysis: three studies wrote "resume if a checkpoint is there, skip if the run is done,
else start over" three ways (counting log lines, looking for a samples file, globbing checkpoint-*), and differed
on what a half-written run means. `RunDir` reads the directory; `PPOTrainer` resumes exactly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from rlhf_interp.bridge.run_dirs import RunDir
from rlhf_interp.ppo.config import PPOConfig
from rlhf_interp.ppo.trainer import PhaseCallback, PPOTrainer


def phases_done(run_dir: str | Path) -> int:
    """How many phases the run has logged (0 for a directory without ``metrics.jsonl``)."""
    run = RunDir(run_dir)
    return len(run.metrics()) if (run.path / "metrics.jsonl").exists() else 0


def train_or_resume(config: PPOConfig, run_dir: str | Path, *, reuse: bool = True,
                    callbacks: Sequence[PhaseCallback] = (), progress: bool = True) -> tuple[float, float]:
    """Bring ``run_dir`` to ``config.phases``; returns the (wall, CPU) seconds this call spent.

    With ``reuse``: a run that logged all its phases is left as it is (0 s), one with a checkpoint is resumed from
    its latest (its own ``config.yaml`` decides, as `PPOTrainer.resume` does); anything else — and everything
    without ``reuse`` — starts again from scratch (``overwrite``: only files a run writes are deleted).
    """
    start, cpu = time.perf_counter(), time.process_time()
    if reuse and phases_done(run_dir) >= config.phases:
        return 0.0, 0.0
    if reuse and RunDir(run_dir).latest is not None:
        trainer = PPOTrainer.resume(run_dir, callbacks=list(callbacks), progress=progress)
    else:
        trainer = PPOTrainer(config, run_dir, callbacks=list(callbacks), progress=progress, overwrite=True)
    trainer.train()
    return time.perf_counter() - start, time.process_time() - cpu
