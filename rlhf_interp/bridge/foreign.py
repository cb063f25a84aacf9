"""Checkpoints other tools wrote: TRL value-head models and DDP / compiled prefixes (keys to strip),
PEFT adapter directories (merged into their base), and Hub ids (when the Hub is reachable)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from rlhf_interp.bridge.aliases import EMBEDDED_ALIAS, KNOWN_ALIASES, ModelLoadError

WRAPPER_PREFIXES = ("pretrained_model.", "base_model.model.", "module.", "_orig_mod.")
HEAD_PREFIXES = ("v_head.", "score.", "value_head.")  # value / score heads are not part of the causal LM


def clean_foreign_state_dict(model_dir: Path) -> dict[str, torch.Tensor] | None:
    """A state dict with wrapper prefixes stripped (TRL value-head models, DDP, compile), or None when the
    weights are already plain HF keys."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    keys: list[str] = []
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            keys.extend(handle.keys())
    if not any(k.startswith(WRAPPER_PREFIXES) for k in keys):
        return None
    state: dict[str, torch.Tensor] = {}
    for f in files:
        for key, tensor in load_file(str(f)).items():
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix):]
            if not key.startswith(HEAD_PREFIXES):
                state[key] = tensor
    return state


def model_from_state_dict(model_dir: Path, state: dict[str, torch.Tensor], dtype: torch.dtype):
    """A HF causal LM of ``model_dir``'s config holding ``state`` (tied unembedding may be absent)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="eager")
    missing, _ = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing:
        raise ModelLoadError(f"{model_dir}: weights are missing {len(missing)} tensors, e.g. {missing[:3]}.")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model


def load_peft_adapter(model_dir: Path, device: torch.device, dtype: torch.dtype, load_base: Callable):
    """A PEFT/LoRA adapter directory: load its base model (``load_base(name, device=, dtype=)``), merge the
    adapter into the weights. Returns ``(hf_model, tokenizer, source)``."""
    from peft import PeftModel

    from rlhf_interp.bridge.embedded import load_tokenizer

    base_name = json.loads((model_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base_name:
        raise ModelLoadError(f"{model_dir}/adapter_config.json names no base_model_name_or_path.")
    base, tokenizer, _ = load_base(base_name, device=device, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(model_dir)).merge_and_unload()
    if has_tokenizer(model_dir):
        tokenizer = load_tokenizer(model_dir)
    return merged.eval(), tokenizer, str(model_dir)


def load_from_hub(name: str, device: torch.device, dtype: torch.dtype):
    """A Hub id, when the Hub is reachable. Returns ``(hf_model, tokenizer, name)``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, attn_implementation="eager")
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"Could not load {name!r}: it is not a known alias ({', '.join(sorted(KNOWN_ALIASES))}), "
            f"not a local directory, and the Hugging Face Hub did not provide it (unreachable, or no "
            f"such model): {str(err).splitlines()[0]}\n"
            f"Fix: pass a local model directory, or use the embedded model '{EMBEDDED_ALIAS}' (works offline)."
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer, name


def has_tokenizer(model_dir: Path) -> bool:
    return any((model_dir / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))
