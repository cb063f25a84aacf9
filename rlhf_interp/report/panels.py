"""A grid of small panels drawn from one spec, as a static PNG (matplotlib) and an interactive chart (Plotly).

Why: a figure of six panels in a row (2563 x 417 px) is unreadable at page width, and a Plotly chart built
separately from its PNG drifted from it (the caption promised a symlog axis, a rolling mean and a dashed budget
line the chart lacked). Here both come from the same `Panel` list: a grid of at most `cols` columns, log axes,
dashed reference lines, filled 95% bands (`Line.band`), markers-only series (a metric logged at two phases is two points, not a line) and the
legend entries are the same in both, and `rlhf_interp.report.layout.chart_key` writes the caption's key from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Line:
    """One series of a panel. ``mode``: "lines+markers", "lines" or "markers" (markers: not joined)."""

    name: str
    x: list[float]
    y: list[float]
    color: str
    marker: str = "o"  # matplotlib
    symbol: str = "circle"  # Plotly
    mode: str = "lines+markers"
    dash: str = "solid"  # "solid" | "dash" | "dot"
    width: float = 1.5
    size: float = 4
    alpha: float = 1.0
    legend: bool = True
    yerr: list[float] | None = None  # error bars (one standard error, say so in the caption)
    band: tuple[list[float], list[float]] | None = None  # (low, high) per x: a filled band (say which interval)


def _band_points(line: Line, log_y: bool) -> tuple[list[float], list[float], list[float]]:
    """The band's (x, low, high) where both ends are finite (and, on a log axis, the low end positive)."""
    keep = [(x, lo, hi) for x, lo, hi in zip(line.x, *line.band) if lo is not None and hi is not None
            and np.isfinite(lo) and np.isfinite(hi) and (lo > 0 or not log_y)]
    return [k[0] for k in keep], [k[1] for k in keep], [k[2] for k in keep]


def _rgba(color: str, alpha: float) -> str:
    color = color.lstrip("#")
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


@dataclass
class Panel:
    """One panel: its title, axis labels, series, a log y axis or not, and dashed horizontal reference lines
    ``(y, label)``."""

    title: str
    xlabel: str
    ylabel: str
    lines: list[Line] = field(default_factory=list)
    log_y: bool = False
    log_x: bool = False
    hlines: list[tuple[float, str]] = field(default_factory=list)
    ylim: tuple[float | None, float | None] = (None, None)


def _grid(n: int, cols: int) -> tuple[int, int]:
    cols = min(cols, n)
    return math.ceil(n / cols), cols


def _few_x(panel: Panel) -> list[float]:
    """On a log x axis with at most 8 distinct x values (a sweep's coefficients): ticks at exactly those values."""
    xs = sorted({float(v) for line in panel.lines for v in line.x if v is not None and v > 0})
    return xs if panel.log_x and 0 < len(xs) <= 8 else []


