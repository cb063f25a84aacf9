"""Reports: DataFrames and figures -> ``reports/<name>/`` (markdown + offline HTML + CSV + PNG), the index of
all reports, and their rebuild from the committed CSVs (``rlhf-interp report --rebuild``).

- `Report` (``page.py``): one page; see its module docstring for the API an analysis uses.
- ``plots.py``: matplotlib figures from tidy tables; ``charts.py``: the interactive (Plotly) versions.
- ``index.py``: ``reports/index.html`` and ``reports/README.md``; ``rebuild.py``: re-render every page.
"""

from rlhf_interp.report.page import (
    MANIFEST,
    REPORTS_ROOT,
    Report,
    read_config,
    read_manifest,
    read_table,
    write_tables,
)

__all__ = ["MANIFEST", "REPORTS_ROOT", "Report", "read_config", "read_manifest", "read_table", "write_tables"]
