"""Masks and positions for left-padded, BOS-prefixed batches: the one place that knows the layout.

Layout of every batch in the toolkit (see `rlhf_interp.bridge.tokenize`)::

    column       0    1    2    3    4
    row 0       pad  pad  BOS   a    b      attention_mask 0 0 1 1 1, real positions -1 -1 0 1 2
    row 1       BOS   c    d    e    f      attention_mask 1 1 1 1 1, real positions  0 1 2 3 4

Why one module: left padding shifts columns, so "position 3" means a different column in each row.
Every caller that needs a token's position among the real tokens, the BOS column, the last real
token or a padded stack of ragged rows asks here instead of re-deriving it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


def real_positions(attention_mask: Int[Tensor, "batch pos"], *, pad_value: int | None = -1
                   ) -> Int[Tensor, "batch pos"]:
    """Index of each token among its row's real tokens (BOS = 0): the cumulative sum of the mask minus one.

    Padding gets ``pad_value`` (-1 by default); ``pad_value=None`` leaves the raw cumulative sum there
    (``-1`` before the first real token of a left-padded row, which callers may clamp).
    """
    positions = attention_mask.long().cumsum(dim=-1) - 1
    if pad_value is None:
        return positions
    return positions.masked_fill(attention_mask == 0, pad_value)


def bos_columns(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch"]:
    """Column of each row's first real token (BOS under the toolkit's convention), left padding or none."""
    return attention_mask.long().argmax(dim=-1)


def content_mask(attention_mask: Int[Tensor, "batch pos"], *, include_bos: bool = False,
                 keep_bos_if_alone: bool = False) -> Bool[Tensor, "batch pos"]:
    """Real tokens, without the BOS position unless ``include_bos``.

    BOS is an attention sink with outlying activations; statistics over "the text" leave it out.
    ``keep_bos_if_alone``: a row that holds only BOS keeps it (so a mean over the row is defined).
    """
    real = attention_mask.bool()
    if include_bos:
        return real
    out = real & (real_positions(attention_mask) > 0)
    if keep_bos_if_alone:
        alone = ~out.any(dim=-1, keepdim=True)
        out = torch.where(alone, real, out)
    return out


def last_token_index(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch"]:
    """Column of each row's last real token, for left or right padding alike."""
    columns = torch.arange(1, attention_mask.shape[-1] + 1, device=attention_mask.device)
    return (attention_mask.bool() * columns).argmax(-1)


def gather_last(values: Float[Tensor, "batch pos ..."], attention_mask: Int[Tensor, "batch pos"]
                ) -> Float[Tensor, "batch ..."]:
    """The value at each row's last real token."""
    rows = torch.arange(values.shape[0], device=values.device)
    return values[rows, last_token_index(attention_mask).to(values.device)]


def pad_rows(rows: Sequence[Tensor], *, side: str = "left", value: float | int = 0
             ) -> tuple[Tensor, Int[Tensor, "batch pos"]]:
    """Stack ragged rows ``[len_i, ...]`` into ``[batch, max_len, ...]`` plus the mask of real entries.

    ``side="left"`` is the toolkit's padding for model inputs (the last column is every row's last
    token); ``side="right"`` left-aligns rows (real position p sits in column p).
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}.")
    if not rows:
        raise ValueError("pad_rows needs at least one row.")
    first = rows[0]
    width = max(int(r.shape[0]) for r in rows)
    out = torch.full((len(rows), width, *first.shape[1:]), value, dtype=first.dtype, device=first.device)
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=first.device)
    for i, row in enumerate(rows):
        n = int(row.shape[0])
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        out[i, cols] = row.to(out.device)
        mask[i, cols] = 1
    return out, mask


def left_align(values: Tensor, attention_mask: Int[Tensor, "batch pos"]) -> Tensor:
    """Move each row's real entries of a left-padded ``[batch, pos, ...]`` tensor to the front (zeros after)."""
    real = attention_mask.bool().to(values.device)
    return pad_rows([values[i, real[i]] for i in range(values.shape[0])], side="right")[0]


def continuation_mask(new_tokens: Int[Tensor, "batch new"], stop_ids: Sequence[int]) -> Int[Tensor, "batch new"]:
    """1 on generated tokens up to and including the first stop token of each row, 0 after it."""
    if not stop_ids:
        return torch.ones_like(new_tokens)
    is_stop = torch.isin(new_tokens, torch.tensor(list(stop_ids), device=new_tokens.device)).long()
    stops_before = torch.cumsum(is_stop, dim=1) - is_stop  # stop tokens strictly before this column
    return (stops_before == 0).long()
