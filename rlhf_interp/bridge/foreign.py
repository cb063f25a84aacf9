"""Loading what other tools wrote, once `run_dirs.resolve_layout` has found it.

- Weights whose keys carry a wrapper prefix (TRL's ``AutoModelForCausalLMWithValueHead``: ``pretrained_model.``;
  DDP ``module.``; ``torch.compile`` ``_orig_mod.``; a PEFT model saved whole: ``base_model.model.``) or extra
  heads (TRL's ``v_head.*``, score / value heads): the prefix is stripped and the heads dropped, from
  safetensors and from ``pytorch_model*.bin`` alike.
- PEFT adapters (TRL / OpenRLHF / verl LoRA): the base model named in ``adapter_config.json`` is loaded and the
  adapter merged into it.
- Hub ids, when the Hub is reachable.

Why a check after every load: ``from_pretrained`` fills weights it cannot find with random values and only
warns. A checkpoint whose key names it does not understand would come back as a random model, so every
load here fails loudly when a weight is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from rlhf_interp.bridge.aliases import EMBEDDED_ALIAS, KNOWN_ALIASES, ModelLoadError

WRAPPER_PREFIXES = ("pretrained_model.", "base_model.model.", "module.", "_orig_mod.")
HEAD_PREFIXES = ("v_head.", "score.", "value_head.")  # value / score heads are not part of the causal LM


def weight_files(model_dir: Path) -> list[Path]:
    """The full-model weight files of a HF directory: safetensors if any, else ``pytorch_model*.bin``."""
    safetensors = sorted(f for f in model_dir.glob("*.safetensors") if not f.name.startswith("adapter_"))
    return safetensors or sorted(model_dir.glob("pytorch_model*.bin"))


def _read_keys(files: list[Path]) -> list[str]:
    from safetensors import safe_open

    keys: list[str] = []
    for f in files:
        if f.suffix == ".safetensors":
            with safe_open(str(f), framework="pt") as handle:
                keys.extend(handle.keys())
        else:
            keys.extend(torch.load(f, map_location="cpu", weights_only=True, mmap=True).keys())
    return keys


def _read_tensors(f: Path) -> dict[str, torch.Tensor]:
    if f.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(f))
    return torch.load(f, map_location="cpu", weights_only=True)


def clean_foreign_state_dict(model_dir: Path) -> dict[str, torch.Tensor] | None:
    """A state dict with wrapper prefixes stripped and value / score heads dropped, or None when the weights
    are already plain HF keys (then ``from_pretrained`` reads them as they are)."""
    files = weight_files(model_dir)
    if not files:
        return None
    keys = _read_keys(files)
    if not any(k.startswith(WRAPPER_PREFIXES + HEAD_PREFIXES) for k in keys):
        return None
    state: dict[str, torch.Tensor] = {}
    for f in files:
        for key, tensor in _read_tensors(f).items():
            for prefix in WRAPPER_PREFIXES:
                key = key.removeprefix(prefix)
            if not key.startswith(HEAD_PREFIXES):
                state[key] = tensor
    return state


def model_from_state_dict(model_dir: Path, state: dict[str, torch.Tensor], dtype: torch.dtype):
    """A HF causal LM of ``model_dir``'s config holding ``state`` (tied unembedding may be absent)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="eager")
    missing, _ = model.load_state_dict(state, strict=False)
    _check_missing(model_dir, config, missing)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model


def load_pretrained_checked(model_dir: Path, dtype: torch.dtype):
    """``from_pretrained`` that refuses to hand back a model with weights it could not find."""
    from transformers import AutoModelForCausalLM

    try:
        model, info = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="eager",
                                                           output_loading_info=True)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"{model_dir}: transformers could not load it as a causal LM: "
                             f"{str(err).splitlines()[0]}") from err
    _check_missing(model_dir, model.config, info.get("missing_keys", []))
    return model


def _check_missing(model_dir: Path, config, missing) -> None:
    missing = sorted(k for k in missing if k != "lm_head.weight" or not getattr(config, "tie_word_embeddings", False))
    if missing:
        raise ModelLoadError(
            f"{model_dir}: the weight files lack {len(missing)} of the model's tensors (e.g. {missing[:3]}); loading "
            f"would leave them random. The file's key names are not the Hugging Face ones for "
            f"{type(config).__name__} (a wrapper this loader does not know?), or the save is incomplete.")


def load_peft_adapter(model_dir: Path, device: torch.device, dtype: torch.dtype, load_base: Callable):
    """A PEFT/LoRA adapter directory: load its base model (``load_base(name, device=, dtype=)``), merge the
    adapter into the weights. Returns ``(hf_model, tokenizer, source)``."""
    from peft import PeftModel

    from rlhf_interp.bridge.embedded import load_tokenizer

    config = json.loads((model_dir / "adapter_config.json").read_text())
    base_name = config.get("base_model_name_or_path")
    if not base_name:
        raise ModelLoadError(f"{model_dir}/adapter_config.json names no base_model_name_or_path: write the base "
                             f"model's directory (or alias) there.")
    try:
        base, tokenizer, _ = load_base(base_name, device=device, dtype=dtype)
    except ModelLoadError as err:
        raise ModelLoadError(
            f"{model_dir} is a PEFT adapter (LoRA) on base model {base_name!r}, which could not be loaded: {err}\n"
            f"Fix: set base_model_name_or_path in {model_dir / 'adapter_config.json'} to a local copy of that base "
            f"model (or make the Hub reachable).") from err
    try:
        merged = PeftModel.from_pretrained(base, str(model_dir)).merge_and_unload()
    except Exception as err:  # PEFT reads adapter_model.bin with torch.load(weights_only=True)
        import pickle

        if not isinstance(err, pickle.UnpicklingError):
            raise
        files = sorted(p.name for p in model_dir.glob("adapter_model*.bin")) or ["adapter_model.bin"]
        raise ModelLoadError(
            f"{model_dir / files[0]} holds more than tensors, so it is refused unopened (unpickling it could run "
            f"code: it was crafted or altered). Use an adapter saved as adapter_model.safetensors "
            f"(PeftModel.save_pretrained writes one by default) from a source you trust.") from None
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
