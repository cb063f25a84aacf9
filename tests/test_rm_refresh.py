"""Iterated online RLHF on tiny-test: the reward model refreshed on the policy's own samples every N phases.

What must hold: a refresh whose labels are the RM's own preferences leaves its ranking alone (and one with
the opposite labels does not — the measurement can fail); a killed and resumed run repeats the uninterrupted
one (metrics, every RM version's tensors, the pairs); the version recorded for a phase is the one that scored
its samples; the options work from the config and the CLI, and misuse is a clear error.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
import torch

from rlhf_interp.cli import main as cli_main
from rlhf_interp.ppo import PPOConfig, PPOTrainer
from rlhf_interp.ppo.rm_refresh import (
    PAIRS_FILE,
    VERSIONS_DIR,
    list_versions,
    version_dir,
)
from rlhf_interp.reward import (
    RewardModel,
    RewardTrainingConfig,
    finetune_reward_model,
    load_reward_model,
    open_version,
    pair_accuracy,
    score,
    train_reward_model,
    write_preferences,
)
from rlhf_interp.reward.refresh import TENSORS_FILE
from rlhf_interp.reward.synthetic import label_pair

from preference_data import period_pairs as shared_period_pairs

CONFIGS = Path(__file__).parent.parent / "configs"
TIMING = {"seconds", "rollout_seconds", "tokens_per_second", "rm_refresh_seconds"}


period_pairs = partial(shared_period_pairs, prompt="Say")  # the pairs this file's RMs were tuned on


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory) -> Path:
    """A tiny-test RM trained on period pairs from a file (so a refresh finds and replays its data)."""
    root = tmp_path_factory.mktemp("rm")
    write_preferences(period_pairs(48), root / "pairs.jsonl")
    train_reward_model(root / "pairs.jsonl", "tiny-test", root / "rm",
                       RewardTrainingConfig(epochs=3, lr=3e-4, head_lr=3e-3, freeze_layers=1, patience=0),
                       progress=False)
    return root / "rm"


def refresh_config(rm_dir: Path, **overrides) -> PPOConfig:
    """tiny.yaml against the RM, refreshed every 2 phases on 6 pairs labelled by length (varies on random text)."""
    base = {"reward": f"reward_model:{rm_dir}", "reward_kwargs": "{}", "phases": 4, "rm_refresh_every": 2,
            "rm_refresh_pairs": 6, "rm_refresh_source": "length", "rm_refresh_source_kwargs": "{unit: chars}",
            "rm_refresh_replay": 6, "rm_refresh_epochs": 2, **overrides}
    return PPOConfig.load(CONFIGS / "tiny.yaml", [f"{k}={v}" for k, v in base.items()])


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _version_tensors(run: Path) -> dict[int, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    return {v: load_file(str(version_dir(run, v) / TENSORS_FILE)) for v in list_versions(run)}


# ---------------------------------------------------------------------------------------------- ranking


HELD_OUT = [t for p in period_pairs(30, seed=7) for t in (p.chosen, p.rejected)]


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(pd.Series(a.tolist()).corr(pd.Series(b.tolist()), method="spearman"))


def _self_labelled_refresh(rm: RewardModel, before: torch.Tensor, seed: int, sign: float) -> float:
    """Fine-tune a copy of ``rm`` on 32 fresh pairs labelled by ``sign`` x its own scores (as a refresh does); return
    the Spearman correlation of its held-out scores ``before`` and after."""
    rm = copy.deepcopy(rm)  # each refresh starts from the trained RM (a copy: loading it again costs 4x as long)
    texts = [t for p in period_pairs(32, seed=seed) for t in (p.chosen, p.rejected)]
    random.Random(seed).shuffle(texts)  # pairs of unrelated texts, some of them tied in the truth
    own = (sign * rm.score(texts)).tolist()
    pairs = [pair for i in range(0, len(texts), 2)
             if (pair := label_pair("p", texts[i], texts[i + 1], own[i], own[i + 1], flip=False)) is not None]
    assert pair_accuracy(rm, pairs) == (1.0 if sign > 0 else 0.0)
    finetune_reward_model(rm, pairs, epochs=2, seed=seed)
    return _spearman(before, rm.score(HELD_OUT))


def test_refresh_labelled_by_the_rms_own_scores_keeps_its_ranking(rm_dir):
    """Labels = the RM's own preferences: the fine-tune only widens margins the RM already has, so the ranking
    of 60 held-out texts stays (Spearman >= 0.94 on each of 5 pair sets; measured 0.95-0.99). Hard labels are
    not a fixed point of the Bradley-Terry loss (it wants infinite margins), hence a tolerance. The same
    refresh with the labels reversed moves the ranking (mean Spearman measured 0.86), so the check can fail."""
    rm = load_reward_model(rm_dir)
    before = rm.score(HELD_OUT)
    own = [_self_labelled_refresh(rm, before, seed, 1.0) for seed in range(3, 8)]
    reversed_ = [_self_labelled_refresh(rm, before, seed, -1.0) for seed in range(3, 8)]
    assert torch.equal(rm.score(HELD_OUT), before)  # the copies were tuned, not the RM they started from
    assert min(own) >= 0.94, own
    assert sum(reversed_) / len(reversed_) <= 0.9 < sum(own) / len(own), (own, reversed_)


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["own-scores", "reversed-scores"])
def test_any_callable_labels_a_refresh(rm_dir, tmp_path, sign):
    """``trainer.rm_refresh.source`` takes any callable: labelled by the RM itself, the RM ranks every fresh pair
    right before the fine-tune; labelled by its negation, every pair wrong."""
    trainer = PPOTrainer(refresh_config(rm_dir, phases=3), tmp_path / "run", progress=False)
    trainer.rm_refresh.source = lambda texts: sign * trainer.reward.model.score(texts)
    history = trainer.train()
    assert history[2]["rm_version"] == 1
    assert history[2]["rm_refresh_accuracy_before"] == (1.0 if sign > 0 else 0.0)


# ---------------------------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def full_refreshed_run(rm_dir, tmp_path_factory) -> Path:
    """The uninterrupted 4-phase refreshed run (refresh before phase 3), read-only: the resume tests compare with it."""
    run = tmp_path_factory.mktemp("full") / "run"
    PPOTrainer(refresh_config(rm_dir), run, progress=False).train()
    return run


@pytest.mark.parametrize("kill_after", [2, 3], ids=["before-a-refresh", "after-a-refresh"])
def test_refreshed_run_resumes_to_identical_outputs(rm_dir, full_refreshed_run, tmp_path, kill_after):
    """Killed right after checkpoint-<kill_after> and resumed: the same metrics, the same RM versions (tensors,
    bit for bit) and the same pairs as the uninterrupted run. After phase 2 the refresh (made before phase 3)
    is not in the checkpoint and must be redone identically; after phase 3 it must be restored from disk."""
    def kill(trainer, metrics, rollout):
        if trainer.phase == kill_after:
            raise KeyboardInterrupt

    killed = PPOTrainer(refresh_config(rm_dir), tmp_path / "resumed", callbacks=[kill], progress=False)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed = PPOTrainer.resume(tmp_path / "resumed", progress=False)
    assert resumed.phase == kill_after and resumed.rm_refresh.version == (kill_after - 1) // 2
    resumed.train()

    a, b = _metrics(full_refreshed_run), _metrics(tmp_path / "resumed")
    assert [m["rm_version"] for m in a] == [m["rm_version"] for m in b] == [0, 0, 1, 1]
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k not in TIMING} == {k: v for k, v in y.items() if k not in TIMING}
    va, vb = _version_tensors(full_refreshed_run), _version_tensors(tmp_path / "resumed")
    assert sorted(va) == sorted(vb) == [0, 1]
    for v in va:
        assert all(torch.equal(va[v][k], vb[v][k]) for k in va[v]), f"rm-v{v:03d} differs"
    assert not all(torch.equal(va[0][k], va[1][k]) for k in va[0])  # the refresh changed the RM
    pairs_a = (full_refreshed_run / VERSIONS_DIR / PAIRS_FILE).read_text()
    assert pairs_a == (tmp_path / "resumed" / VERSIONS_DIR / PAIRS_FILE).read_text()
    assert pairs_a.count('"version": 1') == 6 and pairs_a.count('"version": 0') == 48  # original data + 1 refresh


def test_resume_refuses_to_drop_the_refreshed_rm(full_refreshed_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(full_refreshed_run, run)  # a finished run with a refreshed RM (rm-v001), extended by a phase
    with pytest.raises(ValueError, match="rm_refresh_every"):  # refused (issue 26: before a model loads)
        PPOTrainer.resume(run, overrides=["rm_refresh_every=null", "phases=5"], progress=False)


# ---------------------------------------------------------------------------------------------- versions


def test_recorded_rm_version_is_the_one_that_scored_each_phase(rm_dir, tmp_path):
    seen: list[tuple[list[str], torch.Tensor]] = []
    trainer = PPOTrainer(refresh_config(rm_dir, phases=5), tmp_path / "run", progress=False,
                         callbacks=[lambda t, m, rollout: seen.append((rollout.completions, rollout.scores.cpu()))])
    history = trainer.train()
    assert [m["rm_version"] for m in history] == [0, 0, 1, 1, 2]
    assert [m["rm_refresh_seconds"] > 0 for m in history] == [False, False, True, False, True]
    versions = {v: open_version(version_dir(tmp_path / "run", v)) for v in (0, 1, 2)}
    for metrics, (completions, scores) in zip(history, seen):
        torch.testing.assert_close(score(versions[metrics["rm_version"]].as_reward(), completions), scores,
                                   rtol=0, atol=1e-5)
        if metrics["rm_version"]:  # and not the version before it: the check can tell versions apart
            older = versions[metrics["rm_version"] - 1].score(completions)
            assert (older - scores).abs().max() > 1e-3
    meta = json.loads((version_dir(tmp_path / "run", 2) / "meta.json").read_text())
    assert meta["phase"] == 5 and meta["version"] == 2 and meta["base"] == str(rm_dir / "model")


# ---------------------------------------------------------------------------------------------- config and CLI


def test_cli_turns_refresh_on_with_set(rm_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", str(CONFIGS / "tiny.yaml"), "--out", str(out), "--no-progress", "--set", f"reward=reward_model:{rm_dir}",
            "--set", "reward_kwargs={}", "--set", "phases=3", "--set", "rm_refresh_every=2", "--set",
            "rm_refresh_source=length", "--set", "rm_refresh_source_kwargs={unit: chars}", "--set", "rm_refresh_pairs=4"]
    assert cli_main(args) == 0
    assert [m["rm_version"] for m in _metrics(out)] == [0, 0, 1]
    assert list_versions(out) == [0, 1]


def test_refresh_needs_a_learned_reward_and_valid_fields(tmp_path, capsys):
    args = ["train", str(CONFIGS / "tiny.yaml"), "--out", str(tmp_path / "run"), "--no-progress", "--set",
            "rm_refresh_every=2"]
    assert cli_main(args) == 2  # tiny.yaml's reward is `length`: nothing to refresh
    err = capsys.readouterr().err
    assert "rm_refresh_every" in err and "reward_model:PATH" in err and "Traceback" not in err
    for bad, words in [("rm_refresh_every=0", ">= 1"), ("rm_refresh_pairs=1", "rm_refresh_pairs"),
                       ("rm_refresh_label_noise=1.5", "rm_refresh_label_noise"), ("rm_refresh_replay=-2", ">= 0")]:
        with pytest.raises(ValueError, match=words):
            PPOConfig.load(CONFIGS / "tiny.yaml", [bad])


def test_a_refresh_with_only_tied_labels_is_skipped_not_fatal(rm_dir, tmp_path):
    """A collapsed policy (every sample scored alike) gives no pair to label: the run goes on with the RM it had."""
    trainer = PPOTrainer(refresh_config(rm_dir, phases=3), tmp_path / "run", progress=False)
    trainer.rm_refresh.source = lambda texts: [0.0] * len(texts)
    with pytest.warns(UserWarning, match="skipped"):
        history = trainer.train()
    assert [m["rm_version"] for m in history] == [0, 0, 0] and history[2]["rm_refresh_pairs"] == 0
    assert list_versions(tmp_path / "run") == [0]


def test_refresh_refuses_several_processes():
    from types import SimpleNamespace

    from rlhf_interp.ppo.rm_refresh import RMRefresher

    trainer = SimpleNamespace(dist=SimpleNamespace(active=True, world_size=2), config=PPOConfig(rm_refresh_every=2))
    with pytest.raises(ValueError, match="one process only"):
        RMRefresher(trainer)


# ---------------------------------------------------------------------------------------------- the study


def test_iterated_rm_study_end_to_end_and_from_csv(rm_dir, tmp_path):
    """analyses/iterated_rm.py on tiny-test (RM: the period fixture; true reward: the count of 'e', which varies
    on random text): both settings run, the refreshed run's phases are scored by versions 0 then 1, the page
    states the summary's numbers and rebuilds from its CSVs alone."""
    import html5lib

    from rlhf_interp.report.rebuild import load_analysis

    study = load_analysis(Path(__file__).parent.parent / "analyses" / "iterated_rm.py")
    root = tmp_path / "reports"
    args = ["--model", "tiny-test", "--rm", str(rm_dir), "--char", "e", "--ppo-config", str(CONFIGS / "tiny.yaml"),
            "--heldout", "12", "--ppo-phases", "2", "--seeds", "0", "1", "--refresh-every", "1", "--refresh-pairs", "4",
            "--refresh-replay", "4", "--late", "1", "--ppo-set", "batch_size=4", "--ppo-set", "freeze_layers=0", "--work-dir", str(tmp_path / "work"), "--root", str(root),
            "--no-progress"]
    assert study.main(args) == 0
    out = root / "iterated_rm"
    phases = pd.read_csv(out / "phases.csv")
    refreshed = phases[phases.setting == "refreshed"].sort_values(["seed", "phase"])
    assert refreshed.rm_version.tolist() == [0, 1, 0, 1]
    assert (phases[phases.setting == "frozen"].rm_version == 0).all()
    assert phases[["true_z", "rm_z", "gap", "kl_pi_ref_per_token"]].notna().all().all()
    summary = pd.read_csv(out / "summary.csv")
    written = json.loads((out / "report.json").read_text())
    claims = {claim["id"]: claim for claim in written["claims"]}
    for setting in ("frozen", "refreshed"):  # the headline states each gap as its claim: mean over seeds, interval
        row = summary[(summary.setting == setting) & (summary.quantity == "gap")].iloc[0]
        claim = claims[f"gap_{setting}"]
        assert claim["value"] == pytest.approx(row["mean"]) and claim["low"] <= claim["value"] <= claim["high"]
        assert claim["n"]["seeds"] == 2
        assert f"{claim['value']:.2f} [{claim['low']:.2f}, {claim['high']:.2f}]" in written["headline"]
    readme = (out / "README.md").read_text()
    html5lib.parse((out / "index.html").read_text())
    (out / "README.md").unlink()
    assert study.main(["--from-csv", "--root", str(root)]) == 0
    assert (out / "README.md").read_text() == readme


