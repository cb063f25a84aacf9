"""A PPO run directory: its logs, its checkpoints, and how a run continues from them.

Layout of ``RUN_DIR``: ``config.yaml`` (the run's config), ``metrics.jsonl`` and ``samples.jsonl`` (append-only,
one record per line, each with a ``phase``), ``checkpoint-NNNNNN/`` (plain HF directories, written atomically by
`rlhf_interp.checkpoints.save_hf_model`), optionally ``tensorboard/``.

Why apart from the loop: the trainer decides *when* to log and save; this module decides *what* a checkpoint
holds and how a resumed run gets back to exactly the state it had, so that a killed and resumed run writes
the same files as an uninterrupted one.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

import torch

from rlhf_interp.bridge.hf import hf_state_dict, plain_param_name
from rlhf_interp.bridge.loading import load_hf_model
from rlhf_interp.bridge.run_dirs import checkpoint_dir, latest_checkpoint, list_checkpoints, read_meta
from rlhf_interp.checkpoints import save_hf_model
from rlhf_interp.core.io import append_jsonl, read_jsonl, trim_jsonl
from rlhf_interp.core.outdir import OutputError, claim_dir, lock_dir, read_marker, sweep_stale, write_marker

if TYPE_CHECKING:
    from rlhf_interp.ppo.config import PPOConfig
    from rlhf_interp.ppo.rollout import Rollout
    from rlhf_interp.ppo.state import TrainerState


class Checkpointable(Protocol):
    """What a checkpoint is written from and read back into (`PPOTrainer` is one): the weights (policy, LoRA
    adapter, value head), the `TrainerState`, and where and how the run logs. Nothing else of the trainer."""

    config: "PPOConfig"
    run_dir: Path
    state: "TrainerState"
    history: list[dict[str, Any]]
    hf_policy: Any
    peft_model: Any
    policy: Any
    head: torch.nn.Module
    device: torch.device
    dist: Any

APPEND_ONLY_LOGS = ("metrics.jsonl", "samples.jsonl")  # one record per line, each with a "phase"
TRAINER_STATE = "trainer_state.pt"
TRAIN_OUTPUTS = (*APPEND_ONLY_LOGS, "config.yaml", "checkpoint-*", "tensorboard", "wandb", "reward_models")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped training at a phase boundary; the message says which checkpoint holds it."""


# ----------------------------------------------------------------------------------------------
# Starting and resuming


def start_run(run_dir: str | Path, *, overwrite: bool = False, config: "PPOConfig | None" = None,
              inputs: dict[str, Any] | None = None) -> Path:
    """Claim ``run_dir`` for a new run before any model is loaded: not one of the run's inputs (``config``'s
    model, ref_model, prompts, reward model; ``inputs``), locked for this process, writable, and holding no other
    run (with ``overwrite`` the old training run's files are deleted; files the trainer does not write are kept)."""
    return claim_dir(run_dir, "train", TRAIN_OUTPUTS, overwrite=overwrite,
                     hint="continue it with --resume (PPOTrainer.resume)",
                     inputs={**(config_inputs(config) if config is not None else {}), **(inputs or {})})


def config_inputs(config: "PPOConfig") -> dict[str, Any]:
    """What a training config reads from disk, by field name (`rlhf_interp.core.outdir.check_not_input` skips
    names that are not local paths)."""
    fields = ("model", "ref_model", "prompts", "reward", "rm_refresh_source")
    return {f"config field {name}": getattr(config, name, None) for name in fields}


