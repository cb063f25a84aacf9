"""Turn a name, a Hugging Face id, a local directory, a run directory or a foreign checkpoint into a
`TransformerBridge`.

Why one entry point: every other module (trainer, diff, edits, measure, reward models) must see models
through the same tokenizer convention, device choice and dtype, or their numbers are not comparable.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from rlhf_interp.bridge.aliases import (EMBEDDED_ALIAS, EMBEDDED_MODELS, KNOWN_ALIASES, TINY_ALIAS, TOKENIZER_DIR,
                                        ModelLoadError, resolve_dtype)
from rlhf_interp.bridge.embedded import build_tiny_model, fetch_embedded, load_tokenizer
from rlhf_interp.bridge.foreign import (clean_foreign_state_dict, has_tokenizer, load_from_hub, load_peft_adapter,
                                       load_pretrained_checked, model_from_state_dict)
from rlhf_interp.bridge.run_dirs import ADAPTER, resolve_layout

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def load_hf_model(name_or_path: str | Path = EMBEDDED_ALIAS, *, device: str | torch.device | None = None,
                  dtype: str | torch.dtype | None = None):
    """Load the plain Hugging Face causal LM and tokenizer behind any accepted name.

    Returns ``(hf_model, tokenizer, source)`` where ``source`` is the alias or resolved directory.
    """

    torch_dtype = resolve_dtype(dtype)
    device = select_device(device)
    name = str(name_or_path)

    if name == TINY_ALIAS:
        model = build_tiny_model().to(device=device, dtype=torch_dtype)
        return model.eval(), load_tokenizer(), TINY_ALIAS
    if name in EMBEDDED_MODELS:
        model_dir, source = fetch_embedded(name), name
    else:
        local = Path(name).expanduser()
        if local.exists():
            layout = resolve_layout(local)
            if layout.kind == ADAPTER:
                model, tokenizer, source = load_peft_adapter(layout.path, device, torch_dtype, load_hf_model)
                return check_finite_weights(model, layout.path), tokenizer, source
            model_dir, source = layout.path, str(layout.path)
        elif _HUB_ID.match(name):
            return load_from_hub(name, device, torch_dtype)
        else:
            raise ModelLoadError(
                f"Unknown model {name!r}: it is neither a known alias ({', '.join(sorted(KNOWN_ALIASES))}), "
                f"nor an existing local directory, nor a Hugging Face id (owner/name)."
            )

    try:
        cleaned = clean_foreign_state_dict(model_dir)
        if cleaned is not None:
            model = model_from_state_dict(model_dir, cleaned, torch_dtype)
        else:
            model = load_pretrained_checked(model_dir, torch_dtype)
    except Exception as err:
        import pickle

        if isinstance(err, pickle.UnpicklingError):  # torch.load(weights_only=True) met more than tensors
            raise ModelLoadError(f"{model_dir}: a pytorch_model*.bin holds more than tensors, so it is refused "
                                 f"unopened (unpickling it could run code). Convert the model to safetensors with "
                                 f"a tool you trust, or use a copy from a trusted source.") from err
        if type(err).__name__ != "SafetensorError":
            raise
        raise ModelLoadError(f"{model_dir}: a weights file is unreadable ({err}). It was probably cut short (a crash "
                             f"or a full disk while it was written): save or copy the model again.") from err
    model.config.output_attentions = False
    if has_tokenizer(model_dir):
        tokenizer = load_tokenizer(model_dir)
    else:
        fallback = _tokenizer_fallback(model_dir)
        tokenizer = load_tokenizer(fallback)
        vocab = int(model.get_input_embeddings().weight.shape[0])
        if vocab != len(tokenizer):
            raise ModelLoadError(
                f"{model_dir} has no tokenizer files, and the fallback tokenizer ({fallback}) has {len(tokenizer)} "
                f"tokens while the model's vocabulary has {vocab}: they cannot be the same tokenizer. Copy the "
                f"tokenizer files (tokenizer.json, tokenizer_config.json) of the model it was trained from into "
                f"{model_dir}.")
    return check_finite_weights(model, model_dir).to(device).eval(), tokenizer, source


def check_finite_weights(model, where) -> Any:
    """Refuse a model with NaN or infinite weights: every KL, reward or diff against it would be NaN — or, after
    a ``nan_to_num`` somewhere, a silent 0. One cheap reduction per tensor (`core.finite.all_finite`)."""
    from rlhf_interp.core.finite import all_finite

    bad = [name for name, tensor in model.state_dict().items() if not all_finite(tensor)]
    if bad:
        raise ModelLoadError(f"{where} has non-finite weights (NaN or inf in {len(bad)} tensor(s), e.g. {bad[0]}): "
                             f"the file is corrupt or the training that wrote it diverged. Use an earlier checkpoint "
                             f"or the model it was trained from.")
    return model


def select_device(device: str | torch.device | None = None) -> torch.device:
    """The device to load onto, checked: ``None`` / ``"auto"`` picks this process's GPU (``cuda:LOCAL_RANK``
    under a multi-process launcher, so ranks do not pile onto GPU 0), else ``cuda``, else the CPU.

    A device this machine does not have is refused here, with the fix, rather than deep inside a forward pass.
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as err:
        raise ModelLoadError(f"Unknown device {device!r}: use cpu, cuda, cuda:N, mps or auto.") from err
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"Device {device!r} was asked for, but this torch ({torch.__version__}) sees no CUDA GPU "
                f"(built for CUDA: {torch.version.cuda}). Fix: use device cpu (or auto), or install a CUDA build of "
                f"torch on a machine with a GPU.")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ModelLoadError(f"Device {device!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                                 f"cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    if chosen.type == "mps" and not (torch.backends.mps.is_available()):
        raise ModelLoadError(f"Device {device!r}: MPS is not available here. Fix: use device cpu.")
    return chosen


def _tokenizer_fallback(model_dir: Path) -> Path:
    """Checkpoints without tokenizer files: use the base model named in our meta.json, else SmolLM2's."""
    meta = model_dir / "meta.json"
    if meta.exists():
        base = json.loads(meta.read_text()).get("base_model")
        if base and base != TINY_ALIAS and base in EMBEDDED_MODELS:
            return fetch_embedded(base)
    return TOKENIZER_DIR


def bridge_from_hf(hf_model, tokenizer, name: str = "model"):
    """Boot a TransformerBridge around an already-loaded HF model (no Hub access)."""
    from transformer_lens.model_bridge import TransformerBridge

    from .cache_compat import adapt_cache_argument

    tokenizer.padding_side = "left"
    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=tokenizer, device=str(next(hf_model.parameters()).device),
        dtype=next(hf_model.parameters()).dtype,
    )
    bridge.eval()
    adapt_cache_argument(bridge)  # transformers >= 5.24 passes the KV cache under a name TL 4.3 does not read
    bridge.rlhf_interp_source = str(name)
    return bridge


def load_model(name_or_path: str | Path = EMBEDDED_ALIAS, *, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None, frozen: bool = False):
    """Load any accepted model as a `TransformerBridge`.

    ``name_or_path``: ``"smollm2-135m"`` (embedded default, offline), ``"tiny-test"``, a local HF
    directory (ours, TRL, OpenRLHF, verl, a PEFT adapter), a run directory (its latest checkpoint),
    or a Hub id when the Hub is reachable (`run_dirs.resolve_layout` lists the layouts). ``device=None`` picks
    this process's GPU when there is one (`select_device`). ``frozen=True``
    turns off gradients of every weight (a reference model, a reward model's backbone).
    """
    hf_model, tokenizer, source = load_hf_model(name_or_path, device=device, dtype=dtype)
    if frozen:
        for p in hf_model.parameters():
            p.requires_grad_(False)
    return bridge_from_hf(hf_model, tokenizer, name=str(source))


def model_source(bridge) -> str:
    """The name or directory a bridge was loaded from (for metadata)."""
    return getattr(bridge, "rlhf_interp_source", getattr(bridge.cfg, "model_name", "unknown"))


def model_device(bridge) -> torch.device:
    """The device of a bridge's weights."""
    return next(bridge.parameters()).device
