"""Synthetic preference pairs that a tiny random model can learn (shared by the reward-model tests)."""

from __future__ import annotations

import random

from rlhf_interp.reward.preferences import PreferencePair

WORDS = "the a dog cat ran sat on mat big small red blue house tree sky".split()


def period_pairs(n: int, seed: int = 0, prompt: str = "Say something") -> list[PreferencePair]:
    """Chosen ends with 1-3 periods, rejected with a word: learnable by a 2-layer random model."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        stem = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        pairs.append(PreferencePair(prompt, stem + "." * rng.randint(1, 3), stem + " " + rng.choice(WORDS)))
    return pairs
