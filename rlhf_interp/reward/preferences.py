"""Preference pairs: read and validate a user's JSONL file, write one, split it for training.

File format: one JSON object per line (blank lines are skipped)::

    {"prompt": "Once upon a time", "chosen": " there was a king. He ruled.", "rejected": " there was a king"}

``prompt``, ``chosen`` and ``rejected`` are strings (``prompt`` may be empty); ``chosen`` must differ from
``rejected``. Other keys are kept as they are (synthetic pairs add ``chosen_score``, ``rejected_score``,
``flipped``). The reward model scores ``chosen`` and ``rejected`` *as they stand*, without the prompt,
because PPO hands its reward the completions only (see `rlhf_interp.reward.model`).

Why validate the whole file first: a file that breaks on line 9000 must not leave a model trained on
lines 1-8999; every bad line is reported with its number before anything is trained.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_interp.core.io import jsonl_lines, write_jsonl

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
    for number, line in jsonl_lines(path):
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
    return write_jsonl(Path(path).expanduser(), (pair.to_json() for pair in pairs))


def split_pairs(pairs: list[PreferencePair], val_fraction: float, seed: int = 0
                ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Random train / validation split (at least one validation pair when ``val_fraction`` > 0)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, math.floor(len(pairs) * val_fraction)) if val_fraction > 0 and len(pairs) > 1 else 0
    return [pairs[i] for i in order[n_val:]], [pairs[i] for i in order[:n_val]]
