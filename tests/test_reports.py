"""Reports: the Report API writes pages that parse as HTML5 with every container closed, tables that are never
empty, offline assets; the committed pages are well formed, indexed, rebuildable from their CSVs alone, and the
README's findings table says what the pages say. (The browser test is tests/test_report_browser.py.)"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import html5lib
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from rlhf_interp.report import Report, read_manifest  # noqa: E402
from rlhf_interp.report.charts import xy_chart  # noqa: E402
from rlhf_interp.report.index import report_dirs, takeaway, write_index  # noqa: E402
from rlhf_interp.report.tables import md_escape  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "reports"
COMMITTED_PAGES = sorted(REPORTS.glob("**/*.html"))
WIDGETS = ("circuitsvis", "plotly-graph-div")  # containers whose content JavaScript replaces


def parse_strict(path_or_text) -> "html5lib.treebuilders.etree":
    """Parse as HTML5; any parse error (e.g. a self-closing <div/>, a stray end tag) fails the test."""
    text = Path(path_or_text).read_text(encoding="utf-8") if isinstance(path_or_text, Path) else path_or_text
    parser = html5lib.HTMLParser(namespaceHTMLElements=False)
    tree = parser.parse(text)
    errors = [f"line {pos[0]} col {pos[1]}: {code} {data}" for pos, code, data in parser.errors]
    assert not errors, f"HTML5 parse errors: {errors[:5]}"
    return tree


def widget_children(tree) -> dict[str, list[str]]:
    """Element children of every JS widget container (must be none: JS replaces whatever is inside)."""
    found = {}
    for el in tree.iter("div"):
        classes = el.get("class", "").split()
        if any(w in classes for w in WIDGETS):
            found[el.get("id")] = [child.tag for child in el]
    return found


def small_report(root: Path) -> Report:
    import circuitsvis

    df = pd.DataFrame({"layer": [0, 1, 2], "coef": [np.nan, 1.0, 2.5], "kl": [0.0, 0.25, 1.5]})
    fig, ax = plt.subplots()
    ax.plot(df["coef"], df["kl"])
    ax.set_xlabel("coefficient")
    ax.set_ylabel("KL (nats)")
    view = circuitsvis.attention.attention_heads(attention=np.tril(np.full((1, 3, 3), 0.5)), tokens=["a", "b", "c"])
    report = Report("demo", "A demo report", headline="KL reaches **1.5** nats.", root=root, source=__file__)
    report.text("Intro with `code`.")
    report.section("Numbers")
    report.table("points", df, caption="three rows", show=2)
    report.table("everything", df, title="All rows", show=0)
    report.figure("kl", fig, caption="KL against the coefficient.",
                  chart=xy_chart(df, "coef", "kl", xlabel="coefficient", ylabel="KL (nats)"))
    report.circuitsvis("heads", view, title="One head", caption="a head", page_intro="What this shows.")
    report.section("After the widget", "This section must stay outside the widget container.")
    return report


def test_save_writes_markdown_html_csv_png_and_manifest(tmp_path):
    out = small_report(tmp_path).save()
    for name in ("README.md", "index.html", "points.csv", "everything.csv", "kl.png", "heads.html", "report.json"):
        assert (out / name).is_file(), name
    assert (tmp_path / "assets" / "plotly.min.js").stat().st_size > 1_000_000
    assert (tmp_path / "assets" / "circuitsvis.js").stat().st_size > 100_000
    pd.testing.assert_frame_equal(pd.read_csv(out / "points.csv"), pd.DataFrame(
        {"layer": [0, 1, 2], "coef": [np.nan, 1.0, 2.5], "kl": [0.0, 0.25, 1.5]}))
    manifest = read_manifest(out)
    assert manifest["headline"] == "KL reaches **1.5** nats."
    assert manifest["sections"] == ["Numbers", "All rows", "One head", "After the widget"]
    assert manifest["source"].endswith("test_reports.py")
    readme = (out / "README.md").read_text()
    assert "![kl](kl.png)" in readme and "[`points.csv`](points.csv)" in readme and "(heads.html)" in readme


def test_page_parses_and_widgets_are_closed_containers(tmp_path):
    out = small_report(tmp_path).save()
    for page in ("index.html", "heads.html"):
        tree = parse_strict(out / page)
        children = widget_children(tree)
        assert children and all(kids == [] for kids in children.values()), children
    tree = parse_strict(out / "index.html")
    headings = [el.text for el in tree.iter("h2")]
    assert headings == ["Numbers", "After the widget"]
    scripts = [el.get("src") for el in tree.iter("script") if el.get("src")]
    assert scripts == ["../assets/circuitsvis.js", "../assets/plotly.min.js"]
    assert all((out / s).resolve().is_file() for s in scripts)


def test_self_closing_container_is_caught():
    """The bug this structure guards against: '<div id=x/>' does not close, so what follows lands inside."""
    with pytest.raises(AssertionError, match="non-void-element-with-trailing-solidus"):
        parse_strict("<!doctype html><html><head><title>t</title></head><body><div id='x'/><h2>lost</h2>"
                     "</body></html>")


def test_tables_are_never_empty_and_nan_is_blank(tmp_path):
    out = small_report(tmp_path).save()
    tree = parse_strict(out / "index.html")
    tables = list(tree.iter("table"))
    assert len(tables) == 1  # `everything` (show=0) is a link with its size, not an empty table
    rows = [[td.text or "" for td in tr.iter("td")] for tr in tables[0].iter("tr") if list(tr.iter("td"))]
    assert rows == [["0", "", "0"], ["1", "1", "0.25"]]
    text = (out / "index.html").read_text()
    assert "Not shown here: 3 rows × 3 columns" in text and "2 shown" in text


def test_save_is_deterministic_and_keeps_other_files(tmp_path):
    out = small_report(tmp_path).save()
    (out / "vector.safetensors").write_bytes(b"data")
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    small_report(tmp_path).save()
    second = {p.name: p.read_bytes() for p in out.iterdir()}
    assert first == second


def test_dropped_figure_is_removed_but_data_is_kept(tmp_path):
    out = small_report(tmp_path).save()
    later = Report("demo", "A demo report", root=tmp_path)
    later.table("points", pd.DataFrame({"layer": [0]}))
    later.save()
    assert not (out / "kl.png").exists() and not (out / "heads.html").exists()
    assert (out / "everything.csv").exists() and (out / "points.csv").exists()


def test_bad_block_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="becomes a file name"):
        Report("x", "t", root=tmp_path).table("../escape", pd.DataFrame({"a": [1]}))


# ----------------------------------------------------------------------------------------------
# The committed reports


@pytest.mark.parametrize("page", COMMITTED_PAGES, ids=lambda p: str(p.relative_to(REPORTS)))
def test_committed_page_is_well_formed_and_offline(page):
    tree = parse_strict(page)
    assert all(kids == [] for kids in widget_children(tree).values())
    for el in tree.iter():
        for attr in ("src", "href"):
            url = el.get(attr)
            if not url or url.startswith(("data:", "#")):
                continue
            assert not re.match(r"^[a-z]+:", url), f"{page.name}: {el.tag} {attr}={url} leaves the machine"
            assert (page.parent / url.split("#")[0]).exists(), f"{page.name}: {url} is missing"


def test_every_report_is_indexed_with_its_headline():
    dirs = report_dirs(REPORTS)
    assert {d.name for d in dirs} >= {"ppo_periods", "diff_ppo", "steering_sweep", "edit_vs_finetune",
                                      "reward_hacking"}
    index = (REPORTS / "index.html").read_text()
    readme = (REPORTS / "README.md").read_text()
    for d in dirs:
        manifest = read_manifest(d)
        assert f'href="{d.name}/index.html"' in index
        assert md_escape(takeaway(manifest)) in readme  # one line per report: its first claim
        assert re.search(r"\d", manifest["headline"]), f"{d.name}: a headline states its numbers"
        for name in manifest["files"]:
            assert (d / name).is_file(), f"{d.name}/{name} listed in report.json is missing"


def test_index_matches_manifests(tmp_path, monkeypatch):
    """The committed index is exactly what write_index makes from the committed report.json files (and thumbnails;
    the data dates come from the git history of the committed directories)."""
    import rlhf_interp.report.index as index_module

    real_date = index_module.data_date
    monkeypatch.setattr(index_module, "data_date", lambda d: real_date(REPORTS / Path(d).name))
    copy = tmp_path / "reports"
    for d in report_dirs(REPORTS):
        (copy / d.name).mkdir(parents=True)
        shutil.copy(d / "report.json", copy / d.name / "report.json")
        if (d / "thumbnail.png").exists():
            shutil.copy(d / "thumbnail.png", copy / d.name / "thumbnail.png")
        for csv in d.glob("*.csv"):
            (copy / d.name / csv.name).write_text("")
    write_index(copy)
    assert (copy / "index.html").read_text() == (REPORTS / "index.html").read_text()
    assert (copy / "README.md").read_text() == (REPORTS / "README.md").read_text()


@pytest.mark.parametrize("name", ["edit_vs_finetune", "reward_hacking", "steering_sweep", "kl_direction",
                                  "kl_estimators", "iterated_rm", "ppo_periods"])
def test_committed_page_rebuilds_from_its_csvs_alone(tmp_path, name):
    """Copy only the CSVs, config.json and report.json (no PNG, no HTML, no run directory); the rebuild must
    reproduce the committed page: README.md exactly, the HTML's text, the same figures (PNG bytes depend on the
    matplotlib version, so they are not compared)."""
    from rlhf_interp.report.rebuild import rebuild

    src = REPORTS / name
    dst = tmp_path / "reports" / name
    dst.mkdir(parents=True)
    for f in [*src.glob("*.csv"), src / "config.json", src / "report.json"]:
        shutil.copy(f, dst / f.name)
    shutil.copytree(REPO / "analyses", tmp_path / "analyses")
    rebuild(dst)
    assert (dst / "README.md").read_text() == (src / "README.md").read_text(), f"{name}/README.md is out of date"
    assert page_text(dst) == page_text(src), f"{name}/index.html says something else than its rebuild"
    assert sorted(p.name for p in dst.glob("*.png")) == sorted(p.name for p in src.glob("*.png"))


def test_cli_report_rebuilds_one_and_writes_index(tmp_path, capsys):
    from rlhf_interp.cli import main

    root = tmp_path / "reports"
    shutil.copytree(REPORTS / "edit_vs_finetune", root / "edit_vs_finetune")
    shutil.copytree(REPO / "analyses", tmp_path / "analyses")
    (root / "edit_vs_finetune" / "index.html").unlink()
    assert main(["report", "--root", str(root), "--only", "edit_vs_finetune"]) == 0
    assert (root / "edit_vs_finetune" / "index.html").is_file()
    assert "edit_vs_finetune" in (root / "index.html").read_text()
    assert "rebuilt" in capsys.readouterr().out


def test_cli_report_bad_input_is_a_clear_error(tmp_path, capsys):
    from rlhf_interp.cli import main

    assert main(["report", "--root", str(tmp_path / "nowhere")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["report", "--root", str(REPORTS), "--only", "no_such_report"]) == 2
    assert "no report named ['no_such_report']" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# What the pages and the README say


def readme_findings() -> dict[str, str]:
    """The README's findings table: report name -> finding text."""
    text = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| \[?`?([a-z_]+)`?\]?[^|]*\| (.+) \|$", text, flags=re.M)
    return {name: finding for name, finding in rows if (REPORTS / name / "report.json").exists()}