def to_matplotlib(panels: list[Panel], cols: int = 3, panel_size: tuple[float, float] = (4.3, 3.3)):
    """The panels as a matplotlib figure, ``cols`` per row (one legend per panel)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    rows, cols = _grid(len(panels), cols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel_size[0] * cols, panel_size[1] * rows), squeeze=False)
    plt.close(fig)
    for ax, panel in zip(axes.flat, panels):
        for line in panel.lines:
            if line.band is not None:
                bx, lo, hi = _band_points(line, panel.log_y)
                ax.fill_between(bx, lo, hi, color=line.color, alpha=0.15, lw=0)
            ls = {"dash": "--", "dot": ":"}.get(line.dash, "-") if "lines" in line.mode else "none"
            ax.errorbar(line.x, line.y, yerr=line.yerr, color=line.color, ls=ls, lw=line.width, alpha=line.alpha,
                        marker=line.marker if "markers" in line.mode else None, ms=line.size + 1, capsize=2,
                        elinewidth=0.8, label=line.name if line.legend else None)
        for y, text in panel.hlines:
            ax.axhline(y, color="#444444", ls="--", lw=1.2, label=text)
        for on, axis, setter in ((panel.log_y, ax.yaxis, ax.set_yscale), (panel.log_x, ax.xaxis, ax.set_xscale)):
            if on:  # plain numbers at the ticks (0.3, not "3" beside an unlabelled 10^-1)
                setter("log")
                axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                axis.set_minor_formatter(NullFormatter())
        ticks = _few_x(panel)
        if ticks:
            ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
        if panel.ylim != (None, None):
            ax.set_ylim(*panel.ylim)
        ax.set_title(panel.title, fontsize=10, loc="left")
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel, fontsize=9)
        ax.grid(alpha=0.3, which="both" if panel.log_y or panel.log_x else "major")
        if any(line.legend for line in panel.lines) or panel.hlines:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def to_plotly(panels: list[Panel], cols: int = 3, height_per_row: int = 330, title: str = ""):
    """The same panels as one Plotly figure (subplots); a series named alike in several panels is one legend
    entry toggling it everywhere."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows, cols = _grid(len(panels), cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p.title for p in panels], horizontal_spacing=0.08,
                        vertical_spacing=0.16)
    shown: set[str] = set()
    for i, panel in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        for line in panel.lines:
            if line.band is not None:  # drawn first, under its line; no legend entry of its own
                bx, lo, hi = _band_points(line, panel.log_y)
                fig.add_trace(go.Scatter(x=bx + bx[::-1], y=hi + lo[::-1], fill="toself", mode="lines",
                                         fillcolor=_rgba(line.color, 0.15), line={"width": 0}, hoverinfo="skip",
                                         showlegend=False, legendgroup=line.name, name=f"{line.name}: 95% band"),
                              row=row, col=col)
            first = line.legend and line.name not in shown
            if line.legend:
                shown.add(line.name)
            fig.add_trace(go.Scatter(
                x=list(line.x), y=list(line.y), name=line.name, legendgroup=line.name, showlegend=first,
                mode=line.mode, opacity=line.alpha,
                marker={"color": line.color, "symbol": line.symbol, "size": line.size + 2},
                error_y={"type": "data", "array": list(line.yerr), "visible": True, "thickness": 1}
                if line.yerr is not None else None,
                line={"color": line.color, "width": line.width, "dash": line.dash},
                hovertemplate=f"{line.name}<br>%{{x}}: %{{y:.4g}}<extra></extra>"), row=row, col=col)
        for y, text in panel.hlines:
            xs = [v for line in panel.lines for v in line.x]
            first = text not in shown
            shown.add(text)
            fig.add_trace(go.Scatter(x=[min(xs), max(xs)], y=[y, y], mode="lines", name=text, legendgroup=text,
                                     showlegend=first, line={"color": "#444444", "dash": "dash", "width": 1.5},
                                     hoverinfo="skip"), row=row, col=col)
        ticks = _few_x(panel)
        fig.update_xaxes(title_text=panel.xlabel, showgrid=True, type="log" if panel.log_x else "linear", row=row,
                         col=col, **({"tickvals": ticks, "ticktext": [f"{v:g}" for v in ticks]} if ticks else
                                     {"dtick": 1, "exponentformat": "none"} if panel.log_x else {}))
        yaxis = {"title_text": panel.ylabel, "showgrid": True, "type": "log" if panel.log_y else "linear",
                 **({"dtick": 1, "exponentformat": "none"} if panel.log_y else {})}  # 0.01 0.1 1, not "2 5"
        if panel.ylim != (None, None) and not panel.log_y:
            lo, hi = panel.ylim
            ys = [v for line in panel.lines for v in line.y if v is not None and np.isfinite(v)]
            yaxis["range"] = [lo if lo is not None else min(ys), hi if hi is not None else max(ys)]
        fig.update_yaxes(**yaxis, row=row, col=col)
    fig.update_layout(template="simple_white", height=height_per_row * rows + 90,
                      margin={"l": 60, "r": 20, "t": 60 if title else 40, "b": 40},
                      title={"text": title, "x": 0.01} if title else None,
                      legend={"orientation": "h", "y": -0.08, "yanchor": "top"})
    return fig


__all__ = ["Line", "Panel", "to_matplotlib", "to_plotly"]
