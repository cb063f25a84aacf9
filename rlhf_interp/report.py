"""Reports: DataFrames, figures and circuitsvis views into ``reports/<name>/``.

A report directory holds ``README.md`` (renders on GitHub), ``index.html`` (offline: figures are
embedded, circuitsvis JS is a local file beside it), every table as CSV and every figure as PNG,
and ``config.json``: how the report was made. Analyses build one `Report` and call `save()`.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

REPORTS_ROOT = Path("reports")


@dataclass
class _Block:
    kind: str  # "text" | "table" | "figure" | "html"
    title: str = ""
    body: Any = None
    name: str = ""


@dataclass
class Report:
    """Collects a report's blocks in order and writes them as markdown + HTML."""

    name: str
    title: str
    root: Path = REPORTS_ROOT
    config: dict[str, Any] = field(default_factory=dict)
    blocks: list[_Block] = field(default_factory=list)

    @property
    def out_dir(self) -> Path:
        return Path(self.root) / self.name

    def text(self, markdown: str) -> "Report":
        self.blocks.append(_Block("text", body=markdown.strip()))
        return self

    def table(self, name: str, df: pd.DataFrame, *, title: str = "", max_rows: int = 30,
              floatfmt: str = ".4g") -> "Report":
        """A tidy DataFrame: shown (up to ``max_rows``) and saved whole as ``<name>.csv``."""
        self.blocks.append(_Block("table", title=title, body=(df, max_rows, floatfmt), name=name))
        return self

    def figure(self, name: str, fig, *, title: str = "") -> "Report":
        """A matplotlib figure, saved as ``<name>.png`` and embedded in the HTML."""
        self.blocks.append(_Block("figure", title=title, body=fig, name=name))
        return self

    def circuitsvis(self, name: str, rendered, *, title: str = "") -> "Report":
        """A circuitsvis view (the object ``circuitsvis.attention.attention_patterns`` returns)."""
        self.blocks.append(_Block("html", title=title, body=_offline_view(rendered), name=name))
        return self

    def save(self) -> Path:
        """Write everything; the previous report of the same name is replaced only once this one is complete."""
        import matplotlib.pyplot as plt

        final = self.out_dir
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{self.name}-{int(time.time() * 1000)}"
        tmp.mkdir()
        md: list[str] = [f"# {self.title}", ""]
        body: list[str] = [f"<h1>{html.escape(self.title)}</h1>"]
        uses_cv = False
        for block in self.blocks:
            if block.title:
                md += [f"## {block.title}", ""]
                body.append(f"<h2>{html.escape(block.title)}</h2>")
            if block.kind == "text":
                md += [block.body, ""]
                body.append(_markdown_to_html(block.body))
            elif block.kind == "table":
                df, max_rows, floatfmt = block.body
                df.to_csv(tmp / f"{block.name}.csv", index=False)
                shown = df.head(max_rows)
                more = f"\n\n*{len(df) - max_rows} more rows in `{block.name}.csv`.*" if len(df) > max_rows else ""
                md += [shown.to_markdown(index=False, floatfmt=floatfmt) + more, ""]
                body.append(shown.to_html(index=False, float_format=lambda x: format(x, floatfmt), border=0,
                                          classes="tbl") + (f"<p><i>{len(df) - max_rows} more rows in "
                                                            f"<a href='{block.name}.csv'>{block.name}.csv</a></i></p>"
                                                            if more else ""))
            elif block.kind == "figure":
                png = tmp / f"{block.name}.png"
                block.body.savefig(png, dpi=110, bbox_inches="tight")
                plt.close(block.body)
                md += [f"![{block.name}]({block.name}.png)", ""]
                data = base64.b64encode(png.read_bytes()).decode()
                body.append(f"<img alt='{block.name}' src='data:image/png;base64,{data}'/>")
            elif block.kind == "html":
                uses_cv = True
                (tmp / f"{block.name}.html").write_text(_standalone(block.body))
                md += [f"Interactive view: [{block.name}.html]({block.name}.html) (open in a browser; works offline).", ""]
                body.append(block.body)
        if uses_cv:
            shutil.copy(_circuitsvis_js(), tmp / "circuitsvis.js")
        (tmp / "README.md").write_text("\n".join(md).rstrip() + "\n")
        (tmp / "index.html").write_text(_page(self.title, "\n".join(body), uses_cv))
        (tmp / "config.json").write_text(json.dumps(self.config, indent=2, default=str))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        return final


def _circuitsvis_js() -> Path:
    import circuitsvis

    return Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"


def _offline_view(rendered) -> str:
    """circuitsvis' local HTML with its 1.3 MB inline JS replaced by the shared local ``circuitsvis.js``."""
    src = rendered.local_src if hasattr(rendered, "local_src") else str(rendered)
    inline_js = _circuitsvis_js().read_text(encoding="utf-8").replace("</script>", "")
    return src.replace(inline_js, "")


def _standalone(view: str) -> str:
    return _page("circuitsvis view", view, True)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table.tbl{border-collapse:collapse;font-size:13px}table.tbl td,table.tbl th{padding:3px 8px;border-bottom:1px solid #ddd}
img{max-width:100%}code{background:#f3f3f3;padding:1px 4px}pre{background:#f6f6f6;padding:8px;overflow:auto}"""


def _page(title: str, body: str, uses_cv: bool) -> str:
    script = '<script src="circuitsvis.js"></script>' if uses_cv else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style>{script}</head><body>\n{body}\n</body></html>\n")


def _markdown_to_html(text: str) -> str:
    import markdown

    return markdown.markdown(text, extensions=["fenced_code", "tables"])
