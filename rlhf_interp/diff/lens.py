"""Logit lens of a direction: which tokens does adding a residual-stream direction promote or suppress?

How the final norm is applied to a *direction* (not a residual): RMSNorm maps x to
``w * x / rms(x)``. For a small change ``v`` added to a residual ``x``, the logits move by about
``W_U^T (w * v) / rms(x)`` (dropping the term along ``x`` itself, which the norm's Jacobian removes
and which depends on the particular ``x``). ``1/rms(x)`` is one positive number for all vocabulary
entries, so it changes no ranking: we report ``score = W_U^T (w * v)``, minus its mean over the
vocabulary (a shift of every logit by the same amount changes no probability). For LayerNorm models
``v`` is also centred first (LayerNorm subtracts the mean); the bias cancels in a difference.
Scores are therefore in "logits per unit of direction, before the final 1/rms scale".
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor


def direction_logit_scores(bridge, vectors: Float[Tensor, "n d_model"]) -> Float[Tensor, "n vocab"]:
    """Vocabulary scores of each direction through ``ln_final`` (weight only) and the unembedding."""
    W_U = bridge.W_U.detach()
    v = vectors.to(device=W_U.device, dtype=W_U.dtype)
    if str(getattr(bridge.cfg, "normalization_type", "")).startswith("LN"):
        v = v - v.mean(-1, keepdim=True)
    weight = getattr(bridge.ln_final, "w", None)
    if weight is not None:
        v = v * weight.detach().to(v.dtype)
    scores = v @ W_U
    return scores - scores.mean(-1, keepdim=True)


def token_id(bridge, token: str) -> int:
    """The id of a string that must be exactly one token (e.g. ".")."""
    ids = bridge.tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{token!r} is {len(ids)} tokens ({ids}) in this tokenizer; watch tokens must be single "
                         f"tokens, e.g. '.' or ' the'.")
    return ids[0]


def logit_lens_table(bridge, vectors: Float[Tensor, "layer d_model"], *, hook: str = "hook_resid_post",
                     model: str = "tuned", k: int = 10) -> pd.DataFrame:
    """Top-``k`` promoted and suppressed tokens of each layer's direction.

    Columns: ``layer``, ``hook``, ``model`` (whose ``ln_final``/``W_U`` projected it), ``kind``
    ("promoted"/"suppressed"), ``rank`` (1 = strongest), ``token_id``, ``token``, ``score``.
    """
    scores = direction_logit_scores(bridge, vectors)
    rows = []
    for layer in range(scores.shape[0]):
        for kind, largest in (("promoted", True), ("suppressed", False)):
            top = torch.topk(scores[layer], k, largest=largest)
            for rank, (value, tid) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
                rows.append({"layer": layer, "hook": hook, "model": model, "kind": kind, "rank": rank,
                             "token_id": tid, "token": bridge.tokenizer.decode([tid]), "score": value})
    return pd.DataFrame(rows)


def logit_lens_token_ranks(bridge, vectors: Float[Tensor, "layer d_model"], tokens: Sequence[str], *,
                           hook: str = "hook_resid_post", model: str = "tuned") -> pd.DataFrame:
    """Where chosen tokens rank in each layer's direction: ``rank`` 1 = most promoted of the whole vocabulary.

    Columns: ``layer``, ``hook``, ``model``, ``token``, ``token_id``, ``score``, ``rank``, ``percentile``
    (share of the vocabulary scored below it, so 1.0 = top).
    """
    scores = direction_logit_scores(bridge, vectors)
    vocab = scores.shape[1]
    rows = []
    for token in tokens:
        tid = token_id(bridge, token)
        own = scores[:, tid: tid + 1]
        ranks = 1 + (scores > own).sum(-1)
        below = (scores < own).sum(-1)
        for layer in range(scores.shape[0]):
            zero = bool(vectors[layer].abs().max() == 0)  # no direction: no ranking (not a tie for first)
            rows.append({"layer": layer, "hook": hook, "model": model, "token": token, "token_id": tid,
                         "score": own[layer, 0].item(), "rank": float("nan") if zero else int(ranks[layer].item()),
                         "percentile": float("nan") if zero else below[layer].item() / (vocab - 1)})
    return pd.DataFrame(rows)
