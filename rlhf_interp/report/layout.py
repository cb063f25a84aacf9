"""What every page has around its blocks: the "what this answers" box, the table of contents, the order of the
work (for the index), and the key of an interactive chart generated from the chart itself.

Why here and not in each analysis: the reader's first screen must say what the page answers and where its parts
are, on every page alike (issue 33); and a caption written beside a chart drifts from it (the Plotly chart came
first and its caption described the PNG), so the key of marks is made from the chart's own traces and
`caption_problems` checks the words a caption uses ("stars", "dashed", "symlog", "Left ... Right") against them.
"""

from __future__ import annotations

import html
import io
import re
from pathlib import Path
from typing import Any, Iterable

from rlhf_interp.report import style
from rlhf_interp.report.html import slug

# The order of the work: train -> diff -> edit -> frontier -> causal -> KL studies -> reward models -> algorithms.
# name -> (stage, the question the page answers).
WORK_ORDER: dict[str, tuple[str, str]] = {
    "ppo_periods": ("1 · train", "How fast does PPO under a KL penalty raise the reward, at what KL, and do the "
                                 "samples collapse?"),
    "diff_ppo": ("2 · diff", "Where in the network do the tuned and the base model differ, and which tokens moved?"),
    "steering_sweep": ("3 · edit", "At equal KL, which layer buys the most reward, and is a later layer cheaper?"),
    "edit_vs_finetune": ("4 · frontier", "At equal KL (1, 2, 4 nats), which way of changing the model buys the most "
                                         "reward: editing, best-of-n or fine-tuning?"),
    "causal_ppo": ("5 · causal", "Which layers and components carry the tuned model's change, and does patching "
                                 "them undo it?"),
    "kl_direction": ("6 · KL studies", "Does penalising KL(π‖ref) or KL(ref‖π) change what the policy learns and "
                                       "which modes it loses?"),
    "kl_estimators": ("6 · KL studies", "How far are the sampled KL estimators k1, k2, k3 from the exact KL, along "
                                        "real runs?"),
    "reward_hacking": ("7 · reward models", "Does PPO against a learned reward model exploit it, and when?"),
    "iterated_rm": ("7 · reward models", "Does refreshing the reward model on the policy's samples stop the "
                                         "exploitation?"),
    "algorithms": ("8 · algorithms", "At matched KL, do PPO, GRPO, RLOO and DPO buy the same reward?"),
}


def order_key(name: str) -> tuple[int, str]:
    """Sort key: the order of the work, unknown reports after, by name."""
    names = list(WORK_ORDER)
    return (names.index(name) if name in names else len(names), name)


def question_for(name: str, title: str) -> str:
    return WORK_ORDER.get(name, ("", title))[1]


# ----------------------------------------------------------------------------------------------
# The answer box and the table of contents


# Lower-case words that continue the previous claim's sentence; a claim opening with a name ("none − pi_ref",
# "ref_pi_seq ...") stands on its own line.
_CONTINUING = {"at", "and", "but", "with", "while", "which", "so", "then", "against", "where", "whereas", "to",
               "from", "or", "than", "over", "on", "in", "for", "by", "its", "it"}


