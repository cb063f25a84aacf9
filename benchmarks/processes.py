"""Wall time of the same PPO run in 1 process and in N data-parallel processes (`rlhf-interp train --processes`).

Each setting runs ``--repeats`` times, alternated (1, N, 1, N ...) so a change in machine load hits both.
Reported per run: the whole command's wall time (process start, model load, phases, checkpoint) and the sum
of the phases' own ``seconds`` from metrics.jsonl; the load average before each run is recorded beside them.
Writes ``benchmarks/results/processes_<name>.json``.

    python benchmarks/processes.py --config configs/tiny.yaml --phases 3 --name tiny
    python benchmarks/processes.py --config configs/periods.yaml --phases 3 --name smollm2-135m

Settings: 1 process with torch's default threads (one per core), 1 process with one thread, N processes
with one thread each (accelerate sets OMP_NUM_THREADS=1). On a CPU the processes share the cores, and on a
busy machine a multi-threaded process loses much of its time to OpenMP threads spin-waiting for descheduled
siblings: the one-thread single process separates that effect from data parallelism.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import write_result


def one_run(config: str, phases: int, processes: int, out: Path, threads: int | None = None) -> dict:
    cmd = [sys.executable, "-m", "rlhf_interp.cli", "train", config, "--out", str(out), "--no-progress",
           "--set", f"phases={phases}", "--set", "checkpoint_every=0"]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"processes": processes, "threads_per_process": threads or (1 if processes > 1 else os.cpu_count()),
            "wall_seconds": round(wall, 2), "load_before": round(load, 2),
            "phase_seconds": [round(m["seconds"], 2) for m in metrics],
            "phases_seconds_total": round(sum(m["seconds"] for m in metrics), 2),
            "reward_mean_last": metrics[-1]["reward_mean"]}


def headline(config: str, phases: int, runs: list[dict]) -> dict:
    """The README row: each setting's phase time (sum of the phases' seconds) and command wall, best of its runs."""
    def best(processes: int, threads: int, key: str) -> float:
        return min(r[key] for r in runs if r["processes"] == processes and r["threads_per_process"] == threads)

    settings = sorted({(r["processes"], r["threads_per_process"]) for r in runs})
    parts = [f"{p} proc x {t} thr: {best(p, t, 'phases_seconds_total'):.1f} s ({best(p, t, 'wall_seconds'):.0f} s whole)"
             for p, t in settings]
    return {"what": f"PPO, {phases} phases of {Path(config).name}: 1 vs N processes (sum of phase seconds, best run)",
            "result": "; ".join(parts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--phases", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--name", required=True, help="results file suffix, e.g. tiny or smollm2-135m")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="processes-bench-") as tmp:
        for repeat in range(args.repeats):
            for n, threads in ((1, None), (1, 1), (args.processes, None)):
                run = one_run(args.config, args.phases, n, Path(tmp) / f"r{repeat}-p{n}-t{threads}", threads)
                print(run, flush=True)
                runs.append(run)
    write_result(f"processes_{args.name}", {"config": args.config, "phases": args.phases, "runs": runs,
                                            "summary": {"headline": headline(args.config, args.phases, runs)}},
                 machine={"torch_threads": "1-2 (per setting)"})


if __name__ == "__main__":
    main()
