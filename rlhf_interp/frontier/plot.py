"""The frontier figures: reward against KL, drawn from a tidy points table, in the site's one style
(`rlhf_interp.core.style`: a fixed colour and marker per method family).

Two figures, each as a static PNG (matplotlib) and an interactive chart (Plotly) built from **one spec** (a list
of `Series`), so the two cannot disagree and the caption's key is generated from the same spec:

- `answer_spec`: the answer. One line per method family (its best setting at each KL budget) with its 95%
  interval band, the PPO checkpoints as points (not joined: their KL is not monotone in the training step), the
  other PPO runs as points, the base model as a dashed line. A reader sees which family is highest at 1, 2, 4 nats.
- `frontier_figure` / `detail_spec`: every point (one series per family and layer), for the reader who opens the
  detail: colour = family, marker = layer, so no two series look alike; red rings on points whose budget search
  ended outside its tolerance; KL-0 points on the left edge; error bars on both axes.

Columns read: kind ("base", "steering", "rank-one", "ablation", "fine-tuning", "best-of-n", "prompting",
"amplification", "algorithm"), method,
kl_exact_mean, reward_mean; optional: kl_exact_stderr, reward_stderr, layer, hit, trajectory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import matplotlib

if not os.environ.get("MPLBACKEND"):  # a Jupyter kernel sets its inline backend here: keep it, figures show inline
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlhf_interp.core import style as S

LAYER_MARKERS = [("o", "circle"), ("s", "square"), ("^", "triangle-up"), ("v", "triangle-down"),
                 ("<", "triangle-left"), (">", "triangle-right"), ("p", "pentagon"), ("h", "hexagon"),
                 ("8", "octagon"), ("d", "diamond-tall")]


def is_true(column: pd.Series) -> pd.Series:
    """A boolean column as read back from CSV (True/False; NaN or "" meaning not applicable -> False)."""
    return column.astype(str).str.lower().isin(["true", "1", "1.0"])


def series_label(row: pd.Series) -> str:
    """One legend entry per edit family (method and layer), per PPO run, per other method."""
    if row.get("kind") in ("steering", "rank-one") and pd.notna(row.get("layer")):
        return f"{row['method']}, layer {int(row['layer'])}"
    if row.get("kind") == "fine-tuning" and is_true(pd.Series([row.get("trajectory")])).iloc[0]:
        return f"{row['method']} (trajectory)"
    return str(row["method"])


@dataclass
class Series:
    """One drawn series: points (x, y), optional error bars / band, how it looks and whether it is joined."""

    name: str
    x: list[float]
    y: list[float]
    color: str
    marker: str  # matplotlib
    symbol: str  # Plotly
    joined: bool = True
    dash: str = "solid"  # "solid" | "dash" | "dot"
    markers: bool = True
    xerr: list[float] | None = None
    yerr: list[float] | None = None
    band: tuple[list[float], list[float]] | None = None  # (low, high): a filled interval band
    size: float = 7
    hover: list[str] = field(default_factory=list)
    words: str = ""  # what the caption calls it ("blue diamonds, joined")


def _family_series(name: str, g: pd.DataFrame, fam: str, *, joined: bool, band: bool, label: str) -> Series:
    mark = S.mark(fam)
    g = g.sort_values("x")
    size = 13 if mark.marker == "*" else 8
    return Series(name=label, x=g["x"].tolist(), y=g["y"].tolist(), color=mark.color, marker=mark.marker,
                  symbol=mark.plotly_symbol, joined=joined, size=size,
                  yerr=None if band else g.get("yerr", pd.Series(0, index=g.index)).fillna(0).tolist(),
                  band=(g["low"].tolist(), g["high"].tolist()) if band else None,
                  hover=g.get("hover", pd.Series("", index=g.index)).astype(str).tolist(),
                  words=mark.words() + (" joined by a line with its 95% band" if band else
                                        ", not joined" if not joined else ", joined"))


def answer_spec(lines: pd.DataFrame, points: pd.DataFrame) -> tuple[list[Series], float | None]:
    """The answer chart's series: ``lines`` (`rlhf_interp.frontier.tables.family_lines`: one row per family and
    budget with reward_low/high) as lines with bands; PPO checkpoints and runs as points with s.e. bars; the
    base model's reward (returned, drawn as a dashed line)."""
    out: list[Series] = []
    for fam, g in lines.groupby("family", sort=False):
        g = g.assign(x=g["budget"], y=g["reward_mean"], low=g["reward_low"], high=g["reward_high"],
                     hover=[f"{m} · {s} · n={int(n) if pd.notna(n) else ''} prompts" for m, s, n in
                            zip(g["method"], g["setting"].fillna(""), g["n_prompts"])])
        out.append(_family_series(fam, g, fam, joined=True, band=True, label=fam))
    # PPO checkpoints and the algorithms study's checkpoints (kind "algorithm": DPO, GRPO, RLOO, PPO seed 0) are
    # points at their measured KL with 95% bars: the t interval where stored, else 1.96 s.e.
    ft = points[points["kind"].isin(["fine-tuning", "algorithm"]) & (points["kl_exact_mean"] > 0)].copy()
    ft["family"] = [S.family(m, k, bool(t)) for m, k, t in
                    zip(ft["method"], ft["kind"], is_true(ft["trajectory"]))]
    half = (ft["reward_high"] - ft["reward_mean"]) if "reward_high" in ft else pd.Series(np.nan, index=ft.index)
    ft["yerr"] = half.fillna(ft["reward_stderr"].fillna(0) * 1.96)
    for (fam, kind), g in ft.groupby(["family", "kind"], sort=False):
        g = g.assign(x=g["kl_exact_mean"], y=g["reward_mean"],
                     hover=[f"{m} · {s}" for m, s in zip(g["method"], g["setting"])])
        label = {"PPO trajectory": "PPO trajectory (each checkpoint of one run)", "frozen-N PPO":
                 "PPO, first N layers frozen (last checkpoints)", "LoRA": "PPO LoRA (last checkpoint)",
                 "PPO": "PPO, all layers (last checkpoint)"}.get(fam, fam)
        if kind == "algorithm":
            label = f"{fam} (algorithms study, seed 0)"
        series = _family_series(fam, g, fam, joined=False, band=False, label=label)
        if any(o.color == series.color and o.marker == series.marker for o in out):  # PPO of the second round
            marker, symbol = next(m for m in LAYER_MARKERS if m[0] not in {o.marker for o in out
                                                                           if o.color == series.color})
            series = replace(series, marker=marker, symbol=symbol, size=8,
                             words=f"{S.mark(fam).color_name} {S.SYMBOL_WORDS.get(symbol, symbol)}, not joined")
        out.append(series)
    base = points.loc[points["kind"] == "base", "reward_mean"]
    return out, (float(base.iloc[0]) if len(base) else None)


