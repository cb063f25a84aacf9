"""Fine-tuned models as points on the frontier: PPO checkpoints, measured like every edit.

A checkpoint is placed at its measured KL: sample from it on the frontier's prompts, score with the same
reward, and sum the exact per-token KL(tuned || base) along its own samples (`evaluate_edit` with the
base model as reference). What kind of fine-tuning made it (full, LoRA, first N layers frozen) and how
long it took (the sum of the run's per-phase ``seconds`` in ``metrics.jsonl`` up to the checkpoint's
phase) come from the run directory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from rlhf_interp.bridge import list_checkpoints, load_model, read_meta
from rlhf_interp.measure import evaluate_edit


@dataclass
class RunInfo:
    """What a PPO run directory holds: its checkpoints (step -> path) and how it was trained."""

    path: Path
    checkpoints: dict[int, Path]
    config: dict[str, Any]

    @property
    def freeze_layers(self) -> int:
        return int(self.config.get("freeze_layers", 0) or 0)

    @property
    def lora_r(self) -> int:
        return int(self.config.get("lora_r", 0) or 0)

    @property
    def method(self) -> str:
        """"PPO (full)", "PPO LoRA r=8", "PPO, first 10 layers frozen" (LoRA and freezing may combine)."""
        parts = ["PPO"]
        if self.lora_r:
            parts.append(f"LoRA r={self.lora_r}")
        if self.freeze_layers:
            parts.append(f"first {self.freeze_layers} layers frozen")
        return parts[0] + (" " + ", ".join(parts[1:]) if len(parts) > 1 else " (all layers)")

    def wall_seconds(self, step: int) -> float:
        """Training seconds up to phase ``step`` (sum of ``seconds`` in metrics.jsonl; NaN without the log)."""
        log = self.path / "metrics.jsonl"
        if not log.exists():
            return math.nan
        total = 0.0
        for line in log.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                if int(record.get("phase", 0)) <= step:
                    total += float(record.get("seconds", 0.0))
        return total


def read_run(run_dir: str | Path) -> RunInfo:
    """A run directory's checkpoints and training config (from the newest checkpoint's meta.json)."""
    run_dir = Path(run_dir)
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir} holds no finished checkpoint-NNNNNN/ directories (is it a PPO run "
                                f"directory written by `rlhf-interp train`?).")
    by_step = {}
    for path in checkpoints:
        step = read_meta(path).get("step")
        by_step[int(step) if step is not None else int(path.name.split("-")[-1])] = path
    config = read_meta(checkpoints[-1]).get("config", {})
    return RunInfo(run_dir, dict(sorted(by_step.items())), config)


def checkpoint_points(base, run: RunInfo, prompts: Sequence[str], reward: str | Callable, *,
                      steps: Sequence[int] | str = "all", max_new_tokens: int = 24, seed: int = 0,
                      on_model: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per checkpoint (``steps``: "all", "last" or step numbers): method, run, step, wall_seconds,
    freeze_layers, lora_r, then `evaluate_edit`'s columns (KL against ``base``). ``on_model(tuned, row)``
    may add columns while the checkpoint is loaded (e.g. collateral KL)."""
    if steps == "all":
        chosen = list(run.checkpoints)
    elif steps == "last":
        chosen = [max(run.checkpoints)]
    else:
        chosen = [int(s) for s in steps]
        missing = [s for s in chosen if s not in run.checkpoints]
        if missing:
            raise ValueError(f"{run.path} has no checkpoint for step(s) {missing}; it has {list(run.checkpoints)}.")
    rows = []
    for step in chosen:
        tuned = load_model(run.checkpoints[step], device=base.cfg.device)
        summary = evaluate_edit(tuned, None, prompts, reward, reference=base, max_new_tokens=max_new_tokens,
                                seed=seed).iloc[0].to_dict()
        row = {"method": run.method, "run": str(run.path), "step": step, "wall_seconds": run.wall_seconds(step),
               "freeze_layers": run.freeze_layers, "lora_r": run.lora_r, **summary}
        if on_model is not None:
            row.update(on_model(tuned, row))
        rows.append(row)
        del tuned
    return pd.DataFrame(rows)


__all__ = ["RunInfo", "checkpoint_points", "read_run"]