def page_text(report_dir: Path) -> str:
    tree = html5lib.parse((report_dir / "index.html").read_text(), namespaceHTMLElements=False)
    return " ".join("".join(tree.find("body").itertext()).split())


def test_readme_findings_table_matches_the_pages_number_for_number():
    findings = readme_findings()
    assert set(findings) == {d.name for d in report_dirs(REPORTS)}, "one README row per report"
    for name, finding in findings.items():
        shown = page_text(REPORTS / name)
        numbers = re.findall(r"(?<![\w.])\d+(?:\.\d+)?", finding)
        missing = [n for n in numbers if not re.search(rf"(?<![\d.]){re.escape(n)}(?![\d])", shown)]
        assert not missing, f"README row {name}: {missing} not on reports/{name}/index.html"


def test_diversity_is_distinct_n_over_token_ids():
    """A collapsed run ('......') scores low and varied text scores high; whitespace words would give 1.0 for both."""
    from rlhf_interp.report.rebuild import load_analysis

    module = load_analysis(REPO / "analyses" / "ppo_training.py")
    samples = pd.DataFrame({"run": ["collapsed"] * 4 + ["varied"] * 4, "phase": [30] * 8, "prompt": ["p"] * 8,
                            "completion": ["." * 60] * 3 + ["... it's ......"] + [
                                " the cat sat on the mat", " a dog ran far away today", " rain fell on the old roof",
                                " we ate bread and cheese"], "reward": [60.0] * 4 + [0.0] * 4})
    div = module.diversity_table(samples).set_index("run")
    words = [t.split() for t in samples["completion"][:4]]
    assert module.distinct_n(words, 2) == 1.0  # what whitespace words said about the collapse
    assert div.loc["collapsed", "distinct_2"] < 0.5
    assert div.loc["varied", "distinct_2"] > 0.9
    assert div.loc["collapsed", "unique_completions"] == 0.5
    committed = pd.read_csv(REPORTS / "ppo_periods" / "diversity.csv")
    kl0 = committed[committed["run"].str.startswith("periods_kl0")].sort_values("phase")
    assert kl0["distinct_2"].iloc[-1] < 0.5 < kl0["distinct_2"].iloc[0]


