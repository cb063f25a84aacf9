"""A circuitsvis view of the heads whose attention changed most: base and tuned side by side, and tuned - base.

`pattern_table` stores the shown heads' patterns as a tidy table, so `attention_views` rebuilds the views from a
report's CSV alone (no model)."""

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


def pattern_table(tokens: list[str], heads: list[tuple[int, int]], patterns: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Tidy attention patterns of the shown heads: one row per (head, model, query, key <= query)."""
    rows = []
    for model, tensor in patterns.items():
        for i, (layer, head) in enumerate(heads):
            for q in range(len(tokens)):
                for k in range(q + 1):
                    rows.append({"layer": layer, "head": head, "model": model, "query_pos": q, "key_pos": k,
                                 "query_token": tokens[q], "key_token": tokens[k], "weight": float(tensor[i, q, k])})
    return pd.DataFrame(rows)


def attention_views(patterns: pd.DataFrame, heads: list[tuple[int, int]]):
    """circuitsvis views from the tidy pattern table: base/tuned side by side, and tuned - base."""
    import circuitsvis
    import numpy as np

    n = int(patterns["query_pos"].max()) + 1
    tokens = patterns.drop_duplicates("query_pos").sort_values("query_pos")["query_token"].tolist()
    grids = {}
    for (layer, head, model), g in patterns.groupby(["layer", "head", "model"]):
        grid = np.zeros((n, n))
        grid[g["query_pos"], g["key_pos"]] = g["weight"]
        grids[(layer, head, model)] = grid
    pairs = np.stack([grids[(layer, head, model)] for layer, head in heads for model in ("base", "tuned")])
    names = [f"L{layer}H{head} {model}" for layer, head in heads for model in ("base", "tuned")]
    side_by_side = circuitsvis.attention.attention_heads(attention=pairs, tokens=tokens, attention_head_names=names)
    diff = np.stack([grids[(layer, head, "tuned")] - grids[(layer, head, "base")] for layer, head in heads])
    bound = float(np.abs(diff).max()) or 1.0
    difference = circuitsvis.attention.attention_heads(
        attention=diff, tokens=tokens, attention_head_names=[f"L{layer}H{head} tuned − base" for layer, head in heads],
        min_value=-bound, max_value=bound, negative_color="red", positive_color="blue")
    # per head: the key token whose attention changed most, averaged over the query rows that can see it
    visible = np.tril(np.ones((n, n)))
    column_change = diff.sum(axis=1) / visible.sum(axis=0)
    moves = []
    for i, (layer, head) in enumerate(heads):
        up, down = int(column_change[i].argmax()), int(column_change[i].argmin())
        moves.append(f"L{layer}H{head}: {tokens[up]!r} (position {up}) {column_change[i, up]:+.3f}, "
                     f"{tokens[down]!r} (position {down}) {column_change[i, down]:+.3f}")
    return tokens, side_by_side, difference, bound, moves
