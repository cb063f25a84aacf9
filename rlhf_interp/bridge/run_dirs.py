"""Where the model is inside what a training tool wrote, recognised from the directory layout alone.

Pure filesystem reading, no model: `rlhf_interp.checkpoints` writes our layout, the loader reads every layout.
`RunDir` is the one reader of a run directory of ours (checkpoints by step, latest, metrics, samples, config,
and a loop over the checkpoints): diff, patching, frontier, the CLI and the analyses read runs through it.

Layouts recognised (`resolve_layout`), each as its tool writes it:

- a Hugging Face model directory (``config.json`` + ``model*.safetensors`` / ``pytorch_model*.bin``): ours,
  TRL's ``save_model`` / ``checkpoint-N/`` (PPO saves the policy only), OpenRLHF's ``--save_path`` and
  ``--ckpt_path/global_stepN_hf/`` (``--save_hf_ckpt``), verl's merged ``actor/huggingface/``;
- a PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors`` or ``.bin``): TRL LoRA checkpoints,
  OpenRLHF LoRA saves (which also carry the base ``config.json``; ZeRO-3 writes ``adapter_model.bin``),
  verl's ``actor/lora_adapter/``;
- run directories: ours and TRL's (``checkpoint-N/``, the newest by N), OpenRLHF's ``--ckpt_path``
  (``global_stepN_hf/``), verl's experiment directory (``global_step_N/``, the one named in
  ``latest_checkpointed_iteration.txt``) and its ``global_step_N/actor/``.

Layouts that hold no loadable model raise `UnconvertedCheckpointError`, naming the tool and the command that
converts them: verl FSDP shards before the model merger (``model_world_size_W_rank_R.pt``), verl Megatron
``dist_ckpt/``, DeepSpeed ZeRO states (OpenRLHF ``_actor/global_stepN/``).
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from rlhf_interp.bridge.aliases import ModelLoadError

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")  # ours (zero-padded) and the HF Trainer's (TRL)
_VERL_STEP = re.compile(r"^global_step_(\d+)$")
_OPENRLHF_HF_STEP = re.compile(r"^global_step(\d+)_hf$")
_DEEPSPEED_STEP = re.compile(r"^global_step(\d+)$")
_FSDP_SHARD = re.compile(r"^model_world_size_(\d+)_rank_(\d+)\.pt$")
_NESTED_MODEL_DIRS = ("huggingface", "actor", "policy", "model")
_WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "pytorch_model.bin", "pytorch_model-*-of-*.bin",
                    "*.safetensors")
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")

HF_DIR, ADAPTER = "Hugging Face model directory", "PEFT adapter"


class UnconvertedCheckpointError(ModelLoadError):
    """A training tool's checkpoint that holds no Hugging Face model yet; the message names the conversion."""


@dataclass(frozen=True)
class Layout:
    """A loadable model inside what a tool wrote: ``path`` holds the HF model or the adapter, ``kind`` says
    which (`HF_DIR` or `ADAPTER`), ``tool`` who most likely wrote it (for messages and metadata)."""

    path: Path
    kind: str
    tool: str


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


def checkpoint_step(checkpoint: str | Path) -> int:
    """The training step of a checkpoint: ``meta.json``'s ``step``, else the number in ``checkpoint-NNNNNN``."""
    meta = read_meta(checkpoint)
    if "step" in meta:
        return int(meta["step"])
    match = CHECKPOINT_PATTERN.match(Path(checkpoint).name)
    if match is None:
        raise ValueError(f"{checkpoint}: no 'step' in meta.json and the name is not checkpoint-NNNNNN.")
    return int(match.group(1))


@dataclass
class Checkpoint:
    """One checkpoint of a run as `RunDir.for_each_checkpoint` hands it out: its step and directory, and the
    loaded model while the loop body runs (when asked to load; dropped before the next one loads)."""

    step: int
    path: Path
    model: Any = None


