"""Where the model is inside what a training tool wrote: run directories of this toolkit (their
``checkpoint-NNNNNN/`` folders), verl's ``huggingface/`` layouts, PEFT adapter directories.

Pure filesystem reading, no model: `rlhf_interp.checkpoints` writes this layout, the loader reads it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rlhf_interp.bridge.aliases import ModelLoadError

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
_NESTED_MODEL_DIRS = ("huggingface", "actor/huggingface", "actor", "policy", "model")


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """``RUN_DIR/checkpoint-000050`` for step 50."""
    return Path(run_dir) / f"checkpoint-{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Finished checkpoints of a run directory, oldest first (temporary ones are ignored)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))
             and (p / "config.json").exists()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest finished checkpoint of a run directory, or None."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def read_meta(checkpoint: str | Path) -> dict[str, Any]:
    """A checkpoint's ``meta.json`` (empty when it has none)."""
    path = Path(checkpoint) / "meta.json"
    return json.loads(path.read_text()) if path.exists() else {}


def find_model_dir(path: Path) -> Path:
    """Find the HF model directory inside what a training tool wrote.

    Accepts: a HF directory (config.json); a run directory of this toolkit (its latest checkpoint);
    verl's layout (``huggingface/`` or ``actor/huggingface/`` with the config, weights beside or merged);
    a PEFT adapter directory (``adapter_config.json``).
    """
    path = path.expanduser()
    if (path / "config.json").exists() or (path / "adapter_config.json").exists():
        return path
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest
    for sub in _NESTED_MODEL_DIRS:
        if (path / sub / "config.json").exists():
            return path / sub
    contents = sorted(p.name for p in path.iterdir())[:20] if path.is_dir() else []
    raise ModelLoadError(
        f"{path} is not a model directory: it has no config.json (nor adapter_config.json, nor "
        f"checkpoint-*/ subfolders). It contains: {contents}. A Hugging Face model directory needs "
        f"config.json plus *.safetensors (or pytorch_model.bin) and tokenizer files."
    )
