"""Per-token KL shift on fixed text: teacher-forced next-token distributions of an edited model vs a
reference, at every real position. Reference logits are cached (`LogitsCache`) so a sweep pays once.

Column conventions (tidy, one observation per row): ``kl_pi_ref`` = KL(edited || reference),
``kl_ref_pi`` = KL(reference || edited), both in nats (computed by `rlhf_interp.core.kl`).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from rlhf_interp.bridge.generation import Generation
from rlhf_interp.bridge.tokens import check_context, pair_problems, tokenize
from rlhf_interp.core.hashing import tensor_digest
from rlhf_interp.core.masks import real_positions
from rlhf_interp.edits.base import Edit, NoEdit, active_edits_key
from rlhf_interp.edits.positions import prompt_length
from rlhf_interp.core.kl import entropy, js_divergence, kl_divergence

TokenBatch = tuple[Tensor, Tensor, int]  # tokens, attention_mask, prompt_len


def as_batch(model, prompts: Sequence[str] | Generation) -> tuple[TokenBatch, list[str]]:
    """Texts (tokenized: BOS, left padding) or a `Generation` -> ``(tokens, mask, prompt_len), prompts``."""
    if isinstance(prompts, Generation):
        return (prompts.tokens, prompts.attention_mask, prompts.prompt_len), prompts.prompts
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("No prompts given.")
    check_context(model, prompts)
    tokens, mask = tokenize(model, prompts)
    return (tokens, mask, tokens.shape[1]), prompts


@torch.no_grad()
def forward_logits(model, tokens: Tensor, mask: Tensor, prompt_len: int | None = None,
                   batch_size: int = 16) -> Float[Tensor, "batch seq vocab"]:
    """Logits (float32, CPU) in chunks of ``batch_size``; ``prompt_len`` tells position-aware edits
    which columns were generated."""
    device = model.cfg.device
    out = []
    for start in range(0, tokens.shape[0], batch_size):
        t = tokens[start:start + batch_size].to(device)
        m = mask[start:start + batch_size].to(device)
        if prompt_len is not None:
            with prompt_length(model, prompt_len):
                logits = model(t, attention_mask=m)
        else:
            logits = model(t, attention_mask=m)
        out.append(logits.float().cpu())
    return torch.cat(out)


class LogitsCache:
    """Reference logits keyed by content — the model, what the active edits do (vector values, not
    their repr), the prompt width and the tokens — computed once and reused across a sweep.

    Holds at most ``max_entries`` batches (least recently used dropped first).
    """

    def __init__(self, max_entries: int = 8):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}.")
        self.max_entries = max_entries
        self._store: OrderedDict[tuple, tuple[weakref.ref, Tensor]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model, tokens: Tensor, mask: Tensor, prompt_len: int | None = None, batch_size: int = 16) -> tuple:
        return (id(model), active_edits_key(model), prompt_len, tensor_digest(tokens, mask))

    def logits(self, model, tokens: Tensor, mask: Tensor, prompt_len: int | None = None,
               batch_size: int = 16) -> Tensor:
        key = self.key(model, tokens, mask, prompt_len)
        entry = self._store.get(key)
        if entry is not None and entry[0]() is model:
            self.hits += 1
            self._store.move_to_end(key)
            return entry[1]
        self.misses += 1
        value = forward_logits(model, tokens, mask, prompt_len, batch_size)
        self._store[key] = (weakref.ref(model), value)
        self._store.move_to_end(key)
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._store)


def bind(model, edit: Edit | None) -> Edit:
    """``edit`` bound to ``model`` (`NoEdit` for None); refuses an edit bound to another model."""
    edit = edit if edit is not None else NoEdit()
    if edit.model is not None and edit.model is not model:
        raise ValueError(f"{edit!r} is bound to another model than the one being measured; build it unbound "
                         f"(measure binds it) or bind it to this model.")
    return edit.on(model)


def check_reference(model, reference) -> None:
    """A reference model must share the tokenizer (KL compares distributions over the same token ids), checked
    as `rlhf_interp.diff` checks it: output size, vocabulary (every token -> id), BOS and pad ids."""
    if reference is None:
        return
    problems = pair_problems(model, reference, names=("model", "reference"))
    if problems:
        raise ValueError("The reference model does not share the measured model's tokenizer, so KL between them "
                         "compares unrelated tokens:\n  - " + "\n  - ".join(problems)
                         + "\nFix: measure against a model with the same tokenizer (e.g. the base model a run "
                           "was trained from).")


def kl_shift(model, edit: Edit | None, prompts: Sequence[str] | Generation, *, reference=None,
             cache: LogitsCache | None = None, batch_size: int = 16) -> pd.DataFrame:
    """Per-position KL between the edited model and a reference, teacher-forced on fixed tokens.

    ``prompts``: texts (tokenized with BOS, left-padded) or a `Generation` (prompt + continuation;
    columns at or after its ``prompt_len`` count as generated). ``reference``: None = the same
    model without ``edit`` (any edits already active around the call stay on), or another model
    with the same tokenizer (e.g. the base model when ``model`` is the tuned one).

    One row per (prompt, real position) — the next-token distribution at that position.
    Columns: prompt_idx, position (among real tokens, BOS = 0), token (the input token there),
    generated (bool), kl_pi_ref (KL(edited || reference)), kl_ref_pi, js, entropy_edited,
    entropy_reference.
    """
    check_reference(model, reference)
    edit = bind(model, edit)
    (tokens, mask, prompt_len), _ = as_batch(model, prompts)
    cache = cache if cache is not None else LogitsCache(max_entries=1)
    ref_model = reference if reference is not None else model
    ref_logits = cache.logits(ref_model, tokens, mask, prompt_len, batch_size)
    with edit:
        logits = forward_logits(model, tokens, mask, prompt_len, batch_size)
    _check_finite_logits(ref_logits, "the reference" if reference is not None else "the model without the edit")
    _check_finite_logits(logits, "the model with the edit" if not isinstance(edit, NoEdit) else "the model")
    return per_token_frame(model, logits, ref_logits, tokens, mask, prompt_len)


def _check_finite_logits(logits: Tensor, who: str) -> None:
    """A NaN or infinite logit makes every KL of its position NaN (shown as a blank, or averaged away as 0):
    refuse it, naming the model."""
    from rlhf_interp.core.finite import all_finite

    if not all_finite(logits):
        raise ValueError(f"The logits of {who} are not finite (NaN or inf): its weights, dtype or edit produce "
                         f"non-finite values, so no KL against it means anything. Check the model (load it in "
                         f"float32) and the edit's size.")


def per_token_frame(model, logits: Tensor, ref_logits: Tensor, tokens: Tensor, mask: Tensor, prompt_len: int
                    ) -> pd.DataFrame:
    """The tidy per-(prompt, position) table of `kl_shift` from both models' logits."""
    mask = mask.cpu()
    real = mask.bool()
    lp, lq = logits[real], ref_logits[real]  # [n_real, vocab]
    columns = torch.arange(tokens.shape[1]).expand_as(tokens)[real]
    rows = torch.arange(tokens.shape[0])[:, None].expand_as(tokens)[real]
    return pd.DataFrame({
        "prompt_idx": rows.numpy(),
        "position": real_positions(mask)[real].numpy(),
        "token": model.tokenizer.convert_ids_to_tokens(tokens.cpu()[real].tolist()),
        "generated": (columns >= prompt_len).numpy(),
        "kl_pi_ref": kl_divergence(lp, lq).numpy(),
        "kl_ref_pi": kl_divergence(lq, lp).numpy(),
        "js": js_divergence(lp, lq).numpy(),
        "entropy_edited": entropy(lp).numpy(),
        "entropy_reference": entropy(lq).numpy(),
    })