def resume_point(run_dir: str | Path) -> Path:
    """The checkpoint a run continues from, after sweeping what a kill left half-written. Refuses a directory
    that is not a PPO run, or one stopped before its first checkpoint (it must start again, with --overwrite)."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"No run directory {run_dir} to resume: start a run with `rlhf-interp train "
                                f"CONFIG --out {run_dir}`.")
    marker = read_marker(run_dir)
    if marker is not None and marker.get("command") != "train":
        raise OutputError(f"{run_dir} holds the output of `{marker.get('command')}`, not a PPO run: nothing to "
                          f"resume.")
    lock_dir(run_dir, "train --resume")  # one writer: before sweeping, trimming the logs or loading a model
    sweep_stale(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} has no config.yaml, so it is not a PPO run directory (or it was "
                                f"killed before starting): start it with `rlhf-interp train CONFIG --out {run_dir} "
                                f"--overwrite`.")
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        logged = len(_records(run_dir / "metrics.jsonl", tolerant=True))
        raise FileNotFoundError(
            f"No checkpoint-* directory in {run_dir} to resume from: the run stopped before its first checkpoint "
            f"({logged} phase(s) logged). Start it again with `rlhf-interp train {run_dir / 'config.yaml'} --out "
            f"{run_dir} --overwrite` (PPOTrainer(..., overwrite=True)); set checkpoint_every lower to lose less.")
    if marker is None:  # a run from before markers existed
        write_marker(run_dir, "train", TRAIN_OUTPUTS)
    return ckpt


@contextmanager
def stop_at_phase_boundary(describe: Callable[[], str]) -> Iterator[Callable[[], bool]]:
    """While training: the first Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current phase
    (so the checkpoint is of a whole phase); a second one stops at once. Yields ``requested()``.

    Only in the main thread (signal handlers can be set nowhere else); elsewhere signals act as usual.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        print(f"\nrlhf-interp: stopping after {describe()} (a checkpoint follows); press Ctrl-C again to stop now "
              f"without one.", file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested.is_set
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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
def merged_hf_model(trainer: Checkpointable) -> Iterator[Any]:
    """The HF model to export: LoRA merged into the weights (so any tool loads it) or the policy itself."""
    if trainer.peft_model is None:
        yield trainer.hf_policy
        return
    trainer.peft_model.merge_adapter()
    try:
        yield trainer.peft_model.base_model.model
    finally:
        trainer.peft_model.unmerge_adapter()


def save_checkpoint(trainer: Checkpointable) -> Path:
    """Write ``checkpoint-<phase>`` atomically: HF weights + tokenizer, value head, meta.json, trainer state."""
    config = trainer.config
    extra_tensors = {"value_head.safetensors": trainer.head.state_dict()}
    if trainer.peft_model is not None:
        from peft import get_peft_model_state_dict

        adapter = {plain_param_name(k): v for k, v in get_peft_model_state_dict(trainer.peft_model).items()}
        extra_tensors["adapter/adapter_model.safetensors"] = adapter
    phase = trainer.state.phase
    meta = {"step": phase, "base_model": config.model, "config": config.to_dict(),
            "metrics": trainer.history[-1] if trainer.history else {},
            "value_head": {"kind": config.value_head, "hook": config.value_head_hook}}
    target = checkpoint_dir(trainer.run_dir, phase)
    try:
        with merged_hf_model(trainer) as hf:
            path = save_hf_model(hf, trainer.policy.tokenizer, target, meta=meta, extra_tensors=extra_tensors,
                                 extra_files={TRAINER_STATE: trainer.state.state_dict()})
    except BaseException as err:
        err.rlhf_interp_checkpoint_failed = True  # the trainer does not try this write again on its way out
        raise
    prune_checkpoints(trainer.run_dir, config.keep_checkpoints)
    return path


def prune_checkpoints(run_dir: Path, keep: int | None) -> None:
    """Delete all but the newest ``keep`` checkpoints (``None``: keep all). Each is first renamed to
    ``.deleting-*`` (atomic), so a kill mid-delete never leaves a half-deleted ``checkpoint-*`` that looks whole;
    `sweep_stale` finishes the job."""
    if keep:
        for old in list_checkpoints(run_dir)[:-keep]:
            doomed = old.parent / f".deleting-{old.name}-{os.getpid()}-{time.time_ns()}"
            os.replace(old, doomed)
            shutil.rmtree(doomed, ignore_errors=True)


def load_checkpoint(trainer: Checkpointable, ckpt: Path) -> None:
    """Put ``trainer`` (freshly built from the run's config) back in the state it had when ``ckpt`` was written --
    weights, value head, `TrainerState` -- and trim the logs to that phase."""
    from safetensors.torch import load_file

    if trainer.peft_model is not None:  # the adapter's weights, in place; the base stays the (frozen) starting model
        from peft import get_peft_model_state_dict

        saved = load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))
        # the names `save_checkpoint` wrote: PEFT's, without the bridge's wrapper segments
        own = {plain_param_name(k): v for k, v in get_peft_model_state_dict(trainer.peft_model).items()}
        if saved.keys() != own.keys():
            raise ValueError(f"{ckpt / 'adapter'} does not match this run's LoRA adapter (lora_r, lora_targets): "
                             f"{sorted(set(saved) ^ set(own))[:3]} ...")
        with torch.no_grad():
            for key, value in saved.items():
                own[key].copy_(value)
    else:
        # Policy weights from the checkpoint; the reference stays the base model.
        hf, _, _ = load_hf_model(ckpt, device=trainer.device)
        with torch.no_grad():
            own = {plain_param_name(k): p for k, p in trainer.hf_policy.named_parameters()}
            for key, value in hf_state_dict(hf).items():
                if key in own:
                    own[key].copy_(value)
    trainer.head.load_state_dict(load_file(str(ckpt / "value_head.safetensors")))
    # optimizer, schedule, KL controller, reward statistics, phase, and the RM version that scored this phase
    trainer.state.load_state_dict(read_trainer_state(ckpt / TRAINER_STATE))
    apply_resume_changes(trainer, check_resume_config(ckpt, trainer.config))  # a changed setting takes effect
    trainer.history = trainer.dist.on_main(trim_logs, trainer.run_dir, trainer.state.phase)  # one process rewrites
    meta = read_meta(ckpt)
    if meta.get("base_model") not in (None, trainer.config.model):
        raise ValueError(f"Checkpoint {ckpt} was trained from {meta['base_model']!r}, config says "
                         f"{trainer.config.model!r}.")


