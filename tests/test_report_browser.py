"""Every committed report page, opened in headless Chromium with the network off: no console error, no request
outside file:// and data:, every section heading still there after JavaScript ran, every image loaded, every
widget drawn. Skips (with the reason) where Chromium or playwright is missing; the HTML5 structure test in
tests/test_reports.py runs everywhere."""

from __future__ import annotations

import shutil
from pathlib import Path

import html5lib
import pytest

REPORTS = Path(__file__).resolve().parents[1] / "reports"
PAGES = sorted(REPORTS.glob("**/*.html"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; it is in the dev extra)"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


def static_headings(page: Path) -> list[str]:
    """h1-h3 texts as written in the file, before any JavaScript runs."""
    tree = html5lib.parse(page.read_text(encoding="utf-8"), namespaceHTMLElements=False)
    return [" ".join("".join(el.itertext()).split()) for tag in ("h1", "h2", "h3") for el in tree.iter(tag)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPORTS)))
def test_page_renders_offline_in_chromium(browser, page):
    context = browser.new_context(offline=True, java_script_enabled=True)
    tab = context.new_page()
    errors: list[str] = []
    outside: list[str] = []
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("requestfailed", lambda req: errors.append(f"request failed: {req.url} {req.failure}"))
    tab.on("request", lambda req: outside.append(req.url) if not req.url.startswith(("file:", "data:")) else None)
    try:
        tab.goto(page.as_uri(), wait_until="load", timeout=60_000)
        # widgets draw after load: wait until every container has content (or time out and report below)
        tab.wait_for_function(
            """() => [...document.querySelectorAll('div.circuitsvis, div.plotly-graph-div')]
                      .every(d => d.children.length > 0)""", timeout=30_000)
        tab.wait_for_timeout(300)
        headings = tab.eval_on_selector_all(
            "h1, h2, h3", "els => els.map(e => e.textContent.replace(/\\s+/g, ' ').trim())")
        visible = tab.eval_on_selector_all(
            "h1, h2, h3", "els => els.filter(e => e.offsetParent !== null).map(e => e.textContent.trim())")
        images = tab.eval_on_selector_all(
            "img", "els => els.map(i => ({src: i.src.slice(0, 40), ok: i.complete && i.naturalWidth > 0}))")
        widgets = tab.eval_on_selector_all(
            "div.circuitsvis, div.plotly-graph-div", "els => els.map(d => ({id: d.id, drawn: d.children.length > 0}))")
    finally:
        context.close()
    assert not errors, f"{page.name}: console/page errors: {errors[:5]}"
    assert not outside, f"{page.name}: requests outside file:// and data:: {outside[:5]}"
    missing = [h for h in static_headings(page) if h not in headings]
    assert not missing, f"{page.name}: headings gone after JavaScript ran: {missing}"
    assert len(visible) == len(headings), f"{page.name}: hidden headings: {set(headings) - set(visible)}"
    broken = [i["src"] for i in images if not i["ok"]]
    assert not broken, f"{page.name}: images not loaded: {broken}"
    undrawn = [w["id"] for w in widgets if not w["drawn"]]
    assert not undrawn, f"{page.name}: widgets not drawn: {undrawn}"
