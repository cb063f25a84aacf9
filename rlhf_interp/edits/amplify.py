"""Logit-difference amplification: sample from ``logits_tuned + a (logits_tuned - logits_base)``.

Why: the model-diffing toolkits amplify what fine-tuning changed to surface behaviours the tuned model
shows rarely (a = 0 is the tuned model, a = -1 the base model, a > 0 exaggerates the change). It is a
decoding-time edit with a per-token distribution, so its KL from the base model is measured exactly per
token like every other method's: the edit is bound to the *tuned* bridge and rewrites its logits
(``unembed.hook_out``), so everything that runs the tuned model — sampling (twin or bridge, with or
without the KV cache), teacher-forced scoring, capability — sees the amplified distribution.

How the base logits are found: a forward-pass watcher (`rlhf_interp.bridge.hf.watch_forward_passes`)
records the token ids and attention mask of every pass of the tuned model; under the KV cache a pass
holds only the new token, so the edit keeps the whole sequence so far and runs the base model on it
(without a cache: the base's logits are then the same whichever way the tuned model is run). That costs
one full base forward per sampled token — fine for the 24-token continuations measured here.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Hashable

import torch
from torch import Tensor

from rlhf_interp.bridge.hf import ForwardPass, watch_forward_passes
from rlhf_interp.bridge.tokens import pair_problems
from rlhf_interp.edits.base import Edit
from rlhf_interp.edits.errors import EditError

LOGITS_HOOK = "unembed.hook_out"


class LogitAmplification(Edit):
    """On the tuned model: logits -> ``logits + a (logits - base(logits))``; ``base``: the model it was tuned from."""

    name = "logit amplification"

    def __init__(self, base, a: float, *, model=None):
        try:
            self.a = float(a)
        except (TypeError, ValueError) as err:
            raise EditError(f"The amplification strength a must be a number, got {a!r}.") from err
        if not math.isfinite(self.a):
            raise EditError(f"The amplification strength a must be finite, got {a!r}.")
        self.base = base
        self._ids: Tensor | None = None
        self._mask: Tensor | None = None
        self._watch = None
        super().__init__(model)

    def _validate(self, model) -> None:
        if model is self.base:
            raise EditError("Logit amplification is bound to the tuned model; the base model was given as both. "
                            "Bind it to the fine-tuned bridge: LogitAmplification(base, a).on(tuned).")
        problems = pair_problems(model, self.base, names=("tuned", "base"))
        if problems:
            raise EditError("The base model does not share the tuned model's tokenizer, so their logits cannot be "
                            "subtracted:\n  - " + "\n  - ".join(problems))

    # The token history of the tuned model's passes -------------------------------------------------
    def _on_pass(self, fp: ForwardPass | None) -> None:
        if fp is None or fp.input_ids is None:
            self._ids = self._mask = None
            return
        ids = fp.input_ids.detach()
        if fp.past_len == 0 or self._ids is None:
            self._ids = ids
        else:
            self._ids = torch.cat([self._ids, ids], dim=1)
        width = self._ids.shape[1]
        mask = fp.attention_mask
        self._mask = (mask[:, -width:].detach() if mask is not None and mask.shape[1] >= width
                      else torch.ones_like(self._ids))
        if fp.past_len and width != fp.past_len + fp.seq:
            self._ids = None  # a cached pass whose history we did not see: refuse in the hook, do not guess

    def __enter__(self) -> "LogitAmplification":
        super().__enter__()
        try:
            self._watch = watch_forward_passes(self.model, self._on_pass)
            self._ctx.callback(self._stop_watching)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _stop_watching(self) -> None:
        if self._watch is not None:
            self._watch.remove()
        self._watch, self._ids, self._mask = None, None, None

    def _hook_fns(self) -> list[tuple[str, Callable]]:
        return [(LOGITS_HOOK, self._hook)]

    @torch.no_grad()
    def _base_logits(self, seq: int) -> Tensor:
        if self._ids is None:
            raise RuntimeError("Logit amplification could not follow the tuned model's tokens (a pass by embeddings, "
                               "or a KV cache started before the edit was entered): run the model on token ids "
                               "with the edit active from the first pass.")
        device = next(iter(self.base.parameters())).device
        logits = self.base(self._ids.to(device), attention_mask=self._mask.to(device))
        return logits[:, -seq:]

    def _hook(self, logits: Tensor, hook=None) -> Tensor:
        if self._suspended or self.a == 0.0:
            return logits
        base = self._base_logits(logits.shape[1]).to(device=logits.device, dtype=logits.dtype)
        return logits + self.a * (logits - base)

    def cache_key(self) -> Hashable:
        from rlhf_interp.core.hashing import tensor_digest

        first = next(iter(self.base.parameters()))
        return ("amplification", self.a, id(self.base), tensor_digest(first.detach().flatten()[:4096].cpu()))

    def describe(self) -> dict[str, Any]:
        return {"edit": self.name, "strength": self.a, "setting": f"a={self.a:g}"}

    def __repr__(self) -> str:
        return f"LogitAmplification(a={self.a})"


__all__ = ["LOGITS_HOOK", "LogitAmplification"]
