"""The same diff for every checkpoint of a run, so one sees when and where the change appears."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from rlhf_interp.bridge.loading import load_model, model_device
from rlhf_interp.bridge.run_dirs import RunDir
from rlhf_interp.diff.core import ModelDiff, diff_models


def diff_trajectory(base, run_dir: str | Path, prompts: Sequence[str], *,
                    checkpoints: Sequence[tuple[int, Path]] | None = None, **diff_kwargs) -> ModelDiff:
    """`diff_models` of every checkpoint against ``base``; every table gains a ``step`` column.

    Loads one checkpoint at a time (same device and dtype as ``base``) and frees it before the next.
    ``checkpoints``: ``(step, path)`` pairs of this run (e.g. every other one of `RunDir.checkpoints`) instead
    of all of them.
    """
    run = RunDir(run_dir)
    steps = [step for step, _ in checkpoints] if checkpoints is not None else run.steps
    dtype = next(base.parameters()).dtype

    def load(path: Path):
        return load_model(str(path), device=model_device(base), dtype=dtype)

    diffs, chosen = [], []
    for ckpt in tqdm(run.for_each_checkpoint(steps, load=load), total=len(steps), desc="checkpoints"):
        diffs.append(diff_models(base, ckpt.model, prompts, **diff_kwargs).with_step(ckpt.step))
        chosen.append((ckpt.step, ckpt.path))
    if not diffs:
        raise ValueError("diff_trajectory: no checkpoint chosen (checkpoints=[]).")
    config = {**diffs[-1].config, "run_dir": str(run_dir), "steps": [s for s, _ in chosen],
              "tuned": [str(p) for _, p in chosen]}
    config.pop("step", None)
    return ModelDiff.concat(diffs, config=config)
