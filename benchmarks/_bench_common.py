"""What every benchmark writes next to its numbers (machine, versions, threads, load, date), where results go,
and the few helpers they share (threads, alternated timing, peak RSS of a child process).

Why the load average is recorded: on a shared machine absolute times drift by 2-10x; a result taken while the
1-minute load was above the number of cores is flagged ``noisy`` in the README table. Ratios measured by
alternating the two sides in one run hold much better than absolute times.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Where results go; RLHF_BENCH_RESULTS redirects them (smoke tests at small scale should not land in the table).
RESULTS = Path(os.environ.get("RLHF_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def set_threads(threads: int | None) -> int:
    """torch intra-op threads: ``threads`` or, by default, every core this process may run on (torch's own
    default is the physical cores; on a machine shared with other jobs fewer threads spin-wait less)."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, int(threads or cores)))
    return torch.get_num_threads()


def machine_info() -> dict:
    def v(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    flags, model = "", platform.processor() or None
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next((line for line in lines if line.startswith("flags")), "")
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), model)
    except OSError:
        pass
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        threads = None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cores = os.cpu_count() or 1
    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "cpu_count": cores, "cpu_model": model, "torch_threads": threads, "machine": platform.machine(),
            "python": platform.python_version(),
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "load_average_1min_at_end": load, "noisy": load is not None and load > cores,
            "versions": {n: v(n) for n in ("torch", "transformers", "transformer-lens", "trl", "peft", "rlhf-interp")}}


CPU_KEYS = ("cpu_model", "cpu_count", "avx512_bf16", "amx_bf16")  # what makes two results' matmul speeds comparable


def same_cpu(recorded: dict, current: dict) -> bool:
    """Whether a result's machine had this machine's CPU (model, cores, bf16 units), on the keys both record.
    A VM can move to another host between runs: peaks measured there (AMX bf16 on one host, none on the next)
    do not describe this one."""
    shared = [k for k in CPU_KEYS if k in recorded and k in current]
    return bool(shared) and all(recorded[k] == current[k] for k in shared)


def write_result(name: str, result: dict, machine: dict | None = None) -> Path:
    """benchmarks/results/<name>.json with the machine facts; the README table is built from these files.

    ``result`` holds one top-level key (the benchmark) whose value carries a ``headline``:
    ``{"what", "result", "target", "met"}`` -- the README row (`run_all.py`). ``machine`` overrides facts
    of this process that do not describe the measured ones (e.g. their threads)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    command = "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    tmp.write_text(json.dumps({**result, "machine": {**machine_info(), **(machine or {})}, "command": command}, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path


def alternate(runs: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each callable, alternated ``reps`` times (A B A B ...) after ``warmup`` untimed rounds, so
    that a change in machine load hits every side alike."""
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        for key, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio_interval(ours: list[float], trl: list[float]) -> dict:
    """median(trl) / median(ours) with a 95% percentile bootstrap interval, the two sides' times paired by
    position (same round, same update: they were alternated), as `rlhf_interp.core.stats.bootstrap_interval`.
    The interval is over updates: process-to-process variation beyond that is not in it."""
    import numpy as np

    from rlhf_interp.core.stats import bootstrap_interval

    k = min(len(ours), len(trl))
    pairs = np.column_stack([ours[:k], trl[:k]])
    found = bootstrap_interval(pairs, lambda a: float(np.median(a[:, 1]) / np.median(a[:, 0])),
                               n={"updates_per_side": k}, note="over updates paired by position")
    return {"value": found.value, "low": found.low, "high": found.high, "level": found.level,
            "method": found.method, "n": found.n, "note": found.note}


_RESULT = "RESULT "


def report_to_parent(result: dict) -> None:
    """A child process's result, as the one line `run_child` reads back."""
    print(_RESULT + json.dumps(result), flush=True)


def run_child(script: str, which: str, flags: list[str], extra_env: dict[str, str] | None = None) -> dict:
    """Run ``script --child which *flags`` in a fresh process (offline, its own memory and page faults) and
    return the dict it reported; exit with its stderr's tail if it failed."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **(extra_env or {}))
    proc = subprocess.run([sys.executable, script, "--child", which, *flags], capture_output=True, text=True,
                          env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{which} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(_RESULT):])

