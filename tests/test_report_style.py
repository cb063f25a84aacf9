"""The site's one chart style and the page rules of issue 33, without a browser: fixed family marks that never
collide, captions checked against the chart they describe, token cells that show whitespace and ids, markdown
cells escaped, wide and long tables folded, a table of contents and an answer box on every page."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import pytest  # noqa: E402

from rlhf_interp.report import Report  # noqa: E402
from rlhf_interp.report import layout as L  # noqa: E402
from rlhf_interp.report import style as S  # noqa: E402
from rlhf_interp.report import tables as T  # noqa: E402
from rlhf_interp.report.charts import facet_lines, family_styles, xy_chart  # noqa: E402
from rlhf_interp.report.panels import Line, Panel, to_matplotlib, to_plotly  # noqa: E402


def test_every_family_has_its_own_colour_and_marker():
    marks = {name: (m.color, m.plotly_symbol) for name, m in S.FAMILIES.items()}
    assert not S.collisions(marks)
    for reserved in ("prompting", "logit amplification", "GRPO", "RLOO", "DPO", "PPO trajectory", "LoRA",
                     "frozen-N PPO", "best-of-n", "direction ablation", "weight orthogonalisation", "rank-one"):
        assert reserved in S.FAMILIES
    # the method names the frontier's CSVs hold map onto families; the two ablations that coincide look apart
    names = ["best-of-n", "steer: contrastive", "steer: PCA", "steer: fine-tuning direction", "rank-one edit",
             "direction ablation", "weight orthogonalisation", "PPO LoRA r=16", "PPO first 20 layers frozen",
             "PPO (all layers)", "GRPO", "RLOO", "DPO"]
    styles = family_styles(names)
    assert not S.collisions({n: (s["color"], s["symbol"]) for n, s in styles.items()})
    assert S.family("PPO first 10 layers frozen", "fine-tuning", trajectory=True) == "PPO trajectory"
    with pytest.raises(KeyError, match="no style family"):
        S.family("something new")


def test_the_same_mark_in_png_and_interactive_chart():
    mark = S.mark("best-of-n")
    fig, ax = plt.subplots()
    ax.plot([1, 2], [1, 2], **mark.mpl())
    line = ax.get_lines()[0]
    assert line.get_marker() == "D" and matplotlib.colors.to_hex(line.get_color()) == mark.color
    chart = xy_chart(pd.DataFrame({"x": [1, 2], "y": [1, 2], "m": "best-of-n"}), "x", "y", series="m",
                     styles=family_styles(["best-of-n"]))
    assert chart.data[0].marker.symbol == "diamond" and chart.data[0].marker.color == mark.color
    assert L.chart_key(chart) == "Key (from the chart): best-of-n: blue diamonds."
    plt.close(fig)


def test_caption_checked_against_its_chart():
    """The old ppo_periods chart (facet_lines: linear axes, no budget line, no rolling mean) against its caption."""
    metrics = pd.DataFrame({"phase": [1, 2, 1, 2], "run": ["a", "a", "b", "b"], "reward": [1, 2, 1, 3],
                            "kl": [0.1, 0.2, 0.1, 0.3]})
    old = facet_lines(metrics, "phase", [("reward", "reward"), ("kl", "KL")], series="run")
    caption = ("Left: mean reward per phase (black: rolling mean); exact KL per token (symlog axis; dashed: the "
               "budget); stars: checkpoints")
    problems = L.caption_problems(caption, old)
    assert any("symlog" in p for p in problems) and any("dashed" in p for p in problems)
    assert any("rolling mean" in p for p in problems) and any("star" in p for p in problems)
    assert not any("Left" in p for p in problems)  # it does have two panels
    panels = [Panel("reward", "phase", "reward", [Line("a", [1, 2], [1, 2], "#1f77b4"),
                                                  Line("a: rolling mean", [1, 2], [1, 1.5], "#1f77b4", mode="lines")]),
              Panel("KL", "phase", "nats", [Line("a", [1, 2], [0.1, 0.2], "#1f77b4")], log_y=True,
                    hlines=[(0.1, "budget")])]
    new = to_plotly(panels, cols=2)
    assert L.caption_problems(caption.replace("; stars: checkpoints", ""), new) == []
    assert to_matplotlib(panels, cols=2).axes[1].get_yscale() == "log"


def test_collisions_found_in_a_chart():
    chart = go.Figure([go.Scatter(x=[1], y=[1], name="a", marker={"color": "#1f77b4", "symbol": "circle"}),
                       go.Scatter(x=[1], y=[2], name="b", marker={"color": "#1f77b4", "symbol": "circle"}),
                       go.Scatter(x=[1], y=[3], name="c", marker={"color": "#1f77b4", "symbol": "square"})])
    assert L.collisions_in(chart) == [("a", "b")]


def test_token_cells_show_whitespace_and_ids():
    assert T.show_token(" I", 339) == "␣I · 339"
    assert T.show_token("I", 57) == "I · 57"
    assert T.show_token("\n", 198) == "⏎ · 198"
    assert T.show_token("", None) == "∅"
    shown, _ = T.display_frame(pd.DataFrame({"token": [" I", "I", "  "], "token_id": [339, 57, 216],
                                             "prob": [0.1, 0.2, float("nan")]}), ".3g")
    assert list(shown.columns) == ["token", "prob"]
    assert list(shown["token"]) == ["␣I · 339", "I · 57", "␣␣ · 216"] and shown["prob"].iloc[2] == ""


def test_page_rules(tmp_path):
    """A '|' in a cell keeps the markdown row's columns; wide and long tables are folded and say so; every page
    has a table of contents and an answer box; a long preview is folded."""
    report = Report.at(tmp_path / "demo", "Demo", headline="The answer is 1.", question="What is the answer?")
    report.section("Tokens")
    report.table("tokens", pd.DataFrame({"token": ["<|im_end|>", " a"], "token_id": [2, 3], "n": [1, 2]}))
    report.section("Wide and long")
    report.table("wide", pd.DataFrame({f"column_{i}": [1.0] for i in range(14)}))
    report.table("long", pd.DataFrame({"i": range(60)}), show=60)
    out = report.save()
    md = (out / "README.md").read_text()
    row = next(line for line in md.splitlines() if "im_end" in line)
    assert "<\\|im_end\\|> · 2" in row and len(re.split(r"(?<!\\)\|", row.strip().strip("|"))) == 2
    page = (out / "index.html").read_text()
    assert '<nav class="toc"' in page and 'href="#tokens"' in page and 'href="#wide-and-long"' in page
    assert '<aside class="answers"' in page and "What is the answer?" in page and "The answer is 1." in page
    assert "14 columns, wider than the page" in page and "60 rows; the whole table is long.csv" in page
    assert "What this answers" in md and "[Tokens](#tokens)" in md


def test_runs_of_one_family_get_distinct_markers():
    marks = S.distinct_marks(["PPO first 10 layers frozen", "PPO first 20 layers frozen", "PPO LoRA r=16"],
                             ["fine-tuning"] * 3)
    assert marks["PPO first 10 layers frozen"]["color"] == marks["PPO first 20 layers frozen"]["color"]
    assert len({(m["color"], m["marker"]) for m in marks.values()}) == 3
