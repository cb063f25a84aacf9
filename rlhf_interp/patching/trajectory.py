"""The per-layer attribution for every checkpoint of a run: when and where does the fine-tuning form?

Each checkpoint is patched against the same base on the same texts, one checkpoint in memory at a time;
the tables stack with a leading ``step`` column (ready for a checkpoint x layer heat map).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from rlhf_interp.bridge import load_model, model_device
from rlhf_interp.checkpoints import list_checkpoints
from rlhf_interp.diff import checkpoint_step
from rlhf_interp.patching.activation import activation_patching


def run_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, checkpoint_dir)`` of a run directory, oldest first; a clear error when it has none."""
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir} holds no finished checkpoint-NNNNNN/ directories (with config.json); "
                                f"pass a run directory written by `rlhf-interp train`.")
    return [(checkpoint_step(c), c) for c in checkpoints]


def patching_trajectory(base, run_dir: str | Path, texts: Sequence[str], *,
                        checkpoints: Sequence[tuple[int, Path]] | None = None, **patching_kwargs) -> pd.DataFrame:
    """`activation_patching` of each checkpoint (tuned) against ``base``, with a leading ``step`` column.

    ``checkpoints`` overrides the list (e.g. every other one of `run_checkpoints`); ``patching_kwargs`` go to
    `activation_patching` (components, layers, directions, reward_token_ids, batch_size).
    """
    chosen = list(checkpoints) if checkpoints is not None else run_checkpoints(run_dir)
    dtype = next(base.parameters()).dtype
    frames = []
    for step, path in tqdm(chosen, desc="checkpoints"):
        tuned = load_model(str(path), device=model_device(base), dtype=dtype)
        table = activation_patching(base, tuned, texts, **patching_kwargs)
        frames.append(table.assign(step=step, checkpoint=str(path)))
        del tuned
        gc.collect()
    out = pd.concat(frames, ignore_index=True)
    return out[["step", *[c for c in out.columns if c != "step"]]]