def test_refresh_tables_from_hand_made_runs(rm_dir, tmp_path):
    """`rlhf_interp.ppo.refresh_tables`: a run without versions is scored by version 0 (its held-out yardstick is the
    RM's own scores); the end of a run is the mean of its last phases; the summary is mean and sd over seeds."""
    from rlhf_interp.ppo.refresh_tables import END_COLUMNS, end_table, summary_table, version_table

    rm = load_reward_model(rm_dir)
    heldout = pd.DataFrame({"text": ["Say.", "Say", "Say..."], "true_reward": [1.0, 0.0, 3.0]})
    versions = version_table(rm, [({"setting": "frozen", "seed": 0}, tmp_path / "no-versions")], heldout)
    scores = rm.score(heldout.text.tolist())
    assert versions[["setting", "seed", "version", "phase"]].values.tolist() == [["frozen", 0, 0, 0]]
    assert versions.heldout_mean.item() == pytest.approx(float(scores.mean()))
    assert versions.heldout_spearman.item() == pytest.approx(
        pd.Series(scores.tolist()).corr(heldout.true_reward, method="spearman"))

    rows = [{"setting": setting, "seed": seed, "phase": phase, "seconds": 2.0, "rm_refresh_seconds": 1.0 * (phase == 2),
             **{c: float(phase + seed) for c in END_COLUMNS}}
            for setting in ("frozen", "refreshed") for seed in (0, 1) for phase in (1, 2, 3)]
    end = end_table(pd.DataFrame(rows), late=2)
    first = end[(end.setting == "frozen") & (end.seed == 1)].iloc[0]
    assert first.phases == "2-3" and first.gap == 3.5 and first.ppo_seconds == 6.0 and first.refresh_seconds == 1.0
    summary = summary_table(end).set_index(["setting", "quantity"])
    assert summary.loc[("refreshed", "gap"), "mean"] == 3.0 and summary.loc[("refreshed", "gap"), "seeds"] == 2
    assert summary.loc[("refreshed", "gap"), "sd"] == pytest.approx(2 ** 0.5 / 2)  # 2.5 and 3.5
    assert summary_table(end[end.seed == 0]).sd.isna().all()  # one seed: no spread to report

