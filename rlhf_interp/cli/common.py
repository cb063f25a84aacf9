"""Argument handling the subcommands share: model / prompts / sampling / reward / output options, list
parsing (``0,1,2``), ``KEY=VALUE`` options, and the ``config.json`` every command writes beside its output.

Why one module: the same flag must mean the same thing in ``steer``, ``ablate`` and ``measure``, and
errors in a list or option must read the same everywhere.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def add_common_args(parser: argparse.ArgumentParser, *, default_out: str) -> None:
    """Model, prompts, sampling, reward and output options shared by steer / ablate / measure."""
    parser.add_argument("--model", default="smollm2-135m", help="alias, local directory, run directory or HF id")
    parser.add_argument("--prompts", default="default", help="'default' (shipped openings), a .txt or .jsonl file")
    parser.add_argument("--n-prompts", type=int, default=16, help="how many prompts (a seeded sample)")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="tokens sampled per prompt")
    parser.add_argument("--reward", default="char_count",
                        help="char_count (periods), sentiment, length, module:function or reward_model:PATH")
    parser.add_argument("--seed", type=int, default=0, help="prompt sample and sampling seed")
    parser.add_argument("--out", default=default_out, help="output directory (CSV, PNG, config.json)")


def load_prompt_set(args: argparse.Namespace) -> list[str]:
    """The prompts ``--prompts`` / ``--n-prompts`` / ``--seed`` name (a seeded sample)."""
    from rlhf_interp.prompts import load_prompts

    return load_prompts(args.prompts, limit=args.n_prompts, seed=args.seed)


def parse_floats(text: str) -> list[float]:
    """``"0,1,2.5"`` -> ``[0.0, 1.0, 2.5]``."""
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ValueError(f"Expected comma-separated numbers, e.g. '0,1,2,4'; got {text!r}.") from err


def parse_layers(text: str) -> list[int] | str:
    """``"all"`` or ``"0,5,10"``."""
    if text == "all":
        return "all"
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ValueError(f"Expected comma-separated layer numbers or 'all', got {text!r}.") from err


def parse_options(items: list[str], *, what: str = "option") -> dict[str, Any]:
    """Repeated ``KEY=VALUE`` flags -> a dict (values parsed as YAML; see `rlhf_interp.core.key_value`)."""
    from rlhf_interp.core.key_value import parse_key_values

    return parse_key_values(items, what=what)


def write_config(out: Path, args: argparse.Namespace, **extra: Any) -> Path:
    """``out/config.json``: every argument of the command plus ``extra``, written atomically."""
    from rlhf_interp.core.io import atomic_write_json

    config = {k: v for k, v in vars(args).items() if k != "func"}
    return atomic_write_json(Path(out) / "config.json",
                             {**config, **extra, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
