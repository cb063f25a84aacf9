"""Synthetic preference pairs: sample two completions per prompt, label them by a reward function.

No human data? This makes pairs from any reward function (ties dropped, optional label noise), so what a
reward model learns can be compared with the function it imitates.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from tqdm.auto import tqdm

from rlhf_interp.bridge.generation import generate
from rlhf_interp.core.seeding import mix_seed
from rlhf_interp.reward.functions import RewardFn, reward_name, score
from rlhf_interp.reward.preferences import PreferencePair


@dataclass
class SynthStats:
    """What synthesis cost and what it threw away."""

    pairs: int = 0
    sampled_pairs: int = 0  # prompts sampled twice
    ties: int = 0  # dropped: both completions scored the same
    flipped: int = 0  # label noise: chosen and rejected swapped
    tokens_generated: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def label_pair(prompt: str, a: str, b: str, score_a: float, score_b: float, flip: bool) -> PreferencePair | None:
    """The pair the reward prefers (None on a tie); ``flip`` swaps the labels (label noise)."""
    if score_a == score_b:
        return None
    (chosen, c_score), (rejected, r_score) = ((a, score_a), (b, score_b)) if score_a > score_b else ((b, score_b), (a, score_a))
    if flip:
        (chosen, c_score), (rejected, r_score) = (rejected, r_score), (chosen, c_score)
    return PreferencePair(prompt, chosen, rejected, {"chosen_score": c_score, "rejected_score": r_score, "flipped": flip})


def synthesize_pairs(bridge, reward: RewardFn, prompts: list[str], n_pairs: int, *, max_new_tokens: int = 20,
                     batch_size: int = 64, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, stop_at_eos: bool = False, label_noise: float = 0.0,
                     seed: int = 0, progress: bool = True) -> tuple[list[PreferencePair], SynthStats]:
    """Sample two completions per prompt with ``bridge``, label each pair by ``reward``, drop ties.

    ``batch_size`` is the number of sequences per sampling call (``batch_size // 2`` prompts, each twice);
    large batches are much faster per token on the CPU. ``label_noise`` is the probability that a
    pair's labels are swapped. Sampling is the same as a PPO rollout's (`rlhf_interp.bridge.generate`,
    ``stop_at_eos`` off like PPOConfig's default), so the texts look like what the policy writes at the
    start of training.
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}.")
    if batch_size < 2 or batch_size % 2:
        raise ValueError(f"batch_size must be an even number >= 2 (two completions per prompt), got {batch_size}.")
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise is a probability in [0, 1], got {label_noise}.")
    if not prompts:
        raise ValueError("synthesize_pairs needs at least one prompt.")
    rng = random.Random(seed)
    stats = SynthStats()
    pairs: list[PreferencePair] = []
    per_call = batch_size // 2
    start = time.perf_counter()
    order: list[str] = []
    bar = tqdm(total=n_pairs, desc="synthetic pairs", unit="pair", disable=not progress)
    calls = 0
    while len(pairs) < n_pairs:
        while len(order) < per_call:
            shuffled = prompts[:]
            rng.shuffle(shuffled)
            order += shuffled
        batch, order = order[:per_call], order[per_call:]
        sampled = generate(bridge, batch + batch, max_new_tokens=max_new_tokens, temperature=temperature,
                           top_k=top_k, top_p=top_p, stop_at_eos=stop_at_eos, seed=mix_seed(seed, calls))
        calls += 1
        texts = sampled.texts
        scores = score(reward, texts).tolist()
        stats.tokens_generated += int(sampled.n_new_tokens.sum())
        for i, prompt in enumerate(batch):
            stats.sampled_pairs += 1
            pair = label_pair(prompt, texts[i], texts[i + per_call], scores[i], scores[i + per_call],
                              flip=rng.random() < label_noise)
            if pair is None:
                stats.ties += 1
                continue
            if len(pairs) < n_pairs:
                stats.flipped += int(pair.extra["flipped"])
                pairs.append(pair)
                bar.update(1)
        if stats.sampled_pairs >= 8 * per_call and not pairs:
            raise RuntimeError(f"Reward {reward_name(reward)!r} gave tied scores on all "
                               f"{stats.sampled_pairs} sampled pairs, so no preference can be labelled. Use a "
                               f"reward that varies between completions, or longer completions (max_new_tokens).")
    bar.close()
    stats.pairs = len(pairs)
    stats.seconds = time.perf_counter() - start
    return pairs, stats