def answer_parts(question: str, sentences: list[str], inline_md) -> tuple[str, str]:
    """(markdown, html) of the "what this answers" box: the question, then the answer, one claim per line."""
    merged: list[str] = []
    for s in sentences:  # a claim continuing the previous one ("at KL 1.79 ...", "Its lead over ...") joins it
        lower = s.split(" ", 1)[0] in _CONTINUING  # "none − pi_ref ...", "ref_pi_seq ..." start claims of their own
        if merged and (lower or s.startswith(("It ", "Its "))):
            merged[-1] = f"{merged[-1].rstrip('.') if lower else merged[-1]} {s}"
        else:
            merged.append(s)
    sentences = merged
    md = [f"> **What this answers:** {question}", ">"]
    md += [f"> - {s}" for s in sentences] if sentences else ["> (no claims on this page)"]
    items = "".join(f"<li>{inline_md(s)}</li>" for s in sentences)
    body = (f"<aside class=\"answers\" id=\"what-this-answers\"><p><b>What this answers:</b> "
            f"{inline_md(question)}</p>" + (f"<p><b>Answer</b></p><ul>{items}</ul>" if items else "") + "</aside>")
    return "\n".join(md), body


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a markdown heading (lower case, punctuation dropped, spaces -> '-')."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def toc_parts(headings: list[tuple[int, str, str]], inline_md) -> tuple[str, str]:
    """(markdown, html) of the table of contents: one line of links to the sections (h2), so the first screen
    keeps room for the answer; ``headings`` = (level, title, html anchor)."""
    top = [(t, a) for lvl, t, a in headings if lvl == 2]
    md = "**Contents:** " + " · ".join(f"[{t}](#{github_anchor(t)})" for t, _ in top)
    links = " · ".join(f"<a href=\"#{html.escape(a)}\">{inline_md(t)}</a>" for t, a in top)
    return md, f"<nav class=\"toc\" aria-label=\"contents\"><b>Contents:</b> {links}</nav>"


# ----------------------------------------------------------------------------------------------
# Chart keys and caption checks, from the chart's own traces


def _traces(chart: Any) -> tuple[list[dict], dict]:
    """(traces, layout) as plain dicts, from a Plotly figure or its JSON (as the browser holds it)."""
    if hasattr(chart, "to_plotly_json"):
        data = chart.to_plotly_json()
        return [dict(t) for t in data.get("data", [])], dict(data.get("layout", {}))
    return list(chart.get("data", [])), dict(chart.get("layout", {}))


def _marker(trace: dict) -> tuple[str, str]:
    marker = trace.get("marker") or {}
    line = trace.get("line") or {}
    color = marker.get("color") if isinstance(marker.get("color"), str) else line.get("color")
    symbol = marker.get("symbol") if isinstance(marker.get("symbol"), str) else "circle"
    return str(color or ""), symbol


def legend_marks(chart: Any) -> dict[str, tuple[str, str]]:
    """Legend name -> (colour, marker symbol or line dash) of every named scatter trace in the legend."""
    traces, _ = _traces(chart)
    out: dict[str, tuple[str, str]] = {}
    for t in traces:
        if t.get("type", "scatter") not in ("scatter", "scattergl") or not t.get("name") or t.get("showlegend") is False:
            continue
        color, symbol = _marker(t)
        mode = t.get("mode") or "lines+markers"
        key = symbol if "markers" in mode else f"line:{(t.get('line') or {}).get('dash') or 'solid'}"
        out.setdefault(str(t["name"]), (color, key))
    return out


def chart_key(chart: Any, limit: int = 14) -> str:
    """The key of the chart's legend in words ("best-of-n: blue diamonds; ..."), made from its traces."""
    marks = legend_marks(chart)
    if not marks:
        return ""
    if len(marks) > limit:
        return f"The chart has {len(marks)} series; its legend names them (click one to hide it)."
    parts = []
    for name, (color, key) in marks.items():
        shape = (f"{(key[5:] if key != 'line:solid' else 'solid')} line" if key.startswith("line:")
                 else style.SYMBOL_WORDS.get(key, key))
        parts.append(f"{name}: {style.color_word(color)} {shape}")
    return "Key (from the chart): " + "; ".join(parts) + "."


# caption word -> (what the chart must have, the check)
def _has_symbol(traces, part):
    return any(part in _marker(t)[1] for t in traces if "markers" in (t.get("mode") or "markers"))


def _has_dash(traces, layout, dashes):
    lines = [(t.get("line") or {}).get("dash") for t in traces] + [
        (s.get("line") or {}).get("dash") for s in layout.get("shapes", [])]
    return any(d in dashes for d in lines if d)


def _log_axis(layout):
    return any(str(v.get("type")) == "log" for k, v in layout.items() if k.startswith(("xaxis", "yaxis"))
               and isinstance(v, dict))


def _names(traces, layout):
    names = " ".join(str(t.get("name") or "") for t in traces)
    notes = " ".join(str(a.get("text") or "") for a in layout.get("annotations", []))
    return (names + " " + notes).lower()


