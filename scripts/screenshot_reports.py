#!/usr/bin/env python
"""Full-page screenshots of report pages in headless Chromium (what a reader sees, JavaScript on, offline).

    python scripts/screenshot_reports.py --out /work/screens index edit_vs_finetune ppo_periods causal_ppo
    python scripts/screenshot_reports.py --root /tmp/old/reports --out /tmp/old_screens index

``index`` is ``<root>/index.html``; any other name is ``<root>/<name>/index.html``. Why a script: issue 33's
"the answer at a glance" is judged on these pictures, and they must be re-taken the same way after every change.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def shoot(root: Path, names: list[str], out: Path, width: int = 1280, full: bool = True) -> list[Path]:
    """One PNG per page into ``out`` (``<name>.png``), after every chart has drawn."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        for name in names:
            page = (root / "index.html" if name == "index" else root / name / "index.html").resolve()
            context = browser.new_context(offline=True, viewport={"width": width, "height": 900})
            tab = context.new_page()
            tab.goto(page.as_uri(), wait_until="load", timeout=60_000)
            tab.wait_for_function("""() => [...document.querySelectorAll('div.plotly-graph-div')]
                                     .every(d => d.children.length > 0)""", timeout=30_000)
            tab.wait_for_timeout(500)
            target = out / f"{name}.png"
            tab.screenshot(path=str(target), full_page=full)
            written.append(target)
            context.close()
        browser.close()
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="+")
    p.add_argument("--root", type=Path, default=Path("reports"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--viewport-only", action="store_true", help="the first screen only, not the full page")
    args = p.parse_args()
    for path in shoot(args.root, args.names, args.out, args.width, not args.viewport_only):
        print(path)


if __name__ == "__main__":
    main()