def test_reward_hacking_page_states_what_the_data_shows(report_dir: Path = REPORTS / "reward_hacking"):
    """The equal-count table is what the base texts and the final policy's samples say, bin by bin; the claims'
    KL and entropy are the per-phase table's; the page and headline state the equal-count verdict."""
    from rlhf_interp.measure.stratified import count_bins

    claims = {c["id"]: c for c in json.loads((report_dir / "report.json").read_text())["claims"]}
    config = json.loads((report_dir / "config.json").read_text())
    policy, heldout = pd.read_csv(report_dir / "policy_samples.csv"), pd.read_csv(report_dir / "heldout.csv")
    table = pd.read_csv(report_dir / "equal_count.csv")
    table = table[table.comparison == "policy"].set_index("bin")
    for frame, side in ((policy, "a"), (heldout, "b")):
        bins = pd.Series(count_bins(frame.true_reward, config.get("bin_top", 5)), index=frame.index).astype(str)
        means = frame.rm_reward.groupby(bins).agg(["size", "mean"])
        assert table[f"n_{side}"][means.index].tolist() == means["size"].tolist()
        assert table[f"mean_{side}"][means.index].to_numpy() == pytest.approx(means["mean"].to_numpy())
    assert table.weight.sum() == pytest.approx(1.0) and (table.weight[~table.used] == 0).all()
    phases = pd.read_csv(report_dir / "ppo_phases.csv")
    late = phases[phases.phase > phases.phase.max() - 5]
    assert claims["kl_late"]["value"] == pytest.approx(late.kl_pi_ref_per_token.mean())
    assert claims["entropy_change"]["value"] == pytest.approx(late.entropy.mean() - phases.head(5).entropy.mean())
    text = page_text(report_dir)
    headline = json.loads((report_dir / "report.json").read_text())["headline"]
    assert all(claims[key]["headline"] for key in ("equal_count", "kl_late", "entropy_change"))
    assert claims["equal_count"]["verdict"] and claims["entropy_change"]["verdict"]
    assert claims["equal_count"]["verdict"] in headline and claims["equal_count"]["verdict"] in text
