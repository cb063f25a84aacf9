"""``reports/index.html`` and ``reports/README.md``: every report with its headline, linked; and the findings
table of the top-level README (`write_findings`).

Built from each report's ``report.json`` (written by `Report.save`), so the index says exactly what the
pages say: the headline sentence and its numbers come from the report, not from a second copy here.
"""

from __future__ import annotations

import html
from pathlib import Path

from rlhf_interp.report import html as H
from rlhf_interp.report import layout as L
from rlhf_interp.report import tables as T
from rlhf_interp.report.page import MANIFEST, _inline_md, read_manifest

INTRO = ("Each report is one analysis of this project: a page (`index.html`, offline, interactive charts beside "
         "the static figures), the same as markdown (`README.md`), and every number as CSV beside it. "
         "`rlhf-interp report --rebuild` re-renders every page from those CSVs without a model; each analysis "
         "script in `analyses/` re-measures its own.")

HOW_TO_ADD = """## Adding a report

An analysis script `analyses/<x>.py` measures, saves its tidy tables into `reports/<x>/` and renders the page
from them, so the page can always be rebuilt from the committed CSVs:

```python
from rlhf_interp.core import stats
from rlhf_interp.report import Report, read_table, write_tables
from rlhf_interp.report.claims import Claim

def render(report_dir: Path) -> Report:                      # CSVs in, page out; no model, no run directory
    points = read_table(report_dir, "points")                # one row per prompt and method
    a, b = (points[points.method == m].sort_values("prompt").reward for m in ("steer", "base"))
    claims = [Claim.estimate("steer_reward", "Steering reaches {value} {ci} periods.", stats.mean_interval(a)),
              Claim.compare("steer_vs_base", "Steering minus base: {value} {ci}; {verdict}.",
                            stats.paired_difference(a, b), "steer", "base")]
    report = Report.at(report_dir, "Title", source=__file__, claims=claims)   # the headline is made from them
    report.section("Reward against KL", "What was measured and how to read the figure.")
    report.figure("reward_vs_kl", matplotlib_fig, caption="what is drawn", chart=plotly_fig)   # chart optional
    report.table("points", points, caption="one row per ...", show=20)   # saved whole as points.csv
    return report

def main():                                                  # the full recompute
    tables = measure(...)                                    # model runs, returns tidy DataFrames
    write_tables("reports/x", tables, config=vars(args))     # config.json: how it was measured
    render(Path("reports/x")).save()
```

`rlhf-interp report --rebuild` finds `render` through `report.json` (written by `save()`), re-renders every
page and rewrites this index and the findings table of the top-level README (between its `findings` marker
comments), all from the claims. Commit the CSVs, `config.json`, `report.json` and the rendered files. Every number
a headline states is a claim with its 95% interval and n (`rlhf_interp.core.stats` makes them; a "best" is chosen
on prompts it is not reported on, or marked as a selection); `tests/test_claims.py` refuses a claim without n or
interval and a README or index number that no claim carries. Every page opens with a "what this answers" box
(`Report(question=...)`, else the question `rlhf_interp.report.layout.WORK_ORDER` gives the report) and a table of
contents. Figures: label both axes with units, keep every point inside the axes, draw each method in its family's
fixed colour and marker (`rlhf_interp.report.style`), and build the PNG and the interactive chart from one spec
(`rlhf_interp.report.panels`): the caption's key of marks is generated from the chart, and `tests/test_report_pages.py`
checks in Chromium that no caption promises what its chart lacks. Interactive charts: `rlhf_interp.report.charts`
(Plotly; the JS is one shared file, `assets/plotly.min.js`)."""


def takeaway(manifest: dict) -> str:
    """One line for the index: the page's first headline claim (its sentence, with interval and n), else the
    first sentence of its headline."""
    from rlhf_interp.report.claims import Claim

    for data in manifest.get("claims", []):
        if data.get("headline", True):
            return Claim.from_dict(data).sentence().strip()
    text = manifest.get("headline", "")
    return text.split(". ")[0].rstrip(".") + "." if text else ""


