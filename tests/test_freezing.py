"""The freezing study (`analyses/freezing.py`, `rlhf_interp.frontier.freezing`) end to end on tiny-test: 2 Ns x 2
seeds x 2 phases trained seed-major, finished runs skipped, a run killed after its first checkpoint resumed to the
same phase-2 numbers as the uninterrupted one, the last checkpoints measured on the same prompts and sampling seed
as the base (resumable per run), and the page with its claim (n and a 95% interval) rebuilt from its CSVs; plus
the claim's three outcomes (decided, bounded, not measured) on planted per-run values."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlhf_interp.frontier import freezing as fz
from rlhf_interp.ppo import runs as ppo_runs
from rlhf_interp.report import freezing_claims as fc
from rlhf_interp.report.claims import check_claims

REPO = Path(__file__).resolve().parent.parent
STUDY = ["--config", "configs/tiny.yaml", "--ns", "0,1", "--seeds", "0,1", "--phases", "2"]
TRAIN = ["--set", "lr=1e-3", "--set", "checkpoint_every=1", "--set", "ppo_epochs=1"]  # a visible change in two phases
MEASURE = ["--base", "tiny-test", "--reward", "length", "--report-prompts", "6", "--samples", "2",
           "--max-new-tokens", "8", "--capability-texts", "0"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The tiny study trained, measured and reported once: (module, runs dir, reports root)."""
    from rlhf_interp.report.rebuild import load_analysis

    mp = pytest.MonkeyPatch()
    mp.chdir(REPO)
    module = load_analysis(REPO / "analyses" / "freezing.py")
    tmp = tmp_path_factory.mktemp("freezing")
    runs, root = tmp / "runs", tmp / "reports"
    module.main(["train", "--runs", str(runs), *STUDY, *TRAIN])
    module.main(["measure", "--runs", str(runs), *STUDY, *MEASURE])
    module.main(["report", "--runs", str(runs), *STUDY, "--root", str(root)])
    yield module, runs, root
    mp.undo()


def metrics(run: Path) -> pd.DataFrame:
    return pd.DataFrame([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()])


def test_runs_are_named_and_ordered_seed_major():
    assert [r[0] for r in fz.study_runs([0, 10, 25], [0, 1])] == ["N0_s0", "N10_s0", "N25_s0", "N0_s1", "N10_s1",
                                                                  "N25_s1"]
    assert fz.parse_run_name("N20_s2") == (20, 2)
    with pytest.raises(ValueError, match="not a freezing run name"):
        fz.parse_run_name("ppo_s0")


def test_train_freezes_skips_finished_runs_and_resumes_a_killed_one(study, tmp_path, capsys):
    module, runs, _ = study
    for name in ("N0_s0", "N1_s0", "N0_s1", "N1_s1"):
        run = runs / name
        assert ppo_runs.finished(run, 2) and [p.name for p in run.glob("checkpoint-*")] == ["checkpoint-000002"]
        assert not (run / "checkpoint-000002" / "trainer_state.pt").exists()  # a finished run's optimiser: deleted
        assert len(metrics(run)) == 2 and ppo_runs.run_seconds(run) > 0
    config = (runs / "N1_s1" / "config.yaml").read_text()
    assert "freeze_layers: 1" in config and "seed: 1" in config and "phases: 2" in config
    capsys.readouterr()
    module.main(["train", "--runs", str(runs), *STUDY])
    assert capsys.readouterr().out.count(": done") == 4  # nothing trained again

    # killed after phase 1's checkpoint: phase 2 is trained again from it, to the uninterrupted run's numbers
    other = tmp_path / "runs"
    module.main(["train", "--runs", str(other), *STUDY, *TRAIN, "--only", "N0_s1",
                 "--set", "keep_checkpoints=2"])
    shutil.rmtree(other / "N0_s1" / "checkpoint-000002")
    capsys.readouterr()
    module.main(["train", "--runs", str(other), *STUDY, "--only", "N0_s1"])
    assert "N0_s1: resumed at phase 1" in capsys.readouterr().out
    resumed, straight = metrics(other / "N0_s1"), metrics(runs / "N0_s1")
    assert list(resumed["phase"]) == [1, 2]
    for column in ("reward_mean", "kl_pi_ref_per_token", "policy_loss"):
        np.testing.assert_allclose(resumed[column], straight[column], rtol=1e-4, atol=1e-6)
    with pytest.raises(SystemExit, match="not runs of this study"):
        module.main(["train", "--runs", str(other), *STUDY, "--only", "N7_s0"])


