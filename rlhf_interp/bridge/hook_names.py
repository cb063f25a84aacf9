"""TransformerLens hook names, built in one place.

Why: a hook name typed as a string in several modules drifts (``hook_mlp_out`` vs ``mlp.hook_out``) and a typo
only shows as a hook that never fires. Every per-block name the toolkit uses is made by `block_hook`.
"""

from __future__ import annotations

import operator


def block_hook(layer: int, point: str) -> str:
    """``(3, "hook_resid_post")`` -> ``"blocks.3.hook_resid_post"``; ``point`` is the name below the block
    as TransformerLens spells it (``"attn.hook_z"``, ``"mlp.out.hook_in"``, ``"hook_mlp_out"``)."""
    try:
        index = -1 if isinstance(layer, bool) else operator.index(layer)  # numpy / torch integers are fine
    except TypeError:
        index = -1
    if index < 0:
        raise ValueError(f"layer must be a non-negative integer, got {layer!r}")
    return f"blocks.{index}.{point}"
