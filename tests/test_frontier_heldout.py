"""The held-out, paired frontier round: choosing on one split, interpolating trajectories per prompt, paired
differences, the assembled tables, and the whole round on the tiny model rendered into the page."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from rlhf_interp.frontier.heldout import bracket, choose_per_budget, interpolate_at, paired_difference, top_two
from rlhf_interp.frontier.v3_assemble import PPO, at_budgets
from rlhf_interp.frontier.v3_round import Points

ROOT = Path(__file__).resolve().parent.parent


def test_bracket_finds_the_first_pair_around_the_budget_in_training_order():
    assert bracket([0.0, 0.5, 1.5, 3.0], 1.0) == (1, 2, pytest.approx(0.5))
    assert bracket([0.0, 2.0, 1.0], 1.5) == (0, 1, pytest.approx(0.75))  # non-monotone: the first crossing
    assert bracket([0.0, 0.5, 0.9], 1.0) is None  # never reached: no extrapolation
    a = pd.DataFrame({"reward": [1.0, 2.0], "kl_exact": [0.5, 0.5]})
    b = pd.DataFrame({"reward": [3.0, 2.0], "kl_exact": [1.5, 1.5]})
    assert interpolate_at([a, b], 1.25).tolist() == pytest.approx([2.5, 2.0])  # w = 0.75 per prompt
    assert interpolate_at([a, b], 2.0) is None


def test_choose_per_budget_takes_the_best_selection_reward_among_hits_else_the_nearest_miss():
    candidates = pd.DataFrame([
        {"family": 0, "budget": 1.0, "hit": True, "reward_mean": 1.2, "kl_exact_mean": 1.05, "strength": 0.3},
        {"family": 1, "budget": 1.0, "hit": True, "reward_mean": 1.6, "kl_exact_mean": 0.97, "strength": 0.5},
        {"family": 2, "budget": 1.0, "hit": False, "reward_mean": 3.0, "kl_exact_mean": 1.90, "strength": 9.0},
        {"family": 0, "budget": 4.0, "hit": False, "reward_mean": 1.0, "kl_exact_mean": 2.5, "strength": 1.0},
        {"family": 1, "budget": 4.0, "hit": False, "reward_mean": 2.0, "kl_exact_mean": 9.0, "strength": 2.0}])
    chosen = choose_per_budget(candidates, [1.0, 4.0]).set_index("budget")
    assert chosen.loc[1.0, "family"] == 1 and chosen.loc[1.0, "hit"] and chosen.loc[1.0, "selected_from"] == 2
    # no family reached 4 nats: the closest in log KL (2.5 is nearer to 4 than 9 is), marked as a miss
    assert chosen.loc[4.0, "family"] == 0 and not chosen.loc[4.0, "hit"]


def test_paired_difference_is_the_t_interval_of_per_prompt_differences():
    rng = np.random.default_rng(0)
    a = pd.Series(rng.normal(1.0, 1.0, 40))
    b = a - 0.3 + pd.Series(rng.normal(0, 0.2, 40))
    got = paired_difference(a, b.drop(index=[3]))  # only the prompts both have
    d = (a - b).drop(index=[3])
    half = sps.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert got["n_prompts"] == 39 and got["difference"] == pytest.approx(d.mean())
    assert (got["low"], got["high"]) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))
    assert top_two({"x": a, "y": b, "z": b - 1})["first"] == "x"


def _save(points: Points, key: str, rewards, kls, **row) -> None:
    seqs = pd.DataFrame({"prompt_idx": np.repeat(np.arange(len(rewards)), 2), "reward": np.repeat(rewards, 2),
                         "kl_exact": np.repeat(kls, 2), "fluency_nll": 3.0, "n_new_tokens": 24, "continuation": "x"})
    texts = pd.DataFrame({"text_idx": [0, 1], "n_tokens": [10, 10], "nll_mean": row.pop("nll", [4.0, 5.0]),
                          "top1": 0.3})
    points.save(key, {"samples_per_prompt": 2, "kl_exact_mean": float(np.mean(kls)), **row}, seqs, texts)


def test_ppo_at_a_budget_is_interpolated_per_prompt_per_seed_then_averaged(tmp_path):
    """Two seeds: each prompt's reward mixed between the checkpoints around 1 nat with the weight from the mean
    KLs, then averaged over seeds; capability mixed with the same weight; a steering choice paired against it."""
    points = Points(tmp_path)
    _save(points, "base", [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], kind="base")
    _save(points, "t_s0_5", [1.5, 2.0, 1.0], [0.5, 0.5, 0.5], kind="trajectory", seed=0, step=5, nll=[4.2, 5.2])
    _save(points, "t_s0_10", [2.5, 3.0, 2.0], [1.5, 1.5, 1.5], kind="trajectory", seed=0, step=10, nll=[4.4, 5.4])
    _save(points, "t_s1_5", [2.0, 2.0, 2.0], [2.0, 2.0, 2.0], kind="trajectory", seed=1, step=5, nll=[4.0, 5.0])
    _save(points, "steer", [2.0, 2.5, 1.5], [1.0, 1.0, 1.0], kind="steering", method="steer: contrastive",
          setting="layer 20", kl_exact_low=0.9, kl_exact_high=1.1)
    (tmp_path / "choices_steering.json").write_text(json.dumps([{"key": "steer", "budget": 1.0, "hit": True,
                                                                 "selection_kl": 1.02}]))
    at, comparisons, series = at_budgets(tmp_path, [1.0, 4.0])
    seed0 = np.array([2.0, 2.5, 1.5])  # w = 0.5 between step 5 (0.5 nats) and step 10 (1.5 nats)
    seed1 = np.array([1.5, 1.5, 1.5])  # w = 0.5 between the base (0 nats) and step 5 (2 nats)
    assert series[1.0][PPO].to_numpy() == pytest.approx((seed0 + seed1) / 2)
    ppo = at[(at["method"] == PPO) & (at["budget"] == 1.0)].iloc[0]
    assert ppo["seeds"] == 2 and ppo["n_prompts"] == 3
    # capability: seed 0 mixes +0.2 and +0.4 (-> +0.3), seed 1 mixes 0 and 0 (-> 0): mean change +0.15 per text
    assert ppo["capability_delta"] == pytest.approx(0.15)
    assert at[(at["method"] == PPO) & (at["budget"] == 4.0)]["reward_mean"].isna().all()  # never reached 4 nats
    vs = comparisons[(comparisons["comparison"] == "vs steering") & (comparisons["a"] == PPO)].iloc[0]
    assert vs["difference"] == pytest.approx(((seed0 + seed1) / 2 - np.array([2.0, 2.5, 1.5])).mean())


def test_the_round_runs_on_the_tiny_model_and_its_claims_reach_the_page(tmp_path, monkeypatch):
    """The whole round (base, prompting, steering, rank-one, best-of-n) on the tiny model: every point carries a
    capability value; the page's claims come from the round, paired, with n."""
    sys.path.insert(0, str(ROOT / "analyses"))
    from test_frontier import _analysis, _v2_rows  # the v2 points the page keeps for its v2 sections

    import frontier_v3_points as script
    from rlhf_interp.report import write_tables

    analysis = _analysis()
    out = tmp_path / "edit_vs_finetune"
    write_tables(out, {"points": analysis.tidy_points(pd.DataFrame(_v2_rows()))},
                 config={"budgets": [1.0, 2.0, 4.0], "reward": "char_count", "seed": 0, "collateral_budget": 2.0,
                         "cpu_seconds_total": 1.0})
    monkeypatch.setattr(script, "TRAJECTORY", [tmp_path / "absent_run"])
    script.main(["--base", "tiny-test", "--report-prompts", "6", "--selection-prompts", "3", "--samples", "2",
                 "--capability-texts", "4", "--budgets", "0.3,0.6", "--work-dir", str(tmp_path / "work"),
                 "--out", str(out), "--parts", "base,prompting,steering,rank_one,best_of_n"])
    points = pd.read_csv(out / "v3_points.csv")
    assert points["capability_nll_delta_mean"].notna().all() and (points["n_prompts"] == 6).all()
    at = pd.read_csv(out / "v3_at_budget.csv")
    assert set(at["method"]) >= {"steering", "rank-one edit", "best-of-n"}
    page = analysis.render(out).save()
    claims = {c["id"]: c for c in json.loads((page / "report.json").read_text())["claims"]}
    assert not any(k.startswith("most_reward_at_") for k in claims)  # the v2 headline is superseded
    reached = at[at["reward_mean"].notna()]
    for budget, g in reached.groupby("budget"):
        if len(g) >= 2:
            top = claims[f"v3_top_two_at_{budget:g}_nats".replace(".", "_")]
            assert top["verdict"] and top["n"]["prompts"] == 6 and top["n"]["samples_per_prompt"] == 2
    assert (page / "answer_v3.png").exists() and (page / "capability.png").exists()

    # part top_two: the top two edits at 0.3 nats sampled again (seed 1) up to 4 samples per prompt
    monkeypatch.setattr(script, "TOP_TWO_SAMPLES", {0.3: 4})
    args = ["--base", "tiny-test", "--report-prompts", "6", "--selection-prompts", "3", "--samples", "2",
            "--capability-texts", "4", "--budgets", "0.3,0.6", "--work-dir", str(tmp_path / "work"), "--out", str(out),
            "--parts", "top_two"]
    script.main(args)
    at = pd.read_csv(out / "v3_at_budget.csv")
    top = pd.read_csv(out / "v3_comparisons.csv").query("budget == 0.3 and comparison == 'top two'").iloc[0]
    edits = at[(at["budget"] == 0.3) & at["method"].isin([top["a"], top["b"]]) & at["key"].notna()]
    # the top two as they stand after the new samples (which can reorder them): every edit in them has 4 per prompt
    assert len(edits) >= 1 and (edits["samples_per_prompt"] == 4).all() and (edits["extra_seeds"] == 1).all()
    seqs = pd.read_csv(out / "v3_sequences.csv")
    for row in edits.itertuples():
        mine = seqs[seqs["key"] == row.key]
        assert sorted(mine["sample_seed"].unique()) == [0, 1] and len(mine) == 6 * 4
        assert row.reward_mean == pytest.approx(mine.groupby("prompt_idx")["reward"].mean().mean())
        assert row.kl_report == pytest.approx(mine.groupby("prompt_idx")["kl_exact"].mean().mean())
        own, extra = (mine[mine["sample_seed"] == s]["continuation"].tolist() for s in (0, 1))
        assert own != extra  # new draws, not the point's samples again
    if len(edits) == 2:  # both members edits: the pair rests on 4 samples per prompt, and the claim says so
        assert top["samples_per_prompt"] == 4
        claims = {c["id"]: c for c in json.loads((analysis.render(out).save() / "report.json").read_text())["claims"]}
        assert claims["v3_top_two_at_0_3_nats"]["n"]["samples_per_prompt"] == 4
    extra_files = sorted((tmp_path / "work" / "points" / "extra").glob("*.json"))
    assert extra_files and all(json.loads(p.read_text())["cpu_seconds"] > 0 for p in extra_files)
    mtimes = [p.stat().st_mtime_ns for p in extra_files]  # resumable: a done seed is not measured again
    for p in extra_files:
        row = json.loads(p.read_text())
        rnd = script_round(tmp_path / "work")
        rnd.measure_extra(row["key"], row["seed"], None)  # no model needed: it returns before sampling
    assert [p.stat().st_mtime_ns for p in extra_files] == mtimes


