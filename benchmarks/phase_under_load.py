"""A PPO phase under 0, 1 and 2 competing CPU-bound processes: fixed threads (all cores, the behaviour before
`rlhf_interp.core.threads`) vs the trainer's adaptive choice, alternated in one run.

    python benchmarks/phase_under_load.py                  # configs/periods.yaml (the README's main job), SmolLM2-135M
    RLHF_BENCH_RESULTS=/tmp/bench python benchmarks/phase_under_load.py --tiny    # smoke: tiny model, seconds

Why: OpenMP threads spin-wait for a descheduled sibling, so with another CPU-bound process on the machine a
phase that uses every core ran several times slower than quiet (issue 34). The target: with one competitor a
phase takes at most 2x the quiet time.

How: two trainer processes stay up for the whole run, each with its own model: ``fixed`` runs with
``OMP_NUM_THREADS`` = the usable cores (an explicit count, which the trainer keeps), ``adaptive`` with no thread
variable (the trainer measures the busy cores before each phase). Each runs one untimed warm-up phase on the
quiet machine first. Then, ``--rounds`` times, for each competitor count the benchmark starts that many
competitors (a child process running a single-threaded numpy matmul, or a bare Python loop with
``--competitor spin``), runs ``--phases`` phases in each trainer, alternating which goes first, and kills
them. A phase's time is the trainer's ``run_phase`` wall time in its process, thread decision included. While
one trainer works the other waits on a pipe (no CPU).

Writes ``benchmarks/results/phase_under_load.json``: per setting (fixed / adaptive x competitors) the median
seconds with a 95% bootstrap interval over phases, n, the threads used, and the ratio to the quiet time
(the same setting with no competitor, and fixed with no competitor), its interval from resampling phases paired
by round and position; the 1-minute load average and the busy cores measured before starting, and ``quiet``
(busy cores before < 0.25: nothing else was running). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _bench_common import median, report_to_parent, write_result

CONFIGS = HERE.parent / "configs"
MODES = ("fixed", "adaptive")
QUIET_BUSY = 0.25  # cores busy before the run above which it is not called quiet
_RESULT = "RESULT "
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# A competitor: one CPU-bound thread, forever (killed by the benchmark). ``ready`` once it runs.
_COMPETITORS = {
    "matmul": "import numpy as np\n"
              "a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32) / 16\n"
              "print('ready', flush=True)\n"
              "while True:\n    a = np.tanh(a @ a)\n",
    "spin": "print('ready', flush=True)\nwhile True:\n    pass\n",
}


# ------------------------------------------------------------------ the trainer process
def child(config_path: str, overrides: list[str], phases: int) -> None:
    """Build the trainer, run one untimed warm-up phase, then one timed phase per ``phase`` line on stdin."""
    from rlhf_interp.ppo import PPOConfig, PPOTrainer

    config = PPOConfig.load(config_path, [f"phases={phases + 1}", "checkpoint_every=0", "sample_every=0",
                                          *overrides])
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = PPOTrainer(config, run_dir, progress=False)
        trainer.run_phase()  # warm-up: first allocations, lazy initialisation
        report_to_parent({"ready": True, "model": config.model})
        for line in sys.stdin:
            if line.strip() != "phase":
                break
            start = time.perf_counter()
            metrics, _ = trainer.run_phase()
            report_to_parent({"wall_seconds": time.perf_counter() - start, "seconds": metrics["seconds"],
                              "threads": metrics["threads"]})


class Trainer:
    """A trainer process of one mode, driven one phase at a time over its stdin."""

    def __init__(self, mode: str, args: argparse.Namespace, cores: int, total_phases: int):
        env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARS}
        env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        if mode == "fixed":
            env["OMP_NUM_THREADS"] = str(cores)  # explicit: the trainer keeps it, as it used torch's default before
        self.mode = mode
        self.stderr = tempfile.TemporaryFile(mode="w+")
        command = [sys.executable, __file__, "--child", "--config", args.config, "--phases", str(total_phases),
                   *[f"--set={item}" for item in args.overrides]]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, env=env)
        self.model = self._read()["model"]

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(_RESULT):
                return json.loads(line[len(_RESULT):])
        self.stderr.seek(0)
        raise SystemExit(f"the {self.mode} trainer exited ({self.proc.wait()}):\n{self.stderr.read()[-3000:]}")

    def phase(self) -> dict:
        try:
            self.proc.stdin.write("phase\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # it exited: _read reports its stderr
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def start_competitors(count: int, kind: str) -> list[subprocess.Popen]:
    """``count`` single-threaded CPU-bound processes, returned once each runs its loop."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", _COMPETITORS[kind]], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(count)]
    for proc in procs:
        if proc.stdout.readline().strip() != "ready":
            stop_competitors(procs)
            raise SystemExit(f"a {kind} competitor did not start")
    return procs


