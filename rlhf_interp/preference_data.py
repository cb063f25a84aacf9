"""Preference pairs: read and validate a user's JSONL file, write one, or synthesize pairs from a reward function.

File format: one JSON object per line (blank lines are skipped)::

    {"prompt": "Once upon a time", "chosen": " there was a king. He ruled.", "rejected": " there was a king"}

``prompt``, ``chosen`` and ``rejected`` are strings (``prompt`` may be empty); ``chosen`` must differ from
``rejected``. Other keys are kept as they are (synthetic pairs add ``chosen_score``, ``rejected_score``,
``flipped``). The reward model scores ``chosen`` and ``rejected`` *as they stand*, without the prompt,
because PPO hands its reward the completions only (see reward_model.py).

Why validate the whole file first: a file that breaks on line 9000 must not leave a model trained on
lines 1-8999; every bad line is reported with its number before anything is trained.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rlhf_interp.generation import generate
from rlhf_interp.rewards import RewardFn, score

REQUIRED_FIELDS = ("prompt", "chosen", "rejected")
MAX_REPORTED_ERRORS = 10


class PreferenceDataError(ValueError):
    """A preference file has malformed lines; the message lists them with their line numbers."""


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    extra: dict[str, Any] = field(default_factory=dict)  # any other keys of the JSON line, kept verbatim

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected, **self.extra}


def parse_preference_line(line: str) -> PreferencePair:
    """One JSONL line -> a pair; raises ValueError saying what is wrong with it (no line number: the caller adds it)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object with keys {list(REQUIRED_FIELDS)}, got {type(record).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        raise ValueError(f"missing key(s) {missing}; each line needs {list(REQUIRED_FIELDS)}")
    wrong = [f"{k} is {type(record[k]).__name__}" for k in REQUIRED_FIELDS if not isinstance(record[k], str)]
    if wrong:
        raise ValueError(f"{', '.join(wrong)}; prompt, chosen and rejected must be strings")
    if record["chosen"] == record["rejected"]:
        raise ValueError("chosen and rejected are the same text; a pair must differ")
    extra = {k: v for k, v in record.items() if k not in REQUIRED_FIELDS}
    return PreferencePair(record["prompt"], record["chosen"], record["rejected"], extra)


def read_preferences(path: str | Path) -> list[PreferencePair]:
    """Read and validate every line of a preference JSONL file; raise `PreferenceDataError` listing bad lines."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Preference file {path} does not exist. Give a JSONL file with one "
                                f'{{"prompt": ..., "chosen": ..., "rejected": ...}} object per line, or make one '
                                f"with `rlhf-interp reward-model synth`.")
    pairs: list[PreferencePair] = []
    errors: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                pairs.append(parse_preference_line(line))
            except ValueError as err:
                errors.append(f"{path}:{number}: {err}")
    if errors:
        shown = "\n".join(errors[:MAX_REPORTED_ERRORS])
        more = f"\n... and {len(errors) - MAX_REPORTED_ERRORS} more" if len(errors) > MAX_REPORTED_ERRORS else ""
        raise PreferenceDataError(f"{len(errors)} malformed line(s) in {path}; nothing was trained. Fix them:\n"
                                  f"{shown}{more}")
    if not pairs:
        raise PreferenceDataError(f"{path} holds no preference pairs.")
    return pairs


def write_preferences(pairs: list[PreferencePair], path: str | Path) -> Path:
    """Write pairs as JSONL, atomically (a temporary file renamed into place)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(pair.to_json(), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------
# Synthetic pairs


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
    pair's labels are swapped. Sampling is the same as a PPO rollout's (`rlhf_interp.generation.generate`,
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
                           top_k=top_k, top_p=top_p, stop_at_eos=stop_at_eos, seed=seed * 1_000_003 + calls)
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
            raise RuntimeError(f"Reward {getattr(reward, 'reward_name', reward)!r} gave tied scores on all "
                               f"{stats.sampled_pairs} sampled pairs, so no preference can be labelled. Use a "
                               f"reward that varies between completions, or longer completions (max_new_tokens).")
    bar.close()
    stats.pairs = len(pairs)
    stats.seconds = time.perf_counter() - start
    return pairs, stats


def split_pairs(pairs: list[PreferencePair], val_fraction: float, seed: int = 0
                ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Random train / validation split (at least one validation pair when ``val_fraction`` > 0)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, math.floor(len(pairs) * val_fraction)) if val_fraction > 0 and len(pairs) > 1 else 0
    return [pairs[i] for i in order[n_val:]], [pairs[i] for i in order[:n_val]]
