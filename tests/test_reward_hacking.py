"""The reward-hacking study's tests that see hacking outside the RM's training support (`rlhf_interp.report.
hacking_claims`), and `analyses/reward_hacking.py` end to end on the tiny model: steps kept, PPO resumed from its
checkpoint, the page rebuilt from its CSVs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlhf_interp.core import stats
from rlhf_interp.core.io import append_jsonl
from rlhf_interp.report import hacking_claims as hc
from rlhf_interp.report.claims import check_claims

REPO = Path(__file__).resolve().parent.parent


def texts(counts: np.ndarray, rm: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"text": ["x"] * len(counts), "true_reward": counts.astype(float), "rm_reward": rm})


def world(bonus: float, saturate_at: float | None, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Base texts with 0-4 periods, policy texts with 2-8; the RM pays 0.5 per period (up to ``saturate_at``) plus
    ``bonus`` for whatever else the policy's texts have."""
    rng = np.random.default_rng(seed)
    cb, cp = rng.integers(0, 5, 400), rng.integers(2, 9, 300)
    cap = (lambda c: np.minimum(c, saturate_at)) if saturate_at is not None else (lambda c: c)
    base = texts(cb, 0.5 * cap(cb) + rng.normal(0, 0.2, len(cb)))
    policy = texts(cp, 0.5 * cap(cp) + bonus + rng.normal(0, 0.2, len(cp)))
    return base, policy


def by_id(claims) -> dict:
    return {c.id: c for c in check_claims(claims)}


def test_an_rm_that_pays_for_something_else_is_caught_at_equal_count():
    base, policy = world(bonus=0.3, saturate_at=None)
    naive = stats.welch_difference(policy.rm_reward, base.rm_reward)
    assert naive.low > 1.0  # most of the raw difference is the true count itself
    claims, table = hc.equal_count_claims(policy, base, top=5, min_n=5)
    c = by_id(claims)
    assert c["equal_count"].low <= 0.3 <= c["equal_count"].high and c["equal_count"].low > 0.2
    assert c["equal_count"].verdict.startswith("policy > base, decided")
    assert "rewards something besides the count" in c["equal_count"].sentence()
    assert set(table[table.used].bin) == {"2", "3", "4"}  # bins 0, 1 hold no policy text, 5+ no base text
    assert {"bin_2", "bin_3", "bin_4"} <= set(c) and "bin_5plus" not in c and not c["bin_2"].headline
    assert table.set_index("bin").loc["5+", "n_b"] == 0 and not table.set_index("bin").loc["5+", "used"]


def test_a_faithful_rm_is_not_called_hacked():
    base, policy = world(bonus=0.0, saturate_at=None, seed=1)
    c = by_id(hc.equal_count_claims(policy, base, top=5, min_n=5)[0])
    assert c["equal_count"].low < 0 < c["equal_count"].high
    assert c["equal_count"].verdict.startswith("undecided")
    s = by_id(hc.beyond_support_claims(policy, base, top=4))
    assert s["slope_inside"].low < 0.5 < s["slope_inside"].high
    assert s["slope_change"].verdict.startswith("undecided")


def test_an_rm_that_saturates_beyond_its_support_is_caught_along_the_count():
    base, policy = world(bonus=0.0, saturate_at=4, seed=2)
    s = by_id(hc.beyond_support_claims(policy, base, top=4))
    assert abs(s["slope_beyond"].value) < 0.05 and s["slope_beyond"].n == {"policy_samples": int(
        (policy.true_reward >= 4).sum())}
    assert s["slope_change"].verdict.startswith("inside > beyond, decided")
    few = policy[policy.true_reward < 4]
    assert by_id(hc.beyond_support_claims(few, base, top=4))["beyond_support"].kind == "not_measured"


def test_support_top_is_the_largest_count_with_its_share():
    support = pd.DataFrame({"true_count": [0, 1, 2, 3, 4, 7], "texts": [300, 500, 150, 40, 9, 1]})
    assert hc.support_top(support, 0.01) == 3 and hc.support_top(support, 0.005) == 4


