"""`Report`: one analysis -> ``reports/<name>/``, a page a reader can trust, rebuilt from its CSVs alone.

A report is a name, a title, the **question** it answers, a **headline** made from its claims (their first is
the takeaway on ``reports/index.html``) and an ordered list of blocks: markdown text, section headings, tables
(saved whole as ``<name>.csv``, previewed on the page), matplotlib figures (``<name>.png``), optional interactive
Plotly charts beside them, and circuitsvis views. ``save()`` writes

- ``README.md``: renders on GitHub (static PNGs, table previews, links to the CSVs);
- ``index.html``: offline and self-contained: PNGs embedded, interactive charts drawn by the one shared
  ``reports/assets/plotly.min.js`` (circuitsvis: ``reports/assets/circuitsvis.js``), nothing from the network;
- ``report.json``: title, headline, section headings, the analysis script that renders it, the files written;
- every table as CSV, every figure as PNG.

Other files in the directory (``config.json``, input CSVs, vectors) are left alone, so an analysis can
save its measured tables first and then render the page from them::

    def render(report_dir: Path) -> Report:          # in analyses/<x>.py: CSVs in, page out, no model
        points = pd.read_csv(report_dir / "points.csv")
        report = Report.at(report_dir, "Title", headline=f"... {points.reward_mean.max():.2f} ...", source=__file__)
        report.section("Reward against KL")
        report.figure("reward_vs_kl", fig, caption="what is drawn", chart=plotly_fig)
        report.table("points", points, caption="...", show=20)
        return report

    render(Path("reports/x")).save()                 # `rlhf-interp report --rebuild` does this for every report
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rlhf_interp.report import claims as C
from rlhf_interp.report import html as H
from rlhf_interp.report import layout as L
from rlhf_interp.report import tables as T

REPORTS_ROOT = Path("reports")
MANIFEST = "report.json"


@dataclass
class _Block:
    kind: str  # "text" | "section" | "table" | "figure" | "chart" | "circuitsvis"
    name: str = ""
    title: str = ""
    caption: str = ""
    body: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    """Collects a report's blocks in order; `save` writes markdown, HTML, CSVs, PNGs and ``report.json``.

    ``headline``: one or two sentences with the report's main numbers, computed from its tables (shown under
    the title and on the index). ``source``: the analysis script whose ``render(report_dir)`` rebuilds the
    page from the CSVs (``rlhf-interp report --rebuild`` calls it).
    """

    name: str
    title: str
    headline: str = ""
    root: Path = REPORTS_ROOT
    source: str | Path | None = None
    config: dict[str, Any] | None = None
    blocks: list[_Block] = field(default_factory=list)
    claims: list[Any] = field(default_factory=list)  # report.claims.Claim: checked on save, in report.json
    question: str = ""  # what the page answers (the box at its top); default: layout.WORK_ORDER's, else the title

    @classmethod
    def at(cls, report_dir: str | Path, title: str, **kwargs: Any) -> "Report":
        """A report written into ``report_dir`` (its name is the directory's name)."""
        report_dir = Path(report_dir)
        return cls(report_dir.name, title, root=report_dir.parent, **kwargs)

    @property
    def out_dir(self) -> Path:
        return Path(self.root) / self.name

    def claim(self, *claims: Any) -> "Report":  # add rlhf_interp.report.claims.Claim objects
        return self.claims.extend(claims) or self

    # -- blocks ---------------------------------------------------------------------------------

    def text(self, markdown: str) -> "Report":
        """Markdown (``## Heading`` lines become section headings too)."""
        self.blocks.append(_Block("text", body=_dedent(markdown)))
        return self

    def section(self, title: str, markdown: str = "") -> "Report":
        """A section heading (h2), optionally followed by markdown."""
        self.blocks.append(_Block("section", title=title))
        return self.text(markdown) if markdown.strip() else self

    def table(self, name: str, df: pd.DataFrame, *, title: str = "", caption: str = "", show: int = 30,
              preview: pd.DataFrame | None = None, floatfmt: str = ".4g", save: bool = True) -> "Report":
        """A tidy DataFrame saved whole as ``<name>.csv``; the page shows ``preview`` (default: the first
        ``show`` rows). ``show=0``: no preview, only a link with the table's size (never an empty table)."""
        if preview is None:
            preview = df.head(show) if show else None
        self.blocks.append(_Block("table", name=_check_name(name), title=title, caption=caption,
                                  body=df, extra={"preview": preview, "floatfmt": floatfmt, "save": save}))
        return self

    def figure(self, name: str, fig, *, title: str = "", caption: str = "", chart=None,
               chart_height: int = 460, fold: str = "") -> "Report":
        """A matplotlib figure saved as ``<name>.png`` (embedded in the HTML, shown in README.md).

        ``chart``: an optional Plotly figure of the same data; the HTML page shows it (hover, zoom, toggle
        series) above the static image, which stays in a "static image" fold; README.md keeps the PNG.
        ``fold``: the summary of a ``<details>`` the whole figure is folded into (detail one click away).
        """
        self.blocks.append(_Block("figure", name=_check_name(name), title=title, caption=caption, body=fig,
                                  extra={"chart": chart, "chart_height": chart_height, "fold": fold}))
        return self

    def circuitsvis(self, name: str, rendered, *, title: str = "", caption: str = "", page_intro: str = "",
                    extra_views: list[tuple[str, Any, str]] = ()) -> "Report":
        """A circuitsvis view (e.g. ``circuitsvis.attention.attention_heads(...)``) on this page and on its own
        page ``<name>.html`` titled ``title``, with ``page_intro`` (markdown: what the reader is looking at).
        ``extra_views``: more ``(heading, rendered, caption)`` views shown after it on both pages."""
        views = [(title, rendered, caption), *extra_views]
        self.blocks.append(_Block("circuitsvis", name=_check_name(name), title=title, caption=caption,
                                  body=views, extra={"intro": page_intro}))
        return self

    # -- writing --------------------------------------------------------------------------------

    def save(self) -> Path:
        """Write the page and its files into ``out_dir`` (each file atomically; other files are kept)."""
        import matplotlib.pyplot as plt

        from rlhf_interp.core.io import atomic_write_json, atomic_write_text

        claims = C.check_claims(self.claims)
        self.headline = C.headline(claims) if claims else self.headline  # made from the claims, never beside them
        out = self.out_dir
        out.mkdir(parents=True, exist_ok=True)
        md: list[str] = [f"# {self.title}", ""]
        body: list[str] = [f"<h1>{html.escape(self.title)}</h1>"]
        sentences = [c.sentence().strip() for c in claims if c.headline] if claims else (
            [self.headline] if self.headline else [])
        box_md, box_html = L.answer_parts(self.question or L.question_for(self.name, self.title), sentences,
                                          _inline_md)
        md += [box_md, "", "<!-- contents -->", ""]
        body += [box_html, "<!-- contents -->"]
        sections: list[str] = []
        headings: list[tuple[int, str, str]] = []
        written: list[str] = []
        assets: set[str] = set()
        ids: set[str] = {"what-this-answers", "claims"}

        thumbnail: list[bytes] = []

        def heading(level: int, title: str) -> None:
            anchor = _unique(H.slug(title), ids)
            md.extend([f"{'#' * level} {title}", ""])
            body.append(f"<h{level} id=\"{anchor}\">{_inline_md(title)}</h{level}>")
            sections.append(title)
            headings.append((level, title, anchor))

        for block in self.blocks:
            if block.kind == "section":
                heading(2, block.title)
            elif block.kind == "text":
                md += [block.body, ""]
                sections.extend(_md_headings(block.body))
                body.append(L.anchor_headings(H.markdown_to_html(block.body), ids, headings, _unique))
            elif block.kind == "table":
                if block.title:
                    heading(3, block.title)
                df, extra = block.body, block.extra
                if extra["save"]:
                    _write_csv_if_changed(df, out / f"{block.name}.csv")
                    written.append(f"{block.name}.csv")
                md_part, html_part = T.table_parts(block.name, df, extra["preview"], extra["floatfmt"], block.caption,
                                                    _inline_md)
                md += [md_part, ""]
                body.append(html_part)
            elif block.kind == "figure":
                if block.title:
                    heading(3, block.title)
                png = out / f"{block.name}.png"
                buffer = io.BytesIO()
                block.body.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
                plt.close(block.body)
                data = buffer.getvalue()
                L.write_if_changed(png, data)
                written.append(png.name)
                caption = block.caption
                if not thumbnail:
                    thumbnail.append(L.thumbnail(data))
                chart = block.extra["chart"]
                if chart is not None:  # the key of marks is made from the chart; a caption promising more is flagged
                    for problem in L.caption_problems(caption, chart):
                        warnings.warn(f"{self.name}/{block.name}: {problem}", stacklevel=2)
                    key = L.chart_key(chart)
                    caption = f"{caption} {key}".strip() if key else caption
                md += [f"![{block.name}]({block.name}.png)", ""] + ([f"*{caption}*", ""] if caption else [])
                img = (f"<img alt=\"{html.escape(block.title or block.name)}\" "
                       f"src=\"data:image/png;base64,{base64.b64encode(data).decode()}\">")
                figcaption = f"<figcaption>{_inline_md(caption)}</figcaption>" if caption else ""
                if chart is not None:
                    assets.add(H.ensure_asset(self.root, "plotly.min.js"))
                    md += ["(Interactive version on `index.html`.)", ""]
                    shown = ("<figure>" + H.plotly_snippet(chart, f"chart-{block.name}",
                                                          height=block.extra["chart_height"])
                             + f"<details><summary>static image ({block.name}.png)</summary>{img}</details>"
                             + figcaption + "</figure>")
                else:
                    shown = f"<figure>{img}{figcaption}</figure>"
                fold = block.extra.get("fold")
                body.append(f"<details class=\"figure\"><summary>{_inline_md(fold)}</summary>{shown}</details>"
                            if fold else shown)
            elif block.kind == "circuitsvis":
                assets.add(H.ensure_asset(self.root, "circuitsvis.js"))
                parts = []
                for i, (title, rendered, caption) in enumerate(block.body):
                    parts.append((title, H.circuitsvis_snippet(rendered, f"cv-{block.name}-{i}"), caption))
                for i, (title, snippet, caption) in enumerate(parts):
                    if title:
                        heading(3, title)
                    if caption:
                        md += [caption, ""]
                        body.append(f"<p class=\"caption\">{_inline_md(caption)}</p>")
                    body.append(snippet)
                md += [f"Interactive view: [{block.name}.html]({block.name}.html) (opens offline in a browser).", ""]
                body.append(f"<p>Same view on its own page: <a href=\"{block.name}.html\">{block.name}.html</a></p>")
                atomic_write_text(out / f"{block.name}.html", self._view_page(block, parts))
                written.append(f"{block.name}.html")
        if claims:  # every claim with its interval and n, one click away
            claims_md, claims_html = C.claims_parts(claims)
            heading(2, "Claims")
            md += [claims_md, ""]
            body.append(f"<details class=\"claims\"><summary>Every claim on this page ({len(claims)}) with its 95% "
                        f"interval, n and verdict</summary>{claims_html}</details>")
        toc_md, toc_html = L.toc_parts(headings, _inline_md)
        md[md.index("<!-- contents -->")] = toc_md
        body[body.index("<!-- contents -->")] = toc_html
        if thumbnail:
            L.write_if_changed(out / "thumbnail.png", thumbnail[0])
            written.append("thumbnail.png")
        footer = (f"<footer>Every number on this page is in the CSV files beside it. Rebuild: "
                  f"<code>rlhf-interp report --rebuild --only {html.escape(self.name)}</code>"
                  + (f" (renders <code>{html.escape(self._source())}</code>)" if self._source() else "")
                  + ".</footer>")
        scripts = [f"../{H.ASSETS_DIR}/{a}" for a in sorted(assets)]
        nav = "<nav><a href=\"../index.html\">← all reports</a></nav>"
        atomic_write_text(out / "README.md", "\n".join(md).rstrip() + "\n")
        atomic_write_text(out / "index.html", H.page(self.title, "\n".join(body) + footer, scripts=scripts, nav=nav))
        if self.config is not None:
            atomic_write_json(out / "config.json", self.config)
        self._prune(out, ["README.md", "index.html", *written])
        atomic_write_json(out / MANIFEST, {"name": self.name, "title": self.title, "headline": self.headline,
                                           "source": self._source(), "sections": sections,
                                           "files": ["README.md", "index.html", *written],
                                           **({"claims": [c.to_dict() for c in claims]} if claims else {})})
        return out

    @staticmethod
    def _prune(out: Path, files: list[str]) -> None:
        """Delete figures and view pages the previous save wrote and this one did not (a renamed or dropped
        figure must not linger beside the page). CSVs are data and are never deleted."""
        manifest = out / MANIFEST
        if not manifest.exists():
            return
        for name in json.loads(manifest.read_text()).get("files", []):
            if name not in files and name.endswith((".png", ".html")) and "/" not in name:
                (out / name).unlink(missing_ok=True)

    def _source(self) -> str:
        """The analysis script, relative to the directory holding the reports root when possible."""
        if not self.source:
            return ""
        path = Path(self.source).resolve()
        base = Path(self.root).resolve().parent
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            return path.as_posix()

    def _view_page(self, block: _Block, parts: list[tuple[str, str, str]]) -> str:
        title = block.title or block.name
        body = [f"<h1>{html.escape(title)}</h1>"]
        if block.extra["intro"]:
            body.append(H.markdown_to_html(_dedent(block.extra["intro"])))
        for i, (sub, snippet, caption) in enumerate(parts):
            if i and sub:
                body.append(f"<h2>{_inline_md(sub)}</h2>")
            if caption:
                body.append(f"<p class=\"caption\">{_inline_md(caption)}</p>")
            body.append(snippet)
        nav = (f"<nav><a href=\"index.html\">← {html.escape(self.title)}</a> · "
               f"<a href=\"../index.html\">all reports</a></nav>")
        return H.page(title, "\n".join(body), scripts=[f"../{H.ASSETS_DIR}/circuitsvis.js"], nav=nav)


# ----------------------------------------------------------------------------------------------
# Reading a report back


def read_manifest(report_dir: str | Path) -> dict[str, Any]:
    """``report.json`` of a saved report (title, headline, sections, source, files)."""
    path = Path(report_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {Path(report_dir)} was not written by Report.save(); "
                                f"run its analysis script once (e.g. `python analyses/<name>.py --from-csv`).")
    return json.loads(path.read_text())


def read_config(report_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a report directory: the settings its measurements were made with."""
    path = Path(report_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: a report's measured settings live there.")
    return json.loads(path.read_text())


def read_table(report_dir: str | Path, name: str, **kwargs: Any) -> pd.DataFrame:
    """``<report_dir>/<name>.csv`` with a clear error naming the file when it is missing."""
    path = Path(report_dir) / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the page is rendered from the CSVs in {Path(report_dir)}; "
                                f"re-run the analysis that measures it.")
    return pd.read_csv(path, **kwargs)


def write_tables(report_dir: str | Path, tables: dict[str, pd.DataFrame], config: dict[str, Any] | None = None
                 ) -> Path:
    """Save measured tables (and the settings) into a report directory, for `render` to read."""
    from rlhf_interp.core.io import atomic_write_json

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        _write_csv_if_changed(df, report_dir / f"{_check_name(name)}.csv")
    if config is not None:
        atomic_write_json(report_dir / "config.json", config)
    return report_dir


# ----------------------------------------------------------------------------------------------
# helpers


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in {"index", "README", "report", "config"}:
        raise ValueError(f"block name {name!r}: use letters, digits, '_', '-', '.' (it becomes a file name) and "
                         f"not index/README/report/config")
    return name


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text).strip()


def _inline_md(text: str) -> str:
    """Markdown for one line (bold, code, links) without the surrounding <p>."""
    rendered = H.markdown_to_html(text).strip()
    return re.sub(r"^<p>(.*)</p>$", r"\1", rendered, flags=re.S)


def _md_headings(markdown: str) -> list[str]:
    return [m.group(2).strip() for m in re.finditer(r"^(#{2,3})\s+(.+)$", markdown, flags=re.M)]


def _unique(anchor: str, seen: set[str]) -> str:
    candidate, i = anchor, 2
    while candidate in seen:
        candidate, i = f"{anchor}-{i}", i + 1
    seen.add(candidate)
    return candidate


def _write_csv_if_changed(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` as CSV unless the file already holds exactly that text (rebuilds leave git clean)."""
    from rlhf_interp.core.io import atomic_write_text

    text = df.to_csv(index=False)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    atomic_write_text(path, text)

