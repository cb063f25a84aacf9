"""Tokenization, one convention for the whole toolkit: BOS prepended, left-padded, with a mask.

Why left padding: in a batch the last column is then every row's newest token, which is what
generation continues from; the mask tells the model (and `rlhf_interp.core.masks`) which columns are real.
"""

from __future__ import annotations

import torch

from rlhf_interp.core.masks import pad_rows


def tokenize(bridge, texts: list[str] | str, *, device: torch.device | str | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded token ids with BOS prepended, and the attention mask: ``(tokens, mask)`` each [batch, pos]."""
    if isinstance(texts, str):
        texts = [texts]
    if not texts:
        raise ValueError("tokenize needs at least one text.")
    tokenizer = bridge.tokenizer
    rows = [torch.tensor([tokenizer.bos_token_id] + tokenizer(t, add_special_tokens=False)["input_ids"],
                         dtype=torch.long) for t in texts]
    tokens, mask = pad_rows(rows, side="left", value=tokenizer.pad_token_id)
    device = device if device is not None else bridge.cfg.device
    return tokens.to(device), mask.to(device)
