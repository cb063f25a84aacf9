"""The same diff for every checkpoint of a run, so one sees when and where the change appears."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from rlhf_interp.bridge.loading import load_model, model_device
from rlhf_interp.bridge.run_dirs import CHECKPOINT_PATTERN, list_checkpoints, read_meta
from rlhf_interp.diff.core import ModelDiff, diff_models


def checkpoint_step(checkpoint: str | Path) -> int:
    """The training step of a checkpoint: ``meta.json``'s ``step``, else the number in ``checkpoint-NNNNNN``."""
    meta = read_meta(checkpoint)
    if "step" in meta:
        return int(meta["step"])
    match = CHECKPOINT_PATTERN.match(Path(checkpoint).name)
    if match is None:
        raise ValueError(f"{checkpoint}: no 'step' in meta.json and the name is not checkpoint-NNNNNN.")
    return int(match.group(1))


def trajectory_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, checkpoint_dir)`` of a run directory, oldest first."""
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir} holds no finished checkpoint-NNNNNN/ directories (with config.json); "
                                f"pass a run directory written by the PPO trainer.")
    return [(checkpoint_step(c), c) for c in checkpoints]


def diff_trajectory(base, run_dir: str | Path, prompts: Sequence[str], *,
                    checkpoints: Sequence[tuple[int, Path]] | None = None, **diff_kwargs) -> ModelDiff:
    """`diff_models` of every checkpoint against ``base``; every table gains a ``step`` column.

    Loads one checkpoint at a time (same device and dtype as ``base``) and frees it before the next.
    ``checkpoints`` overrides the list (e.g. every other one of `trajectory_checkpoints`).
    """
    chosen = list(checkpoints) if checkpoints is not None else trajectory_checkpoints(run_dir)
    dtype = next(base.parameters()).dtype
    diffs = []
    for step, path in tqdm(chosen, desc="checkpoints"):
        tuned = load_model(str(path), device=model_device(base), dtype=dtype)
        diffs.append(diff_models(base, tuned, prompts, **diff_kwargs).with_step(step))
        del tuned
        gc.collect()
    config = {**diffs[-1].config, "run_dir": str(run_dir), "steps": [s for s, _ in chosen],
              "tuned": [str(p) for _, p in chosen]}
    config.pop("step", None)
    return ModelDiff.concat(diffs, config=config)
