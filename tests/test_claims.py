"""Claims are data: a claim without n or interval is refused, a number in a sentence must be a field, the headline,
the index and the README findings table come from the claims, and a planted unsupported number is caught."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlhf_interp.core import stats
from rlhf_interp.report import Report
from rlhf_interp.report.claims import (
    FINDINGS_END,
    FINDINGS_START,
    Claim,
    ClaimError,
    check_claim,
    check_claims,
    format_n,
    unsupported_numbers,
)
from rlhf_interp.report.index import findings_rows, report_dirs, write_findings, write_index

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "reports"
# Reports whose owners are converting them to claims (issue 29: the KL-direction reports); empty when all are done.
PENDING: set[str] = set()


def reward_claim() -> Claim:
    iv = stats.mean_interval([1.0, 2.0, 3.0, 2.0], n={"prompts": 4, "samples_per_prompt": 1, "seeds": 1})
    return Claim.estimate("reward", "reward {value} periods {ci} at layer {layer} ({n})", iv, params={"layer": 8})


def test_a_claim_renders_its_numbers_from_fields():
    c = check_claim(reward_claim())
    assert c.sentence() == "reward 2.00 periods [0.70, 3.30] at layer 8 (4 prompts × 1 sample, 1 seed)"
    d = c.to_dict()
    assert d["sentence"] == c.sentence() and d["n"] == {"prompts": 4, "samples_per_prompt": 1, "seeds": 1}
    assert Claim.from_dict(json.loads(json.dumps(d))).sentence() == c.sentence()


def test_a_comparison_carries_its_verdict():
    a = np.array([3.0, 2.5, 3.2, 2.9, 3.1])
    diff = stats.paired_difference(a, a - 1 + np.array([0.1, -0.1, 0.05, 0, -0.05]))
    c = check_claim(Claim.compare("a_vs_b", "A minus B {value} {ci}: {verdict}", diff, "A", "B"))
    assert c.verdict == "A > B, decided at 95%" and c.sentence().endswith("A > B, decided at 95%")


def test_claim_without_n_or_interval_is_refused():
    c = reward_claim()
    c.n = {}
    with pytest.raises(ClaimError, match="no n"):
        check_claim(c)
    c = reward_claim()
    c.low = None
    with pytest.raises(ClaimError, match="no finite 95% interval"):
        check_claim(c)
    c = reward_claim()
    c.high = float("inf")
    with pytest.raises(ClaimError, match="no finite 95% interval"):
        check_claim(c)
    c = reward_claim()
    c.template = "reward {value} periods"
    with pytest.raises(ClaimError, match="states no interval"):
        check_claim(c)
    diff = stats.Interval(0.1, -0.1, 0.3, n={"prompts": 8})
    c = Claim.compare("x", "{value} {ci}", diff, "A", "B")
    c.verdict = None
    with pytest.raises(ClaimError, match="without a verdict"):
        check_claim(c)


def test_a_literal_number_in_the_text_is_refused_but_code_and_words_are_not():
    c = reward_claim()
    c.template = "reward {value} {ci} at layer 8"
    with pytest.raises(ClaimError, match=r"\['8'\]"):
        check_claim(c)
    c.template = "`k3` on SmolLM2: reward {value} {ci}"
    check_claim(c)


def test_not_measured_says_so():
    check_claim(Claim.not_measured("freeze", "which N buys most per nat: not yet measured with enough samples"))
    with pytest.raises(ClaimError, match="not yet measured"):
        check_claim(Claim.not_measured("freeze", "which N buys most per nat: unclear"))


def test_format_n():
    assert format_n({"prompts": 16, "samples_per_prompt": 1, "seeds": 2}) == "16 prompts × 1 sample, 2 seeds"
    assert format_n({"seeds": 1}) == "1 seed"


def test_page_headline_and_manifest_come_from_the_claims(tmp_path):
    report = Report("demo", "Demo", headline="hand-written 9.99", root=tmp_path, claims=[reward_claim()])
    report.claim(Claim.not_measured("later", "more: not yet measured with enough samples", headline=False))
    out = report.save()
    manifest = json.loads((out / "report.json").read_text())
    assert manifest["headline"] == reward_claim().sentence()
    assert [c["id"] for c in manifest["claims"]] == ["reward", "later"]
    readme = (out / "README.md").read_text()
    assert "9.99" not in readme and "| reward " in readme and "[0.70, 3.30]" in readme


def test_page_with_an_unsupported_claim_is_not_written(tmp_path):
    bad = reward_claim()
    bad.n = {}
    with pytest.raises(ClaimError):
        Report("demo", "Demo", root=tmp_path, claims=[bad]).save()
    assert not (tmp_path / "demo" / "report.json").exists()


def test_findings_table_is_written_between_markers(tmp_path):
    root = tmp_path / "reports"
    Report("demo", "Demo", root=root, claims=[reward_claim()]).save()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{FINDINGS_START}\nold\n{FINDINGS_END}\n\nrest\n")
    assert write_findings(readme, root)
    text = readme.read_text()
    assert f"| `demo` | {reward_claim().sentence()} |" in text and "old" not in text and text.endswith("rest\n")
    assert not unsupported_in_readme(text, {"demo": {"claims": [reward_claim().to_dict()]}})


# ----------------------------------------------------------------------------------------------
# The committed reports


def manifests(pending: bool = False) -> dict[str, dict]:
    return {d.name: json.loads((d / "report.json").read_text()) for d in report_dirs(REPORTS)
            if pending or d.name not in PENDING}


def readme_findings(text: str) -> dict[str, str]:
    block = text.split(FINDINGS_START)[1].split(FINDINGS_END)[0]
    return dict(re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", block, flags=re.M))


def unsupported_in_readme(readme_text: str, ms: dict[str, dict]) -> dict[str, list[str]]:
    rows = readme_findings(readme_text)
    return {name: bad for name, row in rows.items()
            if name in ms and (bad := unsupported_numbers(row, ms[name].get("claims", [])))}


def test_every_committed_report_states_claims_with_n_and_interval():
    for name, m in manifests().items():
        assert m.get("claims"), f"reports/{name}/report.json lists no claims"
        claims = check_claims(m["claims"])
        assert m["headline"] == " ".join(c.sentence() for c in claims if c.headline), f"{name}: headline"
        assert not unsupported_numbers(m["headline"], claims), name


def test_readme_and_index_numbers_are_claims():
    ms = manifests()
    readme = (REPO / "README.md").read_text()
    rows = readme_findings(readme)
    assert set(rows) == set(manifests(pending=True)), "one README findings row per report"
    assert not unsupported_in_readme(readme, ms)
    index = (REPORTS / "index.html").read_text()
    for name, m in ms.items():
        assert not unsupported_numbers(m["headline"], m["claims"])
    # the committed findings table is exactly what the claims generate
    assert "\n".join(findings_rows(REPORTS)) in readme, "README findings table is stale: `rlhf-interp report --rebuild`"
    assert all(f'href="{name}/index.html"' in index for name in ms)


def test_a_planted_unsupported_number_or_claim_fails(tmp_path):
    ms = manifests()
    readme = (REPO / "README.md").read_text()
    name = sorted(ms)[0]
    row = readme_findings(readme)[name]
    planted = readme.replace(row, row + " It also reached 9.87 periods.", 1)
    assert unsupported_in_readme(planted, ms) == {name: ["9.87"]}
    # a claim stripped of its interval in a copy of report.json
    copy = tmp_path / "reports" / name
    copy.mkdir(parents=True)
    m = json.loads((REPORTS / name / "report.json").read_text())
    measured = next(c for c in m["claims"] if c["kind"] in ("estimate", "comparison"))
    measured["low"] = None
    with pytest.raises(ClaimError, match="no finite 95% interval"):
        check_claims(m["claims"])
    measured["low"], measured["n"] = measured["value"], {}
    with pytest.raises(ClaimError, match="no n"):
        check_claims(m["claims"])


def test_rebuild_writes_the_readme_findings_table(tmp_path):
    """`rlhf-interp report --rebuild` regenerates the README table between the markers from report.json."""
    root = tmp_path / "reports"
    name = "iterated_rm"
    src = REPORTS / name
    (root / name).mkdir(parents=True)
    for f in [*src.glob("*.csv"), src / "config.json", src / "report.json"]:
        shutil.copy(f, root / name / f.name)
    shutil.copytree(REPO / "analyses", tmp_path / "analyses")
    (tmp_path / "README.md").write_text(f"x\n{FINDINGS_START}\n| `{name}` | stale 1.23 |\n{FINDINGS_END}\n")
    from rlhf_interp.report.rebuild import rebuild_all

    rebuild_all(root)
    text = (tmp_path / "README.md").read_text()
    assert "stale" not in text and f"| `{name}` | " in text
    m = json.loads((root / name / "report.json").read_text())
    assert not unsupported_in_readme(text, {name: m})
    write_index(root)