def test_measure_pairs_every_run_with_the_base_and_resumes(study):
    module, runs, _ = study
    points = runs / "measure" / "points"
    keys = sorted(p.stem for p in points.glob("*.json"))
    assert keys == ["N0_s0", "N0_s1", "N1_s0", "N1_s1", "base"]
    base = pd.read_csv(points / "base__sequences.csv")
    for key in keys:
        seqs = pd.read_csv(points / f"{key}__sequences.csv")
        assert seqs.groupby("prompt_idx").size().to_dict() == {i: 2 for i in range(6)}  # 6 prompts x 2 samples
        assert (seqs["prompt_idx"] == base["prompt_idx"]).all()
    assert (base["kl_exact"].abs() < 1e-5).all()
    assert pd.read_csv(points / "N0_s0__sequences.csv")["kl_exact"].mean() > 0  # the trained model moved
    before = {p.name: p.stat().st_mtime_ns for p in points.iterdir()}
    module.main(["measure", "--runs", str(runs), *STUDY, *MEASURE])
    assert {p.name: p.stat().st_mtime_ns for p in points.iterdir()} == before  # nothing measured twice


def test_report_tables_claim_and_rebuild_from_csvs(study, tmp_path):
    module, runs, root = study
    out = root / "freezing"
    per_run = pd.read_csv(out / "per_run.csv")
    assert len(per_run) == 4 and set(per_run["n"]) == {0, 1}
    np.testing.assert_allclose(per_run["reward_per_nat"], per_run["gain"] / per_run["kl_exact_mean"])
    np.testing.assert_allclose(per_run["gain"], per_run["reward_mean"] - per_run["base_reward_mean"])
    per_n = pd.read_csv(out / "per_n.csv").set_index("n")
    assert per_n["seeds"].tolist() == [2, 2]
    means = per_run.groupby("n")["reward_per_nat"].mean()
    np.testing.assert_allclose(per_n["reward_per_nat"], means)
    pairs = pd.read_csv(out / "pairs.csv")
    assert len(pairs) == 1 and pairs.loc[0, "seeds"] == 2
    wide = per_run.pivot(index="seed", columns="n", values="reward_per_nat")
    np.testing.assert_allclose(pairs.loc[0, "difference"], (wide[0] - wide[1]).mean())
    np.testing.assert_allclose(pairs.loc[0, "sd"], (wide[0] - wide[1]).std(ddof=1))
    assert pairs.loc[0, "seeds_for_target"] == fz.seeds_for(pairs.loc[0, "sd"], 0.15)

    manifest = json.loads((out / "report.json").read_text())
    claims = {c.id: c for c in check_claims(manifest["claims"])}
    best = claims["freezing_best_n"]
    assert best.kind == "comparison" and best.n == {"seeds": 2, "prompts": 6, "samples_per_prompt": 2}
    assert np.isfinite([best.low, best.high]).all() and best.low <= best.value <= best.high
    assert best.params["first"] == int(means.idxmax()) and best.params["target"] == 0.15
    assert "freezing_cpu" in claims and claims["freezing_cpu"].params["runs"] == 4

    copy = tmp_path / "reports" / "freezing"
    copy.mkdir(parents=True)
    for f in [*out.glob("*.csv"), out / "config.json"]:
        shutil.copy(f, copy / f.name)
    module.main(["report", "--from-csv", "--root", str(copy.parent)])
    assert (copy / "README.md").read_text() == (out / "README.md").read_text()
    assert json.loads((copy / "report.json").read_text())["claims"] == manifest["claims"]


def test_seeds_for_target_sizes_the_t_interval():
    # t(0.975, n - 1) * sd / sqrt(n) <= target: with sd = target, n = 7 (2.45 <= 2.65) and not 6 (2.57 > 2.45)
    assert fz.seeds_for(0.15, 0.15) == 7
    assert fz.seeds_for(0.0, 0.15) == 2 and fz.seeds_for(0.3, 0.15) > 7
    assert fz.seeds_for(100.0, 0.15, most=50) == 51


def planted(values: dict[int, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"n": n, "seed": s, "reward_per_nat": v, "n_prompts": 128, "samples_per_prompt": 2}
                         for n, vs in values.items() for s, v in enumerate(vs)])


def test_best_n_claim_is_decided_bounded_or_not_measured():
    decided, facts = fc.best_n_claim(planted({0: [0.1, 0.2, 0.15], 10: [1.3, 1.42, 1.35], 20: [1.0, 1.1, 1.02]}),
                                     0.15)
    assert facts["first"] == 10 and facts["second"] == 20 and facts["decided"] and facts["target_met"]
    assert decided.verdict.startswith("N=10 > N=20, decided") and decided.n["seeds"] == 3
    close, facts = fc.best_n_claim(planted({10: [1.30, 1.42, 1.35], 20: [1.29, 1.43, 1.33]}), 0.15)
    assert not facts["decided"] and facts["target_met"] and facts["bound"] < 0.15
    assert "target met" not in close.sentence() and "bounded within the target" in close.sentence()
    wide, facts = fc.best_n_claim(planted({10: [0.5, 1.9, 1.2], 20: [1.2, 0.6, 1.3]}), 0.15)
    assert not facts["decided"] and not facts["target_met"] and "the target not met" in wide.sentence()
    early, facts = fc.best_n_claim(planted({0: [0.1], 10: [1.3]}), 0.15)
    assert early.kind == "not_measured" and not facts["target_met"]
    for claim in (decided, close, wide, early):
        check_claims([claim])
