"""Which tokens an edit touches, correct with and without the KV cache.

Steering and ablations act on *absolute* positions of the sequence, which is not what a hook sees
during KV-cached generation: the prompt pass has sequence length P, then every new token arrives
alone. A tracker (watching the HF decoder's forward passes through `rlhf_interp.bridge.hf`, active
while any edit is) reads ``attention_mask`` and the KV-cache length of every pass and derives, per token:

- ``column``: its index in the padded sequence (prompt columns are ``0..P-1``);
- ``real_pos``: its position among the row's real tokens (BOS = 0; left padding is not counted);
- ``is_real``: whether it is a real token (pads are never edited).

``positions="prompt"`` selects real tokens with ``column < P``, ``"generated"`` those with
``column >= P`` (every new token, the first one included), ``"all"`` every real token, and a
``slice`` (or int) selects by ``real_pos``. ``P`` is the width of the first pass without a KV cache;
a later cache-free pass that starts with the same prompt tokens (generation without the KV cache,
or scoring prompt + continuation) keeps it. Set it explicitly with `prompt_length`.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from rlhf_interp.bridge.hf import ForwardPass, watch_forward_passes
from rlhf_interp.core.masks import real_positions
from rlhf_interp.edits.errors import EditError

Positions = Literal["all", "prompt", "generated"] | slice | int


def check_positions(positions: Positions) -> Positions:
    """Validate a positions argument; an int becomes a one-token slice."""
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = slice(positions, positions + 1)
    if isinstance(positions, slice):
        for bound in (positions.start, positions.stop):
            if bound is not None and bound < 0:
                raise EditError(f"positions slice {positions} has a negative bound; during generation the end of "
                                f"the sequence is not known yet. Use absolute positions (BOS = 0).")
        if positions.step is not None and positions.step <= 0:
            raise EditError(f"positions slice step must be positive, got {positions.step}.")
        return positions
    if positions not in ("all", "prompt", "generated"):
        raise EditError(f"positions must be 'all', 'prompt', 'generated', an int or a slice; got {positions!r}.")
    return positions


def positions_key(positions: Positions) -> str | tuple:
    """A hashable form of a positions argument (slices are not hashable before Python 3.12)."""
    if isinstance(positions, slice):
        return ("slice", positions.start, positions.stop, positions.step)
    return positions


def positions_label(positions: Positions) -> str:
    """A table-friendly label: ``"all"``, ``"generated"``, ``"slice(1, 4, None)"``."""
    return positions if isinstance(positions, str) else str(positions)


@dataclass
class PassInfo:
    """Where the tokens of the current forward pass sit in their sequence (all [batch, seq])."""

    column: Int[Tensor, "batch seq"]
    real_pos: Int[Tensor, "batch seq"]
    is_real: Bool[Tensor, "batch seq"]
    prompt_len: int

    def select(self, positions: Positions) -> Bool[Tensor, "batch seq"]:
        if positions == "all":
            return self.is_real
        if positions == "prompt":
            return self.is_real & (self.column < self.prompt_len)
        if positions == "generated":
            return self.is_real & (self.column >= self.prompt_len)
        assert isinstance(positions, slice)
        start = positions.start or 0
        step = positions.step or 1
        sel = (self.real_pos >= start) & ((self.real_pos - start) % step == 0)
        if positions.stop is not None:
            sel &= self.real_pos < positions.stop
        return self.is_real & sel


class PositionTracker:
    """Reads every forward pass's mask and cache length while edits are active on a model."""

    def __init__(self, model):
        self._model = weakref.ref(model)
        self.users = 0
        self.handle = None
        self.current: PassInfo | None = None
        self.prompt_tokens: Tensor | None = None
        self.forced_prompt_len: int | None = None

    def attach(self) -> None:
        if self.users == 0:
            self.handle = watch_forward_passes(self._model(), self._on_pass)
        self.users += 1

    def detach(self) -> None:
        self.users -= 1
        if self.users == 0 and self.handle is not None:
            self.handle.remove()
            self.handle, self.current, self.prompt_tokens = None, None, None

    def _on_pass(self, fp: ForwardPass | None) -> None:
        if fp is None:
            self.current = None
            return
        column = (fp.past_len + torch.arange(fp.seq, device=fp.device)).expand(fp.batch, fp.seq)
        if fp.attention_mask is not None:
            real_pos = real_positions(fp.attention_mask, pad_value=None)[:, -fp.seq:]
            is_real = fp.attention_mask[:, -fp.seq:].bool()
        else:
            real_pos, is_real = column, torch.ones(fp.batch, fp.seq, dtype=torch.bool, device=fp.device)
        if fp.past_len == 0:
            prompt_len = self._prompt_len_for(fp.input_ids, fp.seq)
        else:
            prompt_len = self.current.prompt_len if self.current is not None else fp.past_len
        self.current = PassInfo(column, real_pos.clamp_min(0), is_real, prompt_len)

    def _prompt_len_for(self, input_ids: Tensor | None, seq: int) -> int:
        if self.forced_prompt_len is not None:
            return self.forced_prompt_len
        known = self.prompt_tokens
        if (input_ids is not None and known is not None and known.shape[0] == input_ids.shape[0]
                and known.shape[1] <= seq and torch.equal(input_ids[:, :known.shape[1]], known)):
            return known.shape[1]  # the same prompt, continued without a KV cache
        self.prompt_tokens = input_ids.detach().clone() if input_ids is not None else None
        return seq

    def selection(self, positions: Positions, batch: int, seq: int) -> Bool[Tensor, "batch seq"] | None:
        """Which tokens of the current pass to edit (None = every token: no position info)."""
        info = self.current
        if info is None:
            return None
        if info.column.shape != (batch, seq):
            raise RuntimeError(f"Edit position tracking is out of sync: the hook sees [batch={batch}, seq={seq}] "
                               f"but the last forward pass had {tuple(info.column.shape)}. Run the model through "
                               f"its normal forward (not start_at_layer) while edits are active.")
        return info.select(positions)


_TRACKERS: "weakref.WeakKeyDictionary[Any, PositionTracker]" = weakref.WeakKeyDictionary()


def tracker(model) -> PositionTracker:
    """The model's position tracker (one per model, created on first use)."""
    if model not in _TRACKERS:
        _TRACKERS[model] = PositionTracker(model)
    return _TRACKERS[model]


@contextmanager
def prompt_length(model, n: int) -> Iterator[None]:
    """Tell edits that columns ``>= n`` of the following cache-free passes were generated.

    Needed when scoring stored prompt + continuation tokens with a ``positions="generated"`` or
    ``"prompt"`` edit (during ``generate`` the prompt width is known without it).
    """
    t = tracker(model)
    before = t.forced_prompt_len
    t.forced_prompt_len = int(n)
    try:
        yield
    finally:
        t.forced_prompt_len = before
