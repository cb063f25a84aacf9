"""Run the tour notebook top to bottom (what a reader gets with "Run all") and report its wall time.

    python examples/run_tour.py                          # the embedded SmolLM2-135M (<= 10 minutes on 2 CPU cores)
    python examples/run_tour.py --model tiny-test        # seconds; what tests/test_notebooks.py runs
    python examples/run_tour.py --sync                   # rewrite tour.ipynb from tour.py (outputs stripped)

The executed copy, outputs and figures included, goes to ``--out`` (default ``build/tour.<model>.ipynb``);
``examples/tour.ipynb`` itself stays without outputs (the paired source ``examples/tour.py`` is what to edit).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOK, SOURCE = HERE / "tour.ipynb", HERE / "tour.py"


def notebook_from_source():
    """The notebook built from its paired source, without outputs: what ``tour.ipynb`` must hold."""
    import jupytext

    nb = jupytext.read(SOURCE)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # stable ids: a re-sync changes only the cells that changed
    return nb


def sync() -> Path:
    import jupytext

    jupytext.write(notebook_from_source(), NOTEBOOK)
    return NOTEBOOK


def execute(model: str, out: Path | None, *, run_dir: str | None = None, cwd: Path | None = None,
            timeout: int = 900) -> tuple[object, float]:
    """Execute the notebook on ``model`` in a fresh kernel; returns (executed notebook, wall seconds)."""
    import nbformat
    from nbclient import NotebookClient

    nb = notebook_from_source()
    env = {"RLHF_INTERP_TOUR_MODEL": model}
    if run_dir is not None:
        env["RLHF_INTERP_TOUR_RUN"] = run_dir
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    start = time.perf_counter()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(cwd or Path.cwd())}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - start
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out)
    return nb, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("RLHF_INTERP_TOUR_MODEL", "smollm2-135m"))
    parser.add_argument("--run", default=None, help="the PPO run directory (default runs/tour_<model>; trained "
                                                    "there when it holds no checkpoint)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the executed notebook")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("--sync", action="store_true", help="only rewrite tour.ipynb from tour.py")
    args = parser.parse_args(argv)
    if args.sync:
        print(f"wrote {sync()}")
        return 0
    out = args.out or Path("build") / f"tour.{args.model}.ipynb"
    _, seconds = execute(args.model, out, run_dir=args.run, timeout=args.timeout)
    print(f"tour on {args.model}: {seconds:.0f} s wall, executed notebook in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
