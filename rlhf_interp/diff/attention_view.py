"""A circuitsvis view of the heads whose attention changed most: base and tuned side by side."""

from __future__ import annotations

import pandas as pd
import torch

from rlhf_interp.bridge.activations import capture
from rlhf_interp.bridge.tokens import tokenize
from rlhf_interp.diff.compat import check_compatible
from rlhf_interp.diff.stream import PATTERN_HOOK, block_hook


def most_changed_heads(attention: pd.DataFrame, n: int = 4) -> list[tuple[int, int]]:
    """``(layer, head)`` pairs with the largest ``js_divergence`` (use the table `attention_diff` returns)."""
    if "step" in attention.columns:  # a trajectory: rank heads at its last step
        attention = attention[attention["step"] == attention["step"].max()]
    top = attention.sort_values("js_divergence", ascending=False).head(n)
    return [(int(layer), int(head)) for layer, head in zip(top["layer"], top["head"])]


def head_patterns(bridge, prompt: str, heads: list[tuple[int, int]]) -> tuple[list[str], torch.Tensor]:
    """Token strings of ``prompt`` (BOS prepended) and the attention patterns ``[len(heads), pos, pos]``."""
    tokens, mask = tokenize(bridge, [prompt])
    names = sorted({block_hook(layer, PATTERN_HOOK) for layer, _ in heads})
    cache = capture(bridge, tokens, mask, names)
    patterns = torch.stack([cache[block_hook(layer, PATTERN_HOOK)][0, head] for layer, head in heads])
    return [bridge.tokenizer.decode([t]) for t in tokens[0].tolist()], patterns.detach().cpu()


def attention_diff_view(base, tuned, prompt: str, heads: list[tuple[int, int]]):
    """``circuitsvis.attention.attention_heads`` with each head twice, "L{l}H{h} base" then "... tuned".

    Pass the result to ``Report.circuitsvis`` for an offline HTML view.
    """
    import circuitsvis

    if not heads:
        raise ValueError("No heads to show: pass (layer, head) pairs, e.g. most_changed_heads(attention_table).")
    check_compatible(base, tuned)
    str_tokens, base_patterns = head_patterns(base, prompt, heads)
    _, tuned_patterns = head_patterns(tuned, prompt, heads)
    stacked = torch.stack([base_patterns, tuned_patterns], dim=1).flatten(0, 1)  # base, tuned, base, tuned...
    names = [f"L{layer}H{head} {which}" for layer, head in heads for which in ("base", "tuned")]
    return circuitsvis.attention.attention_heads(attention=stacked, tokens=str_tokens, attention_head_names=names)
