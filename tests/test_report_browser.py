"""Every committed report page, opened in headless Chromium with the network off: no console error, no request
outside file:// and data:, every section heading still there after JavaScript ran, every image loaded, every
widget drawn. Skips (with the reason) where Chromium or playwright is missing; the HTML5 structure test in
tests/test_reports.py runs everywhere."""

from __future__ import annotations

import os
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


# CI sets RLHF_INTERP_REQUIRE_BROWSER=1 once it has installed Chromium: there a browser that cannot start is a
# failure, never a silent skip.
if _skip_reason() is not None and os.environ.get("RLHF_INTERP_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"RLHF_INTERP_REQUIRE_BROWSER=1 but the browser tests cannot run: {_skip_reason()}")
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


# ----------------------------------------------------------------------------------------------
# Hostile text: every field a report takes, and tokens a model could generate, must stay text


PAYLOADS = [
    "<script>window.__pwned = 'script'</script>",
    "</script><script>window.__pwned = 'breakout'</script>",
    "<img id=\"injected\" src=x onerror=\"window.__pwned = 'img'\">",
    "<b id=\"injected\">bold</b>",
    "<!-- <script>window.__pwned = 'comment'</script> -->",
    "\u2028</SCRIPT ><svg onload=\"window.__pwned = 'svg'\">",
    "&lt;script&gt;window.__pwned = 'entity'&lt;/script&gt;",
    "<img/src/onerror=window.__pwned='nospace'>",  # one token, no whitespace: what innerHTML would run
]
HOSTILE = " ".join(PAYLOADS)
LINKS = "[click](javascript:window.__pwned='link') [data](data:text/html,<script>alert(1)</script>)"


def hostile_report(root: Path):
    """A report whose title, headline, sections, text, captions, table cells and names, chart names and
    circuitsvis tokens (as a tuned model's samples would give them) are all hostile text."""
    import circuitsvis.attention
    import circuitsvis.tokens
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import plotly.graph_objects as go

    from rlhf_interp.report import Report
    from rlhf_interp.report.index import write_index

    tokens = ["Hello", *PAYLOADS, " world"]
    report = Report.at(root / "hostile", f"Title {HOSTILE}", headline=f"Headline **bold** {HOSTILE}")
    report.section(f"Section {HOSTILE}", f"Text {HOSTILE}\n\n{LINKS}\n\n```\n{HOSTILE}\n```\n\n`{PAYLOADS[1]}`")
    report.text(f"## Markdown heading {PAYLOADS[0]}\n\n<div>\n{PAYLOADS[1]}\n</div>")
    table = pd.DataFrame({f"col {PAYLOADS[3]}": PAYLOADS, "value": range(len(PAYLOADS))})
    report.table("cells", table, title=f"Table {PAYLOADS[2]}", caption=f"Caption {HOSTILE}")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    chart = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], name=HOSTILE, text=PAYLOADS[:2], mode="lines+markers"))
    chart.update_layout(title=HOSTILE)
    report.figure("fig", fig, title=f"Figure {PAYLOADS[4]}", caption=f"Figure caption {HOSTILE}", chart=chart)
    pattern = [[[1.0 if j <= i else 0.0 for j in range(len(tokens))] for i in range(len(tokens))]]
    report.circuitsvis("view", circuitsvis.tokens.colored_tokens(tokens, list(range(len(tokens)))),
                       title=f"View {PAYLOADS[1]}", caption=f"View caption {HOSTILE}", page_intro=f"Intro {HOSTILE}",
                       extra_views=[(f"Attention {PAYLOADS[5]}", circuitsvis.attention.attention_heads(
                           pattern, tokens), f"Attention caption {PAYLOADS[1]}")])
    out = report.save()
    write_index(root)
    return [out / "index.html", out / "view.html", root / "index.html"]