def data_date(report_dir: Path) -> str:
    """The date of the last commit that changed the report's CSVs (its data), YYYY-MM-DD; "" outside git."""
    import subprocess

    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cs", "--", "*.csv", "config.json"], cwd=report_dir, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def report_dirs(root: str | Path) -> list[Path]:
    """Report directories under ``root``: those with a ``report.json``, by name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory: pass the reports root (e.g. --root reports).")
    return sorted(p for p in root.iterdir() if (p / MANIFEST).is_file())


def write_index(root: str | Path) -> Path:
    """Write ``root/index.html`` and ``root/README.md`` from every report's manifest, and the findings table of the
    README beside ``root`` (`write_findings`); return the HTML path."""
    from rlhf_interp.core.io import atomic_write_text

    root = Path(root)
    manifests = [read_manifest(d) for d in report_dirs(root)]
    if not manifests:
        raise FileNotFoundError(f"no report under {root}: no */{MANIFEST} (run an analysis or `rlhf-interp report "
                                f"--rebuild` first).")
    manifests.sort(key=lambda m: L.order_key(m["name"]))
    md = ["# Reports", "", INTRO, "", "In the order of the work: train → diff → edit → frontier → causal → KL studies → "
          "reward models → algorithms.", "", "| stage | report | takeaway | data of |", "| --- | --- | --- | --- |"]
    body = ["<h1>Reports</h1>", H.markdown_to_html(INTRO),
            "<p class=\"caption\">In the order of the work: train → diff → edit → frontier → causal → KL studies → "
            "reward models → algorithms. Each takeaway is the page's first claim (95% interval, n); the page has "
            "the rest.</p>"]
    for m in manifests:
        name = m["name"]
        stage = L.WORK_ORDER.get(name, ("other", ""))[0]
        line = takeaway(m)
        date = data_date(root / name)
        md.append(f"| {stage} | [{T.md_escape(m['title'])}]({name}/README.md) (`{name}`) | {T.md_escape(line)} | "
                  f"{date} |")
        source = (f" · made by <code>{html.escape(m['source'])}</code>" if m.get("source") else "")
        csvs = sum(1 for f in (root / name).glob("*.csv"))
        href = html.escape(name)  # a directory name: escaped like every other text on the page
        thumb = (f"<a href=\"{href}/index.html\"><img class=\"thumb\" alt=\"{html.escape(m['title'])}\" "
                 f"src=\"{href}/thumbnail.png\"></a>" if (root / name / "thumbnail.png").is_file() else "<div></div>")
        body.append(f"<section class=\"report\" id=\"{H.slug(name)}\">{thumb}<div>"
                    f"<span class=\"stage\">{html.escape(stage)}</span>"
                    f"<h2><a href=\"{href}/index.html\">{html.escape(m['title'])}</a></h2>"
                    f"<p class=\"takeaway\">{_inline_md(line)}</p>"
                    f"<p class=\"caption\">{('data of ' + date + ' · ') if date else ''}"
                    f"{len(m.get('claims', []))} claims · <a href=\"{href}/index.html\">page</a> · "
                    f"<a href=\"{href}/README.md\">markdown</a> · {csvs} CSV table{'s' if csvs != 1 else ''} in "
                    f"<code>{href}/</code>{source}</p></div></section>")
    md += ["", HOW_TO_ADD, ""]
    body.append(H.markdown_to_html(HOW_TO_ADD))
    atomic_write_text(root / "README.md", "\n".join(md))
    write_findings(root.resolve().parent / "README.md", root)  # the top-level README's table, if it has the markers
    return atomic_write_text(root / "index.html", H.page("Reports", "\n".join(body)))


# ----------------------------------------------------------------------------------------------
# the top-level README's findings table, generated from the claims


def findings_rows(root: str | Path) -> list[str]:
    """One markdown row per report under ``root``: its name and its headline (made from its claims)."""
    rows = ["| report | finding (95% intervals; n = prompts × samples per prompt, seeds) |", "| --- | --- |"]
    for d in report_dirs(root):
        m = read_manifest(d)
        rows.append(f"| `{m['name']}` | {m['headline'].replace('|', '/')} |")
    return rows


def write_findings(readme: str | Path, root: str | Path) -> bool:
    """Rewrite the findings table between the marker comments of ``readme``; False when it has no markers."""
    from rlhf_interp.core.io import atomic_write_text
    from rlhf_interp.report.claims import FINDINGS_END, FINDINGS_START

    readme = Path(readme)
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(FINDINGS_START), text.find(FINDINGS_END)
    if start < 0 or end < start:
        return False
    new = text[:start + len(FINDINGS_START)] + "\n" + "\n".join(findings_rows(root)) + "\n" + text[end:]
    if new != text:
        atomic_write_text(readme, new)
    return True