# Settings that may differ on --resume from those the checkpoint was trained with: each takes effect from the next
# phase (`apply_resume_changes`; the lr schedule is rebuilt from ``phases``). Any other change is refused.
RESUME_CHANGEABLE = ("phases", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints", "tensorboard",
                     "wandb_project", "device", "kl_coef", "kl_target", "kl_horizon")


def check_resume_config(ckpt: Path, config: "PPOConfig") -> dict[str, tuple[Any, Any]]:
    """The settings in which ``config`` (the run's config.yaml with any --set) differs from the config checkpoint
    ``ckpt`` was trained with, ``{field: (then, now)}``. Refuses (ValueError naming each field) a change that could
    not take effect everywhere: anything outside `RESUME_CHANGEABLE`, and ``kl_coef`` under the adaptive
    controller (its coefficient is the controller's running state). Call it before loading a model."""
    from rlhf_interp.ppo.config import PPOConfig, upgrade_kl_record

    recorded = read_meta(ckpt).get("config")
    if not isinstance(recorded, dict):
        return {}
    try:
        saved = PPOConfig.from_dict(upgrade_kl_record(dict(recorded))).to_dict()
    except (ValueError, TypeError):  # written by an older version whose fields have since changed
        return {}
    new = config.to_dict()
    changed = {k: (saved[k], new[k]) for k in new if k in saved and saved[k] != new[k]}
    refused = [k for k in changed if k not in RESUME_CHANGEABLE or (k == "kl_coef" and config.adaptive_kl)]
    if refused:
        what = ", ".join(f"{k} ({changed[k][0]!r} -> {changed[k][1]!r})" for k in refused)
        raise ValueError(
            f"--resume continues {ckpt.parent} as {ckpt.name} was trained, but {what} changed (in its config.yaml or "
            f"by --set) and cannot take effect mid-run"
            + (" (kl_coef is the adaptive controller's running value; change kl_target instead)"
               if "kl_coef" in refused and config.adaptive_kl else "")
            + f". Put it back, or start a new run with it in another --out. What may change on --resume: "
              f"{', '.join(RESUME_CHANGEABLE)}.")
    return changed


def apply_resume_changes(trainer: Checkpointable, changed: dict[str, tuple[Any, Any]]) -> None:
    """Make the changed settings take effect in the restored state, not only in config.yaml: the KL controller's
    coefficient / target / horizon (the restored controller would otherwise keep the checkpoint's)."""
    cfg = trainer.config
    ctl = trainer.state.kl_ctl if hasattr(trainer, "state") else trainer.kl_ctl
    if "kl_coef" in changed and not cfg.adaptive_kl:
        ctl.coef = float(cfg.kl_coef)
    if "kl_target" in changed and hasattr(ctl, "target"):
        ctl.target = float(cfg.kl_target)
    if "kl_horizon" in changed and hasattr(ctl, "horizon"):
        ctl.horizon = cfg.kl_horizon


def read_trainer_state(path: Path) -> dict[str, Any]:
    """``trainer_state.pt`` with ``torch.load(weights_only=True)``: tensors, numbers, strings and containers only.
    A file holding anything else (a crafted pickle would run code as it loads) is refused, not opened."""
    import pickle

    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: that checkpoint cannot be resumed; delete {path.parent.name} "
                                f"to resume from the one before.")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds more than tensors and plain data, so it is refused unopened (unpickling it "
                         f"could run code: it was not written by this trainer, or was altered). Delete "
                         f"{path.parent.name} to resume from the checkpoint before it.") from err
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"{path} is not a readable trainer state ({str(err).splitlines()[0]}): delete "
                         f"{path.parent.name} to resume from the checkpoint before it.") from err
    needed = ("phase", "optimizer", "scheduler", "kl_controller", "reward_std")
    missing = [k for k in needed if k not in state] if isinstance(state, dict) else list(needed)
    if missing:
        raise ValueError(f"{path} is not a trainer state of this toolkit (missing {missing}).")
    return state


def trim_logs(run_dir: Path, phase: int) -> list[dict[str, Any]]:
    """Drop every log record of a phase after ``phase`` (they are run again); return the metrics kept."""
    from rlhf_interp.core.kl import upgrade_kl_record

    for name in APPEND_ONLY_LOGS:
        trim_log(run_dir / name, phase)
    return [upgrade_kl_record(r) for r in _records(run_dir / "metrics.jsonl")]  # old runs: kl_forward_* -> kl_pi_ref_*


def trim_log(path: Path, phase: int) -> int:
    """Rewrite an append-only JSONL log atomically with only its records up to ``phase``.

    A last line without its newline was torn by a kill mid-write (its phase came after the checkpoint, which
    is written after the logs): `trim_jsonl` drops it. Returns how many records were dropped.
    """
    return trim_jsonl(path, lambda record: record["phase"] <= phase)


def _records(path: Path, *, tolerant: bool = False) -> list[dict[str, Any]]:
    """The records of a JSONL log ([] when absent); ``tolerant``: stop at the first bad line instead of raising."""
    records: list[dict[str, Any]] = []
    if not path.exists():
        return records
    try:
        for _, record in read_jsonl(path):
            records.append(record)
    except ValueError:
        if not tolerant:
            raise
    return records
