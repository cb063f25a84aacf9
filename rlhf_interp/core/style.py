"""One chart style for the whole site: a fixed colour and marker per method family, the same in every PNG
(matplotlib) and every interactive chart (Plotly), and the words a caption uses for them.

Why fixed: a reader who learned on the frontier page that best-of-n is a blue diamond must find a blue
diamond on every other page; a cycle that hands out colours in order of appearance gave best-of-n, the
fine-tuning direction at layer 20 and "PPO (all layers)" the same blue circle (issue 33). No two families
share both colour and marker (`tests/test_style.py` checks it), and families that another helper is adding
(prompting, logit amplification, GRPO, RLOO, DPO) have theirs reserved here already.

`family(method, kind)` maps the method names the analyses write into their CSVs onto a family;
`Mark.words` / `color_word` give the words ("blue diamonds") a generated caption uses, so caption and chart agree.

Why in ``core``: it is plain data that imports nothing of ours, and both ``frontier`` (its figure) and
``report`` (every other chart) draw with it; ``rlhf_interp.report.style`` is the same module under the name
the report code uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Mark:
    """How one family is drawn. ``marker``: matplotlib; ``symbol``: Plotly; ``hollow``: an open marker."""

    color: str
    color_name: str
    marker: str
    symbol: str
    shape_name: str
    hollow: bool = False

    @property
    def plotly_symbol(self) -> str:
        return f"{self.symbol}-open" if self.hollow else self.symbol

    def mpl(self) -> dict:
        """``plt.plot`` / ``errorbar`` keyword arguments (colour, marker, hollow face)."""
        out = {"color": self.color, "marker": self.marker}
        if self.hollow:
            out["mfc"] = "none"
        return out

    def words(self) -> str:
        """What a caption calls this mark: "blue diamonds", "open olive squares"."""
        return f"{'open ' if self.hollow else ''}{self.color_name} {self.shape_name}"


# family -> mark. Order = the order of the work (legends list families in this order).
FAMILIES: dict[str, Mark] = {
    "base model": Mark("#000000", "black", "o", "circle", "circles"),
    "PPO trajectory": Mark("#d62728", "red", "*", "star", "stars"),
    "PPO": Mark("#9e1b1b", "dark red", "p", "pentagon", "pentagons"),
    "frozen-N PPO": Mark("#8c564b", "brown", "h", "hexagon", "hexagons"),
    "LoRA": Mark("#e377c2", "pink", "P", "cross", "crosses"),
    "best-of-n": Mark("#1f77b4", "blue", "D", "diamond", "diamonds"),
    "steering: contrastive": Mark("#2ca02c", "green", "o", "circle", "circles"),
    "steering: PCA": Mark("#17becf", "cyan", "s", "square", "squares"),
    "steering: fine-tuning direction": Mark("#ff7f0e", "orange", "^", "triangle-up", "triangles"),
    "steering": Mark("#2ca02c", "green", "v", "triangle-down", "down-triangles"),
    "ablation": Mark("#7f7f7f", "grey", "v", "triangle-down", "down-triangles"),
    "direction ablation": Mark("#9467bd", "purple", "X", "x", "X marks"),
    "weight orthogonalisation": Mark("#bcbd22", "olive", "s", "square", "squares", hollow=True),
    "rank-one": Mark("#6b3fa0", "violet", "d", "diamond-tall", "thin diamonds"),
    # reserved for methods being added (issue 33 asks for them now, so no later page reshuffles colours)
    "prompting": Mark("#393b79", "navy", "<", "triangle-left", "left-triangles"),
    "logit amplification": Mark("#637939", "dark olive", ">", "triangle-right", "right-triangles"),
    "GRPO": Mark("#e7ba52", "gold", "p", "pentagon", "pentagons"),
    "RLOO": Mark("#843c39", "maroon", "8", "octagon", "octagons"),
    "DPO": Mark("#7b4173", "plum", "H", "hexagon2", "hexagons"),
    "capability": Mark("#555555", "dark grey", "1", "y-down", "tri marks"),
}

# Non-family series that recur (reference lines, fits): one look each, also shared.
REFERENCE = {"budget": {"color": "#555555", "dash": "dash"}, "baseline": {"color": "#000000", "dash": "dash"},
             "fit": {"color": "#444444", "dash": "dot"}}

# Series that are not method families (runs, layers, steps): a qualitative cycle of colours paired with a
# cycle of markers of another length, so colour + marker never repeat within 70 series.
CYCLE_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf"]
CYCLE_MARKERS = [("o", "circle"), ("s", "square"), ("^", "triangle-up"), ("D", "diamond"),
                 ("v", "triangle-down"), ("P", "cross"), ("X", "x")]


CYCLE_NAMES = ["blue", "orange", "green", "red", "purple", "brown", "pink", "grey", "olive", "cyan"]

SYMBOL_WORDS = {"circle": "circles", "square": "squares", "triangle-up": "triangles", "diamond": "diamonds",
                "triangle-down": "down-triangles", "cross": "crosses", "x": "X marks", "star": "stars",
                "pentagon": "pentagons", "hexagon": "hexagons", "hexagon2": "hexagons", "octagon": "octagons",
                "diamond-tall": "thin diamonds", "triangle-left": "left-triangles",
                "triangle-right": "right-triangles", "y-down": "tri marks", "circle-open": "rings",
                "square-open": "open squares"}


def color_word(color: str) -> str:
    """A colour's name in a caption ("blue"), for the site's colours; others as given."""
    color = str(color).lower()
    for mark_ in FAMILIES.values():
        if mark_.color.lower() == color:
            return mark_.color_name
    for hex_, name in zip(CYCLE_COLORS, CYCLE_NAMES):
        if hex_ == color:
            return name
    return {"black": "black", "grey": "grey", "gray": "grey", "red": "red", "#444444": "dark grey",
            "#555555": "dark grey", "#999999": "grey"}.get(color, color)


def cycle(i: int) -> dict:
    """Colour and marker (matplotlib ``marker``, Plotly ``symbol``) of the i-th non-family series."""
    marker, symbol = CYCLE_MARKERS[i % len(CYCLE_MARKERS)]
    return {"color": CYCLE_COLORS[i % len(CYCLE_COLORS)], "marker": marker, "symbol": symbol}


_FROZEN = re.compile(r"first \d+ layers? frozen|frozen", re.I)


def family(method: str, kind: str | None = None, trajectory: bool = False) -> str:
    """The family of a method name as the analyses write it (``steer: PCA``, ``PPO LoRA r=16``, ``rank-one edit``,
    ``PPO first 10 layers frozen`` ...). ``trajectory``: a checkpoint of the run drawn as a trajectory."""
    text = str(method)
    low = text.lower()
    if trajectory:
        return "PPO trajectory"
    if kind == "base" or low.startswith("base"):
        return "base model"
    if low.startswith("best-of-n") or kind == "best-of-n":
        return "best-of-n"
    if low.startswith("steer"):
        for name in ("contrastive", "PCA", "fine-tuning direction"):
            if name.lower() in low:
                return f"steering: {name}"
        return "steering"
    if "orthogonal" in low:
        return "weight orthogonalisation"
    if "direction ablation" in low:
        return "direction ablation"
    if "ablat" in low or kind == "ablation":
        return "ablation"
    if "rank-one" in low or kind == "rank-one":
        return "rank-one"
    if "lora" in low:
        return "LoRA"
    if _FROZEN.search(text):
        return "frozen-N PPO"
    for name in ("GRPO", "RLOO", "DPO"):
        if name.lower() in low.split() or low.startswith(name.lower()):
            return name
    if "prompt" in low:
        return "prompting"
    if "logit" in low and "amplif" in low:
        return "logit amplification"
    if low.startswith("ppo") or kind == "fine-tuning":
        return "PPO"
    raise KeyError(f"no style family for method {method!r} (kind {kind!r}): add it to rlhf_interp.report.style")


def mark(name: str) -> Mark:
    """The mark of a family name (`FAMILIES` key)."""
    if name not in FAMILIES:
        raise KeyError(f"unknown family {name!r}; families: {list(FAMILIES)}")
    return FAMILIES[name]


def mark_of(method: str, kind: str | None = None, trajectory: bool = False) -> Mark:
    return FAMILIES[family(method, kind, trajectory)]


def distinct_marks(methods: list[str], kinds: list[str | None] | None = None) -> dict[str, dict]:
    """{method: matplotlib kwargs} for several methods of possibly one family (three frozen-N runs): the family's
    colour for each, its own marker for the first and then markers it does not use, so no two look alike."""
    kinds = kinds or [None] * len(methods)
    used: dict[str, int] = {}
    out = {}
    for method, kind in dict(zip(methods, kinds)).items():
        fam = family(method, kind)
        mark_ = FAMILIES[fam]
        k = used[fam] = used.get(fam, -1) + 1
        spare = [m for m, _ in CYCLE_MARKERS if m != mark_.marker]
        kw = mark_.mpl()
        if k:
            kw["marker"] = spare[(k - 1) % len(spare)]
        out[method] = kw
    return out


def collisions(marks: dict[str, tuple[str, str]]) -> list[tuple[str, str]]:
    """Pairs of series names drawn with the same (colour, marker): a reader cannot tell them apart."""
    seen: dict[tuple[str, str], str] = {}
    out = []
    for name, key in marks.items():
        key = (str(key[0]).lower(), str(key[1]))
        if key in seen and seen[key] != name:
            out.append((seen[key], name))
        seen.setdefault(key, name)
    return out


__all__ = ["FAMILIES", "Mark", "REFERENCE", "SYMBOL_WORDS", "collisions", "color_word", "cycle", "distinct_marks", "family", "mark", "mark_of"]
