"""Prompt sets: the shipped plain-English openings, or a user's text / JSONL file."""

from __future__ import annotations

import random
from pathlib import Path

from rlhf_interp.core.io import read_jsonl, text_lines

SHIPPED_PROMPTS = Path(__file__).parent / "data" / "prompts.txt"


def load_prompts(source: str | Path | None = None, *, limit: int | None = None, seed: int | None = None,
                 field: str = "prompt") -> list[str]:
    """Load prompts.

    ``source``: None or ``"default"`` for the shipped set; a ``.txt`` file (one prompt a line, blank
    lines and ``#`` comments skipped); or a ``.jsonl`` file whose objects carry ``field`` (default
    ``"prompt"``). ``seed`` shuffles before ``limit`` is applied, so a subset is a fair sample.
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be a whole number >= 1 (or None for every prompt), got {limit!r}.")
    path = SHIPPED_PROMPTS if source in (None, "default") else Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Prompt file {path} does not exist. Pass a .txt (one prompt a line) or "
                                f".jsonl file (objects with a {field!r} field), or omit it for the shipped set.")
    prompts: list[str] = []
    if path.suffix == ".jsonl":
        for number, record in read_jsonl(path):
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise ValueError(f"{path}:{number}: expected an object with a string {field!r} field.")
            prompts.append(record[field])
    else:
        prompts = [ln for _, ln in text_lines(path) if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"{path} holds no prompts.")
    if seed is not None:
        prompts = prompts[:]
        random.Random(seed).shuffle(prompts)
    return prompts[:limit] if limit is not None else prompts
