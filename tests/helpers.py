"""Helpers several test files need, written once (fixtures stay in conftest.py or beside their tests).

- `save_tiny`: tiny-test as a Hugging Face directory, optionally sharpened, perturbed, with another vocabulary;
- `perturbed_tiny`: an independent tiny-test bridge with one weight moved by seeded noise (a planted change);
- `save_run`: a run directory of ``checkpoint-NNNNNN/`` folders from bridges, as the trainer lays one out;
- `prompt_logits`: a bridge's logits on prompts (tokenized the library's way, no grad);
- `where`: the rows of a table matching column values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from rlhf_interp import load_model, save_hf_model, tokenize
from rlhf_interp.bridge import build_tiny_model, checkpoint_dir, load_tokenizer


def save_tiny(directory: Path, *, logit_scale: float = 1.0, noise: float = 0.0, seed: int = 123,
              attention_dropout: float = 0.0, vocab: int | None = None, tokenizer: bool = True) -> Path:
    """tiny-test as a HF directory: logits sharpened by scaling the final norm by ``logit_scale`` (tiny-test alone is
    nearly uniform), block weights perturbed by ``noise`` x their std (noise seeded by ``seed``), ``attention_dropout``
    in the config; ``vocab``: a model of that vocabulary size instead (fresh weights, torch seed 0); ``tokenizer``:
    save the shipped tokenizer too."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hf = build_tiny_model()
    if vocab is not None:
        cfg = LlamaConfig(**{**hf.config.to_dict(), "vocab_size": vocab})
        torch.manual_seed(0)
        hf = LlamaForCausalLM(cfg)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        hf.model.norm.weight.mul_(logit_scale)
        for name, param in hf.named_parameters():
            if noise and "layers." in name and "norm" not in name:
                param.add_(noise * param.std() * torch.randn(param.shape, generator=generator))
    hf.config.attention_dropout = attention_dropout
    hf.save_pretrained(directory)
    if tokenizer:
        load_tokenizer().save_pretrained(directory)
    return directory


def perturbed_tiny(weight: str | None = None, *, scale: float = 0.3, seed: int = 0, relative: bool = False):
    """An independent tiny-test bridge; with ``weight`` (a HF parameter name, e.g.
    ``"model.layers.1.mlp.down_proj.weight"``) that weight plus ``scale`` x seeded N(0, 1) noise (x the weight's
    std when ``relative``)."""
    model = load_model("tiny-test", device="cpu")
    if weight is not None:
        w = model.original_model.get_parameter(weight)
        with torch.no_grad():
            w.add_((scale * w.std() if relative else scale)
                   * torch.randn(w.shape, generator=torch.Generator().manual_seed(seed)))
    return model


def save_run(directory: Path, models: dict[int, Any], base_model: str = "tiny-test") -> Path:
    """A run directory holding ``checkpoint-<step>/`` for each ``{step: bridge}`` (meta.json with step and base)."""
    for step, model in models.items():
        save_hf_model(model.original_model, model.tokenizer, checkpoint_dir(directory, step),
                      meta={"step": step, "base_model": base_model})
    return directory


def prompt_logits(model, prompts: list[str]) -> torch.Tensor:
    """``model``'s logits on ``prompts`` (BOS prepended, left-padded, with the mask), without grad."""
    tokens, mask = tokenize(model, prompts)
    with torch.no_grad():
        return model(tokens, attention_mask=mask)


def where(df: pd.DataFrame, **equal) -> pd.DataFrame:
    """The rows of ``df`` whose columns equal the given values."""
    for key, value in equal.items():
        df = df[df[key] == value]
    return df