@dataclass(frozen=True, init=False)
class RunDir:
    """A run directory written by `rlhf-interp train`: ``config.yaml``, ``metrics.jsonl``, ``samples.jsonl``
    and ``checkpoint-NNNNNN/`` folders (layout: `rlhf_interp.ppo.run_dir`). Reading only; the trainer writes.

    Why one class: listing, picking and looping over a run's checkpoints and reading its logs was written in
    diff, patching, frontier, the CLI and every analysis, each with its own error message.
    """

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path).expanduser())

    @property
    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, checkpoint_dir)`` of every finished checkpoint, oldest first ([] when there are none)."""
        return sorted((checkpoint_step(c), c) for c in list_checkpoints(self.path))

    def require_checkpoints(self) -> list[tuple[int, Path]]:
        """`checkpoints`, or a FileNotFoundError saying what the directory should be when it has none."""
        found = self.checkpoints
        if not found:
            raise FileNotFoundError(f"{self.path} holds no finished checkpoint-NNNNNN/ directories (with "
                                    f"config.json): pass a run directory written by `rlhf-interp train`.")
        return found

    @property
    def steps(self) -> list[int]:
        return [step for step, _ in self.checkpoints]

    @property
    def latest(self) -> Path | None:
        """The newest finished checkpoint, or None."""
        return latest_checkpoint(self.path)

    def checkpoint(self, step: int) -> Path:
        """The checkpoint of ``step``; a ValueError naming the steps there are when it has none."""
        found = dict(self.checkpoints)
        if int(step) not in found:
            raise ValueError(f"{self.path} has no checkpoint for step {step}; it has {sorted(found)}.")
        return found[int(step)]

    def config(self) -> dict[str, Any]:
        """The run's config: ``config.yaml``, else the newest checkpoint's ``meta.json`` (``{}`` if neither)."""
        import yaml

        path = self.path / "config.yaml"
        if path.exists():
            return yaml.safe_load(path.read_text()) or {}
        latest = self.latest
        return dict(read_meta(latest).get("config", {})) if latest is not None else {}

    def metrics(self) -> "pd.DataFrame":
        """``metrics.jsonl`` as one row per phase; KL names logged before issue 29 read as today's."""
        from rlhf_interp.core.kl import upgrade_kl_record

        return self._log("metrics.jsonl", upgrade_kl_record)

    def samples(self) -> "pd.DataFrame":
        """``samples.jsonl`` as one row per logged sample (phase, prompt, completion, reward ...)."""
        return self._log("samples.jsonl", None)

    def _log(self, name: str, upgrade: Callable[[dict], dict] | None) -> "pd.DataFrame":
        import pandas as pd

        from rlhf_interp.core.io import read_jsonl

        path = self.path / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: is {self.path} a run directory written by "
                                    f"`rlhf-interp train`?")
        return pd.DataFrame([upgrade(r) if upgrade else r for _, r in read_jsonl(path)])

    def for_each_checkpoint(self, steps: Sequence[int] | None = None, *,
                            load: Callable[[Path], Any] | None = None) -> Iterator[Checkpoint]:
        """Each checkpoint (``steps``: those steps, in that order; default all, oldest first) as a `Checkpoint`.

        ``load(path) -> model`` (e.g. ``lambda p: load_model(p, device=...)``) loads one checkpoint at a time
        into ``.model``; it is dropped and garbage-collected before the next one loads, so keep no other
        reference to it past the loop body. Raises FileNotFoundError when the run has no checkpoint.
        """
        found = self.require_checkpoints()
        chosen = [(int(s), self.checkpoint(s)) for s in steps] if steps is not None else found
        for step, path in chosen:
            item = Checkpoint(step, path, load(path) if load is not None else None)
            yield item
            if load is not None:
                item.model = None
                gc.collect()


def find_model_dir(path: Path) -> Path:
    """The directory holding the HF model (or PEFT adapter) inside ``path``; see `resolve_layout`."""
    return resolve_layout(path).path


# ----------------------------------------------------------------------------------------------
# Recognising layouts


def has_weights(path: Path) -> bool:
    """Whether ``path`` holds full model weights (any of the file names ``save_pretrained`` writes)."""
    return any(f.name not in _ADAPTER_WEIGHTS and not f.name.startswith("adapter_")
               for pattern in _WEIGHT_PATTERNS for f in path.glob(pattern))


