"""benchmarks/run_all.py: the README table comes from the results JSONs, and rewriting it touches nothing else."""

from __future__ import annotations

import importlib
import json
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
    sys.modules.pop("run_all", None)


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
    assert "**no**" in by_name["ppo_phase measured"] and "(noisy)" in by_name["ppo_phase measured"]
    assert "(noisy)" not in by_name["precision_drift measured"]  # not a timing: load does not matter
    assert by_name["rollout"].startswith("| rollout | not measured yet")
    assert "see `benchmarks/results/other.json`" in by_name["other"]
    assert len(rows) == 2 + len(run_all.BENCHMARKS) + 1


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
