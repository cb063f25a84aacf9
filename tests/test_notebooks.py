"""The tour notebook: committed without outputs and in step with its paired source, and it runs top to bottom.

CI runs it on the tiny random model (``RLHF_INTERP_TOUR_MODEL=tiny-test``, the notebook's one switch) in a fresh
Jupyter kernel, as "Run all" would; the embedded-model run is ``python examples/run_tour.py`` (<= 10 minutes).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
for _module in ("jupytext", "nbformat", "nbclient", "ipykernel"):
    pytest.importorskip(_module, reason=f"{_module} is in the dev extra: pip install -e '.[dev]'")

import nbformat  # noqa: E402

_spec = importlib.util.spec_from_file_location("run_tour", EXAMPLES / "run_tour.py")
run_tour = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_tour)


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_tour_notebook_is_its_source_without_outputs():
    committed = nbformat.read(EXAMPLES / "tour.ipynb", as_version=4)
    assert _cells(committed) == _cells(run_tour.notebook_from_source()), (
        "examples/tour.ipynb is out of step with examples/tour.py: run `python examples/run_tour.py --sync`")
    stale = [i for i, c in enumerate(committed.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not stale, f"cells {stale} of examples/tour.ipynb carry outputs: `python examples/run_tour.py --sync`"


def test_tour_uses_only_public_names():
    source = (EXAMPLES / "tour.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("from rlhf_interp", "import rlhf_interp"))]
    assert imports
    for line in imports:
        module = line.split()[1]
        assert not any(part.startswith("_") for part in module.split(".")), line
        names = line.split(" import ", 1)[1].strip("() ").replace("\n", " ")
        assert not any(n.strip().startswith("_") for n in names.split(",")), line


def test_tour_runs_on_the_tiny_model(tmp_path):
    nb, seconds = run_tour.execute("tiny-test", tmp_path / "tour.ipynb", run_dir=str(tmp_path / "run"), cwd=tmp_path,
                                   timeout=600)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors[0]
    data = [o.get("data", {}) for o in outputs if o.output_type in ("execute_result", "display_data")]
    figures = sum("image/png" in d for d in data)
    frames = sum("text/html" in d and "dataframe" in d["text/html"] for d in data)
    assert figures >= 6, f"only {figures} inline figures"
    assert frames >= 4, f"only {frames} DataFrames shown"
    # every figure is shown once: returned by the call, not again by the inline backend at the cell's end
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert sum("image/png" in o.get("data", {}) for o in cell.outputs) <= 1, cell.source[:80]
    assert (tmp_path / "run" / "metrics.jsonl").exists()
    print(f"tour on tiny-test: {seconds:.0f} s", file=sys.stderr)
