"""Layers compared at equal KL (the steering sweep's headline): every layer read at exactly the budget on the report
prompts, the layer chosen on the selection prompts, paired differences and the per-prompt slope on layer, and the
whole round on the tiny model rendered into the page, resumed without re-measuring, and rebuilt from its CSVs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from rlhf_interp.frontier.layer_round import at_budget, budget_tables, chosen_layer, comparisons, per_prompt_slope

ROOT = Path(__file__).resolve().parent.parent


def _rows(key: str, reward, kl, fluency=3.0, entropy=2.0) -> pd.DataFrame:
    n = len(reward)
    return pd.DataFrame({"key": key, "prompt_idx": np.arange(n), "reward": reward, "kl_exact": kl,
                         "fluency_nll": fluency, "entropy_mean": entropy})


def _round():
    """Unsteered, layer 2 at KL 0.8 and 1.6 (coefficients 1 and 2), layer 8 at KL 1.2 and 2.4, four prompts."""
    per = pd.concat([_rows("base", [1.0, 1.0, 2.0, 0.0], [0.0] * 4),
                     _rows("layer2_1", [1.0, 2.0, 2.0, 1.0], [0.6, 1.0, 0.8, 0.8], fluency=3.2),
                     _rows("layer2_2", [2.0, 2.0, 3.0, 1.0], [1.2, 2.0, 1.6, 1.6], fluency=3.6),
                     _rows("layer8_1", [2.0, 3.0, 3.0, 2.0], [1.2] * 4, fluency=3.1),
                     _rows("layer8_2", [3.0, 3.0, 4.0, 3.0], [2.4] * 4, fluency=3.3)], ignore_index=True)
    choices = pd.DataFrame([
        {"key": "layer2_1", "layer": 2, "budget": 1.0, "strength": 1.0, "hit": True, "selection_kl": 1.1,
         "selection_reward": 1.9},
        {"key": "layer2_2", "layer": 2, "budget": 2.0, "strength": 2.0, "hit": True, "selection_kl": 2.1,
         "selection_reward": 2.0},
        {"key": "layer8_1", "layer": 8, "budget": 1.0, "strength": 1.0, "hit": True, "selection_kl": 0.95,
         "selection_reward": 1.5},
        {"key": "layer8_2", "layer": 8, "budget": 2.0, "strength": 2.0, "hit": False, "selection_kl": 2.6,
         "selection_reward": 9.0}])
    points = pd.DataFrame([{"key": k, "kl_exact_mean": float(per[per.key == k].kl_exact.mean()),
                            "entropy_mean": 2.0, "distinct_2": 0.9} for k in per["key"].unique()])
    return per, choices, points


def test_every_layer_is_read_at_exactly_the_budget_by_per_prompt_interpolation():
    per, choices, _ = _round()
    at1 = at_budget(per, choices, 1.0)
    # layer 2: between its points at mean KL 0.8 and 1.6, weight 0.25; layer 8: between unsteered (0) and 1.2
    assert at1[2][1] == at1[8][1] == "interpolated"
    assert at1[2][0]["kl_exact"].mean() == pytest.approx(1.0) and at1[8][0]["kl_exact"].mean() == pytest.approx(1.0)
    assert at1[2][0]["reward"].tolist() == pytest.approx([1.25, 2.0, 2.25, 1.0])
    assert at1[8][0]["reward"].tolist() == pytest.approx([1 + 1 / 1.2, 1 + 2 / 1.2, 2 + 1 / 1.2, 2 / 1.2 * 1.0])
    assert at1[2][0]["fluency_nll"].tolist() == pytest.approx([3.3] * 4)
    # layer 2 never reaches 2 nats on the report prompts: its 2-nat point as measured, no extrapolation
    at2 = at_budget(per, choices, 2.0)
    assert at2[2][1] == "measured" and at2[2][0]["kl_exact"].mean() == pytest.approx(1.6)
    assert at2[8][1] == "interpolated"


def test_the_layer_is_chosen_on_the_selection_prompts_among_those_that_reached_the_budget():
    _, choices, _ = _round()
    assert chosen_layer(choices, 1.0) == 2  # 1.9 > 1.5 on the selection prompts
    assert chosen_layer(choices, 2.0) == 2  # layer 8's 9.0 missed the budget
    assert chosen_layer(choices, 4.0) is None


def test_slope_recovers_a_planted_trend_and_differences_are_paired():
    rng = np.random.default_rng(0)
    layers = [2, 8, 14, 20]
    prompt = rng.normal(0, 2.0, 64)  # large prompt-to-prompt spread: only a paired test sees the trend
    reward = {layer: pd.Series(prompt + 0.05 * layer + rng.normal(0, 0.1, 64)) for layer in layers}
    exact = {layer: pd.Series(prompt + 0.05 * layer) for layer in layers}
    assert per_prompt_slope(exact).tolist() == pytest.approx([0.05] * 64)
    n = {"prompts": 64, "samples_per_prompt": 1, "seeds": 1}
    comps = comparisons({k: (pd.DataFrame({"reward": v}), "interpolated") for k, v in reward.items()}, 20, 1.0, n)
    slope = comps[comps.comparison == "slope per 10 layers"].iloc[0]
    assert slope.low > 0 and slope.low < 0.5 < slope.high  # 0.05 per layer = 0.5 per 10 layers, decided
    d = reward[20] - reward[2]
    row = comps[(comps.comparison == "best vs layer") & (comps.b == 2)].iloc[0]
    half = sps.t.ppf(0.975, 63) * d.std(ddof=1) / np.sqrt(64)
    assert row.difference == pytest.approx(d.mean()) and row.high - row.difference == pytest.approx(half)
    assert half < 0.1 * reward[20].std()  # the paired interval is far narrower than the spread over prompts
    last = comps[comps.comparison == "last vs first"].iloc[0]
    assert (last.a, last.b) == (20, 2) and last.difference == pytest.approx(d.mean())


def test_budget_tables_mark_the_chosen_layer_and_pair_with_unsteered():
    per, choices, points = _round()
    levels, comps = budget_tables(per, points, choices, [1.0, 2.0], samples=2)
    one = levels[levels.budget == 1.0].set_index("layer")
    assert one.loc[2, "chosen"] and not one.loc[8, "chosen"]
    assert one.loc[2, "gain_mean"] == pytest.approx(np.mean([0.25, 1.0, 0.25, 1.0]))
    assert one.loc[2, "fluency_change"] == pytest.approx(0.3)
    assert set(comps.comparison) == {"best vs layer", "last vs first", "slope per 10 layers"}


def test_the_round_runs_on_the_tiny_model_resumes_and_rebuilds_from_its_csvs(tmp_path, capsys):
    """Grid, then the equal-KL round on the tiny model: every layer bisected and measured, the headline is the
    equal-KL answer; a second call measures nothing new; the page rebuilds from its CSVs alone."""
    sys.path.insert(0, str(ROOT / "analyses"))
    import steering_sweep as script

    from rlhf_interp.report.rebuild import rebuild

    root, work = tmp_path / "reports", tmp_path / "work"
    script.main(["--model", "tiny-test", "--n-prompts", "6", "--max-new-tokens", "4", "--layers", "0,1",
                 "--coefs", "0,1,2", "--out-root", str(root)])
    ekl = ["--model", "tiny-test", "--max-new-tokens", "4", "--equal-kl", "--kl-layers", "0,1,7",
           "--budgets", "0.01,0.03", "--report-prompts", "6", "--selection-prompts", "4", "--work-dir", str(work),
           "--out-root", str(root)]
    script.main(ekl)
    out = root / "steering_sweep"
    choices = pd.read_csv(out / "equal_kl_choices.csv")
    assert sorted(choices.layer.unique()) == [0, 1] and len(choices) == 4  # layer 7 is beyond the tiny model
    levels = pd.read_csv(out / "equal_kl_levels.csv")
    interp = levels[levels.how == "interpolated"]
    assert len(interp) and np.allclose(interp.kl_report, interp.budget)
    assert (levels.groupby("budget").chosen.sum() == 1).all()
    manifest = json.loads((out / "report.json").read_text())
    assert manifest["claims"][0]["id"] == "equal_kl_chosen_layer_at_0_01_nats"
    assert {c["id"] for c in manifest["claims"] if c["headline"]} >= {"equal_kl_chosen_layer_at_0_01_nats",
                                                                     "equal_kl_slope_at_0_01_nats"}
    assert not any(c["headline"] for c in manifest["claims"] if c["id"] in ("kl_scaling", "later_layer_kl"))
    assert json.loads((out / "config.json").read_text())["equal_kl"]["layers"] == [0, 1]
    points = sorted((p.name, p.stat().st_mtime_ns) for p in work.glob("*/points/*.json"))
    capsys.readouterr()
    script.main(ekl)  # resumed: nothing measured again
    assert sorted((p.name, p.stat().st_mtime_ns) for p in work.glob("*/points/*.json")) == points
    assert "reward" not in capsys.readouterr().out
    copy = tmp_path / "copy" / "reports" / "steering_sweep"
    copy.mkdir(parents=True)
    for f in [*out.glob("*.csv"), out / "config.json", out / "report.json"]:
        shutil.copy(f, copy / f.name)
    shutil.copytree(ROOT / "analyses", tmp_path / "copy" / "analyses")
    rebuild(copy)
    assert (copy / "README.md").read_text() == (out / "README.md").read_text()
