"""Table blocks of a report page: cells a reader can trust, tables that fit the page.

Why a module: four rules every table on every page keeps (issue 33), kept in one place:

- **Tokens show what they are.** A token column is drawn with its whitespace visible and its id beside it
  (``' I'`` id 339 -> ``␣I · 339``; ``'I'`` id 57 -> ``I · 57``; a newline -> ``⏎``; an empty string -> ``∅``),
  so two tokens that differ only by a space never look alike and a whitespace token is never a blank cell.
- **Every markdown cell is escaped.** A ``|`` inside a cell (``<|im_end|>``) split the row into more columns than
  its header; it is written ``\\|``. (HTML cells are escaped by pandas.)
- **Wide tables fit or say so.** Column names break after ``_`` (so headers wrap instead of widening the table);
  a table with more than `WIDE_COLUMNS` columns is folded into a ``<details>`` whose summary says it is wide and
  where the whole table is.
- **Long tables are folded.** A preview longer than `LONG_ROWS` rows is folded the same way.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pandas as pd

WIDE_COLUMNS = 11  # more columns than fit 1150 px at 12 px type with wrapped headers
LONG_ROWS = 30  # more rows than a reader scrolls past without losing the page
TOKEN_COLUMNS = re.compile(r"^(token|tokens|query_token|key_token|token_str|top_token|.*_token)$")
ID_COLUMNS = ("token_id", "id")


def show_token(token: Any, token_id: Any = None) -> str:
    """A token as a reader must see it: whitespace made visible, the id after a middle dot."""
    if token is None or (isinstance(token, float) and token != token):
        text = ""
    else:
        text = str(token)
    visible = text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥").replace("\r", "␍") or "∅"
    if token_id is not None and not (isinstance(token_id, float) and token_id != token_id) and str(token_id) != "":
        return f"{visible} · {int(float(token_id))}"
    return visible


def cell(value: Any, floatfmt: str) -> Any:
    """A value as a table cell: NaN and NA empty (never "nan" or "<NA>"), whole floats without ".0"."""
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, float):
        if value != value:
            return ""
        if value.is_integer() and abs(value) < 1e15 and floatfmt.endswith("g"):
            return str(int(value))
        return format(value, floatfmt)
    return value


def md_escape(value: Any) -> Any:
    """A markdown table cell: ``|`` escaped, newlines as ``⏎`` (either one breaks the row)."""
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ⏎ ")
    return value


def display_frame(preview: pd.DataFrame, floatfmt: str) -> tuple[pd.DataFrame, list[str]]:
    """The preview as strings to show, and each column's alignment: token columns made visible (the id column
    merged into the token cell), NaN / NA empty."""
    shown = preview.copy()
    token_cols = [c for c in shown.columns if TOKEN_COLUMNS.match(str(c))]
    id_col = next((c for c in ID_COLUMNS if c in shown.columns), None)
    for col in token_cols:
        ids = shown[id_col] if id_col is not None and col == "token" else [None] * len(shown)
        shown[col] = [show_token(t, i) for t, i in zip(shown[col], ids)]
    if id_col is not None and "token" in token_cols:
        shown = shown.drop(columns=[id_col])
    align = ["right" if pd.api.types.is_numeric_dtype(shown[c]) and c not in token_cols else "left"
             for c in shown.columns]
    shown = shown.astype(object).apply(lambda col: col.map(lambda v: cell(v, floatfmt)))
    return shown, align


def _header_html(name: Any) -> str:
    """A column name that may wrap after ``_`` (a ``<wbr>`` there), so a long name does not widen the table."""
    return html.escape(str(name)).replace("_", "_<wbr>")


def html_table(shown: pd.DataFrame, align: list[str], classes: str = "tbl") -> str:
    """A plain ``<table>`` (escaped cells, wrapped headers, numbers right-aligned)."""
    head = "".join(f"<th class=\"{a}\">{_header_html(c)}</th>" for c, a in zip(shown.columns, align))
    rows = []
    for values in shown.itertuples(index=False):
        rows.append("<tr>" + "".join(f"<td class=\"{a}\">{html.escape(str(v))}</td>"
                                     for v, a in zip(values, align)) + "</tr>")
    return (f"<table class=\"{classes}\"><thead><tr>{head}</tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")


def table_parts(name: str, df: pd.DataFrame, preview: pd.DataFrame | None, floatfmt: str, caption: str,
                inline_md) -> tuple[str, str]:
    """(markdown, html) of a table block: caption, preview (never empty; folded when wide or long), link to the
    whole CSV. ``inline_md``: one line of markdown -> HTML (the page's, so captions render alike)."""
    size = f"{len(df)} rows × {len(df.columns)} columns"
    link_md = f"[`{name}.csv`]({name}.csv)"
    link_html = f"<a href=\"{name}.csv\"><code>{name}.csv</code></a>"
    md, out = [], []
    if caption:
        md.append(caption)
        out.append(f"<p class=\"caption\">{inline_md(caption)}</p>")
    if preview is None or not len(preview) or not len(preview.columns):
        md.append(f"*Not shown here: {size} in {link_md}.*")
        out.append(f"<p class=\"caption\"><i>Not shown here: {size} in {link_html}.</i></p>")
        return "\n\n".join(md), "\n".join(out)
    shown, align = display_frame(preview, floatfmt)
    md_frame = shown.apply(lambda col: col.map(md_escape))
    md_frame.columns = [md_escape(str(c)) for c in md_frame.columns]
    md.append(md_frame.to_markdown(index=False, disable_numparse=True, colalign=align))
    whole = "shown whole" if len(preview) == len(df) else f"{len(preview)} shown"
    wide, long = len(shown.columns) > WIDE_COLUMNS, len(shown) > LONG_ROWS
    table = f"<div class=\"table-wrap\">{html_table(shown, align)}</div>"
    if wide or long:
        why = " and ".join(w for w, on in ((f"{len(shown.columns)} columns, wider than the page: scroll sideways",
                                             wide), (f"{len(shown)} rows", long)) if on)
        out.append(f"<details class=\"table\"><summary>Show the table ({why}; the whole table is {name}.csv)"
                   f"</summary>{table}</details>")
        md.append(f"*{size} ({whole}; {'wide' if wide else 'long'}: folded on the HTML page) in {link_md}.*")
        out.append(f"<p class=\"caption\"><i>{size} ({whole}, folded above) in {link_html}.</i></p>")
    else:
        out.append(table)
        md.append(f"*{size} ({whole}) in {link_md}.*")
        out.append(f"<p class=\"caption\"><i>{size} ({whole}) in {link_html}.</i></p>")
    return "\n\n".join(md), "\n".join(out)


__all__ = ["LONG_ROWS", "WIDE_COLUMNS", "cell", "display_frame", "html_table", "md_escape", "show_token",
           "table_parts"]
