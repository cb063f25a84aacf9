"""Run base and tuned on the same token batches, one batch at a time.

Why a generator: every diff statistic is a running sum over batches, so nothing here ever holds more
than one batch's activations. Activations come from the one capture helper
(`rlhf_interp.bridge.activations`); positions and masks from `rlhf_interp.core.masks`.

Why ``on_pair``: a statistic that needs one hook point at a time (residual metrics, difference
directions) can take each (base, tuned) pair while the tuned pass runs. The tuned activation is then
never stored and the base one is dropped once compared, so a batch holds one model's activations, not
two (SmolLM2-135M, every residual hook, batch 8 x 128: ~0.3 GiB instead of ~0.6 GiB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Iterator, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from rlhf_interp.bridge import hook_names
from rlhf_interp.bridge.activations import capture, stream
from rlhf_interp.bridge.tokens import tokenize
from rlhf_interp.core.masks import content_mask, real_positions

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
    return hook_names.block_hook(layer, hook)


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


real_token_positions = real_positions  # the old name: index among the row's real tokens, -1 on padding


# (batch, full hook name, base activation, tuned activation), called as the tuned model's hook fires.
PairHandler = Callable[["PairedBatch", str, Tensor, Tensor], None]


def paired_batches(base, tuned, texts: Sequence[str], hook_names: Sequence[str], *, batch_size: int = 8,
                   include_bos: bool = False, need_logits: bool = True, desc: str = "diff",
                   on_pair: PairHandler | None = None, streamed: Collection[str] = ()) -> Iterator[PairedBatch]:
    """Yield `PairedBatch` es: the same left-padded tokens (base tokenizer, BOS prepended) run through both.

    With ``on_pair``, the names in ``streamed`` are handed to it pair by pair during the tuned pass and
    are in neither ``batch.base`` nor ``batch.tuned`` of the yielded batch; the other names are kept as usual.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if not texts:
        raise ValueError("No prompts to diff on: pass at least one text.")
    names = list(dict.fromkeys(hook_names))
    streamed = set(streamed) & set(names) if on_pair is not None else set()
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, leave=False):
        chunk = list(texts[start:start + batch_size])
        tokens, mask = tokenize(base, chunk)
        # Logits ([batch, pos, vocab], the largest tensor of a pass) are kept only when asked for.
        b = capture(base, tokens, mask, names, logits=need_logits)
        batch = PairedBatch(
            tokens=tokens, attention_mask=mask, token_mask=content_mask(mask, include_bos=include_bos),
            positions=real_positions(mask), prompt_index=torch.arange(start, start + len(chunk)),
            base=b.acts, tuned={}, base_logits=b.logits, tuned_logits=None,
        )
        del b
        tuned_logits = stream(tuned, tokens, mask, names, _receiver(batch, streamed, on_pair), logits=need_logits)
        batch.tuned_logits = tuned_logits.to(batch.base_logits.device) if need_logits else None
        yield batch
        # Released before the next batch is read, even while the caller's loop variable still holds the batch:
        # one batch of activations alive at a time (a batch is valid until the next one is requested).
        batch.base.clear()
        batch.tuned.clear()
        batch.base_logits = batch.tuned_logits = None


def _receiver(batch: PairedBatch, streamed: set[str], on_pair: PairHandler | None) -> Callable[[str, Tensor], None]:
    """Where each tuned activation goes: a streamed name's pair to ``on_pair`` (its base activation dropped
    from the batch right after), any other into ``batch.tuned``."""
    def receive(name: str, act: Tensor) -> None:
        if name in streamed:
            base_act = batch.base.pop(name)
            on_pair(batch, name, base_act, act.to(base_act.device))
        else:
            batch.tuned[name] = act.to(batch.base[name].device)

    return receive
