"""The ``rlhf-interp`` command. Each subcommand lives in its own module with ``register(subparsers)``;
a subcommand appears here only once its feature exists."""

from __future__ import annotations

import argparse
import importlib
import sys

# Module names under rlhf_interp.cli, in the order they appear in --help.
SUBCOMMAND_MODULES = ["models_cmd", "diff_cmd", "patch_cmd", "train_cmd", "steer_cmd", "ablate_cmd", "measure_cmd", "frontier_cmd", "edit_search_cmd", "reward_model_cmd", "report_cmd"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf-interp",
        description="Train RLHF policies with PPO and look inside them: diff, steer, ablate, measure KL.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(f"rlhf_interp.cli.{module_name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as err:
        from rlhf_interp.models import ModelLoadError  # noqa: F401  (same family of clear errors)

        print(f"rlhf-interp {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
