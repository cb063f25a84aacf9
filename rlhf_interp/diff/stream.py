"""Run base and tuned on the same token batches, one batch at a time.

Why a generator: every diff statistic is a running sum over batches, so nothing here ever holds more
than one batch's activations. Hooks exist only inside ``run_with_cache`` (removed when it returns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from rlhf_interp.models import tokenize

# The residual-stream hook points compared at every layer (TransformerLens names, per block).
RESID_HOOKS: tuple[str, ...] = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out",
                                "hook_mlp_out")
PATTERN_HOOK = "attn.hook_pattern"


def validate_hooks(hooks: Sequence[str]) -> tuple[str, ...]:
    """Accept block-level hook names such as ``hook_resid_post``; say which ones exist otherwise."""
    bad = [h for h in hooks if h not in RESID_HOOKS]
    if bad or not hooks:
        raise ValueError(f"Unknown or empty hook point(s) {bad or list(hooks)}; the diff compares these per-block "
                         f"hook points: {', '.join(RESID_HOOKS)}.")
    return tuple(dict.fromkeys(hooks))


def block_hook(layer: int, hook: str) -> str:
    """``(3, "hook_resid_post")`` -> ``"blocks.3.hook_resid_post"``."""
    return f"blocks.{layer}.{hook}"


@dataclass
class PairedBatch:
    """One batch seen by both models. Activations are keyed by full hook name."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    token_mask: Bool[Tensor, "batch pos"]  # positions counted in statistics (no padding; BOS only if asked)
    positions: Int[Tensor, "batch pos"]  # index among the prompt's real tokens (0 = BOS), -1 on padding
    prompt_index: Int[Tensor, "batch"]  # index of each row in the full prompt list
    base: dict[str, Float[Tensor, "..."]]
    tuned: dict[str, Float[Tensor, "..."]]
    base_logits: Float[Tensor, "batch pos vocab"] | None
    tuned_logits: Float[Tensor, "batch pos vocab"] | None


def real_token_positions(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Position of each token among its row's real tokens (left padding makes this differ from the column)."""
    positions = attention_mask.long().cumsum(dim=1) - 1
    return positions.masked_fill(attention_mask == 0, -1)


def _run(bridge, tokens: Tensor, mask: Tensor, hook_names: list[str]) -> tuple[Tensor, dict[str, Tensor]]:
    device = next(bridge.parameters()).device
    tokens, mask = tokens.to(device), mask.to(device)
    if not hook_names:
        return bridge(tokens, attention_mask=mask), {}
    logits, cache = bridge.run_with_cache(tokens, attention_mask=mask, names_filter=hook_names)
    return logits, {name: cache[name] for name in hook_names}


def paired_batches(base, tuned, texts: Sequence[str], hook_names: Sequence[str], *, batch_size: int = 8,
                   include_bos: bool = False, need_logits: bool = True, desc: str = "diff"
                   ) -> Iterator[PairedBatch]:
    """Yield `PairedBatch` es: the same left-padded tokens (base tokenizer, BOS prepended) run through both."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if not texts:
        raise ValueError("No prompts to diff on: pass at least one text.")
    names = list(dict.fromkeys(hook_names))
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, leave=False):
        chunk = list(texts[start:start + batch_size])
        tokens, mask = tokenize(base, chunk)
        with torch.no_grad():
            base_logits, base_cache = _run(base, tokens, mask, names)
            tuned_logits, tuned_cache = _run(tuned, tokens, mask, names)
        positions = real_token_positions(mask)
        token_mask = mask.bool() if include_bos else mask.bool() & (positions > 0)
        yield PairedBatch(
            tokens=tokens, attention_mask=mask, token_mask=token_mask, positions=positions,
            prompt_index=torch.arange(start, start + len(chunk)),
            base=base_cache, tuned={k: v.to(base_cache[k].device) for k, v in tuned_cache.items()},
            base_logits=base_logits if need_logits else None,
            tuned_logits=tuned_logits.to(base_logits.device) if need_logits else None,
        )
