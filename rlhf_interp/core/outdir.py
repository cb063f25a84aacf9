"""One run per output directory: a marker file says which command owns it, outputs are checked writable
before any compute, ``overwrite`` replaces only what a command wrote, and temporary files a killed writer
left behind are swept.

Why: two commands writing into one ``--out`` mix their files (one's config.json under the other's CSV); a
run that fails only after an hour because ``--out`` is read-only wastes the hour; a checkpoint write killed
mid-way leaves a large ``.tmp-*`` directory forever. The marker (``.rlhf-interp-run.json``) is plain JSON.
Files a command did not write (patterns it declares) are never deleted, even with ``overwrite``; and
``overwrite`` replaces only an earlier run of the *same* command (``diff --overwrite`` never deletes a training
run).

Inputs are never outputs: an output that is, contains or lies inside one of the command's inputs is refused
before the output is touched (``diff --tuned runs/r --out runs/r --overwrite`` once deleted the run it was asked
to read). One writer per directory: `claim_dir` (and `lock_dir`, for ``--resume``) takes an OS file lock
(``fcntl.flock`` on ``.rlhf-interp.lock``) held until the process exits, so a second writer is refused at once,
before it loads a model, instead of interleaving its files with the first one's.
"""

from __future__ import annotations

import errno
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
LOCK = ".rlhf-interp.lock"  # flock'ed by the process writing the directory; its text says who that is
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


def check_writable_file(path: str | Path, *, overwrite: bool = False, flag: str = "--out",
                        inputs: dict[str, Any] | None = None) -> Path:
    """Refuse an existing file (unless ``overwrite``), a directory, an unwritable parent directory, or a path
    that is one of ``inputs`` (``{flag: path}``; see `check_not_input`)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a directory: give a file name.")
    check_not_input(path, inputs, flag=flag)
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
              hint: str = "", flag: str = "--out", inputs: dict[str, Any] | None = None) -> Path:
    """Make ``out`` this command's output directory, before any compute.

    ``outputs``: name patterns of what ``command`` writes. ``inputs``: ``{flag: path}`` of what the command
    reads; ``out`` may not be, contain or lie inside one of them (checked before ``out`` is touched). Then the
    directory is locked for this process (`lock_dir`: a second writer is refused). Refused (OutputError) when
    ``out`` is a file or not writable, or when it already holds a run's files — matching ``outputs`` or the
    patterns the marker of an earlier command declared — unless ``overwrite`` and that run was of the same
    ``command``: then its files are deleted first. ``hint``: an extra way out for the message (e.g. "continue it
    with --resume").
    """
    check_not_input(out, inputs, flag=flag)
    out = check_writable_dir(out, flag=flag)
    lock_dir(out, command, flag=flag)
    sweep_stale(out)
    outputs = list(outputs)
    marker = read_marker(out)
    previous = list(marker.get("outputs", [])) if marker else []
    found = owned_entries(out, [*outputs, *previous])  # a marker alone (its run wrote nothing) mixes nothing
    if found:
        owner = (f"the output of `{marker.get('command', '?')}` (started {marker.get('started_at', '?')})"
                 if marker else "files of an earlier run (" + ", ".join(p.name for p in found[:4]) + ")")
        if overwrite and marker and marker.get("command") != command:
            raise OutputError(f"{flag} {out} holds {owner}, and --overwrite replaces only an earlier `{command}` "
                              f"run's files: choose another {flag} (or delete that run yourself if you mean to).")
        if not overwrite:
            ways = ", or ".join(w for w in (hint, "replace it with --overwrite") if w)
            raise OutputError(f"{flag} {out} already holds {owner}. {ways[0].upper()}{ways[1:]}, or choose "
                              f"another {flag}.")
        if not marker:  # no record of who wrote them: delete only what this command itself writes
            found = owned_entries(out, outputs)
        remove_entries(found)
    write_marker(out, command, outputs)
    return out


def check_not_input(out: str | Path, inputs: dict[str, Any] | None, *, flag: str = "--out") -> None:
    """Refuse an output path that is, contains or lies inside one of ``inputs`` (``{flag: path or [paths]}``;
    values that are not existing local paths — model aliases, Hub ids, "default" — are skipped). Nothing is
    created or read beyond ``stat``: call it before touching the output."""
    if not inputs:
        return
    target = Path(out).expanduser().resolve()
    for name, values in inputs.items():
        for value in values if isinstance(values, (list, tuple)) else [values]:
            if value is None or value == "" or not isinstance(value, (str, os.PathLike)):
                continue
            text = str(value)
            if text.startswith("reward_model:"):
                text = text.split(":", 1)[1]
            path = Path(text).expanduser()
            try:
                if not path.exists():
                    continue
            except OSError:
                continue
            source = path.resolve()
            if source == target:
                relation = "is"
            elif source in target.parents:
                relation = "is inside"
            elif target in source.parents:
                relation = "contains"
            else:
                continue
            raise OutputError(f"{flag} {out} {relation} the input {name} {value}: a command never writes where it "
                              f"reads (--overwrite would delete what it was asked to read). Choose a {flag} "
                              f"outside every input.")


_HELD_LOCKS: dict[str, int] = {}  # resolved directory -> the open lock file (kept open: the lock lives with it)


def claimed_dirs() -> list[Path]:
    """The directories this process has locked for writing (for an interrupted command's message)."""
    return [Path(key) for key in _HELD_LOCKS]


def lock_dir(out: str | Path, command: str, *, flag: str = "--out") -> Path:
    """Lock ``out`` for this process until it exits (``fcntl.flock`` on ``out/.rlhf-interp.lock``); refuse
    (OutputError) when another process holds it. Taking it again in the same process is a no-op. Where the file
    system has no flock (some network mounts), the directory is used unlocked."""
    import fcntl

    out = Path(out).expanduser()
    key = str(out.resolve())
    path = out / LOCK
    if key in _HELD_LOCKS:
        try:
            if os.fstat(_HELD_LOCKS[key]).st_ino == os.stat(path).st_ino:
                return out
        except OSError:
            pass
        os.close(_HELD_LOCKS.pop(key))  # the directory was deleted and made again since: lock the new one
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise OutputError(f"Cannot write into {flag} {out} ({err.strerror or err}): choose a directory you can "
                          f"write to.") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            os.close(fd)
            return out
        try:
            holder = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            holder = {}
        os.close(fd)
        who = (f"`{holder.get('command', '?')}` (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
               f"started {holder.get('started_at', '?')})" if holder else "another process")
        raise OutputError(f"{flag} {out} is being written by {who}: one writer per directory. Wait for it to "
                          f"finish (or stop it), or choose another {flag}.") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                             "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
    _HELD_LOCKS[key] = fd
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
