"""A PPO run directory: its logs, its checkpoints, and how a run continues from them.

Layout of ``RUN_DIR``: ``config.yaml`` (the run's config), ``metrics.jsonl`` and ``samples.jsonl`` (append-only,
one record per line, each with a ``phase``), ``checkpoint-NNNNNN/`` (plain HF directories, written atomically by
`rlhf_interp.checkpoints.save_hf_model`), optionally ``tensorboard/``.

Why apart from the loop: the trainer decides *when* to log and save; this module decides *what* a checkpoint
holds and how a resumed run gets back to exactly the state it had, so that a killed and resumed run writes
the same files as an uninterrupted one.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

from rlhf_interp.bridge.hf import hf_state_dict, plain_param_name
from rlhf_interp.bridge.loading import load_hf_model
from rlhf_interp.bridge.run_dirs import checkpoint_dir, list_checkpoints, read_meta
from rlhf_interp.checkpoints import save_hf_model
from rlhf_interp.core.io import append_jsonl, trim_jsonl

if TYPE_CHECKING:
    from rlhf_interp.ppo.config import PPOConfig
    from rlhf_interp.ppo.rollout import Rollout
    from rlhf_interp.ppo.trainer import PPOTrainer

APPEND_ONLY_LOGS = ("metrics.jsonl", "samples.jsonl")  # one record per line, each with a "phase"
TRAINER_STATE = "trainer_state.pt"


class RunLoggers:
    """Where a phase's metrics and samples go: the JSONL logs, and TensorBoard / W&B when configured."""

    def __init__(self, run_dir: Path, config: "PPOConfig"):
        self.run_dir, self.config = run_dir, config
        self._tb = self._wandb = None

    def open(self) -> None:
        cfg = self.config
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                print("tensorboard is not installed (pip install tensorboard); logging to metrics.jsonl only.")
        if cfg.wandb_project:
            try:
                import wandb

                self._wandb = wandb.init(project=cfg.wandb_project, config=cfg.to_dict(), dir=str(self.run_dir))
            except ImportError:
                print("wandb is not installed (pip install wandb); logging to metrics.jsonl only.")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        self._tb = self._wandb = None

    def log(self, phase: int, metrics: dict[str, Any], rollout: "Rollout") -> None:
        """Log phase ``phase`` (counted from 1): metrics every ``log_every``, samples every ``sample_every``."""
        cfg = self.config
        if phase % cfg.log_every == 0 or phase == cfg.phases:
            append_jsonl(self.run_dir / "metrics.jsonl", metrics)
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, value, phase)
        if self._wandb is not None:
            self._wandb.log(metrics, step=phase)
        if cfg.sample_every and (phase % cfg.sample_every == 0 or phase == 1):
            for prompt, completion, value in zip(rollout.prompts, rollout.completions, rollout.scores.tolist()):
                append_jsonl(self.run_dir / "samples.jsonl", {"phase": phase, "prompt": prompt,
                                                              "completion": completion, "reward": value})


# ----------------------------------------------------------------------------------------------
# Checkpoints


@contextmanager
def merged_hf_model(trainer: "PPOTrainer") -> Iterator[Any]:
    """The HF model to export: LoRA merged into the weights (so any tool loads it) or the policy itself."""
    if trainer.peft_model is None:
        yield trainer.hf_policy
        return
    trainer.peft_model.merge_adapter()
    try:
        yield trainer.peft_model.base_model.model
    finally:
        trainer.peft_model.unmerge_adapter()


def trainer_state(trainer: "PPOTrainer") -> dict[str, Any]:
    """Everything besides the weights that the next phase depends on (plain tensors, numbers and dicts:
    it loads with ``torch.load(weights_only=True)``)."""
    return {
        "phase": trainer.phase,
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "kl_controller": trainer.kl_ctl.state_dict(),
        "reward_std": trainer.reward_std.state_dict(),
    }


def save_checkpoint(trainer: "PPOTrainer") -> Path:
    """Write ``checkpoint-<phase>`` atomically: HF weights + tokenizer, value head, meta.json, trainer state."""
    config = trainer.config
    extra_tensors = {"value_head.safetensors": trainer.head.state_dict()}
    if trainer.peft_model is not None:
        from peft import get_peft_model_state_dict

        adapter = {plain_param_name(k): v for k, v in get_peft_model_state_dict(trainer.peft_model).items()}
        extra_tensors["adapter/adapter_model.safetensors"] = adapter
    meta = {"step": trainer.phase, "base_model": config.model, "config": config.to_dict(),
            "metrics": trainer.history[-1] if trainer.history else {},
            "value_head": {"kind": config.value_head, "hook": config.value_head_hook}}
    with merged_hf_model(trainer) as hf:
        path = save_hf_model(hf, trainer.policy.tokenizer, checkpoint_dir(trainer.run_dir, trainer.phase), meta=meta,
                             extra_tensors=extra_tensors, extra_files={TRAINER_STATE: trainer_state(trainer)})
    prune_checkpoints(trainer.run_dir, config.keep_checkpoints)
    return path


def prune_checkpoints(run_dir: Path, keep: int | None) -> None:
    """Delete all but the newest ``keep`` checkpoints (``None``: keep all)."""
    if keep:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(trainer: "PPOTrainer", ckpt: Path) -> None:
    """Put ``trainer`` back in the state it had when ``ckpt`` was written, and trim the logs to that phase."""
    from safetensors.torch import load_file

    if trainer.peft_model is not None:
        trainer._build_models(trainer.config.model, adapter_dir=ckpt / "adapter")
    else:
        # Policy weights from the checkpoint; the reference stays the base model.
        hf, _, _ = load_hf_model(ckpt, device=trainer.device)
        with torch.no_grad():
            own = {plain_param_name(k): p for k, p in trainer.hf_policy.named_parameters()}
            for key, value in hf_state_dict(hf).items():
                if key in own:
                    own[key].copy_(value)
    trainer.head.load_state_dict(load_file(str(ckpt / "value_head.safetensors")))
    trainer._build_optimizer()
    state = torch.load(ckpt / TRAINER_STATE, weights_only=True)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.kl_ctl.load_state_dict(state["kl_controller"])
    trainer.reward_std.load_state_dict(state["reward_std"])
    trainer.phase = int(state["phase"])
    trainer.history = trim_logs(trainer.run_dir, trainer.phase)
    meta = read_meta(ckpt)
    if meta.get("base_model") not in (None, trainer.config.model):
        raise ValueError(f"Checkpoint {ckpt} was trained from {meta['base_model']!r}, config says "
                         f"{trainer.config.model!r}.")


def trim_logs(run_dir: Path, phase: int) -> list[dict[str, Any]]:
    """Drop every log record of a phase after ``phase`` (they are run again); return the metrics kept."""
    for name in APPEND_ONLY_LOGS:
        trim_log(run_dir / name, phase)
    return [r for r in _records(run_dir / "metrics.jsonl")]


def trim_log(path: Path, phase: int) -> int:
    """Rewrite an append-only JSONL log atomically with only its records up to ``phase``.

    A last line without its newline was torn by a kill mid-write (its phase came after the checkpoint, which
    is written after the logs): `trim_jsonl` drops it. Returns how many records were dropped.
    """
    return trim_jsonl(path, lambda record: record["phase"] <= phase)


def _records(path: Path) -> list[dict[str, Any]]:
    from rlhf_interp.core.io import read_jsonl

    return [r for _, r in read_jsonl(path)] if path.exists() else []
