"""Reading activations: the one capture helper every analysis uses.

Why one helper: every analysis (steering vectors, mean ablations, residual norms, model diffs, attention
views, reward-model prefix caches) needs the same loop — tokenize a batch with the toolkit's
convention, move it to the model's device, run ``run_with_cache`` on just the hooks it needs (stopping
early when it can), without gradients — and then the same masks. Writing that loop once keeps the
conventions (BOS, left padding, device) identical everywhere.

Hooks live only inside each call (``run_with_cache`` removes them when it returns; `recording` removes
its own on exit, also on error). Nothing here keeps activations beyond one batch.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from rlhf_interp.bridge.tokens import tokenize


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


@torch.no_grad()
def capture(model, tokens: Tensor, attention_mask: Tensor, names: Sequence[str], *,
            stop_at_layer: int | None = None, logits: bool = False) -> Captured:
    """One forward pass of ``model`` on given tokens, keeping the activations at ``names``.

    ``stop_at_layer`` ends the pass after that many blocks (faster; no logits then). With no names the
    pass only computes logits.
    """
    device = _device(model)
    tokens, attention_mask = tokens.to(device), attention_mask.to(device)
    names = list(dict.fromkeys(names))
    if stop_at_layer is not None and (logits or stop_at_layer >= int(model.cfg.n_layers)):
        stop_at_layer = None  # stop_at_layer == n_layers would return the residual, not logits
    if not names:
        out = model(tokens, attention_mask=attention_mask)
        return Captured(tokens, attention_mask, {}, out if logits else None, range(tokens.shape[0]))
    kwargs = {"stop_at_layer": stop_at_layer} if stop_at_layer is not None else {}
    out, cache = model.run_with_cache(tokens, attention_mask=attention_mask, names_filter=names, **kwargs)
    acts = {name: cache[name] for name in names}
    return Captured(tokens, attention_mask, acts, out if logits else None, range(tokens.shape[0]))


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
