"""Files that are either whole or absent: atomic writes, atomic directories, and JSONL.

Why: a run killed mid-write must not leave a half-written checkpoint, vector or data file that the
next run trusts. Everything is written into a temporary sibling and renamed into place (``os.replace``
is atomic on one filesystem). JSONL logs are appended line by line, and can be trimmed back to a
known state after a resume (so lines logged after the last checkpoint are not duplicated).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator


def _sibling(path: Path, tag: str) -> Path:
    return path.parent / f".{tag}-{path.name}-{os.getpid()}-{time.time_ns()}"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``, on error deleted.

    For writers that take a file name (``safetensors.save_file``, ``torch.save``, ``fig.savefig``).
    """
    final = Path(path).expanduser()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(final, "tmp")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON (non-JSON values through ``str``), atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str))


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces ``path`` (an old one is moved aside and
    deleted after the swap), on error it is deleted and ``path`` is left as it was."""
    final = Path(path).expanduser()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(final, "tmp")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = _sibling(final, "old")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# JSONL: one JSON value per line


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` of every line of a UTF-8 text file (numbers count from 1; a BOM is dropped).

    A line that is not UTF-8 raises ValueError naming ``path:line`` and the byte, not a bare codec error.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a text file.")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{number}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                                 f"{err.start + 1}); save the file as UTF-8.") from None
            if number == 1:
                line = line.removeprefix("\ufeff")
            yield number, line.rstrip("\r\n")


def jsonl_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` of every non-blank line (numbers count from 1, blank lines included)."""
    for number, line in text_lines(path):
        if line.strip():
            yield number, line


def read_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line_number, value)`` per non-blank line; a bad line raises ValueError naming ``path:line``."""
    for number, line in jsonl_lines(path):
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno}).") from err


def append_jsonl(path: str | Path, record: Any) -> None:
    """Append one record as a line (the file is created if needed)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | Path, records: Iterable[Any]) -> Path:
    """Write records as JSONL, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    return Path(path)


def trim_jsonl(path: str | Path, keep: Callable[[Any], bool]) -> int:
    """Rewrite ``path`` atomically with only the records for which ``keep(record)`` is true.

    Used on resume: records logged after the checkpoint being resumed from are dropped, so they are
    not duplicated when the run logs them again. A last line that has no newline and is not valid JSON
    was torn by a kill mid-append: it is dropped too (a bad line anywhere else is an error naming the
    line). Returns how many records (torn one included) were dropped (0 when the file does not exist).
    """
    path = Path(path).expanduser()
    if not path.exists():
        return 0
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    torn = 0
    if lines and lines[-1].strip():  # text after the last newline: complete or cut short
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines, torn = lines[:-1], 1
    records = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno}); only a "
                                 f"torn last line is dropped on its own. Fix or delete that line.") from err
    kept = [r for r in records if keep(r)]
    if torn or len(kept) != len(records) or not text.endswith("\n") and text:
        write_jsonl(path, kept)
    return len(records) - len(kept) + torn


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through a memory buffer and one ordinary file write: a full disk (or any refused write) then
    raises a real ``OSError`` naming ``path`` (ENOSPC, EACCES), where torch's own file writer raises a RuntimeError
    such as "[enforce fail at inline_container.cc] unexpected pos" that names neither the file nor the cause."""
    import io as _io

    import torch

    buffer = _io.BytesIO()
    torch.save(obj, buffer)
    path = Path(path)
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())
    return path
