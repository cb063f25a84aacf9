"""Checkpoints are plain Hugging Face directories, written atomically.

Layout of one checkpoint (``RUN_DIR/checkpoint-000050/``)::

    config.json, generation_config.json, model.safetensors, tokenizer files   # any HF tool loads this
    meta.json              # step, base model, run config, metrics at that step, library version
    value_head.safetensors # PPO value head (optional)
    adapter/               # PEFT adapter when trained with LoRA (the weights above are merged)
    trainer_state.pt       # optimizer, scheduler, RNG states, KL controller: what --resume needs

Why not ``bridge.original_model.save_pretrained``: the bridge wraps the HF modules in place, so the
state dict carries alias keys (``..._original_component...``) and HF refuses the shared tensors. We
save only the keys a fresh HF model of the same config expects.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def plain_param_name(key: str) -> str:
    """The Hugging Face name of a parameter of a bridge-wrapped (or merged-PEFT) model.

    Bridge aliases carry ``._original_component``; a merged PEFT layer keeps its weight in ``.base_layer``.
    """
    return key.replace("._original_component", "").replace(".base_layer", "")


def hf_state_dict(hf_model) -> dict[str, torch.Tensor]:
    """The clean Hugging Face state dict of a (possibly bridge-wrapped) model."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(hf_model.config)
    expected = set(fresh.state_dict().keys())
    clean: dict[str, torch.Tensor] = {}
    for key, tensor in hf_model.state_dict().items():
        plain = plain_param_name(key)
        if plain in expected and plain not in clean:
            clean[plain] = tensor
    if getattr(hf_model.config, "tie_word_embeddings", False):
        clean.pop("lm_head.weight", None)
    missing = expected - set(clean) - {"lm_head.weight"}
    if missing:
        raise RuntimeError(f"Could not find {len(missing)} HF weights in the model, e.g. {sorted(missing)[:3]}.")
    return clean


def _fresh_hf_model(hf_model, state: dict[str, torch.Tensor]):
    """An un-wrapped HF model of the same config holding ``state`` (so save_pretrained works)."""
    from transformers import AutoModelForCausalLM

    config = hf_model.config.__class__.from_dict(hf_model.config.to_dict())
    config.output_attentions = False
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict({k: v.detach().cpu() for k, v in state.items()}, strict=False, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    return fresh


def _atomic_dir(final: Path) -> Path:
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{int(time.time() * 1000)}"
    tmp.mkdir(parents=True)
    return tmp


def _commit_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` onto ``final``; an existing ``final`` is moved aside first and deleted after."""
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{int(time.time() * 1000)}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_hf_model(hf_model, tokenizer, out_dir: str | Path, *, meta: dict[str, Any] | None = None,
                  extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
                  extra_files: dict[str, Any] | None = None) -> Path:
    """Write a loadable HF directory atomically.

    ``extra_tensors``: ``{"value_head.safetensors": state_dict}``; ``extra_files``: ``{"trainer_state.pt": obj}``
    (saved with torch.save) or ``{"x.json": dict}``.
    """
    from safetensors.torch import save_file

    final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _atomic_dir(final)
    try:
        model = _fresh_hf_model(hf_model, hf_state_dict(hf_model))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name, tensors in (extra_tensors or {}).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / name))
        for name, obj in (extra_files or {}).items():
            if name.endswith(".json"):
                (tmp / name).write_text(json.dumps(obj, indent=2, default=str))
            else:
                torch.save(obj, tmp / name)
        if meta is not None:
            from rlhf_interp import __version__

            full_meta = {"rlhf_interp_version": __version__, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **meta}
            (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2, default=str))
        _commit_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
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
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def read_meta(checkpoint: str | Path) -> dict[str, Any]:
    path = Path(checkpoint) / "meta.json"
    return json.loads(path.read_text()) if path.exists() else {}
