"""Side effects beyond the target: how much does a change move the model on text it was not aimed at?

An edit (or a fine-tuned model) bought its reward on the target prompts; its *collateral* KL is the
per-token KL(changed || base) teacher-forced on an unrelated prompt set (code, arithmetic, facts,
instructions, other languages: nothing like the story openings the reward is measured on), with the
same `kl_shift` machinery as everything else. Alongside it, the tokens whose probability moved most on
that text say *what* leaked.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from rlhf_interp.bridge import tokenize
from rlhf_interp.edits import Edit, NoEdit
from rlhf_interp.core.kl import mean_and_stderr
from rlhf_interp.measure import LogitsCache, forward_logits, kl_shift

# Deliberately far from the shipped story openings: code, maths, facts, instructions, lists, dialogue, French.
UNRELATED_PROMPTS: list[str] = [
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "import numpy as np\nx = np.linspace(0, 1, 100)\ny =",
    "SELECT name, age FROM users WHERE",
    "The derivative of x squared with respect to x is",
    "12 + 35 = 47, 48 + 19 = 67, 23 + 44 =",
    "The chemical symbol for gold is Au and the chemical symbol for silver is",
    "Paris is the capital of France, and Berlin is the capital of",
    "Water boils at 100 degrees Celsius at sea level, which is",
    "To reset your password, open the settings menu and",
    "Ingredients: 2 cups of flour, 1 teaspoon of salt,",
    "Q: What is the largest planet in the solar system?\nA:",
    "User: Can you recommend a good book about history?\nAssistant:",
    "Monday, Tuesday, Wednesday, Thursday,",
    "Le chat est sur la table et le chien",
    "The mitochondria is the powerhouse of the",
    "<html>\n  <head>\n    <title>",
]


def collateral_kl(model, edit: Edit | None, prompts: Sequence[str] = UNRELATED_PROMPTS, *, reference=None,
                  cache: LogitsCache | None = None) -> dict[str, float]:
    """Per-token KL(changed || reference) on ``prompts`` (`kl_shift`): mean per token with its standard
    error over prompts (each prompt's mean first), the max, and the mean summed per prompt.

    Keys: collateral_kl_mean, collateral_kl_stderr, collateral_kl_max, collateral_kl_per_prompt,
    collateral_positions."""
    per_token = kl_shift(model, edit, list(prompts), reference=reference, cache=cache)
    per_prompt = per_token.groupby("prompt_idx")["kl_pi_ref"]
    mean, se = mean_and_stderr(torch.tensor(per_prompt.mean().to_numpy(), dtype=torch.float64))
    return {"collateral_kl_mean": mean, "collateral_kl_stderr": se,
            "collateral_kl_max": float(per_token["kl_pi_ref"].max()),
            "collateral_kl_per_prompt": float(per_prompt.sum().mean()), "collateral_positions": int(len(per_token))}


@torch.no_grad()
def top_moved_tokens(model, edit: Edit | None, prompts: Sequence[str] = UNRELATED_PROMPTS, *, reference=None,
                     k: int = 10, cache: LogitsCache | None = None) -> pd.DataFrame:
    """The ``k`` tokens whose next-token probability rose most and the ``k`` that fell most, averaged
    over every real position of ``prompts`` (changed model vs reference).

    Columns: direction ("up"/"down"), rank (1 = most moved), token_id, token, delta_prob,
    prob_reference, prob_changed (position means)."""
    edit = edit if edit is not None else NoEdit()
    edit.on(model)
    tokens, mask = tokenize(model, list(prompts))
    cache = cache if cache is not None else LogitsCache(max_entries=1)
    ref_logits = cache.logits(reference if reference is not None else model, tokens, mask)
    with edit:
        logits = forward_logits(model, tokens, mask)
    real = mask.bool().cpu()
    p_ref = torch.softmax(ref_logits[real].double(), dim=-1).mean(0)
    p_new = torch.softmax(logits[real].double(), dim=-1).mean(0)
    delta = p_new - p_ref
    rows = []
    for direction, values in (("up", delta), ("down", -delta)):
        top = torch.topk(values, k)
        for rank, idx in enumerate(top.indices.tolist(), start=1):
            rows.append({"direction": direction, "rank": rank, "token_id": idx,
                         "token": model.tokenizer.decode([idx]), "delta_prob": float(delta[idx]),
                         "prob_reference": float(p_ref[idx]), "prob_changed": float(p_new[idx])})
    return pd.DataFrame(rows)


__all__ = ["UNRELATED_PROMPTS", "collateral_kl", "top_moved_tokens"]