CAPTION_RULES: list[tuple[str, str, Any]] = [
    (r"\bstars?\b", "a star marker", lambda t, l: _has_symbol(t, "star")),
    (r"\bdiamonds?\b", "a diamond marker", lambda t, l: _has_symbol(t, "diamond")),
    (r"\bX( marks?| markers?)?\b(?![-_(])", "an x marker", lambda t, l: _has_symbol(t, "x")),
    (r"\b(red )?rings?\b", "an open (ring) marker", lambda t, l: _has_symbol(t, "open")),
    (r"\bdashed\b", "a dashed line", lambda t, l: _has_dash(t, l, {"dash", "longdash", "dashdot"})),
    (r"\bdotted\b", "a dotted line", lambda t, l: _has_dash(t, l, {"dot", "dashdot"})),
    (r"\b(symlog|log axis|log \w+ axis|log scale|log-scale)\b", "a log axis", lambda t, l: _log_axis(l)),
    (r"\brolling mean\b", "a rolling-mean series", lambda t, l: "mean" in _names(t, l)),
    (r"\bGao\b", "a Gao fit series", lambda t, l: "gao" in _names(t, l)),
    (r"\bbands?\b", "a filled band", lambda t, l: any(t_.get("fill") for t_ in t)),
    (r"\b(Left|Right)\b[:,.]?", "two or more panels",
     lambda t, l: sum(1 for k in l if re.fullmatch(r"xaxis\d*", k)) >= 2 or len({x.get("xaxis") for x in t}) >= 2),
]


def caption_problems(caption: str, chart: Any) -> list[str]:
    """What ``caption`` promises that ``chart`` lacks (empty when they agree). Words: stars, diamonds, X marks,
    rings, dashed, dotted, a log axis, a rolling mean, Gao fits, bands, Left/Right panels."""
    traces, layout = _traces(chart)
    problems = []
    for pattern, what, check in CAPTION_RULES:
        match = re.search(pattern, caption)
        if match and not check(traces, layout):
            problems.append(f"caption says {match.group(0)!r} but the chart has no {what}")
    return problems


def collisions_in(chart: Any) -> list[tuple[str, str]]:
    """Legend entries of one chart drawn alike (same colour and marker): a reader cannot tell them apart."""
    return style.collisions(legend_marks(chart))


# ----------------------------------------------------------------------------------------------
# Page helpers: heading anchors, thumbnails

def anchor_headings(rendered: str, ids: set[str], headings: list[tuple[int, str, str]], unique) -> str:
    """Give the h2/h3 of rendered markdown an id (for the table of contents) and list them in ``headings``."""
    def add(match: re.Match) -> str:
        level, inner = int(match.group(1)), match.group(2)
        title = html.unescape(re.sub(r"<[^>]+>", "", inner)).strip()
        anchor = unique(slug(title), ids)
        headings.append((level, title, anchor))
        return f"<h{level} id=\"{anchor}\">{inner}</h{level}>"

    return re.sub(r"<h([23])>(.*?)</h\1>", add, rendered, flags=re.S)


def thumbnail(png: bytes, width: int = 320) -> bytes:
    """A small PNG of a figure for the index (``thumbnail.png``): the first figure, ``width`` px wide."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    height = max(1, round(image.height * width / image.width))
    small = image.resize((width, height), Image.LANCZOS)
    if small.height > width:  # a tall figure: its top part
        small = small.crop((0, 0, width, width))
    buffer = io.BytesIO()
    small.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def write_if_changed(path: Path, data: bytes) -> None:
    from rlhf_interp.core.io import atomic_path

    if not path.exists() or path.read_bytes() != data:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)


__all__ = ["WORK_ORDER", "answer_parts", "caption_problems", "chart_key", "collisions_in", "legend_marks",
           "order_key", "question_for", "toc_parts", "anchor_headings", "thumbnail", "write_if_changed"]


def sentences_of(claims: Iterable[Any]) -> list[str]:
    return [c.sentence().strip() for c in claims if getattr(c, "headline", True)]
