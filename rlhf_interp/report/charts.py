"""Interactive charts (Plotly) for the places a reader explores: sweeps, frontiers, trajectories.

They sit on the HTML page next to the static PNG of the same data (``Report.figure(..., chart=...)``):
hover shows every column that matters for a point, clicking a legend entry hides a series, and buttons
switch an axis between linear and log. Plotly's JS is not embedded here: the page loads the one shared
``reports/assets/plotly.min.js``, so every chart works offline.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from rlhf_interp.report import style as S


def family_styles(values) -> dict:
    """{series value: {"color", "symbol"}} from the site's fixed family marks (`rlhf_interp.report.style`), for
    series named by method ("steer: PCA", "best-of-n", "PPO LoRA r=16" ...)."""
    out = {}
    for value in dict.fromkeys(values):
        mark = S.mark_of(str(value))
        out[value] = {"color": mark.color, "symbol": mark.plotly_symbol}
    return out


def _hover(df: pd.DataFrame, columns: Sequence[str]) -> tuple[list[list], str]:
    """customdata rows and a hovertemplate showing ``columns`` by name."""
    data = df[list(columns)].astype(object).where(df[list(columns)].notna(), "").values.tolist()
    lines = []
    for i, col in enumerate(columns):
        fmt = ":.4g" if pd.api.types.is_float_dtype(df[col]) else ""
        lines.append(f"{col}: %{{customdata[{i}]{fmt}}}")
    return data, "<br>".join(lines) + "<extra></extra>"


def _axis_buttons(axis: str, start_log: bool, slot: int) -> dict:
    """An updatemenu that switches ``axis`` ("x"/"y") between linear and log (top right, one slot per axis)."""
    key = f"{axis}axis.type"
    order = [("log", "log"), ("linear", "linear")] if start_log else [("linear", "linear"), ("log", "log")]
    return {"type": "buttons", "direction": "right", "x": 1.0 - 0.22 * slot, "xanchor": "right",
            "y": 1.02, "yanchor": "bottom", "showactive": True, "pad": {"r": 4, "t": 0}, "font": {"size": 11},
            "buttons": [{"label": f"{axis}: {name}", "method": "relayout", "args": [{key: value}]}
                        for name, value in order]}


def xy_chart(df: pd.DataFrame, x: str, y: str, *, series: str | None = None, error: str | None = None,
             hover: Sequence[str] = (), xlabel: str = "", ylabel: str = "", title: str = "",
             mode: str = "lines+markers", log_x: bool | None = None, log_y: bool | None = None,
             sort_x: bool = True, series_label: str = "", hline: tuple[float, str] | None = None,
             styles: dict | None = None):
    """One trace per ``series`` value (in order of appearance) of ``y`` against ``x`` (error bars from ``error``),
    hover showing ``hover`` columns. ``log_x``/``log_y``: None = no switch, False/True = a linear/log switch
    starting linear/log (a log axis cannot show 0: leave such rows out and draw them as ``hline`` = (y, text), a
    dashed reference line). ``styles``: {series value: {"color": ..., "symbol": ...}} for series that should
    look as in the static figure (the others take the palette in order)."""
    import plotly.graph_objects as go

    needed = [x, y] + ([series] if series else []) + ([error] if error else []) + list(hover)
    missing = [c for c in dict.fromkeys(needed) if c not in df.columns]
    if missing:
        raise ValueError(f"chart needs column(s) {missing}; the table has {list(df.columns)}")
    fig = go.Figure()
    groups = df.groupby(series, sort=False) if series else [("", df)]
    hover_cols = list(dict.fromkeys([*( [series] if series else []), x, y, *([error] if error else []), *hover]))
    styles = styles or {}
    i = 0
    for value, group in groups:
        group = group.sort_values(x) if sort_x else group
        custom, template = _hover(group, hover_cols)
        style = styles.get(value)
        if style is None:
            style = S.cycle(i)
            i += 1
        fig.add_trace(go.Scatter(
            x=group[x].tolist(), y=group[y].tolist(), mode=mode,
            name=f"{series_label}{value}" if series else y,
            marker={"color": style["color"], "symbol": style["symbol"], "size": 8 if style["symbol"] != "star" else 13},
            line={"color": style["color"], "width": 1.5},
            error_y={"type": "data", "array": group[error].fillna(0).tolist(), "visible": True} if error else None,
            customdata=custom, hovertemplate=template))
    if hline is not None:  # a reference line, dashed and dark: never mistaken for a gridline
        fig.add_hline(y=hline[0], line_dash="dash", line_color=S.REFERENCE["baseline"]["color"], line_width=1.5,
                      annotation_text=hline[1], annotation_position="bottom right")
    menus = []
    if log_x is not None:
        menus.append(_axis_buttons("x", log_x, len(menus)))
    if log_y is not None:
        menus.append(_axis_buttons("y", log_y, len(menus)))
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left", "y": 0.97, "yanchor": "top", "font": {"size": 15}},
        template="simple_white", margin={"l": 70, "r": 20, "t": 95, "b": 60},
        legend={"title": {"text": series_label.strip() or (series if series != "series" else "")}},
        xaxis={"title": {"text": xlabel or x}, "type": "log" if log_x else "linear", "showgrid": True},
        yaxis={"title": {"text": ylabel or y}, "type": "log" if log_y else "linear", "showgrid": True},
        updatemenus=menus)
    return fig


def facet_lines(df: pd.DataFrame, x: str, panels: Sequence[tuple[str, str]], *, series: str,
                hover: Sequence[str] = (), title: str = "", xlabel: str = ""):
    """Small multiples sharing ``x``: one panel per ``(column, axis label)`` in ``panels``, one line per
    ``series`` value (same colour in every panel; the legend toggles a series everywhere)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.07)
    for i, (value, group) in enumerate(df.groupby(series, sort=False)):
        group = group.sort_values(x)
        for j, (column, _) in enumerate(panels):
            cols = list(dict.fromkeys([series, x, column, *hover]))
            custom, template = _hover(group, cols)
            fig.add_trace(go.Scatter(x=group[x].tolist(), y=group[column].tolist(), mode="lines+markers",
                                     name=str(value), legendgroup=str(value), showlegend=j == 0,
                                     marker={"color": S.cycle(i)["color"], "symbol": S.cycle(i)["symbol"],
                                             "size": 5},
                                     line={"color": S.cycle(i)["color"], "width": 1.5},
                                     customdata=custom, hovertemplate=template), row=1, col=j + 1)
            fig.update_xaxes(title_text=xlabel or x, row=1, col=j + 1, showgrid=True)
            fig.update_yaxes(title_text=panels[j][1], showgrid=True, row=1, col=j + 1)
    fig.update_layout(title={"text": title}, template="simple_white", margin={"l": 50, "r": 20, "t": 80, "b": 50},
                      legend={"orientation": "h", "y": -0.18})
    return fig
