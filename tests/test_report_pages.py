"""What a reader meets on every committed report page (issue 33), checked in headless Chromium with JavaScript on:

- a table of contents linking every section, and a "what this answers" box at the top;
- every interactive chart's caption promises only what the chart draws (stars, diamonds, X marks, rings, dashed and
  dotted lines, log axes, panels, rolling means, fits, bands: `rlhf_interp.report.layout.caption_problems`);
- no two legend entries of one chart share colour and marker (`layout.collisions_in`);
- no table shown on the page is wider than the page, and no shown table is longer than a screenful of rows
  (wide and long tables are folded into a ``<details>``);
- the index lists the reports in the order of the work with a one-line takeaway, a date and a thumbnail;
- no console error.

Plus, without a browser: every markdown table of every README has the same number of columns in each row (an
unescaped ``|`` in a cell such as ``<|im_end|>`` adds one).

``RLHF_INTERP_REPORTS_ROOT`` points the tests at another reports tree (e.g. an older commit's pages checked out
into a temp dir: these tests fail there, which is what they are for). Each page is opened once (module fixture),
so the whole file runs in well under a minute.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from rlhf_interp.report import layout as L
from test_report_browser import ARGS, CHROMIUM, _skip_reason  # noqa: E402 (tests/ is on sys.path)

ROOT = Path(os.environ.get("RLHF_INTERP_REPORTS_ROOT") or Path(__file__).resolve().parents[1] / "reports").resolve()
REPORT_PAGES = sorted(p for p in ROOT.glob("*/index.html"))
READMES = sorted(ROOT.glob("*/README.md")) + [ROOT / "README.md"]
browser_only = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")

COLLECT = """() => {
  const body = document.body, cs = getComputedStyle(body);
  const width = body.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  const visible = e => e.offsetParent !== null && !e.closest('details:not([open])');
  const plain = t => ({name: t.name, type: t.type, mode: t.mode, fill: t.fill, xaxis: t.xaxis,
      showlegend: t.showlegend,
      marker: t.marker ? {color: typeof t.marker.color === 'string' ? t.marker.color : null,
                          symbol: typeof t.marker.symbol === 'string' ? t.marker.symbol : null} : null,
      line: t.line ? {color: t.line.color, dash: t.line.dash} : null});
  const layout = gd => {
    const out = {shapes: (gd.layout.shapes || []).map(s => ({line: {dash: (s.line || {}).dash}})),
                 annotations: (gd.layout.annotations || []).map(a => ({text: a.text}))};
    for (const k of Object.keys(gd.layout)) if (/^[xy]axis\\d*$/.test(k)) out[k] = {type: gd.layout[k].type};
    return out;
  };
  return {
    width,
    toc: [...document.querySelectorAll('nav.toc a')].map(a => a.getAttribute('href')),
    h2: [...document.querySelectorAll('h2[id]')].map(h => '#' + h.id),
    answers: !!document.querySelector('aside.answers'),
    tables: [...document.querySelectorAll('table')].filter(visible).map(t => ({
        width: t.getBoundingClientRect().width, rows: t.querySelectorAll('tbody tr').length,
        head: t.querySelector('tr') ? t.querySelector('tr').innerText.slice(0, 60) : ''})),
    charts: [...document.querySelectorAll('div.plotly-graph-div')].map(gd => {
        const fig = gd.closest('figure');
        const cap = fig ? fig.querySelector('figcaption') : null;
        return {id: gd.id, caption: cap ? cap.innerText : '', data: gd.data.map(plain), layout: layout(gd)};
    }),
    index: [...document.querySelectorAll('section.report')].map(s => ({
        id: s.id, takeaway: (s.querySelector('.takeaway') || {}).innerText || '',
        caption: (s.querySelector('p.caption') || {}).innerText || '',
        thumb: !!(s.querySelector('img.thumb') && s.querySelector('img.thumb').naturalWidth > 0)})),
  };
}"""


@pytest.fixture(scope="module")
def seen():
    """Every page opened once: what the page shows after JavaScript ran, and its console errors."""
    if _skip_reason() is not None:
        pytest.skip(_skip_reason())
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        for page in [*REPORT_PAGES, ROOT / "index.html"]:
            context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
            tab = context.new_page()
            errors: list[str] = []
            tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            tab.goto(page.as_uri(), wait_until="load", timeout=60_000)
            tab.wait_for_function("""() => [...document.querySelectorAll('div.plotly-graph-div')]
                                     .every(d => d.children.length > 0 && d.data)""", timeout=30_000)
            out[_name(page)] = {**tab.evaluate(COLLECT), "errors": errors}
            context.close()
        browser.close()
    return out


def _name(page: Path) -> str:
    return "index" if page.parent == ROOT else page.parent.name


NAMES = [p.parent.name for p in REPORT_PAGES]


@browser_only
@pytest.mark.parametrize("name", NAMES)
def test_page_has_contents_and_answer_box(seen, name):
    page = seen[name]
    assert page["answers"], f"{name}: no 'what this answers' box (aside.answers)"
    assert page["toc"], f"{name}: no table of contents (nav.toc)"
    missing = [h for h in page["h2"] if h not in page["toc"]]
    assert not missing, f"{name}: sections missing from the table of contents: {missing}"
    assert not page["errors"], f"{name}: console errors {page['errors'][:3]}"


# Pages whose fix is in a script another helper owns: strict, so the test says when the fix has landed.
CAPTION_FIX_PENDING: dict[str, str] = {}  # page -> why its caption still names marks its chart lacks


@browser_only
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=CAPTION_FIX_PENDING[n], strict=True))
                                  if n in CAPTION_FIX_PENDING and "RLHF_INTERP_REPORTS_ROOT" not in os.environ else n
                                  for n in NAMES])
def test_captions_match_their_charts(seen, name):
    problems = [f"{c['id']}: {p}" for c in seen[name]["charts"] for p in L.caption_problems(c["caption"], c)]
    assert not problems, f"{name}: captions promise what the chart lacks: {problems}"


@browser_only
@pytest.mark.parametrize("name", NAMES)
def test_no_two_series_look_alike(seen, name):
    clashes = {c["id"]: L.collisions_in(c) for c in seen[name]["charts"]}
    clashes = {k: v for k, v in clashes.items() if v}
    assert not clashes, f"{name}: legend entries drawn with the same colour and marker: {clashes}"


@browser_only
@pytest.mark.parametrize("name", NAMES)
def test_shown_tables_fit_the_page(seen, name):
    page = seen[name]
    wide = [(t["head"][:40], round(t["width"])) for t in page["tables"] if t["width"] > page["width"] + 1]
    assert not wide, f"{name}: tables wider than the page ({page['width']:.0f} px) shown unfolded: {wide}"
    long = [(t["head"][:40], t["rows"]) for t in page["tables"] if t["rows"] > 40]
    assert not long, f"{name}: tables of more than 40 rows shown unfolded: {long}"


@browser_only
def test_index_in_the_order_of_the_work_with_takeaways(seen):
    index = seen["index"]
    ids = [s["id"] for s in index["index"]]
    assert sorted(ids) == sorted(p.parent.name.replace("_", "-") for p in REPORT_PAGES), f"index lists {ids}"
    known = [i.replace("-", "_") for i in ids if i.replace("-", "_") in L.WORK_ORDER]
    assert known == sorted(known, key=L.order_key), f"index not in the order of the work: {ids}"
    for section in index["index"]:
        assert section["takeaway"] and len(section["takeaway"]) < 400, f"{section['id']}: no one-line takeaway"
        assert re.search(r"\d{4}-\d\d-\d\d", section["caption"]), f"{section['id']}: no date"
        assert section["thumb"], f"{section['id']}: no thumbnail"
    assert not index["errors"], index["errors"][:3]


def _md_tables(text: str) -> list[list[str]]:
    """Markdown tables of a file (outside code fences): lists of consecutive lines starting with '|'."""
    tables, current, fenced = [], [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def _cells(row: str) -> int:
    return len(re.split(r"(?<!\\)\|", row.strip().strip("|")))


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_tables_keep_their_columns(readme):
    bad = []
    for table in _md_tables(readme.read_text(encoding="utf-8")):
        width = _cells(table[0])
        bad += [f"{_cells(r)} cells, header {width}: {r[:80]}" for r in table[1:] if _cells(r) != width]
    assert not bad, f"{readme}: rows with more or fewer cells than their header: {bad[:3]}"
