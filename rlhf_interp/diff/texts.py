"""Texts to diff on: besides prompt files, the tuned policy's own samples (where its behaviour differs most)."""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm


def policy_samples(bridge, prompts: Sequence[str], *, max_new_tokens: int = 32, batch_size: int = 8,
                   temperature: float = 1.0, seed: int = 0) -> list[str]:
    """Prompt + sampled continuation for each prompt (seeded; the global RNG is left as it was)."""
    texts: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(prompts), batch_size), desc="sampling", leave=False):
            chunk = list(prompts[start:start + batch_size])
            out = bridge.generate(chunk, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                  verbose=False)
            texts.extend([out] if isinstance(out, str) else list(out))
    return texts
