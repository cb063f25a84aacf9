"""What the samples *do*: the rate of a behaviour X, a reward for X's absence, and token-id diversity.

Why a named, regex-defined behaviour: the KL-direction study asks whether a penalty keeps alive a
behaviour of the reference that the reward dislikes. The same definition must count X in the base
model's samples (its base rate), score X in PPO's reward (``pattern_count`` with a negative
``reward_scale``, usable from a config as ``rlhf_interp.measure.behaviour:pattern_count``) and measure X
along training, so it lives in one place.

Diversity is measured on token ids (not whitespace words): it sees repeated punctuation and
repeated sub-words, which is how a collapsed policy on a 24-token budget usually repeats itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import pandas as pd
import torch
from torch import Tensor


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ValueError(f"Behaviour pattern {pattern!r} is not a valid regular expression ({err}).") from err


def pattern_count(texts: list[str], pattern: str) -> Tensor:
    """How many non-overlapping matches of the regex ``pattern`` each text holds (a reward function:
    ``reward: rlhf_interp.measure.behaviour:pattern_count``, ``reward_kwargs: {pattern: ...}``)."""
    rx = _compiled(pattern)
    return torch.tensor([float(len(rx.findall(t))) for t in texts])


@dataclass(frozen=True)
class Behaviour:
    """A behaviour X: present in a text when the regex ``pattern`` matches it at least once."""

    name: str
    pattern: str
    description: str = ""

    def __post_init__(self) -> None:
        _compiled(self.pattern)  # fail at definition, naming the pattern

    def counts(self, texts: Sequence[str]) -> Tensor:
        return pattern_count(list(texts), self.pattern)

    def present(self, texts: Sequence[str]) -> Tensor:
        return self.counts(texts) > 0

    def rate(self, texts: Sequence[str]) -> float:
        """Share of texts showing X at least once (NaN for no texts)."""
        return float(self.present(texts).float().mean()) if len(texts) else float("nan")

    def reward_config(self) -> dict:
        """PPOConfig fields that reward X's absence: ``-count(X)`` per continuation."""
        return {"reward": "rlhf_interp.measure.behaviour:pattern_count", "reward_kwargs": {"pattern": self.pattern},
                "reward_scale": -1.0}


# Candidate behaviours for the suppression task (token or phrase classes a 24-token continuation can show).
CANDIDATES: dict[str, Behaviour] = {b.name: b for b in [
    Behaviour("newline", r"\n", "a line break"),
    Behaviour("comma", r",", "a comma"),
    Behaviour("question_mark", r"\?", "a question mark"),
    Behaviour("exclamation", r"!", "an exclamation mark"),
    Behaviour("quote", r"[\"\u201c\u201d]", "a double quotation mark (dialogue)"),
    Behaviour("word_I", r"\bI\b", "the word 'I'"),
    Behaviour("digit", r"\d", "a digit"),
    Behaviour("word_and", r"\band\b", "the word 'and'"),
    Behaviour("word_the", r"\b[Tt]he\b", "the word 'the'"),
    Behaviour("apostrophe", r"['\u2019]", "an apostrophe (contractions, possessives)"),
    Behaviour("colon_semicolon", r"[:;]", "a colon or semicolon"),
    Behaviour("dash", r"-|\u2014|\u2013", "a hyphen or dash"),
    Behaviour("word_he_she", r"\b(?:[Hh]e|[Ss]he)\b", "the word 'he' or 'she'"),
    Behaviour("period", r"\.", "a period"),
    # common in any text (never picked by the 10-30% rule on real models); on the tiny random model it is the one
    # behaviour frequent enough to give PPO a reward signal, which the study's tests need
    Behaviour("capital", r"[A-Z]", "a capital letter"),
]}


def behaviour_rates(texts: Sequence[str], behaviours: Iterable[Behaviour] = CANDIDATES.values()) -> pd.DataFrame:
    """One row per behaviour: name, description, pattern, rate (share of texts with X), mean count, n_texts,
    and the binomial standard error of the rate."""
    rows = []
    for b in behaviours:
        counts = b.counts(texts)
        rate = float((counts > 0).float().mean())
        rows.append({"behaviour": b.name, "description": b.description, "pattern": b.pattern, "rate": rate,
                     "rate_stderr": (rate * (1 - rate) / max(len(texts), 1)) ** 0.5,
                     "mean_count": float(counts.mean()), "n_texts": len(texts)})
    return pd.DataFrame(rows)


def generated_token_lists(tokens: Tensor, mask: Tensor, exclude: Sequence[int] = ()) -> list[list[int]]:
    """The real generated ids of each row (``mask`` 1), minus the ids in ``exclude`` (e.g. EOS)."""
    skip = {int(i) for i in exclude}
    return [[t for t, m in zip(row.tolist(), mrow.tolist()) if m and t not in skip]
            for row, mrow in zip(tokens.cpu(), mask.cpu())]


def token_distinct(tokens: Tensor, mask: Tensor, ns: Sequence[int] = (1, 2, 3), exclude: Sequence[int] = ()
                   ) -> dict[str, float]:
    """``{"distinct_1": ..., "distinct_2": ..., ...}`` on token ids (`measure.distinct_n`, pooled over rows).

    Distinct-n depends on how many tokens are pooled: compare only batches of the same size and length.
    """
    # distinct-n's one home; imported here because measure.sequences imports the bridge (heavy) at import time
    from rlhf_interp.measure.sequences import distinct_n

    lists = generated_token_lists(tokens, mask, exclude)
    return {f"distinct_{n}": distinct_n(lists, n) for n in ns}


def chunked_distinct(tokens: Tensor, mask: Tensor, chunk: int, ns: Sequence[int] = (1, 2, 3),
                     exclude: Sequence[int] = ()) -> dict[str, float]:
    """Mean `token_distinct` over consecutive chunks of ``chunk`` rows: a baseline measured on a big sample
    at the pooling size of a smaller one (e.g. a PPO batch)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}.")
    parts = [token_distinct(tokens[i:i + chunk], mask[i:i + chunk], ns, exclude)
             for i in range(0, tokens.shape[0] - chunk + 1, chunk)]
    if not parts:
        raise ValueError(f"chunk = {chunk} is larger than the {tokens.shape[0]} rows given.")
    return {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]}


def collapse_onset(phases: Sequence[int], diversity: Sequence[float], base: float, fraction: float = 0.5
                   ) -> int | None:
    """First phase whose diversity is below ``fraction`` x the base's (None: never). Mode collapse, dated."""
    for phase, value in zip(phases, diversity):
        if value < fraction * base:
            return int(phase)
    return None