def stop_competitors(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


# ------------------------------------------------------------------ summary
def summarise(times: dict[tuple[str, int], list[dict]], competitors: list[int]) -> list[dict]:
    """One record per (mode, competitors): median seconds and the ratios to the quiet times, with intervals."""
    import numpy as np

    from rlhf_interp.core.stats import bootstrap_interval

    def seconds(key: tuple[str, int]) -> np.ndarray:
        return np.array([t["wall_seconds"] for t in times[key]])

    def ratio(key: tuple[str, int], base: tuple[str, int]) -> dict | None:
        if base not in times:
            return None
        pairs = np.column_stack([seconds(base), seconds(key)])  # rows: the same round and position
        found = bootstrap_interval(pairs, lambda a: float(np.median(a[:, 1]) / np.median(a[:, 0])),
                                   n={"phases": len(pairs)}, note="rows paired by round and position")
        return found.to_dict()

    records = []
    for mode in MODES:
        for count in competitors:
            key = (mode, count)
            found = bootstrap_interval(seconds(key), lambda a: float(np.median(a)), n={"phases": len(times[key])})
            records.append({
                "mode": mode, "competitors": count, "n": len(times[key]),
                "median_seconds": median(list(seconds(key))), "median_seconds_interval": found.to_dict(),
                "seconds": [round(float(s), 4) for s in seconds(key)],
                "threads": [t["threads"] for t in times[key]],
                "ratio_to_quiet": ratio(key, (mode, 0)), "ratio_to_fixed_quiet": ratio(key, ("fixed", 0)),
            })
    return records


def headline(records: list[dict], what: str) -> dict:
    by = {(r["mode"], r["competitors"]): r for r in records}
    if ("adaptive", 1) not in by or ("adaptive", 0) not in by:
        return {"what": what, "result": "not measured with 0 and 1 competitors", "target": "<= 2x", "met": None}
    adaptive, fixed = by[("adaptive", 1)], by.get(("fixed", 1))

    def text(r: dict) -> str:
        q, used = r["ratio_to_quiet"], sorted(set(r["threads"]))
        return (f"{q['value']:.2f}x [{q['low']:.2f}, {q['high']:.2f}] with {'/'.join(map(str, used))} "
                f"thread{'s' if used != [1] else ''}")

    result = f"time / quiet time with 1 competitor: adaptive {text(adaptive)}"
    result += f"; fixed {text(fixed)}" if fixed else ""
    return {"what": what, "result": result + f" (n = {adaptive['n']} phases each)",
            "target": "<= 2x with 1 competitor", "met": adaptive["ratio_to_quiet"]["value"] <= 2.0}


def _shown(path: str) -> str:
    """A config path relative to the repository when it lies inside it (results do not name a home directory)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(HERE.parent)) if resolved.is_relative_to(HERE.parent) else path


# ------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="PPO config (default configs/periods.yaml; --tiny: tiny.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value config override")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the competitor counts")
    parser.add_argument("--phases", type=int, default=2, help="timed phases per trainer, competitor count and round")
    parser.add_argument("--competitors", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--competitor", choices=sorted(_COMPETITORS), default="matmul")
    parser.add_argument("--tiny", action="store_true", help="smoke test: configs/tiny.yaml, 1 round")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.config = args.config or str(CONFIGS / ("tiny.yaml" if args.tiny else "periods.yaml"))
    if args.tiny:
        args.rounds = 1
    if args.child:
        child(args.config, args.overrides, args.phases)
        return

    from rlhf_interp.core.threads import measure_busy_cores, usable_cores

    competitors = sorted(set(args.competitors) | {0})
    cores = usable_cores()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    busy_before = measure_busy_cores(1.0)
    quiet = busy_before is not None and busy_before < QUIET_BUSY
    print(f"{cores} usable cores; before: {busy_before} cores busy, load {load_before}"
          + ("" if quiet else " -- NOT quiet: the times include other processes' work"), flush=True)
    total = args.rounds * len(competitors) * args.phases
    trainers: dict[str, Trainer] = {}
    times: dict[tuple[str, int], list[dict]] = {(m, c): [] for m in MODES for c in competitors}
    try:
        for mode in MODES:  # one after the other: loading and warm-up never overlap
            trainers[mode] = Trainer(mode, args, cores, total)
        for round_ in range(args.rounds):
            for count in competitors:
                procs = start_competitors(count, args.competitor)
                try:
                    for position in range(args.phases):
                        order = MODES if (round_ + position) % 2 == 0 else MODES[::-1]
                        for mode in order:
                            result = trainers[mode].phase()
                            times[(mode, count)].append(result)
                            print(f"round {round_ + 1} competitors {count} {mode:8s}: {result['wall_seconds']:.2f} s, "
                                  f"{result['threads']} thread(s)", flush=True)
                finally:
                    stop_competitors(procs)
    finally:
        for trainer in trainers.values():
            trainer.close()
    model = trainers["fixed"].model
    records = summarise(times, competitors)
    for r in records:
        q = r["ratio_to_quiet"]
        print(f"{r['mode']:8s} {r['competitors']} competitor(s): median {r['median_seconds']:.2f} s "
              f"(n={r['n']}), {q['value']:.2f}x quiet, threads {sorted(set(r['threads']))}")
    what = (f"PPO phase ({_shown(args.config)}, {model}) with 1 competing CPU-bound process vs quiet: "
            f"adaptive threads vs fixed {cores}")
    write_result("phase_under_load", {"phase_under_load": {
        "config": _shown(args.config),
        "overrides": args.overrides, "model": model, "cores": cores, "competitor": args.competitor,
        "rounds": args.rounds, "phases_per_round": args.phases, "warmup_phases_dropped": 1,
        "load_average_1min_before": load_before, "busy_cores_before": busy_before, "quiet": quiet,
        "settings": records, "headline": headline(records, what)}},
        machine={"torch_threads": f"fixed {cores} / adaptive", "noisy": not quiet})


if __name__ == "__main__":
    main()
