"""Texts to diff on: besides prompt files, the tuned policy's own samples (where its behaviour differs most)."""

from __future__ import annotations

from typing import Sequence

from tqdm.auto import tqdm

from rlhf_interp.bridge.generation import generate
from rlhf_interp.core.seeding import mix_seed


def policy_samples(bridge, prompts: Sequence[str], *, max_new_tokens: int = 32, batch_size: int = 8,
                   temperature: float = 1.0, seed: int = 0) -> list[str]:
    """Prompt + sampled continuation for each prompt (batch i seeded ``mix_seed(seed, i)``; the global RNG is
    left as it was)."""
    texts: list[str] = []
    for number, start in enumerate(tqdm(range(0, len(prompts), batch_size), desc="sampling", leave=False)):
        sampled = generate(bridge, list(prompts[start:start + batch_size]), max_new_tokens=max_new_tokens,
                           temperature=temperature, seed=mix_seed(seed, number))
        texts.extend(prompt + text for prompt, text in zip(sampled.prompts, sampled.texts))
    return texts
