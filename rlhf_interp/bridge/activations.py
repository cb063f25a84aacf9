"""Reading activations: the one capture helper every analysis uses.

Why one helper: every analysis (steering vectors, mean ablations, residual norms, model diffs, attention
views, reward-model prefix caches) needs the same loop — tokenize a batch with the toolkit's
convention, move it to the model's device, run ``run_with_cache`` on just the hooks it needs (stopping
early when it can), without gradients — and then the same masks. Writing that loop once keeps the
conventions (BOS, left padding, device) identical everywhere.

Hooks live only inside each call (``run_with_cache`` removes them when it returns; `stream` and `recording`
remove their own on exit, also on error). Nothing here keeps activations beyond one batch; `stream`
keeps none at all, handing each to the caller as it is computed.
"""

from __future__ import annotations

import re
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge.exceptions import StopAtLayerException

from rlhf_interp.bridge.tokens import tokenize

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
# Where a pass past the last block can end before the unembedding (the first of these the model has).
_AFTER_BLOCKS = ("ln_final.hook_in", "unembed.hook_in")


@dataclass
class Captured:
    """One batch: its tokens and mask (on the model's device), the activations by hook name, and
    (when asked for) the logits. ``rows`` are the batch's indices in the caller's list of texts."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    acts: dict[str, Float[Tensor, "batch pos ..."]]
    logits: Float[Tensor, "batch pos vocab"] | None
    rows: range

    def __getitem__(self, name: str) -> Tensor:
        return self.acts[name]


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _last_block(names: Sequence[str]) -> int | None:
    """The highest block index among ``names``; None if any name lies outside the blocks (e.g. ``ln_final``)."""
    layers = [_BLOCK.match(name) for name in names]
    return max(int(m.group(1)) for m in layers) if layers and all(layers) else None


def _stop_layer(model, names: Sequence[str], stop_at_layer: int | None, logits: bool) -> int | None:
    """How many blocks the pass must run: the caller's ``stop_at_layer``, or, when no logits are wanted and
    every name is a block hook, just enough blocks to fire them all (the unembedding is the largest
    matmul and its ``[batch, pos, vocab]`` output the largest tensor of a pass; neither is needed then)."""
    if logits:
        return None
    if stop_at_layer is not None and stop_at_layer < 0:
        stop_at_layer += int(model.cfg.n_layers)
    last = _last_block(names)
    return min((x for x in (stop_at_layer, None if last is None else last + 1) if x is not None), default=None)


def _stopping(model, stop: int | None) -> tuple[dict, ContextManager]:
    """The ``stop_at_layer`` argument for a pass of ``stop`` blocks, or -- when that is every block, where
    TransformerLens's ``stop_at_layer`` would still run the unembedding -- a hook that ends the pass where
    the final norm starts (TransformerLens's own `StopAtLayerException`, which its forward returns on)."""
    n_layers = int(model.cfg.n_layers)
    if stop is None:
        return {}, nullcontext()
    if stop < n_layers:
        return {"stop_at_layer": stop}, nullcontext()
    point = next((name for name in _AFTER_BLOCKS if name in model.hook_dict), None)
    if point is None:
        return {}, nullcontext()

    def end_pass(act: Tensor, hook) -> Tensor:
        raise StopAtLayerException(act)

    return {}, model.hooks(fwd_hooks=[(point, end_pass)])


@torch.no_grad()
def capture(model, tokens: Tensor, attention_mask: Tensor, names: Sequence[str], *,
            stop_at_layer: int | None = None, logits: bool = False) -> Captured:
    """One forward pass of ``model`` on given tokens, keeping the activations at ``names``.

    ``stop_at_layer`` ends the pass after that many blocks (no logits then). Without logits the pass also
    ends by itself after the last block a name lives in. With no names the pass only computes logits.
    """
    device = _device(model)
    tokens, attention_mask = tokens.to(device), attention_mask.to(device)
    names = list(dict.fromkeys(names))
    if not names:
        out = model(tokens, attention_mask=attention_mask)
        return Captured(tokens, attention_mask, {}, out if logits else None, range(tokens.shape[0]))
    kwargs, stopping = _stopping(model, _stop_layer(model, names, stop_at_layer, logits))
    with stopping:
        out, cache = model.run_with_cache(tokens, attention_mask=attention_mask, names_filter=names, **kwargs)
    acts = {name: cache[name] for name in names}
    return Captured(tokens, attention_mask, acts, out if logits else None, range(tokens.shape[0]))


@torch.no_grad()
def stream(model, tokens: Tensor, attention_mask: Tensor, names: Sequence[str],
           on_act: Callable[[str, Tensor], None], *, logits: bool = False) -> Tensor | None:
    """One forward pass of ``model`` that hands each activation at ``names`` to ``on_act(name, act)`` as
    its hook fires and keeps none of them; returns the logits when asked for, else None.

    Why: comparing against activations held from another pass (a model diff) then holds one model's
    activations at a time, not two. The pass ends early as in `capture`.
    """
    device = _device(model)
    tokens, attention_mask = tokens.to(device), attention_mask.to(device)
    names = list(dict.fromkeys(names))
    kwargs, stopping = _stopping(model, _stop_layer(model, names, None, logits))

    def handler(name: str):
        def hand_over(act: Tensor, hook) -> Tensor:
            on_act(name, act.detach())  # by the name asked for, as in `recording`
            return act

        return hand_over

    # The handlers go on first, so a stop hook on the same point (there is none today) would fire after them.
    with model.hooks(fwd_hooks=[(name, handler(name)) for name in names]), stopping:
        out = model(tokens, attention_mask=attention_mask, **kwargs)
    return out if logits else None


def capture_texts(model, texts: Sequence[str], names: Sequence[str], *, batch_size: int = 16,
                  stop_at_layer: int | None = None, logits: bool = False) -> Iterator[Captured]:
    """`capture` on ``texts`` in batches (BOS prepended, left-padded), one `Captured` per batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if not texts:
        raise ValueError("No texts given to read activations from.")
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        tokens, mask = tokenize(model, chunk)
        out = capture(model, tokens, mask, names, stop_at_layer=stop_at_layer, logits=logits)
        out.rows = range(start, start + len(chunk))
        yield out


@contextmanager
def recording(model, names: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Inside the block, every forward pass of ``model`` stores its (detached) activations at ``names``
    into the yielded dict — for passes that another function runs (e.g. a partial decoder pass)."""
    got: dict[str, Tensor] = {}

    def keeper(name: str):
        def keep(act: Tensor, hook) -> Tensor:
            got[name] = act.detach()  # by the name asked for (a hook's own name may be an alias of it)
            return act

        return keep

    with model.hooks(fwd_hooks=[(name, keeper(name)) for name in dict.fromkeys(names)]):
        yield got