def _limits(series: list[Series], base: float | None) -> tuple[tuple[float, float], tuple[float, float]]:
    xs = [x for s in series for x in s.x if x > 0]
    for s in series:  # error bars included: no cap outside the axes (left: halfway to 0 on a log axis)
        for x, e in zip(s.x, s.xerr or []):
            if x > 0 and e:
                xs += [x + e, x - e if x - e > 0 else x / 3]
    xs = np.array(xs)
    ys = [y for s in series for y in s.y]
    for s in series:
        if s.band:
            ys += list(s.band[0]) + list(s.band[1])
        if s.yerr:
            ys += [y + e for y, e in zip(s.y, s.yerr)] + [y - e for y, e in zip(s.y, s.yerr)]
    ys += [base] if base is not None else []
    ys = np.array([y for y in ys if y is not None and np.isfinite(y)])
    span = float(ys.max() - ys.min()) or 1.0
    return ((float(xs.min()) / 1.4, float(xs.max()) * 1.4),
            (float(ys.min()) - 0.05 * span, float(ys.max()) + 0.05 * span))


def spec_to_matplotlib(series: list[Series], base: float | None, *, xlabel: str, ylabel: str, title: str = "",
                       figsize=(10, 5.6), budgets: list[float] | None = None):
    """A matplotlib figure of a spec (log KL axis, bands, the base model as a dashed line, legend outside)."""
    fig, ax = plt.subplots(figsize=figsize)
    plt.close(fig)
    for s in series:
        if s.band:
            ax.fill_between(s.x, s.band[0], s.band[1], color=s.color, alpha=0.10, lw=0)
        ax.errorbar(s.x, s.y, xerr=s.xerr, yerr=s.yerr, color=s.color, marker=s.marker if s.markers else None,
                    ms=s.size,
                    mfc="none" if s.symbol.endswith("-open") else s.color, lw=1.8 if s.joined else 0,
                    ls={"dash": "--", "dot": ":"}.get(s.dash, "-"), elinewidth=0.8, capsize=2, label=s.name)
    if base is not None:
        ax.axhline(base, color=S.REFERENCE["baseline"]["color"], ls="--", lw=1.2, label="base model (KL 0)")
    (x0, x1), (y0, y1) = _limits(series, base)
    ax.set_xscale("log")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    if budgets:
        ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, loc="left", fontsize=11)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)
    fig.tight_layout()
    return fig


