"""The HTML side of a report: page template, markdown, offline assets, circuitsvis and Plotly snippets.

Why one module: every page must open offline from ``file://`` with no request to the network, and
every container must be closed (a self-closing ``<div/>`` is not closed in HTML: what follows it ends
up inside the widget and disappears when the widget renders). Keeping the markup in one place keeps
those two rules in one place.
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import plotly.io as pio

ASSETS_DIR = "assets"  # under the reports root: JS libraries shared by every page (one copy each)

CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:1.5em auto;padding:0 1em;color:#222;line-height:1.45}
nav{font-size:14px;margin-bottom:1em}p.headline{font-size:1.05em;background:#f4f7fb;border-left:4px solid #4c72b0;padding:.6em .9em}
aside.answers{background:#f4f7fb;border-left:4px solid #4c72b0;padding:.5em 1em;margin:1em 0}aside.answers p{margin:.3em 0}
aside.answers ul{margin:.2em 0 .4em;padding-left:1.3em}aside.answers li{margin:.15em 0}
nav.toc{background:#fafafa;border:1px solid #e4e4e4;padding:.4em 1em;font-size:14px}nav.toc ol{margin:.3em 0;padding-left:1.4em;columns:2;column-gap:2em}nav.toc li{break-inside:avoid}
nav.toc ul{margin:0;padding-left:1.2em;list-style:circle}nav.toc li{margin:.05em 0}
table.tbl{border-collapse:collapse;font-size:12.5px;margin:.4em 0;max-width:100%}table.tbl td,table.tbl th{padding:3px 7px;border-bottom:1px solid #ddd;text-align:right;vertical-align:top}
table.tbl th{overflow-wrap:normal}table.tbl .left{text-align:left}table.tbl td{overflow-wrap:anywhere}
table.tbl td:first-child,table.tbl th:first-child{text-align:left}figure{margin:1em 0}figcaption,p.caption{font-size:14px;color:#444}
img{max-width:100%}code{background:#f3f3f3;padding:1px 4px}pre{background:#f6f6f6;padding:8px;overflow:auto}
div.chart{margin:.5em 0;border:1px solid #eee}details{margin:.4em 0}details>summary{cursor:pointer;color:#1f4e8c}
footer{margin-top:3em;font-size:13px;color:#666}div.table-wrap{overflow-x:auto;max-width:100%}
section.report{display:grid;grid-template-columns:220px 1fr;gap:1em;border-top:1px solid #e4e4e4;padding:.8em 0}
section.report img.thumb{width:220px;border:1px solid #ddd}section.report h2{margin:.1em 0 .3em;font-size:1.2em}
section.report p{margin:.25em 0}span.stage{font-size:12px;color:#666;text-transform:uppercase;letter-spacing:.04em}"""


def markdown_to_html(text: str) -> str:
    """Markdown -> HTML with raw HTML off: ``<script>``, ``<img onerror=...>`` and every other tag in the text
    come out as text (escaped), and links or images whose URL is not http(s), a relative path, an anchor or
    ``mailto:`` lose it (``javascript:`` / ``data:`` URLs run code when clicked). Report text can hold what a model
    generated or a user typed; none of it may become markup."""
    import markdown

    return markdown.markdown(text, extensions=["fenced_code", "tables", _NoRawHtml()])


_SAFE_URL = re.compile(r"^(?:https?://|mailto:|#|\.{0,2}/|[^:/?#]+(?:[/?#]|$))", re.I)


def _markdown_extension_base():
    from markdown.extensions import Extension

    return Extension


class _NoRawHtml(_markdown_extension_base()):
    """A Python-Markdown extension: no raw HTML blocks or inline tags (they are escaped as text), and only safe
    link / image URLs."""

    def extendMarkdown(self, md):  # noqa: N802 - Python-Markdown's name
        from markdown.treeprocessors import Treeprocessor

        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")

        class SafeUrls(Treeprocessor):
            def run(self, root):
                for element in root.iter():
                    for attr in ("href", "src"):
                        value = element.get(attr)
                        if value is not None and not _SAFE_URL.match(value.strip()):
                            element.set(attr, "")
                return None

        md.treeprocessors.register(SafeUrls(md), "rlhf_interp_safe_urls", 1)


