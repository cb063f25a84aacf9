"""Checkpoints are plain Hugging Face directories, written atomically.

Layout of one checkpoint (``RUN_DIR/checkpoint-000050/``)::

    config.json, generation_config.json, model.safetensors, tokenizer files   # any HF tool loads this
    meta.json              # step, base model, run config, metrics at that step, library version
    value_head.safetensors # PPO value head (optional)
    adapter/               # PEFT adapter when trained with LoRA (the weights above are merged)
    trainer_state.pt       # optimizer, scheduler, RNG states, KL controller: what --resume needs

Writing lives here; reading the layout (``list_checkpoints``, ``latest_checkpoint``, ``read_meta``) lives in
`rlhf_interp.bridge.run_dirs` because the model loader needs it, and is re-exported here. The clean-weights
export (the bridge wraps HF modules in place, so its own state dict has alias keys HF refuses to save) is
`rlhf_interp.bridge.hf.save_pretrained_clean`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from rlhf_interp.bridge.hf import hf_state_dict, plain_param_name, save_pretrained_clean
from rlhf_interp.bridge.run_dirs import CHECKPOINT_PATTERN, checkpoint_dir, latest_checkpoint, list_checkpoints, read_meta
from rlhf_interp.core.io import atomic_dir, save_torch
from rlhf_interp.core.version import __version__


def save_hf_model(hf_model, tokenizer, out_dir: str | Path, *, meta: dict[str, Any] | None = None,
                  extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
                  extra_files: dict[str, Any] | None = None) -> Path:
    """Write a loadable HF directory atomically (a crash leaves the previous ``out_dir`` intact).

    ``hf_model``: a bridge or its HF model (``bridge.original_model``).

    ``extra_tensors``: ``{"value_head.safetensors": state_dict}``; ``extra_files``: ``{"trainer_state.pt": obj}``
    (saved with torch.save) or ``{"x.json": dict}``.
    """
    from safetensors.torch import save_file

    with atomic_dir(out_dir) as tmp:
        save_pretrained_clean(hf_model, tokenizer, tmp)
        for name, tensors in (extra_tensors or {}).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / name))
        for name, obj in (extra_files or {}).items():
            if name.endswith(".json"):
                (tmp / name).write_text(json.dumps(obj, indent=2, default=str))
            else:
                save_torch(obj, tmp / name)  # a full disk: an OSError naming the file, not torch's enforce-fail
        if meta is not None:
            full_meta = {"rlhf_interp_version": __version__, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **meta}
            (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2, default=str))
    return Path(out_dir)


__all__ = ["CHECKPOINT_PATTERN", "checkpoint_dir", "hf_state_dict", "latest_checkpoint", "list_checkpoints",
           "plain_param_name", "read_meta", "save_hf_model"]