def spec_to_plotly(series: list[Series], base: float | None, *, xlabel: str, ylabel: str, title: str = "",
                   budgets: list[float] | None = None, height: int = 520):
    """The same spec as a Plotly figure (hover names the setting; the legend toggles a series)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for s in series:
        if s.band:
            fig.add_trace(go.Scatter(x=s.x + s.x[::-1], y=list(s.band[1]) + list(s.band[0])[::-1], fill="toself",
                                     mode="lines", fillcolor=_rgba(s.color, 0.10), line={"width": 0}, hoverinfo="skip",
                                     showlegend=False, legendgroup=s.name, name=f"{s.name} 95% band"))
        fig.add_trace(go.Scatter(
            x=s.x, y=s.y, name=s.name, legendgroup=s.name,
            mode=("lines+markers" if s.markers else "lines") if s.joined else "markers",
            marker={"color": s.color, "symbol": s.symbol, "size": s.size + (2 if s.symbol == "star" else 0)},
            line={"color": s.color, "width": 2, "dash": s.dash},
            error_y={"type": "data", "array": s.yerr, "visible": True, "thickness": 1} if s.yerr else None,
            text=s.hover, hovertemplate="%{text}<br>KL %{x:.3g} nats<br>reward %{y:.3g}<extra>%{fullData.name}</extra>"))
    if base is not None:
        fig.add_trace(go.Scatter(x=[_limits(series, base)[0][0], _limits(series, base)[0][1]], y=[base, base],
                                 mode="lines", name="base model (KL 0)",
                                 line={"color": S.REFERENCE["baseline"]["color"], "dash": "dash", "width": 1.5},
                                 hoverinfo="skip"))
    (x0, x1), (y0, y1) = _limits(series, base)
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 15}}, template="simple_white",
        height=height, margin={"l": 70, "r": 20, "t": 60, "b": 60}, legend={"font": {"size": 11}},
        xaxis={"title": {"text": xlabel}, "type": "log", "range": [np.log10(x0), np.log10(x1)], "showgrid": True,
               **({"tickvals": budgets, "ticktext": [f"{b:g}" for b in budgets]} if budgets else {})},
        yaxis={"title": {"text": ylabel}, "range": [y0, y1], "showgrid": True})
    return fig


def spec_key(series: list[Series], base: float | None) -> str:
    """The caption's key, from the spec: each series' name and marks."""
    parts = [f"{s.name}: {s.words}" for s in series]
    if base is not None:
        parts.append("base model: black dashed line")
    return "; ".join(parts)


def _rgba(color: str, alpha: float) -> str:
    color = color.lstrip("#")
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def detail_spec(points: pd.DataFrame) -> list[Series]:
    """Every point except the base model: one series per family and layer (colour = family, marker = layer;
    families without layers keep their own marker). PPO checkpoints and ablations are not joined."""
    shown = points[(points["kind"] != "base") & (points["kl_exact_mean"] > 0)].copy()
    for col in ("kl_exact_stderr", "reward_stderr", "layer", "hit", "trajectory"):
        if col not in shown:
            shown[col] = np.nan
    shown["family"] = [S.family(m, k, bool(t)) for m, k, t in
                       zip(shown["method"], shown["kind"], is_true(shown["trajectory"]))]
    shown["label"] = shown.apply(series_label, axis=1)
    layers = sorted(shown.loc[shown["kind"].isin(["steering", "rank-one"]), "layer"].dropna().unique())
    layer_mark = dict(zip(layers, LAYER_MARKERS * 3))
    seen_in_family: dict[str, list[str]] = {}
    out = []
    for label, g in shown.groupby("label", sort=False):
        g = g.sort_values("kl_exact_mean")
        fam, kind = g["family"].iloc[0], g["kind"].iloc[0]
        mark = S.mark(fam)
        if kind in ("steering", "rank-one"):
            marker, symbol = layer_mark[g["layer"].iloc[0]]
        else:  # several runs of one family (frozen 10, 20, 25): the family's marker, then others
            k = seen_in_family.setdefault(fam, [])
            k.append(label)
            others = [m for m in LAYER_MARKERS if m[0] != mark.marker]
            marker, symbol = ((mark.marker, mark.plotly_symbol) if len(k) == 1 else others[len(k) - 2])
        joined = kind in ("steering", "rank-one", "best-of-n")
        out.append(Series(name=label, x=g["kl_exact_mean"].tolist(), y=g["reward_mean"].tolist(), color=mark.color,
                          marker=marker, symbol=symbol, joined=joined, size=13 if marker == "*" else 7,
                          dash="dash" if kind == "rank-one" else "solid",
                          xerr=g["kl_exact_stderr"].fillna(0).tolist(), yerr=g["reward_stderr"].fillna(0).tolist(),
                          hover=[str(s) for s in g.get("setting", g["label"])],
                          words=f"{mark.color_name} {S.SYMBOL_WORDS.get(symbol, symbol)}"))
    return out


def fit_series(fits: pd.DataFrame | None, lo: float, hi: float) -> list[Series]:
    """The Gao et al. fits as dotted lines (no markers) over their fitted KL range x2 either side, within
    [lo, hi]; the analytic-KL best-of-n fit is not drawn (its axis is not the measured KL)."""
    from rlhf_interp.frontier.fit import gao_curve

    out = []
    for _, fit in (fits if fits is not None else pd.DataFrame()).iterrows():
        if not np.isfinite(fit["alpha"]) or "analytic" in str(fit["method"]):
            continue
        start = max(lo, float(fit["kl_min"]) / 2) if np.isfinite(fit.get("kl_min", np.nan)) else lo
        stop = min(hi, float(fit["kl_max"]) * 2) if np.isfinite(fit.get("kl_max", np.nan)) else hi
        grid = np.geomspace(start, stop, 60)
        color = S.REFERENCE["fit"]["color"] if fit["form"] == "rl" else "#999999"
        out.append(Series(name=f"Gao fit, {fit['method']}: alpha {fit['alpha']:.2f}, beta {fit['beta']:.2f}",
                          x=grid.tolist(), y=(fit["offset"] + gao_curve(fit["form"], fit["alpha"], fit["beta"], grid)
                                              ).tolist(), color=color, marker="", symbol="circle", dash="dot",
                          markers=False, words="dotted line"))
    return out


def frontier_figure(points: pd.DataFrame, fits: pd.DataFrame | None = None, reward_label: str = "reward"):
    """Reward vs KL (log axis) for every point (`detail_spec`), error bars, every point inside the axes, fitted
    Gao et al. curves (``fits``: rows of `fit.fit_gao` plus ``method``, ``offset`` and optionally ``kl_min`` /
    ``kl_max``, drawn over that range x2 either side), red rings on budget misses, KL-0 points on the left edge."""
    from rlhf_interp.frontier.fit import gao_curve

    points = points.copy()
    for col in ("kl_exact_stderr", "reward_stderr", "hit", "trajectory", "layer"):
        if col not in points:
            points[col] = np.nan
    if points.empty:
        raise ValueError("frontier_figure needs at least one point.")
    base = points.loc[points["kind"] == "base", "reward_mean"]
    series = detail_spec(points)
    zero = points[(points["kind"] != "base") & (points["kl_exact_mean"] <= 0)]
    if not series and base.empty and zero.empty:
        raise ValueError("frontier_figure needs at least one point.")
    fig = spec_to_matplotlib(series, float(base.iloc[0]) if len(base) else None, ylabel=reward_label,
                             xlabel="KL(changed ‖ base) per sequence, nats (log axis)", figsize=(10.5, 6))
    ax = fig.axes[0]
    x0, _ = ax.get_xlim()
    for _, row in zero.iterrows():  # KL 0 (best-of-1, an unchanged model): drawn on the left edge, labelled
        mark = S.mark_of(row["method"], row["kind"])
        ax.plot([x0 * 1.15], [row["reward_mean"]], marker=mark.marker, color=mark.color, ms=7)
        ax.annotate(f"{row['method']} {row.get('setting', '')} (KL 0)", (x0 * 1.15, row["reward_mean"]),
                    xytext=(6, 4), textcoords="offset points", fontsize=7)
    misses = points[points["hit"].notna() & (points["hit"].astype(str) != "") & ~is_true(points["hit"])
                    & (points["kl_exact_mean"] > 0)]
    if len(misses):
        ax.scatter(misses["kl_exact_mean"], misses["reward_mean"], s=110, facecolors="none", edgecolors="red", lw=1,
                   zorder=5, label="budget missed (outside 5%)")
    lo, hi = ax.get_xlim()
    for f in fit_series(fits, lo, hi):
        ax.plot(f.x, f.y, ls=":", lw=1.5, color=f.color, label=f.name)
    ax.set_xlim(lo, hi)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


__all__ = ["LAYER_MARKERS", "Series", "answer_spec", "detail_spec", "fit_series", "frontier_figure", "is_true", "series_label",
           "spec_key", "spec_to_matplotlib", "spec_to_plotly"]
