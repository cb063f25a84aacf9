"""benchmarks/run_all.py: the README table comes from the results JSONs, and rewriting it touches nothing else;
it leads with equal-precision TRL comparisons only and says for every figure whether the machine was quiet.
benchmarks/ppo_phase.py: a phase against the machine's measured limits (FLOPs at the matmul peak of its
precision, the rollout's weight reads at the measured memory bandwidth)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


@pytest.fixture
def run_all(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("run_all")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    yield module
    for name in ("run_all", "trl_ppo_phase"):
        sys.modules.pop(name, None)


def _result(directory: Path, stem: str, met: bool, *, load: float, timed: bool = True) -> None:
    headline = {"what": f"{stem} measured", "result": "1.23x", "target": ">= 2x", "met": met}
    if not timed:
        headline["timed"] = False
    (directory / f"{stem}.json").write_text(json.dumps({
        stem: {"ratio": 1.23, "headline": headline},
        "machine": {"date": "2026-11-28T10:00:00+00:00", "torch_threads": 2, "load_average_1min_at_end": load,
                    "noisy": load > 2},
        "command": f"python benchmarks/{stem}.py --fast"}))


def test_table_rows_come_from_the_headlines_and_missing_results_say_so(run_all):
    _result(run_all.RESULTS, "sweep", True, load=0.3)
    _result(run_all.RESULTS, "ppo_phase", False, load=5.0)
    _result(run_all.RESULTS, "precision_drift", True, load=5.0, timed=False)
    (run_all.RESULTS / "other.json").write_text(json.dumps({"runs": [1, 2]}))
    rows = run_all.table().splitlines()
    by_name = {row.split(" | ")[0].lstrip("| "): row for row in rows[2:]}
    assert by_name["sweep measured"].split(" | ")[1:4] == ["1.23x", ">= 2x", "yes"]
    assert "`python benchmarks/sweep.py --fast`" in by_name["sweep measured"]  # the command as it was run
    assert "**no**" in by_name["ppo_phase measured"] and "**no** (noisy: load 5.0" in by_name["ppo_phase measured"]
    assert "yes (load 0.3" in by_name["sweep measured"]  # a quiet machine, said so
    assert "not a timing" in by_name["precision_drift measured"]  # not a timing: load does not matter
    assert "noisy" not in by_name["precision_drift measured"]
    assert by_name["rollout"].startswith("| rollout | not measured yet")
    assert "see `benchmarks/results/other.json`" in by_name["other"]
    headline = [row for row in rows if "**Headline**" in row]  # no TRL pair in these results: said so
    assert len(headline) == 2 and all("not measured" in row for row in headline)
    trl_runs = [n for n, (_, args) in run_all.BENCHMARKS.items() if args[0] == "trl_ppo_phase.py"]
    assert trl_runs == ["ppo_phase"]  # shown through the headline rows, not as a row of its own
    # header, the two TRL headline rows, the other benchmarks, then ppo_phase.json (no TRL pair in it) and other.json
    assert len(rows) == 2 + 2 + len(run_all.BENCHMARKS) - 1 + 2


def test_readme_section_is_created_once_then_only_the_marked_block_changes(run_all, tmp_path):
    readme = tmp_path / "README.md"
    before, after = "# Title\n\nIntro.\n\n## PPO\n\ntext\n", "## Conventions\n\nrules | with | pipes\n"
    readme.write_text(before + after)
    run_all.write_readme("| a | b |", readme)
    first = readme.read_text()
    assert first.startswith(before) and first.endswith(after)
    assert first.count("## Performance") == 1 and first.index("## Performance") < first.index("## Conventions")
    assert f"{run_all.START}\n| a | b |\n{run_all.END}" in first
    run_all.write_readme("| c | d |", readme)
    second = readme.read_text()
    assert second == first.replace("| a | b |", "| c | d |")
    run_all.write_readme("| c | d |", readme)
    assert readme.read_text() == second


def _machine(load: float, date: str = "2026-11-28T10:00:00+00:00") -> dict:
    return {"date": date, "cpu_count": 2, "torch_threads": 2, "load_average_1min_at_end": load, "noisy": load > 2}


def _legacy_pair(directory: Path, stem: str, ours: float, trl: float, precisions: tuple[str, str], trl_malloc: bool,
                 load: float) -> None:
    """A single-pair result as trl_ppo_phase.py wrote it before ``--precisions`` (no interval, samples kept)."""
    ours_s, trl_s = [ours * (1 + 0.02 * i) for i in range(6)], [trl * (1 - 0.01 * i) for i in range(6)]
    body = {"ours_seconds_median": ours, "trl_seconds_median": trl, "trl_ratio": trl / ours, "ours_seconds": ours_s,
            "trl_seconds": trl_s, "trl_malloc": trl_malloc,
            "work": {"batch": 16, "new_tokens": 24, "ours_precision": precisions[0], "trl_precision": precisions[1],
                     "rounds": 3, "updates_per_process": 3},
            "headline": {"what": "PPO phase vs TRL", "result": f"{trl / ours:.2f}x", "target": ">= 2x", "met": True}}
    (directory / f"{stem}.json").write_text(json.dumps({"ppo_phase": body, "machine": _machine(load),
                                                        "command": f"python benchmarks/trl_ppo_phase.py # {stem}"}))


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip("|").split(" | ")]


def test_trl_headline_is_equal_precision_only_with_n_and_interval(run_all):
    """Mixed-precision or different-allocator comparisons are secondary rows; the headline says "not measured"
    until an equal-precision, same-allocator, alternated pair exists, then shows it with its interval and n."""
    results = run_all.RESULTS
    _legacy_pair(results, "ppo_phase", 6.7, 15.3, ("bf16", "fp32"), False, load=1.8)  # mixed: the old headline
    # equal precision, but TRL with glibc's malloc defaults: not the headline either
    _legacy_pair(results, "ppo_phase_fp32_vs_trl_fp32", 8.6, 15.0, ("fp32", "fp32"), False, load=1.5)
    rows = run_all.table().splitlines()[2:]
    headline = [r for r in rows if "**Headline**" in r]
    assert [("both fp32" in r, "both bf16" in r) for r in headline] == [(True, False), (False, True)]
    assert all(_cells(r)[1].startswith("not measured") for r in headline)
    assert rows[:2] == headline  # the table leads with them
    secondary = [r for r in rows if r.startswith("| Secondary")]
    assert len(secondary) == 2
    mixed = next(r for r in secondary if "ppo_phase.json" in r)
    assert "mixed precision: ours bf16 vs TRL fp32" in mixed and "malloc defaults" in mixed
    assert "2.28x TRL's throughput [95% bootstrap over updates: " in mixed and "n = 6 updates per side" in mixed
    assert _cells(mixed)[3] == ""  # no "met" on a secondary row
    assert "malloc defaults" in next(r for r in secondary if "fp32_vs_trl_fp32" in r)

    # the run the headline wants: four sides alternated, TRL with our malloc settings (summarize: no timing here)
    trl_ppo_phase = importlib.import_module("trl_ppo_phase")
    args = argparse.Namespace(precisions=["fp32", "bf16"], precision="bf16", trl_precision="fp32", trl_malloc=False,
                              rounds=3, updates=3, batch=16, new_tokens=24)
    samples = {("ours", "fp32"): [8.6, 8.7, 8.5, 8.6, 8.8, 8.6], ("trl", "fp32"): [15.0, 14.8, 15.3, 15.1, 14.9, 15.2],
               ("ours", "bf16"): [4.5, 4.6, 4.8, 4.5, 4.7, 4.6], ("trl", "bf16"): [15.5, 15.6, 15.4, 15.7, 15.5, 15.6]}
    rollout = {"fp32": [3.0] * 6, "bf16": [2.0] * 6}
    counts = {"n_params": 134_515_008, "n_trainable": 134_515_008, "n_backprop": 134_515_008}
    shares = {"fp32": [0.80, 0.82, 0.81], "bf16": [0.60, 0.62, 0.58]}  # one profiled phase per process
    body = trl_ppo_phase.summarize(samples, rollout, {}, counts, args, True, {"fp32": 295.0, "bf16": 1709.0},
                                   {"gbs": 20.0}, shares)
    assert body["same_allocator"] and body["trl_ratio_fp32"] == pytest.approx(15.05 / 8.6)
    assert body["trl_ratio_bf16"] == pytest.approx(15.55 / 4.6)
    assert [(p["ours_precision"], p["trl_precision"]) for p in body["pairs"]] == [("fp32", "fp32"), ("bf16", "bf16"),
                                                                                   ("bf16", "fp32")]
    for pair in body["pairs"]:
        low, high = pair["trl_ratio_ci95"]
        assert low <= pair["trl_ratio"] <= high and pair["n"]["updates_per_side"] == 6
    fp32_floor = body["pairs"][0]["matmul_floor"]  # 81% of 8.6 s in matmuls: TRL's 15.05 s is <= 2.16x that
    assert fp32_floor["seconds"] == pytest.approx(0.81 * 8.6)
    assert fp32_floor["ratio_ceiling"] == pytest.approx(15.05 / (0.81 * 8.6))
    assert not fp32_floor["target_within_ceiling"] and body["pairs"][1]["matmul_floor"]["target_within_ceiling"]
    for lim in body["limits"].values():  # FLOP and bandwidth limits of our phase at each precision
        for fraction in (lim["fraction_of_flop_limit"], lim["fraction_of_limit"], lim["rollout"]["fraction_of_limit"],
                         lim["update"]["fraction_of_limit"]):
            assert 0 < fraction <= 1
    assert trl_ppo_phase.result_name("bf16", "fp32", True, pairs=True) == "ppo_phase"  # only it: the headline's file
    assert trl_ppo_phase.result_name("fp32", "fp32", False) == "ppo_phase_fp32_vs_trl_fp32"
    assert trl_ppo_phase.result_name("bf16", "fp32", True) == "ppo_phase_bf16_vs_trl_fp32_trl_malloc"
    (results / "ppo_phase.json").write_text(json.dumps({"ppo_phase": body, "machine": _machine(3.1, "2026-12-01"),
                                                        "command": "python benchmarks/trl_ppo_phase.py --precisions"}))
    rows = run_all.table().splitlines()[2:]
    headline = [r for r in rows if "**Headline**" in r]
    fp32, bf16 = (_cells(r) for r in headline)
    assert fp32[1].startswith(f"{15.05 / 8.6:.2f}x TRL's throughput [95%: ") and "n = 6 updates per side" in fp32[1]
    assert bf16[1].startswith(f"{15.55 / 4.6:.2f}x TRL's throughput [95%: ")
    assert f"matmuls are 81% of our phase, so at most {15.05 / (0.81 * 8.6):.2f}x" in fp32[1]
    assert (fp32[2], fp32[3], bf16[2], bf16[3]) == (">= 2.5x", "**no**", ">= 4x", "**no**")
    assert all(c[5].startswith("**no** (noisy: load 3.1 on 2 cores)") for c in (fp32, bf16))
    mixed_ratio = f"{body['pairs'][2]['trl_ratio']:.2f}x"  # ours bf16 vs TRL fp32: 15.05 / 4.6
    assert mixed_ratio == f"{15.05 / 4.6:.2f}x"
    assert not any(mixed_ratio in r or "mixed" in r for r in headline)  # never a mixed figure in the headline
    assert any("mixed precision: ours bf16 vs TRL fp32" in r and mixed_ratio in r for r in rows
               if r.startswith("| Secondary"))


def test_matmul_share_tells_a_matmul_from_elementwise_work(monkeypatch):
    """The profiled share behind the ratio ceiling: ~all of a run of matmuls, ~none of a run of elementwise ops."""
    import torch

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    limits = importlib.import_module("_limits")
    a = torch.randn(256, 256)
    matmuls = limits.matmul_share(lambda: [a @ a for _ in range(20)])
    elementwise = limits.matmul_share(lambda: [a.exp().sin() for _ in range(20)])
    assert matmuls["matmul_share"] > 0.9 and elementwise["matmul_share"] < 0.05
    assert matmuls["top_ops"][0]["op"] == "aten::mm"


def test_machine_peaks_come_from_learn_step_results_of_this_cpu_only(tmp_path, monkeypatch):
    """Peaks recorded on this CPU are reused; peaks recorded on another (a VM moved from an AMX host to one
    without) are not: they are measured again."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    limits = importlib.import_module("_limits")
    common = importlib.import_module("_bench_common")
    here = {k: common.machine_info()[k] for k in common.CPU_KEYS}
    (tmp_path / "learn_step.json").write_text(json.dumps({
        "learn_step": {"peak_gflops": {"fp32": 295.3, "bf16": 1708.6}}, "machine": {**_machine(1.4), **here}}))
    peaks = limits.machine_peaks(tmp_path)
    assert (peaks["fp32"], peaks["bf16"], peaks["source"]) == (295.3, 1708.6, "learn_step.json")
    other = {**here, "cpu_model": f"not {here['cpu_model']}", "amx_bf16": not here["amx_bf16"]}
    (tmp_path / "learn_step.json").write_text(json.dumps({
        "learn_step": {"peak_gflops": {"fp32": 295.3, "bf16": 1708.6}}, "machine": {**_machine(1.4), **other}}))
    peaks = limits.machine_peaks(tmp_path, n=128, reps=1)
    assert peaks["source"].startswith("measured now") and peaks["fp32"] != 295.3
    assert not common.same_cpu({"amx_bf16": True, "cpu_count": 2}, {"amx_bf16": False, "cpu_count": 2})
    assert not common.same_cpu({}, here)  # nothing recorded to compare: not taken as the same CPU


