"""Scoring texts during reward-model training, with the frozen prefix computed once.

Why: with all but the last blocks frozen, the residual stream entering the first trainable block never
changes, so it is computed once (without grad) and every epoch runs only the trainable tail
(`rlhf_interp.bridge.hf.run_decoder_tail`). The shortcut is checked against a full forward pass at
start-up and dropped (with a warning) when it does not reproduce it.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from rlhf_interp.bridge.activations import capture, recording
from rlhf_interp.bridge.heads import values_from_hook
from rlhf_interp.bridge.hf import run_decoder_tail, supports_decoder_tail
from rlhf_interp.bridge.hook_names import block_hook
from rlhf_interp.bridge.tokens import tokenize
from rlhf_interp.core.masks import gather_last, pad_rows
from rlhf_interp.reward.model import RewardModel


class PrefixCache:
    """``blocks.{N-1}.hook_resid_post`` of every text (real positions only), computed once without grad."""

    def __init__(self, bridge, texts: list[str], n_frozen: int, *, batch_size: int = 64, progress: bool = True):
        self.n_frozen = n_frozen
        self.resid: list[Tensor] = [torch.empty(0)] * len(texts)
        hook = block_hook(n_frozen - 1, "hook_resid_post")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
        for start in tqdm(range(0, len(texts), batch_size), desc=f"caching {hook}", disable=not progress, unit="batch"):
            idx = order[start:start + batch_size]
            tokens, mask = tokenize(bridge, [texts[i] for i in idx])
            acts = capture(bridge, tokens, mask, [hook], stop_at_layer=n_frozen)[hook]
            for row, i in enumerate(idx):
                self.resid[i] = acts[row, mask[row].bool().to(acts.device)].clone()

    def batch(self, ids: list[int]) -> tuple[Float[Tensor, "batch pos d_model"], Int[Tensor, "batch pos"]]:
        """Left-padded residuals and their attention mask."""
        return pad_rows([self.resid[i] for i in ids], side="left")


def supports_prefix_cache(rm: RewardModel, start_layer: int) -> bool:
    return start_layer >= 1 and rm.hook_name.startswith("ln_final") and supports_decoder_tail(rm.bridge)


class Scorer:
    """Training-time scores of text ids: from the prefix cache when possible, else full forward passes."""

    def __init__(self, rm: RewardModel, texts: list[str], n_frozen: int, *, use_cache: bool, batch_size: int,
                 progress: bool):
        self.rm, self.texts, self.n_frozen, self.cache = rm, texts, n_frozen, None
        if use_cache and supports_prefix_cache(rm, n_frozen):
            cache = PrefixCache(rm.bridge, texts, n_frozen, batch_size=batch_size, progress=progress)
            if self._cache_agrees(cache):
                self.cache = cache
            else:
                warnings.warn("The frozen-prefix shortcut does not reproduce the full forward pass for this model; "
                              "training with full forward passes instead (slower, same result).", stacklevel=3)

    def _head_input(self, run: Callable[[], Any]) -> Tensor:
        with torch.no_grad(), recording(self.rm.bridge, [self.rm.hook_name]) as got:
            run()
        return got[self.rm.hook_name]

    def _cache_agrees(self, cache: PrefixCache) -> bool:
        """Check the shortcut on a few texts: the head's input at the last token must match a full pass."""
        ids = list(range(min(4, len(self.texts))))
        tokens, mask = tokenize(self.rm.bridge, [self.texts[i] for i in ids])
        resid, cache_mask = cache.batch(ids)
        try:
            tail = self._head_input(lambda: run_decoder_tail(self.rm.bridge, resid, cache_mask, self.n_frozen))
        except Exception as err:  # an architecture whose layers take other arguments
            warnings.warn(f"Frozen-prefix shortcut failed ({type(err).__name__}: {err}).", stacklevel=3)
            return False
        full = self._head_input(lambda: self.rm.bridge(tokens, attention_mask=mask))
        a, b = gather_last(full, mask), gather_last(tail, cache_mask)
        return bool(((a - b).abs().max() <= 1e-3 * a.abs().max().clamp_min(1.0)).item())

    def scores(self, ids: list[int]) -> Float[Tensor, "batch"]:
        """Raw scores with grad (trainable tail + head)."""
        if self.cache is not None:
            resid, mask = self.cache.batch(ids)
            with values_from_hook(self.rm.bridge, self.rm.head, self.rm.hook_name) as out:
                run_decoder_tail(self.rm.bridge, resid, mask, self.n_frozen)
            return gather_last(out["values"], mask)
        tokens, mask = tokenize(self.rm.bridge, [self.texts[i] for i in ids])
        return self.rm.scores_from_tokens(tokens, mask)

    @torch.no_grad()
    def scores_no_grad(self, ids: list[int], batch_size: int) -> Float[Tensor, "batch"]:
        out = [self.scores(ids[s:s + batch_size]).float().cpu() for s in range(0, len(ids), batch_size)]
        return torch.cat(out) if out else torch.empty(0)
