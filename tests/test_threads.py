"""rlhf_interp.core.threads: the thread count a CPU phase uses (issue 34, no collapse under load).

The decision is pure and tested over its whole input space; the machine readings are tested on this machine
with real competing processes; the trainer records its count per phase; the benchmark's smoke run writes the
JSON the README table reads, and its adaptive trainer takes fewer threads than cores under a competitor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rlhf_interp.core import threads
from rlhf_interp.core.threads import (apply_threads, busy_between, busy_from_loadavg, decide_threads,
                                      explicit_threads, measure_busy_cores, parse_cpu_ticks, parse_own_ticks,
                                      usable_cores)

ROOT = Path(__file__).resolve().parent.parent
SPIN = "print('ready', flush=True)\nwhile True:\n    pass\n"


# ------------------------------------------------------------------ the decision
def test_the_rules_of_the_brief():
    assert decide_threads(2, 1.0) == 1  # one busy core on 2 cores -> 1 thread
    assert decide_threads(2, 0.0) == 2 and decide_threads(8, 0.1) == 8  # idle -> every core
    assert decide_threads(2, 2.0) == 1 and decide_threads(2, 7.5) == 1  # never below 1
    assert decide_threads(2, 1.0, explicit=2) == 2 and decide_threads(1, 0.0, explicit=4) == 4  # explicit wins
    assert decide_threads(4, None) == 4  # unmeasurable: every core, as before
    assert decide_threads(2, 0.49) == 2 and decide_threads(2, 0.5) == 1  # a core counts from half busy


@given(cores=st.integers(-2, 256), busy=st.floats(-1, 512) | st.just(float("nan")),
       explicit=st.none() | st.integers(-3, 512))
def test_the_count_is_at_least_one_and_at_most_the_cores_unless_explicit(cores, busy, explicit):
    chosen = decide_threads(cores, busy, explicit)
    assert chosen >= 1
    if explicit is not None:
        assert chosen == max(1, explicit)
    else:
        assert chosen <= max(1, cores)


@given(cores=st.integers(1, 128), busy=st.floats(0, 256), more=st.floats(0, 64))
def test_more_busy_cores_never_mean_more_threads(cores, busy, more):
    assert decide_threads(cores, busy + more) <= decide_threads(cores, busy)


@given(current=st.integers(1, 64), last=st.none() | st.integers(1, 64), default=st.none() | st.integers(1, 64),
       var=st.sampled_from(["OMP_NUM_THREADS", "MKL_NUM_THREADS"]), value=st.integers(1, 64))
def test_a_thread_variable_in_the_environment_always_wins(current, last, default, var, value):
    assert explicit_threads({var: str(value)}, current, last, default) == current


def test_a_count_set_by_someone_else_is_the_users():
    assert explicit_threads({}, 2, last_set=2, default=2) is None  # the library's own count: it may choose again
    assert explicit_threads({}, 1, last_set=2, default=2) == 1  # changed since the library set 2
    assert explicit_threads({}, 1, last_set=None, default=2) == 1  # set before the library's first choice
    assert explicit_threads({}, 2, last_set=None, default=2) is None  # torch's default: not a choice
    assert explicit_threads({}, 3, last_set=None, default=None) is None  # default unknown: taken as the default
    assert explicit_threads({"OMP_NUM_THREADS": "", "MKL_NUM_THREADS": "x"}, 1, 2, 2) == 1  # junk is not a choice


# ------------------------------------------------------------------ reading the machine
STAT = """cpu  300 0 100 500 100 0 0 0 0 0
cpu0 100 0 50 300 50 0 0 0 0 0
cpu1 200 0 50 200 50 0 0 0 0 0
intr 12345
procs_running 3
"""


def test_proc_stat_ticks_are_summed_over_the_allowed_cpus():
    assert parse_cpu_ticks(STAT, [1]) == (250, 500, 1)  # busy = user + system; idle and iowait are not busy
    assert parse_cpu_ticks(STAT, [0, 1]) == (400, 1000, 2)
    assert parse_cpu_ticks(STAT) == (400, 1000, 2)  # the all-CPU line, counting the CPUs it spans
    assert parse_cpu_ticks(STAT, [5]) == (0, 0, 0)  # a CPU /proc/stat does not list


def test_own_ticks_survive_a_process_name_with_spaces_and_parentheses():
    line = "4242 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 17 25 0 0 20 0 3"
    assert parse_own_ticks(line) == 17 + 25
    before = parse_own_ticks(Path("/proc/self/stat").read_text())
    end = time.process_time() + 0.3
    while time.process_time() < end:  # burn 0.3 s of CPU in this process
        pass
    assert parse_own_ticks(Path("/proc/self/stat").read_text()) - before >= 15  # USER_HZ 100: ~30 ticks


def test_busy_cores_leave_out_this_process_and_stay_in_range():
    before, after = (0, 0, 2), (150, 200, 2)  # 100 ticks per CPU passed, 150 of them busy
    assert busy_between(before, after, own_ticks=0) == 1.5
    assert busy_between(before, after, own_ticks=50) == 1.0  # our own spinning workers are not "others"
    assert busy_between(before, after, own_ticks=400) == 0.0
    assert busy_between(before, before, own_ticks=0) is None
    assert busy_from_loadavg(3.2, own_threads=2) == pytest.approx(1.2) and busy_from_loadavg(0.5, 2) == 0.0


@pytest.fixture
def spinner():
    """One CPU-bound competitor process (a bare Python loop), killed after the test."""
    proc = subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def library_may_choose(monkeypatch):
    """No thread variable in the environment and the library's last choice standing; torch's count restored after."""
    before, last = torch.get_num_threads(), threads._last_set
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    apply_threads(explicit=1)  # the library set a count, so the next call may change it
    yield
    torch.set_num_threads(before)
    threads._last_set = last


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="no /proc/stat on this system")
def test_a_competing_process_is_measured_busy_and_the_measurement_is_cheap(spinner):
    start = time.perf_counter()
    busy = measure_busy_cores(0.2)
    assert time.perf_counter() - start < 0.4
    allowed = len(os.sched_getaffinity(0))
    assert 0.5 <= busy <= allowed  # the spinner alone keeps (most of) one core busy; others may add to it


@pytest.mark.skipif(usable_cores() < 2, reason="one usable core: there is nothing to drop")
def test_apply_threads_drops_a_thread_under_a_competitor(spinner, library_may_choose):
    chosen = apply_threads()
    assert chosen < usable_cores() and torch.get_num_threads() == chosen


def test_the_users_counts_are_kept(library_may_choose, monkeypatch):
    torch.set_num_threads(2)  # the user, after the library's choice
    start = time.perf_counter()
    assert apply_threads() == 2 and torch.get_num_threads() == 2
    assert time.perf_counter() - start < threads.WINDOW_SECONDS  # nothing measured: nothing to decide
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert apply_threads() == 1 and apply_threads(explicit=2) == 2 == torch.get_num_threads()  # explicit arg wins


# ------------------------------------------------------------------ the trainer and the benchmark
def test_a_training_phase_records_its_thread_count(tmp_path, library_may_choose):
    from rlhf_interp.ppo import PPOConfig, PPOTrainer

    config = PPOConfig.load(ROOT / "configs" / "tiny.yaml", ["phases=1", "checkpoint_every=0", "sample_every=0"])
    history = PPOTrainer(config, tmp_path / "run", progress=False).train()
    assert history[0]["threads"] == torch.get_num_threads()
    assert 1 <= history[0]["threads"] <= usable_cores()  # the library chose, over the usable cores
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["threads"] == history[0]["threads"]  # in the run's metrics file, a column like any other


@pytest.mark.skipif(usable_cores() < 2, reason="one usable core: fixed and adaptive are the same")
def test_the_benchmark_smoke_run_writes_its_table_and_adapts_under_a_competitor(tmp_path):
    env = {**os.environ, "RLHF_BENCH_RESULTS": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "phase_under_load.py"), "--tiny",
                           "--competitors", "0", "1", "--phases", "1", "--competitor", "spin"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "phase_under_load.json").read_text())
    body = data["phase_under_load"]
    assert {"load_average_1min_before", "busy_cores_before", "quiet", "settings", "headline"} <= set(body)
    assert isinstance(body["quiet"], bool) and body["warmup_phases_dropped"] == 1 and body["model"] == "tiny-test"
    by = {(r["mode"], r["competitors"]): r for r in body["settings"]}
    assert set(by) == {(m, c) for m in ("fixed", "adaptive") for c in (0, 1)}
    for r in by.values():
        assert r["n"] == len(r["seconds"]) == len(r["threads"]) == 1 and r["median_seconds"] > 0
        assert r["ratio_to_quiet"]["low"] <= r["ratio_to_quiet"]["value"] <= r["ratio_to_quiet"]["high"]
    cores = body["cores"]
    assert by[("fixed", 1)]["threads"] == [cores]  # today's behaviour: every core, whatever runs
    assert max(by[("adaptive", 1)]["threads"]) < cores  # the competitor's core is left to it
    assert by[("adaptive", 0)]["ratio_to_quiet"]["value"] == 1.0
    head = body["headline"]
    assert {"what", "result", "target", "met"} <= set(head) and isinstance(head["met"], bool)
    assert data["machine"]["noisy"] is (not body["quiet"]) and "phase_under_load.py --tiny" in data["command"]