def test_ppo_phase_states_its_fraction_of_the_measured_limits(tmp_path):
    """A tiny phase (seconds): no learn_step.json in the results directory, so the peaks and the bandwidth are
    measured on the spot; every fraction of a limit is in (0, 1] and the single-side fields are kept."""
    env = dict(os.environ, RLHF_BENCH_RESULTS=str(tmp_path), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "ppo_phase.py"), "--config", "configs/tiny.yaml",
                           "--phases", "2", "--peak-n", "512", "--bandwidth-mb", "64", "--set", "sample_every=0"],
                          cwd=BENCHMARKS.parent, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "% of peak" not in proc.stdout and "of the fp32 FLOP limit" in proc.stdout
    data = json.loads((tmp_path / "ppo_phase_tiny.json").read_text())
    body, machine = data["ppo_phase"], data["machine"]
    lim = body["limits"]
    assert lim["peaks_source"]["source"].startswith("measured now") and lim["precision"] == "fp32"
    assert lim["bandwidth_gbs"] > 0 and lim["rollout"]["decode_steps"] == 8
    assert lim["rollout"]["weight_bytes_per_decode_step"] == 4 * lim["counts"]["n_params"]  # fp32 weights
    for fraction in (lim["fraction_of_flop_limit"], lim["fraction_of_limit"], lim["rollout"]["fraction_of_limit"],
                     lim["rollout"]["fraction_of_memory_limit"], lim["update"]["fraction_of_limit"]):
        assert 0 < fraction <= 1
    assert body["ours_rollout_seconds_median"] + body["ours_update_seconds_median"] == pytest.approx(
        body["ours_seconds_median"])
    assert lim["update"]["seconds"] == pytest.approx(body["ours_update_seconds_median"])
    assert {"load_average_1min_at_end", "noisy", "cpu_count"} <= set(machine)
    assert body["headline"]["what"].startswith("PPO phase of tiny.yaml")


