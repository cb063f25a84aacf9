"""The per-layer attribution for every checkpoint of a run: when and where does the fine-tuning form?

Each checkpoint is patched against the same base on the same texts, one checkpoint in memory at a time
(`rlhf_interp.bridge.RunDir.for_each_checkpoint`); the tables stack with a leading ``step`` column (ready for a
checkpoint x layer heat map).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from rlhf_interp.bridge import RunDir, load_model, model_device
from rlhf_interp.patching.activation import activation_patching


def patching_trajectory(base, run_dir: str | Path, texts: Sequence[str], *,
                        checkpoints: Sequence[tuple[int, Path]] | None = None, return_per_text: bool = False,
                        **patching_kwargs) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """`activation_patching` of each checkpoint (tuned) against ``base``, with a leading ``step`` column.

    ``checkpoints``: ``(step, path)`` pairs of this run (e.g. every other one of `RunDir.checkpoints`) instead of
    all of them; ``patching_kwargs`` go to `activation_patching` (components, layers, directions,
    reward_token_ids, batch_size). A directory without checkpoints is a FileNotFoundError. With
    ``return_per_text`` also the per-text sums (`rlhf_interp.patching.scores.PER_TEXT_COLUMNS`, with ``step``).
    """
    run = RunDir(run_dir)
    steps = [step for step, _ in checkpoints] if checkpoints is not None else run.steps
    dtype = next(base.parameters()).dtype

    def load(path: Path):
        return load_model(str(path), device=model_device(base), dtype=dtype)

    frames, texts_frames = [], []
    for ckpt in tqdm(run.for_each_checkpoint(steps, load=load), total=len(steps), desc="checkpoints"):
        table, per_text = activation_patching(base, ckpt.model, texts, return_per_text=True, **patching_kwargs)
        frames.append(table.assign(step=ckpt.step, checkpoint=str(ckpt.path)))
        texts_frames.append(per_text.assign(step=ckpt.step))
    if not frames:
        raise ValueError("patching_trajectory: no checkpoint chosen (checkpoints=[]).")
    out, per_text = pd.concat(frames, ignore_index=True), pd.concat(texts_frames, ignore_index=True)
    out = out[["step", *[c for c in out.columns if c != "step"]]]
    return (out, per_text[["step", *[c for c in per_text.columns if c != "step"]]]) if return_per_text else out