def is_adapter(path: Path) -> bool:
    return (path / "adapter_config.json").exists() and any((path / f).exists() for f in _ADAPTER_WEIGHTS)


def _numbered(path: Path, pattern: re.Pattern) -> list[tuple[int, Path]]:
    """Subdirectories whose name matches ``pattern`` (one integer group), sorted by that integer."""
    if not path.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in path.iterdir() if p.is_dir() and (m := pattern.match(p.name)))


def _tool_of(path: Path) -> str:
    if (path / "meta.json").exists():
        return "rlhf_interp"
    if (path / "trainer_state.json").exists() or (path / "training_args.bin").exists():
        return "TRL / transformers Trainer"
    if path.name == "huggingface" and path.parent.name == "actor":
        return "verl (merged)"
    if _OPENRLHF_HF_STEP.match(path.name):
        return "OpenRLHF (--save_hf_ckpt)"
    return "unknown"


def resolve_layout(path: str | Path, _depth: int = 0) -> Layout:
    """Find the model in ``path`` by its layout (module docstring); raise a clear error when there is none."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"{path} is not a directory.")
    if _depth > 4:
        raise ModelLoadError(f"{path}: nested too deep while looking for a model directory.")

    if (path / "config.json").exists() and has_weights(path):
        return Layout(path, HF_DIR, _tool_of(path))
    if is_adapter(path):
        tool = "OpenRLHF (LoRA)" if (path / "config.json").exists() else (
            "verl (LoRA)" if path.name == "lora_adapter" else "PEFT / TRL (LoRA)")
        return Layout(path, ADAPTER, tool)
    if (path / "adapter_config.json").exists():
        raise ModelLoadError(f"{path} has adapter_config.json but no adapter weights "
                             f"({' or '.join(_ADAPTER_WEIGHTS)}): the save was interrupted or the files were moved.")

    _refuse_unconverted(path)
    if (path / "config.json").exists() and not (path / "huggingface").is_dir():
        raise ModelLoadError(f"{path} has config.json but no weights (model.safetensors, model-*-of-*.safetensors "
                             f"or pytorch_model.bin): it is a config-only directory, not a model.")

    for steps, what in ((_numbered(path, CHECKPOINT_PATTERN), "checkpoint-N"),
                        (_numbered(path, _OPENRLHF_HF_STEP), "global_stepN_hf")):
        loadable = [p for _, p in steps if (p / "config.json").exists() and has_weights(p) or is_adapter(p)]
        if loadable:
            return resolve_layout(loadable[-1], _depth + 1)
        if steps:
            raise ModelLoadError(f"{path} has {what}/ folders ({', '.join(p.name for _, p in steps[-3:])}) but none "
                                 f"holds a model (config.json + weights, or a PEFT adapter).")

    verl_steps = _numbered(path, _VERL_STEP)
    if verl_steps:
        return resolve_layout(_verl_latest(path, verl_steps), _depth + 1)
    errors: list[ModelLoadError] = []
    for sub in ("huggingface", "lora_adapter", "actor", "policy", "model"):
        if (path / sub).is_dir() and _may_hold_model(path / sub):
            try:
                return resolve_layout(path / sub, _depth + 1)
            except ModelLoadError as err:
                errors.append(err)
    _refuse_deepspeed(path)
    if errors:  # the most useful failure: a named conversion first
        raise next((e for e in errors if isinstance(e, UnconvertedCheckpointError)), errors[0])

    contents = sorted(p.name for p in path.iterdir())[:20]
    raise ModelLoadError(
        f"{path} is not a model directory: no config.json with weights, no PEFT adapter, no checkpoint-N/ "
        f"(ours, TRL), global_step_N/ (verl) or global_stepN_hf/ (OpenRLHF) folders. It contains: {contents}. "
        f"A Hugging Face model directory needs config.json plus *.safetensors (or pytorch_model.bin) and "
        f"tokenizer files."
    )


def _may_hold_model(path: Path) -> bool:
    """Worth descending into: it has a config, an adapter, or shards we can name the conversion of."""
    return any((path / f).exists() for f in ("config.json", "adapter_config.json", "huggingface", "lora_adapter",
                                             "dist_ckpt")) or bool(_fsdp_shards(path))


def _verl_latest(path: Path, steps: list[tuple[int, Path]]) -> Path:
    """verl writes the newest step into ``latest_checkpointed_iteration.txt``; else take the largest N."""
    marker = path / "latest_checkpointed_iteration.txt"
    if marker.exists():
        text = marker.read_text().strip()
        chosen = path / f"global_step_{text}"
        if text.isdigit() and chosen.is_dir():
            return chosen
    return steps[-1][1]


def _fsdp_shards(path: Path) -> list[Path]:
    return sorted(p for p in path.glob("model_world_size_*_rank_*.pt") if _FSDP_SHARD.match(p.name))


def _refuse_unconverted(path: Path) -> None:
    """Raise `UnconvertedCheckpointError` for training states that hold no HF model (the message says how
    to convert them); return when ``path`` is not one of them."""
    actor = path.parent if path.name == "huggingface" and _fsdp_shards(path.parent) else path
    shards = _fsdp_shards(actor)
    hf = actor / "huggingface"
    if shards and not ((hf / "config.json").exists() and has_weights(hf)) and not is_adapter(actor / "lora_adapter"):
        world = _FSDP_SHARD.match(shards[0].name).group(1)
        raise UnconvertedCheckpointError(
            f"{actor} is a verl FSDP actor checkpoint ({len(shards)} of {world} model_world_size_{world}_rank_*.pt "
            f"shards) whose huggingface/ folder holds the config and tokenizer but no merged weights. Merge the "
            f"shards with verl's model merger, then load the merged directory:\n"
            f"    python -m verl.model_merger merge --backend fsdp --local_dir {actor} --target_dir {hf}\n"
            f"(older verl: python scripts/model_merger.py merge --backend fsdp --local_dir {actor} "
            f"--target_dir {hf}), or train with trainer.checkpoint.save_contents including 'hf_model'."
        )
    if (actor / "dist_ckpt").is_dir() and not ((hf / "config.json").exists() and has_weights(hf)):
        raise UnconvertedCheckpointError(
            f"{actor} is a verl Megatron checkpoint (dist_ckpt/) without merged Hugging Face weights. Convert it:\n"
            f"    python -m verl.model_merger merge --backend megatron --local_dir {actor} --target_dir {hf}")


def _refuse_deepspeed(path: Path) -> None:
    """DeepSpeed ZeRO states (OpenRLHF ``--ckpt_path/_actor``): ``latest`` + ``global_stepN/*model_states.pt``."""
    step_dir = path if list(path.glob("*model_states.pt")) else None
    if step_dir is None:
        steps = [p for _, p in _numbered(path, _DEEPSPEED_STEP) if list(p.glob("*model_states.pt"))]
        step_dir = steps[-1] if steps else None
        if (path / "latest").is_file():
            named = path / (path / "latest").read_text().strip()
            step_dir = named if named.is_dir() else step_dir
    if step_dir is None:
        for sub in ("_actor", "_critic"):
            if (path / sub).is_dir():
                _refuse_deepspeed(path / sub)
        return
    root = step_dir.parent
    script = root / "zero_to_fp32.py"
    runner = f"python {script}" if script.exists() else "python -m deepspeed.utils.zero_to_fp32"
    raise UnconvertedCheckpointError(
        f"{step_dir} is a DeepSpeed ZeRO training state (OpenRLHF --ckpt_path), not a Hugging Face model. Either "
        f"load the HF save OpenRLHF writes at --save_path (or at --ckpt_path/global_stepN_hf/ with --save_hf_ckpt), "
        f"or consolidate the shards and add the base model's config and tokenizer:\n"
        f"    {runner} {root} OUT_DIR --tag {step_dir.name} --safe_serialization\n"
        f"    cp BASE_MODEL/config.json BASE_MODEL/tokenizer* OUT_DIR/"
    )
