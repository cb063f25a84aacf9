"""Content keys for caches: a cache must key on what changes the result (a steering vector's values,
not its repr), so two different vectors never share an entry."""

from __future__ import annotations

import hashlib
from typing import Any

import torch


def tensor_digest(*tensors: torch.Tensor | None) -> str:
    """SHA-1 of the shapes, dtypes and values of ``tensors`` (None counts as a distinct marker)."""
    h = hashlib.sha1()
    for t in tensors:
        if t is None:
            h.update(b"<none>")
            continue
        t = torch.as_tensor(t).detach()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def text_digest(texts: Any) -> str:
    """SHA-1 of a sequence of strings (order matters)."""
    h = hashlib.sha1()
    for text in texts:
        data = str(text).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()
