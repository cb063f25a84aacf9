"""How many torch threads a CPU phase should use: the cores this process may run on, minus the cores other
processes keep busy, unless the user chose a count.

Why: torch's CPU kernels run on OpenMP threads that spin-wait at the end of every parallel region until all
their siblings arrive. When another CPU-bound process holds one of the cores, one of our threads is descheduled
for whole time slices while the others spin, so a 2-thread PPO phase on 2 shared cores ran several times slower
than on a quiet machine (issue 34), where one thread only loses the second core. So before each phase the
trainer measures how busy the machine is and drops threads that would have to share a core.

What counts as the user's choice (`explicit_threads`), which the library never overrides:

- ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` in the environment (torch reads them at start-up; accelerate sets
  ``OMP_NUM_THREADS=1`` in each process it launches): the count torch has now is kept;
- ``torch.set_num_threads(n)`` called after the library last set the count (any n other than the one it set);
- ``torch.set_num_threads(n)`` called before the library's first choice, when n is not torch's own default
  (one thread per physical core). Setting torch's default itself cannot be told apart from not setting it:
  use the environment variable to pin that count.

How busy: from ``/proc/stat``, the CPU ticks spent on the CPUs this process may use over a short window
(`WINDOW_SECONDS`) while this process waits, minus this process's own ticks (its OpenMP workers may still spin
for a moment), in cores. Where there is no ``/proc`` (macOS), the 1-minute load average minus the threads this
process itself ran with, a lagging estimate. The pure pieces (`decide_threads`, `explicit_threads`, the parsers)
take their inputs as arguments, so they are tested without a machine in a given state.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

WINDOW_SECONDS = 0.1  # long enough for ~10 scheduler ticks per CPU at USER_HZ 100, short beside a phase
TAKEN = 0.5  # a core counts as taken when other processes keep it at least half busy
_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_CPU_SYS = Path("/sys/devices/system/cpu")
_last_set: int | None = None  # the count this library last gave torch (None: it never has, in this process)


# ------------------------------------------------------------------ pure decisions
def decide_threads(cores: int, busy: float | None, explicit: int | None = None) -> int:
    """Threads for the next phase: ``explicit`` when given; else ``cores`` minus the cores other processes keep
    busy (``busy``, in cores; a core counts once they use at least `TAKEN` of it); never fewer than 1. ``busy``
    None (not measurable): every core, torch's behaviour before this module."""
    if explicit is not None:
        return max(1, int(explicit))
    cores = max(1, int(cores))
    if busy is None or not math.isfinite(busy):
        return cores
    taken = math.floor(max(0.0, busy) + 1 - TAKEN)
    return max(1, min(cores, cores - taken))


def explicit_threads(env: Mapping[str, str], current: int, last_set: int | None, default: int | None) -> int | None:
    """The thread count the user chose, or None when the library may choose. ``current``: torch's count now;
    ``last_set``: what the library last set (None: never); ``default``: torch's own default (None: unknown, and
    then a count set before the library's first choice is taken as the default)."""
    for name in _ENV_VARS:
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) >= 1:
            return current  # torch started from it, or the user changed it since: either way theirs
    if last_set is not None:
        return current if current != last_set else None
    if default is not None and current != default:
        return current
    return None


def parse_cpu_ticks(stat_text: str, cpus: Iterable[int] | None = None) -> tuple[int, int, int]:
    """(busy ticks, total ticks, CPUs counted) from ``/proc/stat`` text, summed over the lines ``cpu<i>`` for i
    in ``cpus`` (None: the all-CPU line). Busy = total - idle - iowait; guest time is already inside user time."""
    per_cpu = [line.split() for line in stat_text.splitlines() if line[:3] == "cpu" and line[3:4].isdigit()]
    if cpus is None:
        rows = [line.split() for line in stat_text.splitlines() if line.split()[:1] == ["cpu"]]
    else:
        wanted = {f"cpu{i}" for i in cpus}
        rows = [row for row in per_cpu if row[0] in wanted]
    busy = total = 0
    for row in rows:
        values = [int(v) for v in row[1:9]] + [0] * max(0, 9 - len(row))
        busy += sum(values) - values[3] - values[4]
        total += sum(values)
    counted = (len(per_cpu) if rows else 0) if cpus is None else len(rows)
    return busy, total, counted


