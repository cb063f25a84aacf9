"""What every benchmark writes next to its numbers: machine, versions, date; and where results go."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    def v(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    flags = ""
    try:
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "avx512_bf16": "avx512_bf16" in flags,
            "versions": {n: v(n) for n in ("torch", "transformers", "transformer-lens", "trl", "peft", "rlhf-interp")}}


def write_result(name: str, result: dict) -> Path:
    """benchmarks/results/<name>.json with the machine facts; the README table is built from these files."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**result, "machine": machine_info()}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
