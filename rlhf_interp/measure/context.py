"""Measuring an edit that changes the context (a `Prompting` prefix): the continuation's positions shift.

Why here, once: sampling, per-sequence KL, capability and fluency all need the same alignment, and doing it
in a script would get it wrong in one of them. The convention:

- a `Generation` always lives in the *user's* frame: its tokens are the bare prompt (BOS, left-padded) and
  the continuation, its ``prompts`` the user's prompts. Reward, distinct-n and the reference's log-probs are
  read from it as for any edit;
- the prompted model's logits for the same continuation come from the *prompted* layout, ``prefix + prompt``
  tokenized as one text (what the model was sampled from) followed by the continuation's columns. With left
  padding the continuation is the last T columns of both layouts, so column ``P_prompted - 1 + t`` of the
  prompted pass predicts the same token as column ``P - 1 + t`` of the bare one (the shift is
  ``P_prompted - P``, per batch, and never touches a continuation token).

Only the continuation is compared: the prefix and the prompt have no counterpart in the other context.
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from rlhf_interp.bridge.generation import Generation, generate
from rlhf_interp.bridge.tokens import check_context, tokenize
from rlhf_interp.edits.base import Combined, Edit
from rlhf_interp.edits.errors import EditError
from rlhf_interp.edits.prompting import changes_context
from rlhf_interp.measure.token_shift import forward_logits


def check_context_edit(edit: Edit | None) -> None:
    """A context edit is measured on its own: mixing it with hook edits is not supported yet (refused, not guessed)."""
    if isinstance(edit, Combined) and any(changes_context(e) for e in edit.edits):
        raise EditError("A prompting edit combined with other edits is not supported: measure it alone (or put the "
                        "prefix into the prompts and measure the hook edit on them).")


def sample_in_context(model, edit: Edit, prompts: Sequence[str], *, max_new_tokens: int = 24, seed: int | None = 0,
                      temperature: float = 1.0, use_past_kv_cache: bool = True) -> Generation:
    """Sample continuations of ``edit.apply(prompt)``; returned in the user's frame (bare prompt + continuation)."""
    prompted = edit.apply_all(prompts)
    check_context(model, prompted, max_new_tokens)
    gen = generate(model, prompted, max_new_tokens=max_new_tokens, seed=seed, temperature=temperature,
                   use_past_kv_cache=use_past_kv_cache)
    bare, bare_mask = tokenize(model, list(prompts), device=gen.tokens.device)
    p = gen.prompt_len
    new, new_mask = gen.tokens[:, p:], gen.attention_mask[:, p:]
    return Generation(list(prompts), torch.cat([bare, new], dim=1), torch.cat([bare_mask, new_mask], dim=1),
                      torch.cat([torch.zeros_like(bare_mask), gen.generated_mask[:, p:]], dim=1), bare.shape[1],
                      list(gen.texts))


def prompted_layout(model, edit: Edit, gen: Generation) -> tuple[Tensor, Tensor, int]:
    """``(tokens, mask, prompt_len)`` of ``gen``'s continuations after ``edit.apply(prompt)``: the layout the
    prompted model sampled them in."""
    tokens, mask = tokenize(model, edit.apply_all(gen.prompts), device=gen.tokens.device)
    p = gen.prompt_len
    return (torch.cat([tokens, gen.tokens[:, p:]], dim=1), torch.cat([mask, gen.attention_mask[:, p:]], dim=1),
            tokens.shape[1])


@torch.no_grad()
def continuation_logits(model, edit: Edit, gen: Generation, batch_size: int = 16
                        ) -> Float[Tensor, "batch new vocab"]:
    """The edited model's logits that predict each continuation token of ``gen`` (float32, CPU):
    ``[batch, T, vocab]``, column t predicting new token t. Hook edits run on ``gen``'s own tokens; a context
    edit runs on its prompted layout (`prompted_layout`), sliced so that only the continuation's columns are
    kept (chunk by chunk: a long prefix times the vocabulary would not fit in memory whole)."""
    check_context_edit(edit)
    p = gen.prompt_len
    if not changes_context(edit):
        with edit:
            return forward_logits(model, gen.tokens, gen.attention_mask, p, batch_size)[:, p - 1:-1]
    tokens, mask, q = prompted_layout(model, edit, gen)
    out = []
    for start in range(0, tokens.shape[0], batch_size):
        logits = forward_logits(model, tokens[start:start + batch_size], mask[start:start + batch_size], q, batch_size)
        out.append(logits[:, q - 1:-1])
    return torch.cat(out)


def prefixed_rows(model, edit: Edit | None, rows: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor, int]:
    """Token rows (without BOS) as a left-padded batch ``[BOS] + prefix + row``; with no context edit the prefix
    is empty. Returns ``(tokens, mask, k)`` with k the prefix's token count. Token-level concatenation, so each
    row's tokens are exactly the last ``len(row)`` columns (for scoring fixed text under a prompt)."""
    from rlhf_interp.core.masks import pad_rows

    tok = model.tokenizer
    prefix = tok(edit.prefix, add_special_tokens=False)["input_ids"] if changes_context(edit) and edit.prefix else []
    full = [torch.tensor([tok.bos_token_id] + list(prefix) + list(r), dtype=torch.long) for r in rows]
    tokens, mask = pad_rows(full, side="left", value=tok.pad_token_id)
    return tokens.to(model.cfg.device), mask.to(model.cfg.device), len(prefix)


__all__ = ["check_context_edit", "continuation_logits", "prefixed_rows", "prompted_layout", "sample_in_context"]
