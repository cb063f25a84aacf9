"""The ``rlhf-interp`` command. Each subcommand lives in its own module with ``register(subparsers)``;
a subcommand appears here only once its feature exists.

Errors: a user error (bad value, missing or unreadable file, unwritable output, full disk, Ctrl-C) ends in
one line on stderr that names the problem and the fix, exit code 2 (130 for Ctrl-C or SIGTERM, with what was
kept and how to continue); anything else ends in
one line too, exit code 1, asking for ``--debug``. ``--debug`` (anywhere on the line, or
``RLHF_INTERP_DEBUG=1``) prints the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import sys

# Module names under rlhf_interp.cli, in the order they appear in --help.
SUBCOMMAND_MODULES = ["models_cmd", "diff_cmd", "patch_cmd", "train_cmd", "steer_cmd", "ablate_cmd", "measure_cmd", "frontier_cmd", "edit_search_cmd", "reward_model_cmd", "report_cmd"]

_DEBUG_HELP = "print the full traceback of an error (also RLHF_INTERP_DEBUG=1)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf-interp",
        description="Train RLHF policies with PPO and look inside them: diff, steer, ablate, measure KL.",
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(f"rlhf_interp.cli.{module_name}").register(sub)
    _add_debug_everywhere(sub)
    return parser


def _add_debug_everywhere(sub: argparse._SubParsersAction) -> None:
    """``--debug`` after the subcommand too (``default=SUPPRESS``: it never resets the top-level flag)."""
    for parser in set(sub.choices.values()):
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if actions:
            for nested in actions:
                _add_debug_everywhere(nested)
        if "--debug" not in parser._option_string_actions:
            parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the input or the environment is wrong", not "the toolkit has a bug"."""
    import pickle

    import yaml

    types: list[type[BaseException]] = [ValueError, KeyError, OSError, ImportError, yaml.YAMLError,
                                        pickle.UnpicklingError, UnicodeError, RuntimeError]
    try:
        from safetensors import SafetensorError

        types.append(SafetensorError)
    except ImportError:  # pragma: no cover - safetensors is a dependency
        pass
    return tuple(types)


# What libraries say when the OS refused a write, whatever they raise (safetensors: SafetensorError("Error while
# serializing: I/O error: No space left on device (os error 28)"); torch.save: RuntimeError("... file write
# failed"); numpy, pandas, PIL: OSError).
_IO_ERRNOS = {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EACCES: "denied", errno.EPERM: "denied",
              errno.EROFS: "readonly"}
_IO_TEXTS = (("no space left on device", "full"), ("disk quota exceeded", "full"), ("file write failed", "full"),
             ("os error 28", "full"), ("permission denied", "denied"), ("os error 13", "denied"),
             ("read-only file system", "readonly"), ("os error 30", "readonly"))


def io_problem(err: BaseException) -> tuple[str, str | None] | None:
    """``(kind, filename)`` when ``err`` is the OS refusing a write: kind "full", "denied" or "readonly"; None
    otherwise. By errno where there is one, else by a library's own message (not for ValueError: the toolkit's
    own messages already say what happened and what to do)."""
    if isinstance(err, OSError) and err.errno in _IO_ERRNOS:
        return _IO_ERRNOS[err.errno], err.filename
    if isinstance(err, (OSError, ValueError, KeyError)):
        return None
    text = str(err).lower()
    for needle, kind in _IO_TEXTS:
        if needle in text:
            return kind, getattr(err, "filename", None)
    return None


def describe_error(err: BaseException, out_dirs: list | None = None) -> str:
    """One readable line (plus notes the code attached) for an exception. ``out_dirs``: where the command was
    writing, named when the error itself does not say which file (safetensors' I/O errors do not)."""
    problem = io_problem(err)
    if problem is not None:
        kind, filename = problem
        target = filename or (", ".join(map(str, out_dirs)) if out_dirs else None)
        where = f" writing {target}" if target else ""
        text = {"full": f"the disk is full{where}: free some space (or choose an --out on a disk with room) and run "
                        f"again",
                "denied": (f"permission denied on {filename}: make it readable (an input) or writable (an output) "
                           f"by you, or choose another path" if filename else
                           f"permission denied{where}: choose an --out you can write to, or fix its permissions"),
                "readonly": f"the file system is read-only{where}: choose an --out on a writable disk",
                }[kind]
        if not (isinstance(err, OSError) and err.errno in _IO_ERRNOS):
            text += f" ({str(err).strip().splitlines()[0][:160]})"
    elif isinstance(err, OSError) and err.strerror and err.filename:
        text = f"{err.strerror}: {err.filename}"
    elif isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]  # str(KeyError) adds quotes
    else:
        text = str(err).strip() or type(err).__name__
    notes = " ".join(getattr(err, "__notes__", []) or [])
    return f"{text} {notes}".strip()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is (as Ctrl-C is), so cleanup and "what was kept" messages run."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While a command runs, SIGTERM stops it like Ctrl-C (the default would end it at once, exit 143, silently).
    Training installs its own handler (stop after the phase) on top of this one."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted_message(err: KeyboardInterrupt, before: set) -> str:
    """One line: what stopped the command, what it kept (from the notes code attached, else the output
    directories it had claimed) and how to go on."""
    from rlhf_interp.core.outdir import claimed_dirs

    how = "SIGTERM" if isinstance(err, Terminated) else "Ctrl-C"
    notes = " ".join(getattr(err, "__notes__", []) or [])
    if str(err):
        return f"{describe_error(err)}"
    if not notes:
        dirs = [d for d in claimed_dirs() if d not in before]
        notes = (f"Nothing finished was written: {', '.join(map(str, dirs))} holds only a partial output; run the "
                 f"same command again with --overwrite." if dirs else "Nothing was written.")
    return f"interrupted ({how}). {notes}".strip()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("RLHF_INTERP_DEBUG", "") not in ("", "0")
    name = " ".join(x for x in (args.command, getattr(args, "action", None)) if x)
    from rlhf_interp.core.outdir import claimed_dirs

    before = set(claimed_dirs())
    try:
        with _sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except KeyboardInterrupt as err:
        if debug:
            raise
        print(f"rlhf-interp {name}: {_interrupted_message(err, before)}", file=sys.stderr)
        return 130
    except MemoryError:
        if debug:
            raise
        print(f"rlhf-interp {name}: error: out of memory: use a smaller batch, fewer prompts or a smaller model.",
              file=sys.stderr)
        return 2
    except Exception as err:
        if debug:
            raise
        if isinstance(err, user_error_types()) or io_problem(err) is not None:
            dirs = [d for d in claimed_dirs() if d not in before]
            print(f"rlhf-interp {name}: error: {describe_error(err, dirs)}", file=sys.stderr)
            return 2
        print(f"rlhf-interp {name}: internal error ({type(err).__name__}): {describe_error(err)} Run again with "
              f"--debug for the traceback, and please report it.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
