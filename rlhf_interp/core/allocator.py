"""glibc malloc settings for training loops that allocate and free the same large tensors over and over.

Why: glibc hands out every block above its mmap threshold (128 KiB, raised dynamically up to 32 MiB) as a fresh
``mmap`` and unmaps it on free, so each [batch, gen, vocab] tensor of a PPO phase (75 MB for 16 x 24 SmolLM2
logits in fp32: logits, log-softmax, exp, products, their gradients) is page-faulted in and zeroed by the kernel
again, dozens of times per phase. Serving such blocks from the heap and keeping freed ones lets the next tensor
reuse them: `benchmarks/README.md` (item 14) has what it bought. Costs: the process keeps up to ``limit_bytes``
of freed memory instead of returning it to the system (peak memory is unchanged). Linux with glibc only;
elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


def reuse_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Keep blocks up to ``limit_bytes`` on the heap and up to that much freed memory for reuse; True when set."""
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    value = min(int(limit_bytes), 2**31 - 1)  # mallopt takes a C int
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, value)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, value))
