"""Re-render report pages from their committed CSVs: ``rlhf-interp report --rebuild``.

Each report's ``report.json`` names the analysis script that made it; that script's ``render(report_dir)``
turns the CSVs (and ``config.json``) in the directory into a `Report`. No model is loaded and no run
directory is read, so every committed page can be rebuilt on any machine in seconds.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Callable

from rlhf_interp.report.index import report_dirs, write_index
from rlhf_interp.report.page import read_manifest

if TYPE_CHECKING:
    from rlhf_interp.report.page import Report


def load_analysis(script: str | Path) -> ModuleType:
    """Import an analysis script by path (``analyses/`` is a folder of scripts, not a package)."""
    script = Path(script)
    if not script.is_file():
        raise FileNotFoundError(f"analysis script {script} is missing: the report's report.json names it as its "
                                f"renderer; run from the repository root or fix 'source' in report.json.")
    name = f"_rlhf_interp_analysis_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "render"):
        raise ValueError(f"{script} has no render(report_dir) function: it cannot rebuild its page from CSVs.")
    return module


def rebuild(report_dir: str | Path) -> float:
    """Re-render one report from its CSVs; return the seconds it took."""
    report_dir = Path(report_dir)
    start = time.perf_counter()
    source = read_manifest(report_dir).get("source")
    if not source:
        raise ValueError(f"{report_dir}/report.json names no analysis script ('source'): it cannot be rebuilt.")
    script = Path(source) if Path(source).is_absolute() else report_dir.resolve().parent.parent / source
    load_analysis(script).render(report_dir).save()
    return time.perf_counter() - start


def rerender(render: Callable[[Path], "Report"], report_dir: str | Path) -> int:
    """An analysis script's ``--from-csv``: its page again from the CSVs alone, headline printed; exit code 0."""
    try:
        report = render(Path(report_dir))
    except FileNotFoundError as err:  # a user error: no traceback
        raise SystemExit(f"error: {err} Measure it first (the same command without --from-csv).") from None
    report.save()
    print(report.headline)
    print(f"report: {report_dir}/index.html (rebuilt from its CSVs)")
    return 0


def rebuild_all(root: str | Path, only: list[str] | None = None) -> dict[str, float]:
    """Re-render every report under ``root`` (or the ``only`` ones), rewrite the index and the findings table of
    the README beside ``root`` (between its ``<!-- findings:start/end -->`` markers); seconds per report."""
    dirs = report_dirs(root)
    if only:
        unknown = sorted(set(only) - {d.name for d in dirs})
        if unknown:
            raise ValueError(f"no report named {unknown} under {root}; there are: {[d.name for d in dirs]}")
        dirs = [d for d in dirs if d.name in only]
    seconds = {d.name: rebuild(d) for d in dirs}
    write_index(root)  # and the README's findings table
    return seconds