def script_round(work):
    """A `Round` on an existing work directory, enough to ask it for points it has (no model loaded)."""
    from rlhf_interp.frontier.new_methods import Setup
    from rlhf_interp.frontier.v3_round import Round

    return Round(Setup(None, [], []), work, [0.3])


def test_fluency_taken_from_the_reference_pass_is_the_base_models_nll(tiny):
    """measure_point reuses score_generation's base pass for fluency (a steering edit on the base model, scored
    against the base without it): equal to `continuation_nll` on the same samples."""
    from rlhf_interp import Steering, contrastive, load_prompts
    from rlhf_interp.frontier.new_methods import Setup, base_scored, measure_point
    from rlhf_interp.measure import sample
    from rlhf_interp.measure.capability import continuation_nll

    prompts = load_prompts("default", limit=3, seed=0)
    vec = contrastive(tiny, [("The cat sat. It slept.", "The cat sat and it slept and")])
    layer = int(tiny.cfg.n_layers) - 1
    edit = Steering(vec, [layer], 4.0)
    setup = Setup(tiny, prompts, prompts[:1], "char_count", 6, 0, 2)
    assert base_scored(setup, tiny, edit, None) and not base_scored(setup, tiny, None, reference=object())
    _, seqs, _ = measure_point(setup, tiny, edit, capability=False)
    gen = sample(tiny, Steering(vec, [layer], 4.0), prompts, max_new_tokens=6, seed=0, samples_per_prompt=2)
    direct = continuation_nll(tiny, gen)["fluency_nll"].to_numpy()
    assert seqs["fluency_nll"].to_numpy() == pytest.approx(direct, rel=1e-4)


def test_scoring_in_chunks_gives_the_same_numbers(tiny, monkeypatch):
    """score_generation splits a large sample into chunks (bounded memory): the same table as in one piece."""
    from rlhf_interp import Steering, contrastive, load_prompts
    from rlhf_interp.measure import sample, score_generation
    from rlhf_interp.measure import sequences

    prompts = load_prompts("default", limit=5, seed=1)
    edit = Steering(contrastive(tiny, [("A. B. C.", "A and B and")]), [int(tiny.cfg.n_layers) - 1], 3.0)
    gen = sample(tiny, edit, prompts, max_new_tokens=5, seed=0, samples_per_prompt=2)
    whole = score_generation(tiny, edit, gen)
    monkeypatch.setattr(sequences, "SCORE_CHUNK", 3)
    chunked = score_generation(tiny, edit, gen)
    pd.testing.assert_frame_equal(whole, chunked, rtol=1e-5)
