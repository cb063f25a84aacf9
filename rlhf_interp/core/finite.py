"""Finiteness checks on large tensors (logits, log-probs) by one cheap reduction.

Why: ``torch.isfinite(x).all()`` writes a boolean tensor as large as ``x`` and then reduces it; on a rollout's
[batch, gen, vocab] logits that is ~10x slower than ``torch.aminmax``, whose minimum and maximum are NaN when
any element is NaN and +-inf when any is infinite.
"""

from __future__ import annotations

import torch
from torch import Tensor


def all_finite(x: Tensor) -> bool:
    """True when no element of ``x`` is NaN or infinite (an empty tensor is finite)."""
    if x.numel() == 0:
        return True
    if not x.is_floating_point():
        return True
    low, high = torch.aminmax(x.detach())
    return bool(torch.isfinite(low) & torch.isfinite(high))


def min_is_finite(x: Tensor) -> bool:
    """True when ``x`` has no NaN and no -inf (log-probs: no token excluded by top-k / top-p)."""
    return x.numel() == 0 or bool(torch.isfinite(x.detach().min()))
