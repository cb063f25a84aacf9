"""Seeds: derive one per (run, phase, batch ...) and run code under it without touching the caller's RNG.

Why: a sweep must give every setting the same random numbers, and a resumed run must redraw exactly
what the uninterrupted run drew; both need seeds derived from a base seed the same way everywhere.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import torch

_MIX = 1_000_003  # a prime: seed * _MIX + part keeps (seed, part) pairs apart for any realistic part


def mix_seed(seed: int, *parts: int) -> int:
    """A seed for ``parts`` (phase, batch number ...) under base ``seed``: ``((seed * M + p1) * M + p2) ...``."""
    out = int(seed)
    for part in parts:
        out = out * _MIX + int(part)
    return out


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with torch's RNG seeded to ``seed``, then restore the caller's RNG state.

    ``seed=None`` runs the block on the caller's RNG unchanged. CUDA generators are forked too when CUDA
    is present.
    """
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def seed_everything(seed: int) -> None:
    """Seed Python's ``random`` and torch (all devices) for a whole run."""
    random.seed(int(seed))
    torch.manual_seed(int(seed))
