"""One run per output directory: a marker file says which command owns it, outputs are checked writable
before any compute, ``overwrite`` replaces only what a command wrote, and temporary files a killed writer
left behind are swept.

Why: two commands writing into one ``--out`` mix their files (one's config.json under the other's CSV); a
run that fails only after an hour because ``--out`` is read-only wastes the hour; a checkpoint write killed
mid-way leaves a large ``.tmp-*`` directory forever. The marker (``.rlhf-interp-run.json``) is plain JSON.
Files a command did not write (patterns it declares) are never deleted, even with ``overwrite``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from rlhf_interp.core.io import atomic_write_json

MARKER = ".rlhf-interp-run.json"
TEMP_PATTERNS = (".tmp-*", ".old-*", ".deleting-*")  # what `core.io` atomic writes and pruning leave when killed


class OutputError(ValueError):
    """An output path that cannot be used as asked; the message says why and what to do instead."""


def check_writable_dir(out: str | Path, *, flag: str = "--out") -> Path:
    """Create ``out`` if needed and prove a file can be written in it (then removed)."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputError(f"{flag} {out} is a file, not a directory: give a directory path (it is created).")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".tmp-write-probe-{os.getpid()}-{time.time_ns()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"Cannot write into {flag} {out} ({err.strerror or err}): choose a directory you can "
                          f"write to.") from err
    return out


def check_writable_file(path: str | Path, *, overwrite: bool = False, flag: str = "--out") -> Path:
    """Refuse an existing file (unless ``overwrite``), a directory, or an unwritable parent directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a directory: give a file name.")
    if path.exists() and not overwrite:
        raise OutputError(f"{flag} {path} already exists: add --overwrite to replace it, or choose another file.")
    check_writable_dir(path.parent, flag=f"the directory of {flag}")
    return path


def read_marker(out: str | Path) -> dict[str, Any] | None:
    """The marker of an output directory, or None (also for an unreadable marker: treated as absent)."""
    path = Path(out) / MARKER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def owned_entries(out: Path, patterns: Iterable[str]) -> list[Path]:
    """Entries of ``out`` whose names match one of ``patterns`` (fnmatch), sorted."""
    patterns = list(patterns)
    return sorted(p for p in out.iterdir() if any(fnmatch.fnmatch(p.name, pat) for pat in patterns))


def remove_entries(entries: Iterable[Path]) -> None:
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)


def claim_dir(out: str | Path, command: str, outputs: Iterable[str], *, overwrite: bool = False,
              hint: str = "", flag: str = "--out") -> Path:
    """Make ``out`` this command's output directory, before any compute.

    ``outputs``: name patterns of what ``command`` writes. Refused (OutputError) when ``out`` is a file or not
    writable, or when it already holds a run's files — matching ``outputs`` or the patterns the marker of an
    earlier command declared — unless ``overwrite``: then those files are deleted first. ``hint``: an extra way out for the message (e.g. "continue it with --resume").
    """
    out = check_writable_dir(out, flag=flag)
    sweep_stale(out)
    outputs = list(outputs)
    marker = read_marker(out)
    previous = list(marker.get("outputs", [])) if marker else []
    found = owned_entries(out, [*outputs, *previous])  # a marker alone (its run wrote nothing) mixes nothing
    if found:
        if not overwrite:
            owner = (f"the output of `{marker.get('command', '?')}` (started {marker.get('started_at', '?')})"
                     if marker else "files of an earlier run (" + ", ".join(p.name for p in found[:4]) + ")")
            ways = ", or ".join(w for w in (hint, "replace it with --overwrite") if w)
            raise OutputError(f"{flag} {out} already holds {owner}. {ways[0].upper()}{ways[1:]}, or choose "
                              f"another {flag}.")
        remove_entries(found)
    write_marker(out, command, outputs)
    return out


def write_marker(out: Path, command: str, outputs: Iterable[str], **extra: Any) -> Path:
    """Record which command owns ``out`` and which file patterns are its outputs."""
    return atomic_write_json(Path(out) / MARKER, {
        "command": command, "outputs": list(outputs), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "pid": os.getpid(), "host": socket.gethostname(), "argv": sys.argv, **extra})


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(out: str | Path) -> list[Path]:
    """Remove what killed writers left in ``out``: ``.tmp-*`` (unfinished atomic writes), ``.deleting-*``
    (pruning cut short); an ``.old-NAME-*`` (a swap cut short) is renamed back to NAME when NAME is missing.
    Only names in `core.io`'s ``.tag-NAME-PID-NS`` form are touched, and not while process PID is alive.
    Returns what was removed or restored."""
    out = Path(out)
    if not out.is_dir():
        return []
    done = []
    for entry in owned_entries(out, TEMP_PATTERNS):
        tag, _, rest = entry.name[1:].partition("-")
        name, pid = _split_temp_name(rest)
        if pid is None or _pid_alive(pid):  # not named by core.io (not ours), or its writer is still at work
            continue
        if tag == "old" and name and not (out / name).exists():
            os.replace(entry, out / name)
        else:
            remove_entries([entry])
        done.append(entry)
    return done


def _split_temp_name(rest: str) -> tuple[str, int | None]:
    """``NAME-PID-NS`` (see `core.io`) -> (NAME, PID); (rest, None) when it does not parse."""
    parts = rest.rsplit("-", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1])
    return rest, None