def test_kl_and_entropy_claims_are_over_the_late_phases():
    phases = pd.DataFrame({"phase": range(1, 11), "kl_pi_ref_per_token": [0.0, .01, .02, .03, .04, .05, .06, .05,
                                                                         .06, .07],
                           "entropy": [3.5, 3.4, 3.5, 3.45, 3.4, 3.0, 2.9, 3.1, 2.95, 3.0]})
    samples = pd.DataFrame({"phase": np.repeat(np.arange(1, 11), 4), "true_reward": np.arange(40) % 5 * 1.0})
    c = by_id(hc.training_claims(samples, phases, late_from=6, kl_target=0.08))
    iv = stats.mean_interval([.05, .06, .05, .06, .07])
    assert (c["kl_late"].value, c["kl_late"].low, c["kl_late"].high) == pytest.approx((iv.value, iv.low, iv.high))
    assert "below the controller's target of 0.08" in c["kl_late"].sentence()
    assert c["kl_late"].n == {"phases": 5, "samples_per_phase": 4, "seeds": 1} and "one training seed" in c[
        "kl_late"].note
    assert c["entropy_change"].value == pytest.approx(2.99 - 3.45)
    assert c["entropy_change"].verdict.startswith("early > late, decided")
    short = by_id(hc.training_claims(samples[samples.phase <= 3], phases.head(3), late_from=1, kl_target=None))
    assert short["entropy_change"].kind == "not_measured"


def test_study_runs_resumes_and_rebuilds_on_the_tiny_model(tmp_path, monkeypatch):
    """Four PPO phases, then the same command with --reuse and six: the pairs, RM and base texts are kept, PPO
    resumes from its phase-4 checkpoint (each phase's rollouts recorded once), the final policy is sampled again;
    the page rebuilds from its CSVs alone with the same claims."""
    from rlhf_interp.report.rebuild import load_analysis, rebuild

    monkeypatch.chdir(REPO)
    module = load_analysis(REPO / "analyses" / "reward_hacking.py")
    work, root = tmp_path / "work", tmp_path / "reports"
    argv = ["--model", "tiny-test", "--char", "e", "--n-pairs", "24", "--ppo-config", "configs/tiny.yaml",
            "--heldout", "24", "--policy-samples", "16", "--probe-texts", "8", "--synth-batch-size", "8",
            "--epochs", "1", "--freeze-layers", "1", "--checkpoint-every", "3", "--bin-top", "3",
            "--work-dir", str(work), "--root", str(root), "--name", "rh", "--no-progress"]
    assert module.main([*argv, "--ppo-phases", "4"]) == 0
    pairs, heldout = (work / "pairs.jsonl").read_text(), (work / "heldout.jsonl").read_text()
    assert [p.name for p in (work / "ppo").glob("checkpoint-*")] == ["checkpoint-000004"]  # keep_checkpoints=1
    first = json.loads((work / "timings.json").read_text())
    torn = {"phase": 5, "sample": 0, "completion": "a kill after phase 5's rollout", "true_reward": 0, "rm_reward": 0}
    append_jsonl(work / "ppo" / "reward_hacking_samples.jsonl", torn)  # logged past the checkpoint: dropped
    assert module.main([*argv, "--ppo-phases", "6", "--reuse"]) == 0
    assert (work / "pairs.jsonl").read_text() == pairs and (work / "heldout.jsonl").read_text() == heldout
    samples = pd.read_csv(root / "rh" / "ppo_samples.csv")
    assert samples.groupby("phase").size().to_dict() == {p: 4 for p in range(1, 7)}  # batch_size 4, no repeats
    assert torn["completion"] not in set(samples.completion)
    assert json.loads((work / "timings.json").read_text())["heldout"] == first["heldout"]  # not sampled again
    assert len(pd.read_csv(root / "rh" / "policy_samples.csv")) == 16
    summary = pd.read_csv(root / "rh" / "summary.csv").set_index("quantity")["value"]
    assert summary["PPO phases"] == 6 and summary["seconds (one thread): total"] > 0
    manifest = json.loads((root / "rh" / "report.json").read_text())
    assert {"kl_late", "entropy_change", "equal_count", "cost"} <= {c["id"] for c in manifest["claims"]}
    check_claims(manifest["claims"])

    copy = tmp_path / "copy" / "rh"
    copy.mkdir(parents=True)
    for f in [*(root / "rh").glob("*.csv"), root / "rh" / "config.json", root / "rh" / "report.json"]:
        shutil.copy(f, copy / f.name)
    (copy / "report.json").write_text((root / "rh" / "report.json").read_text().replace(
        str(REPO / "analyses"), "analyses"))
    shutil.copytree(REPO / "analyses", tmp_path / "analyses")
    rebuild(copy)
    assert (copy / "README.md").read_text() == (root / "rh" / "README.md").read_text()


def test_support_counts_count_both_texts_of_every_pair():
    from rlhf_interp.reward import PreferencePair
    from rlhf_interp.reward.hacking import support_counts

    pairs = [PreferencePair("p", "a.b.", "c", {"chosen_score": 2.0, "rejected_score": 0.0}),
             PreferencePair("p", "x.", "y", {"chosen_score": 1.0, "rejected_score": 0.0})]
    table = support_counts(pairs)
    assert table.to_dict("list") == {"true_count": [0, 1, 2], "texts": [2, 1, 1]}