def parse_own_ticks(self_stat_text: str) -> int:
    """User + system ticks of a whole process (every thread) from its ``/proc/<pid>/stat`` text."""
    fields = self_stat_text[self_stat_text.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15, the state being field 3


def busy_between(before: tuple[int, int, int], after: tuple[int, int, int], own_ticks: int) -> float | None:
    """Cores kept busy by other processes between two `parse_cpu_ticks` readings, given this process's ticks
    in between; None when no time passed on the counters."""
    busy, total, cpus = after[0] - before[0], after[1] - before[1], after[2]
    if total <= 0 or cpus <= 0:
        return None
    per_cpu = total / cpus  # ticks each CPU lived through in the window
    return min(float(cpus), max(0.0, (busy - own_ticks) / per_cpu))


def busy_from_loadavg(load1: float, own_threads: int) -> float:
    """Other processes' load where only the load average is known: it counts this process's threads too."""
    return max(0.0, load1 - own_threads)


# ------------------------------------------------------------------ reading the machine
def _allowed_cpus() -> set[int] | None:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


def physical_cores(cpus: Iterable[int] | None = None, root: Path = _CPU_SYS) -> int | None:
    """Physical cores among ``cpus`` (None: every CPU the kernel lists), from the sibling lists in sysfs: SMT
    siblings share one core's matmul units, so torch counts cores, not CPUs. None when sysfs does not say."""
    if cpus is None:
        cpus = [int(p.name[3:]) for p in root.glob("cpu[0-9]*") if p.name[3:].isdigit()]
    groups = set()
    for cpu in cpus:
        topology = root / f"cpu{cpu}" / "topology"
        for name in ("core_cpus_list", "thread_siblings_list"):
            try:
                groups.add((topology / "physical_package_id").read_text().strip() + ":" +
                           (topology / name).read_text().strip())
                break
            except OSError:
                continue
        else:
            return None
    return len(groups) or None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, at most one per physical core."""
    allowed = _allowed_cpus()
    cpus = len(allowed) if allowed is not None else (os.cpu_count() or 1)
    physical = physical_cores(allowed) if allowed is not None else None
    return max(1, min(cpus, physical or cpus))


def torch_default_threads() -> int | None:
    """torch's start-up count without the environment variables: one thread per physical core of the machine."""
    return physical_cores()


def measure_busy_cores(window: float = WINDOW_SECONDS) -> float | None:
    """Cores other processes keep busy among those this process may use, measured over ``window`` seconds in
    which this process sleeps; None when the machine offers no way to tell."""
    allowed = _allowed_cpus()
    try:
        stat, own = Path("/proc/stat"), Path("/proc/self/stat")
        before, own_before = parse_cpu_ticks(stat.read_text(), allowed), parse_own_ticks(own.read_text())
        time.sleep(window)
        after, own_after = parse_cpu_ticks(stat.read_text(), allowed), parse_own_ticks(own.read_text())
        if after[2]:
            return busy_between(before, after, own_after - own_before)
    except (OSError, ValueError, IndexError):
        pass
    if hasattr(os, "getloadavg"):
        import torch

        return busy_from_loadavg(os.getloadavg()[0], torch.get_num_threads() if _last_set is not None else 0)
    return None


def apply_threads(explicit: int | None = None, *, cores: int | None = None, window: float = WINDOW_SECONDS) -> int:
    """Give torch the thread count for the next stretch of CPU work and return it: ``explicit`` (e.g. a config
    value) when given; else the user's own choice (`explicit_threads`), left untouched; else `decide_threads`
    over ``cores`` (default `usable_cores`) and the busy cores measured now (costs ``window`` seconds)."""
    import torch

    global _last_set
    current = torch.get_num_threads()
    if explicit is not None:
        chosen = decide_threads(1, None, explicit)
    else:
        user = explicit_threads(os.environ, current, _last_set, torch_default_threads())
        if user is not None:
            return user
        cores = cores or usable_cores()
        chosen = decide_threads(cores, measure_busy_cores(window) if cores > 1 else 0.0)
    if chosen != current:
        torch.set_num_threads(chosen)
    _last_set = chosen
    return chosen
