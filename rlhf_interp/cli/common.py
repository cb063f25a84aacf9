"""Argument handling the subcommands share: model / prompts / sampling / reward / output options, list
parsing (``0,1,2``), ``KEY=VALUE`` options, number types that refuse what cannot work (``--n-prompts -1``),
claiming ``--out`` before any compute (`rlhf_interp.core.outdir`), and the ``config.json`` every command
writes beside its output.

Why one module: the same flag must mean the same thing in ``steer``, ``ablate`` and ``measure``, and
errors in a list or option must read the same everywhere.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Iterable


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (no nan / inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def add_common_args(parser: argparse.ArgumentParser, *, default_out: str) -> None:
    """Model, prompts, sampling, reward and output options shared by steer / ablate / measure."""
    parser.add_argument("--model", default="smollm2-135m", help="alias, local directory, run directory or HF id")
    parser.add_argument("--prompts", default="default", help="'default' (shipped openings), a .txt or .jsonl file")
    parser.add_argument("--n-prompts", type=positive_int, default=16, help="how many prompts (a seeded sample)")
    parser.add_argument("--max-new-tokens", type=nonnegative_int, default=24, help="tokens sampled per prompt")
    parser.add_argument("--reward", default="char_count",
                        help="char_count (periods), sentiment, length, module:function or reward_model:PATH")
    parser.add_argument("--seed", type=int, default=0, help="prompt sample and sampling seed")
    parser.add_argument("--out", default=default_out, help="output directory (CSV, PNG, config.json)")
    add_overwrite_arg(parser)


def add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run in --out (only files such a run writes are deleted)")


def require_samples(args: argparse.Namespace) -> None:
    """Commands that score samples need at least one new token per prompt."""
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens {args.max_new_tokens}: this command scores sampled continuations, so "
                         f"it needs at least 1 (default 24).")


# Arguments that name something a command reads (files, model directories, run directories), by attribute.
INPUT_ARGS = {"model": "--model", "base": "--base", "tuned": "--tuned", "reference": "--reference",
              "prompts": "--prompts", "reference_prompts": "--reference-prompts", "vector": "--vector",
              "steer": "--steer", "ablate_direction": "--ablate-direction", "pairs": "--pairs", "run": "--run",
              "texts": "--texts", "data": "DATA", "config": "CONFIG", "model_dir": "DIR", "reward": "--reward"}


def input_paths(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """``{flag: value}`` of every input argument the command was given (see `INPUT_ARGS`), plus ``extra``;
    `rlhf_interp.core.outdir.check_not_input` skips values that are not local paths (aliases, Hub ids)."""
    found = {flag: getattr(args, name) for name, flag in INPUT_ARGS.items() if getattr(args, name, None)}
    return {**found, **extra}


def claim_out(args: argparse.Namespace, command: str, outputs: Iterable[str]) -> Path:
    """Make ``--out`` this command's directory before any compute: not one of its inputs (nor inside or around
    one), locked for this process, writable, holding no other run (or, with ``--overwrite``, the earlier run of
    this command deleted). See `rlhf_interp.core.outdir.claim_dir`."""
    from rlhf_interp.core.outdir import claim_dir

    return claim_dir(args.out, command, outputs, overwrite=getattr(args, "overwrite", False),
                     inputs=input_paths(args))


def load_prompt_set(args: argparse.Namespace) -> list[str]:
    """The prompts ``--prompts`` / ``--n-prompts`` / ``--seed`` name (a seeded sample)."""
    from rlhf_interp.prompts import load_prompts

    return load_prompts(args.prompts, limit=args.n_prompts, seed=args.seed)


def parse_floats(text: str, *, what: str = "numbers") -> list[float]:
    """``"0,1,2.5"`` -> ``[0.0, 1.0, 2.5]``; at least one, each finite."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ValueError(f"Expected comma-separated {what}, e.g. '0,1,2,4'; got {text!r}.") from err
    if not values:
        raise ValueError(f"Expected at least one of the comma-separated {what}, e.g. '0,1,2,4'; got {text!r}.")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what.capitalize()} must be finite numbers; got {bad[0]} in {text!r}.")
    return values


def parse_layers(text: str) -> list[int] | str:
    """``"all"`` or ``"0,5,10"`` (at least one)."""
    if text.strip() == "all":
        return "all"
    try:
        layers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ValueError(f"Expected comma-separated layer numbers or 'all', got {text!r}.") from err
    if not layers:
        raise ValueError(f"Expected at least one layer number (e.g. '0,5') or 'all', got {text!r}.")
    return layers


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
