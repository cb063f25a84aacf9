"""``rlhf-interp report [--rebuild] [--only NAME ...]``: the reports index, and every page rebuilt from its CSVs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("report", help="write reports/index.html; with --rebuild, re-render every report page "
                                           "from its committed CSVs (no model needed)")
    parser.add_argument("--root", default="reports", help="the reports directory (default: reports)")
    parser.add_argument("--rebuild", action="store_true",
                        help="re-render each report from the CSVs in its directory (its analysis' render())")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="rebuild only these reports (implies --rebuild)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rlhf_interp.report.index import report_dirs, write_index
    from rlhf_interp.report.page import read_manifest
    from rlhf_interp.report.rebuild import rebuild_all

    start = time.perf_counter()
    root = Path(args.root)
    if args.rebuild or args.only:
        for name, seconds in rebuild_all(root, args.only).items():
            print(f"rebuilt {root / name}/index.html in {seconds:.1f} s")
    else:
        write_index(root)
    for d in report_dirs(root):
        print(f"{d.name}: {read_manifest(d)['headline']}")
    print(f"index: {root / 'index.html'} ({time.perf_counter() - start:.1f} s)")
    return 0