def slug(text: str) -> str:
    """An id for a heading: lower case, words joined by '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def page(title: str, body: str, *, scripts: list[str] = (), nav: str = "") -> str:
    """A complete HTML5 document. ``scripts`` are relative URLs of local JS files loaded in <head>."""
    tags = "".join(f'<script src="{html.escape(src)}"></script>' for src in scripts)
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style>{tags}</head><body>\n"
            f"{nav}{body}\n</body></html>\n")


# ----------------------------------------------------------------------------------------------
# Offline JS libraries, one shared copy under <reports root>/assets/


def plotly_js_source() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def circuitsvis_js_path() -> Path:
    import circuitsvis

    return Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"


def ensure_asset(root: Path, name: str) -> str:
    """Copy a JS library into ``root/assets/`` unless an identical copy is there; return its file name."""
    from rlhf_interp.core.io import atomic_write_text

    target = Path(root) / ASSETS_DIR / name
    if name == "plotly.min.js":
        source = plotly_js_source()
        if not target.exists() or target.stat().st_size != len(source.encode()):
            atomic_write_text(target, source)
    elif name == "circuitsvis.js":
        source_path = circuitsvis_js_path()
        if not target.exists() or target.read_bytes() != source_path.read_bytes():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source_path, target)
    else:
        raise ValueError(f"unknown asset {name!r}: expected plotly.min.js or circuitsvis.js")
    return name


# ----------------------------------------------------------------------------------------------
# Widgets


def circuitsvis_snippet(rendered, element_id: str) -> str:
    """circuitsvis' local HTML for one view, with its 1.3 MB inline bundle removed (the page loads the shared
    ``circuitsvis.js``), a fixed element id (stable diffs) and the container closed properly."""
    src = rendered.local_src if hasattr(rendered, "local_src") else str(rendered)
    bundle = circuitsvis_js_path().read_text(encoding="utf-8").replace("</script>", "")
    src = src.replace(bundle, "")
    match = re.search(r'<div id="(circuits-vis-[^"]+)"([^>]*?)\s*/?>(</div>)?', src)
    if match is None:
        raise ValueError("circuitsvis output has no container <div id=\"circuits-vis-...\">: unsupported version?")
    src = src.replace(match.group(0), f'<div id="{element_id}" class="circuitsvis"{match.group(2)}></div>', 1)
    src = src.replace(match.group(1), element_id)
    src = src.replace("<script crossorigin type=\"module\">", "<script type=\"module\">")
    return _escape_render_data(src)


def script_safe_json(text: str) -> str:
    """JSON text made safe inside ``<script>``: ``<``, ``>``, ``&``, U+2028 and U+2029 written as ``\\uXXXX``
    escapes (the same value to a JSON parser), so no string in it can close the script (``</script>``) or open
    an HTML comment. Outside strings JSON has none of these characters, so replacing them everywhere is exact."""
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def _escape_render_data(src: str) -> str:
    """The data of circuitsvis' ``CircuitsVis.render(id, Component, {...})`` call made safe twice over. Tokens are
    text a model generated, and circuitsvis (1) writes them with ``json.dumps``, which leaves ``</script>`` as it
    is, so a token could end the script and put its own markup into the page; (2) draws them with React's
    ``dangerouslySetInnerHTML``, so a token ``<img src=x onerror=...>`` would run. Hence every string is
    HTML-escaped (``&`` ``<`` ``>``; circuitsvis' innerHTML shows them as the characters again) and the JSON is
    then written script-safe. (Chart axes drawn on a canvas show such a token escaped: a small price.)"""
    match = re.search(r'(CircuitsVis\.render\(\s*"[^"]*",\s*CircuitsVis\.\w+,\s*)(.*)(\)\s*</script>)', src, re.S)
    if match is None:
        raise ValueError("circuitsvis output has no CircuitsVis.render(...) call to escape: unsupported version? "
                         "(its data is not embedded unescaped)")
    # In JSON text these characters occur only inside strings, so plain replacement escapes exactly the strings.
    data = match.group(2).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    data = script_safe_json(data)
    return src[:match.start(2)] + data + src[match.end(2):]


def plotly_snippet(fig, element_id: str, *, height: int = 460) -> str:
    """A Plotly figure as a closed ``<div>`` + script; the page loads the shared ``plotly.min.js``."""
    if fig.layout.height is None:
        fig.update_layout(height=height)
    # One JSON encoding whatever is installed: plotly's default engine is orjson when importable (raw UTF-8)
    # and json otherwise (ASCII escapes), which made pages differ byte for byte between machines.
    engine = pio.json.config.default_engine
    pio.json.config.default_engine = "json"
    try:
        snippet = fig.to_html(full_html=False, include_plotlyjs=False, div_id=element_id,
                              default_height=f"{fig.layout.height}px",
                              config={"displaylogo": False, "responsive": True})
    finally:
        pio.json.config.default_engine = engine
    return f'<div class="chart">{snippet}</div>'