def _static_problems(page: Path) -> list[str]:
    """What html5lib (an HTML5 parser, as browsers parse) finds injected: elements the text asked for, event
    handler attributes, javascript: links, inline scripts other than the charts' own."""
    tree = html5lib.parse(page.read_text(encoding="utf-8"), namespaceHTMLElements=False)
    problems = []
    for el in tree.iter():
        if not isinstance(el.tag, str):
            continue
        if el.get("id") == "injected" or el.tag in ("svg", "img") and el.get("src") == "x":
            problems.append(f"injected <{el.tag}>")
        problems += [f"<{el.tag} {a}=...>" for a in el.attrib if a.lower().startswith("on")]
        if el.tag == "a" and (el.get("href") or "").strip().lower().startswith(("javascript:", "data:")):
            problems.append(f"link to {el.get('href')[:30]}")
        if el.tag == "script" and not el.get("src"):
            text = (el.text or "").strip()
            if not text.startswith(("window.PLOTLYENV", "CircuitsVis.render")):
                problems.append(f"inline script {text[:60]!r}")
    return problems


def test_hostile_text_stays_text_static(tmp_path):
    """Runs everywhere (no browser): the pages parse with no injected element, handler, link or script."""
    for page in hostile_report(tmp_path / "reports"):
        assert not _static_problems(page), f"{page.name}: {_static_problems(page)}"


def test_hostile_text_stays_text_in_chromium(browser, tmp_path):
    """The real browser: no payload ran (``window.__pwned`` stays undefined), the DOM after every script ran holds
    no injected element, the hostile text is on the page as text, and the widgets still draw."""
    pages = hostile_report(tmp_path / "reports")
    for page in pages:
        context = browser.new_context(offline=True, java_script_enabled=True)
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.on("dialog", lambda dialog: (errors.append(f"dialog {dialog.message}"), dialog.dismiss()))
        try:
            tab.goto(page.as_uri(), wait_until="load", timeout=60_000)
            tab.wait_for_function(
                """() => [...document.querySelectorAll('div.circuitsvis, div.plotly-graph-div')]
                          .every(d => d.children.length > 0)""", timeout=30_000)
            tab.wait_for_timeout(500)
            for chart in tab.query_selector_all("div.plotly-graph-div"):  # hover text is drawn now
                chart.scroll_into_view_if_needed()
                box = chart.bounding_box()
                for fx in (0.1, 0.5, 0.9):
                    tab.mouse.move(box["x"] + fx * box["width"], box["y"] + box["height"] / 2)
                    tab.wait_for_timeout(100)
            state = tab.evaluate("""() => ({
                pwned: typeof window.__pwned === 'undefined' ? null : String(window.__pwned),
                injected: document.querySelectorAll('#injected, svg[onload], img[onerror], [onclick]').length,
                badLinks: [...document.querySelectorAll('a[href]')].filter(a => /^(javascript|data):/i.test(a.href)).length,
                scripts: [...document.querySelectorAll('script:not([src])')].map(s => s.textContent.trim().slice(0, 30)),
                text: document.body.innerText,
                widgets: [...document.querySelectorAll('div.circuitsvis, div.plotly-graph-div')]
                           .map(d => d.innerText.replace(/\u00a0/g, ' ')),
            })""")
        finally:
            context.close()
        assert state["pwned"] is None, f"{page.name}: injected script ran ({state['pwned']})"
        assert not errors, f"{page.name}: {errors[:3]}"
        assert state["injected"] == 0 and state["badLinks"] == 0, f"{page.name}: {state}"
        assert all(s.startswith(("window.PLOTLYENV", "CircuitsVis.render")) for s in state["scripts"]), state["scripts"]
        assert "<script>window.__pwned = 'script'</script>" in state["text"], f"{page.name}: hostile text not shown"
        if page.name == "view.html":
            drawn = " ".join(state["widgets"])
            assert "</script><script>window.__pwned = 'breakout'</script>" in drawn, f"tokens not drawn as text: {drawn}"
            assert "<img/src/onerror=window.__pwned='nospace'>" in drawn, drawn