def test_trl_ppo_phase_alternates_four_sides_and_writes_the_headline_file(tmp_path, monkeypatch):
    """The parent's flow without TRL (its children are stand-ins here): ours and TRL alternate per precision
    in every round, TRL always on our malloc settings, and only the equal-precision run writes ppo_phase.json."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    trl_ppo_phase = importlib.import_module("trl_ppo_phase")
    common = importlib.import_module("_bench_common")
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(trl_ppo_phase, "machine_peaks", lambda _: {"fp32": 295.0, "bf16": 1709.0, "source": "test"})
    monkeypatch.setattr(trl_ppo_phase, "memory_bandwidth", lambda: {"gbs": 20.0, "source": "test"})
    calls = []

    def spawn(which, precision, args, trl_malloc):
        calls.append((which, precision, trl_malloc))
        base = {("ours", "fp32"): 8.6, ("ours", "bf16"): 4.6, ("trl", "fp32"): 15.0, ("trl", "bf16"): 15.5}
        seconds = [base[(which, precision)] * (1 + 0.01 * k) for k in range(3)]
        out = {"seconds": seconds, "trainable_policy_params": 134_515_008, "trainable_value_params": 1}
        if which == "ours":
            out.update(rollout_seconds=[2.0] * 3, counts={"n_params": 134_515_008, "n_trainable": 134_515_008,
                                                          "n_backprop": 134_515_008}, matmul={"matmul_share": 0.5})
        return out

    monkeypatch.setattr(trl_ppo_phase, "spawn", spawn)
    monkeypatch.setattr(sys, "argv", ["trl_ppo_phase.py", "--rounds", "2", "--updates", "3", "--precisions", "fp32",
                                      "bf16"])
    try:
        trl_ppo_phase.main()
        sides = [("ours", "fp32", True), ("trl", "fp32", True), ("ours", "bf16", True), ("trl", "bf16", True)]
        assert calls == sides * 2
        body = json.loads((tmp_path / "ppo_phase.json").read_text())["ppo_phase"]
        assert body["same_allocator"] and body["n"] == {"updates_per_side": 4, "processes_per_side": 2}
        assert body["trl_ratio_fp32"] == pytest.approx(15.0 / 8.6, rel=0.02)
        assert body["headline"]["what"].startswith("PPO phase vs TRL 1.12 at equal precision")
        assert set(body["limits"]) == {"fp32", "bf16"}
        assert body["pairs"][0]["matmul_floor"]["shares"] == [0.5, 0.5]  # one profiled phase per ours process
        calls.clear()
        monkeypatch.setattr(sys, "argv", ["trl_ppo_phase.py", "--rounds", "1", "--updates", "3"])
        trl_ppo_phase.main()  # the old mixed default: its own file, the headline's untouched
        assert calls == [("ours", "bf16", False), ("trl", "fp32", False)]
        assert (tmp_path / "ppo_phase_bf16_vs_trl_fp32.json").exists()
        headline_file = json.loads((tmp_path / "ppo_phase.json").read_text())["ppo_phase"]
        assert headline_file["pairs"][0]["ours_precision"] == "fp32"
    finally:
        sys.modules.pop("trl_ppo_phase", None)
