"""The equal-KL frontier: rank-one edit, budget bisection, best-of-n KL, the Optuna search, Gao fits,
collateral KL, the frontier figure, the CLI and the report page."""

from __future__ import annotations

import json
import math
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rlhf_interp import Steering, contrastive, load_model, load_prompts, tokenize
from rlhf_interp.edits import EditError, suspended
from rlhf_interp.frontier import (
    EditFamily,
    RankOneEdit,
    analytic_kl,
    collateral_kl,
    edit_search,
    equal_kl,
    evaluate_best_of_n,
    expected_best,
    find_strength,
    fit_gao,
    frontier_figure,
    gao_curve,
    measured_kl,
    rank_one_edit,
    top_moved_tokens,
)
from rlhf_interp.frontier.best_of_n import unbiased_log_cdf
from rlhf_interp.edits.rank_one import key_statistics, output_matrix
from rlhf_interp.measure import evaluate_edit

from helpers import prompt_logits

PROMPTS = ["The old lighthouse keeper", "Once upon a time in a quiet village,", "Long ago, a young sailor",
           "The dragon lifted its head and"]
PAIRS = [("The sea was calm. The sky was grey. We sat.", "The sea was calm and the sky was grey and we sat"),
         ("I ran. I fell. I stood up.", "I ran and I fell and I stood up"),
         ("Stop. Look. Listen.", "Stop and look and listen"),
         ("It rained. Then it snowed.", "It rained and then it snowed")]


def crc_reward(texts: list[str]) -> list[float]:
    """A continuous reward of the text (no ties unless two texts are identical)."""
    return [zlib.crc32(t.encode()) / 2 ** 32 for t in texts]


@pytest.fixture(scope="module")
def model():
    """A private tiny model: the rank-one edit writes into its weights (and must put them back)."""
    return load_model("tiny-test", device="cpu")


_logits = partial(prompt_logits, prompts=PROMPTS)  # the file's prompts, BOS + left padding, no grad


# ----------------------------------------------------------------------------------------------
# Rank-one edit


def test_rank_one_changes_only_its_matrix_by_a_rank_one_update_and_maps_key_to_value(model):
    key, second, n_tokens = key_statistics(model, 1, PROMPTS)
    assert n_tokens > 10 and key.shape == (int(model.cfg.d_mlp),)
    value = torch.randn(int(model.cfg.d_model), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cov_inv_key = torch.linalg.solve(second + 1e-2 * torch.trace(second) / len(key) * torch.eye(len(key),
                                                                                              dtype=torch.float64), key)
    edit = RankOneEdit(1, key, value=value, cov_inv_key=cov_inv_key).on(model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    clean = _logits(model)
    with edit:
        weight = output_matrix(model, 1)
        changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
        assert len(changed) == 1 and before[changed[0]].shape == weight.shape  # only W_out of layer 1
        diff = (weight.detach() - before[changed[0]]).double()
        assert torch.linalg.matrix_rank(diff, rtol=1e-4).item() == 1
        # the key now maps to the value (float32 weights: relative error ~1e-6)
        mapped = weight.detach().double() @ key
        assert torch.allclose(mapped, value, rtol=1e-4, atol=1e-4 * float(value.norm()))
        # the update is ROME's closed form: D = (v - W k) (C^-1 k)^T / (k^T C^-1 k)
        expected = torch.outer(value - before[changed[0]].double() @ key, cov_inv_key) / float(key @ cov_inv_key)
        assert torch.allclose(diff, expected, atol=1e-5 * float(expected.abs().max()))
        assert not torch.allclose(_logits(model), clean)
        with suspended(model):  # while suspended the model computes the unedited function
            assert torch.allclose(_logits(model), clean, atol=1e-4)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())  # restored bit for bit
    assert torch.equal(_logits(model), clean)


def test_rank_one_restores_weights_when_the_body_raises(model):
    edit = rank_one_edit(model, 0, PROMPTS, strength=5.0, direction=torch.ones(int(model.cfg.d_model)))
    before = output_matrix(model, 0).detach().clone()
    with pytest.raises(RuntimeError, match="boom"):
        with edit:
            assert not torch.equal(output_matrix(model, 0), before)
            raise RuntimeError("boom")
    assert torch.equal(output_matrix(model, 0), before)


def test_rank_one_value_direction_raises_the_target_tokens(model):
    targets = [i for i in range(len(model.tokenizer)) if "." in model.tokenizer.decode([i])][:50]

    def target_logprob() -> float:
        logp = torch.log_softmax(_logits(model).float(), dim=-1)
        return float(torch.logsumexp(logp[..., targets], dim=-1).mean())

    base = target_logprob()
    edit = rank_one_edit(model, 1, PROMPTS, strength=2.0, target_tokens=targets)
    with edit:
        raised = target_logprob()
    with edit.with_strength(-2.0).on(model):
        lowered = target_logprob()
    assert raised > base > lowered


def test_rank_one_rejects_mismatched_sizes(model):
    with pytest.raises(EditError, match="hidden units"):
        RankOneEdit(0, torch.ones(3), value_shift=torch.ones(int(model.cfg.d_model))).on(model)
    with pytest.raises(EditError, match="exactly one"):
        RankOneEdit(0, torch.ones(3))


# ----------------------------------------------------------------------------------------------
# Equal-KL bisection


def test_find_strength_hits_budgets_and_reports_unreachable_ones():
    calls = []

    def kl_at(s: float) -> float:  # quadratic near 0, saturating at 3 nats
        calls.append(s)
        return 3.0 * (1 - math.exp(-0.4 * s * s))

    memo: dict[float, float] = {}
    for budget in (0.05, 0.5, 2.0):
        s, kl, hit = find_strength(kl_at, budget, memo=memo, start=1.0)
        assert hit and abs(kl - budget) <= 0.05 * budget and kl == kl_at(s)
    s, kl, hit = find_strength(kl_at, 5.0, memo=memo, start=1.0)
    assert not hit and kl < 3.0  # out of reach: says so instead of looping
    assert len(calls) < 40


def test_equal_kl_lands_within_5_percent_of_each_budget(model):
    vector = contrastive(model, PAIRS, reduce="mean")
    family = EditFamily("steer", lambda s: Steering(vector, [1], s), {"layer": 1}, start=100.0)
    budgets = [0.01, 0.03, 0.06]
    points, evaluations = equal_kl(model, family, PROMPTS, crc_reward, budgets, max_new_tokens=6, seed=0)
    assert list(points["budget"]) == budgets and points["hit"].all()
    assert ((points["kl_exact_mean"] - points["budget"]).abs() <= 0.05 * points["budget"]).all()
    assert len(evaluations) >= len(budgets)
    # the reported KL is what evaluate_edit measures at that strength
    again = evaluate_edit(model, Steering(vector, [1], float(points["strength"].iloc[1])), PROMPTS, crc_reward,
                          max_new_tokens=6, seed=0)
    assert again["kl_exact_mean"].iloc[0] == pytest.approx(points["kl_exact_mean"].iloc[1], rel=1e-5)


# ----------------------------------------------------------------------------------------------
# Best-of-n


def test_best_of_n_measured_kl_agrees_with_analytic_on_the_tiny_model(model):
    prompts = load_prompts(limit=16, seed=0)
    summary, per_prompt, pool = evaluate_best_of_n(model, prompts, crc_reward, [1, 2, 4, 8], pool_size=32,
                                                   max_new_tokens=4, seed=0, batch_size=256)
    assert pool["continuation"].nunique() == len(pool)  # a continuous reward: no ties
    assert summary.loc[summary["n"] == 1, "kl_mean"].iloc[0] == 0.0
    for row in summary[summary["n"] > 1].itertuples():
        assert row.kl_analytic == pytest.approx(math.log(row.n) - (row.n - 1) / row.n)
        assert row.kl_stderr > 0
        assert abs(row.kl_mean - row.kl_analytic) <= 2 * row.kl_stderr, row  # within 2 standard errors
    assert summary["reward_mean"].is_monotonic_increasing


def test_best_of_n_kl_with_ties_is_below_the_analytic_bound():
    """A 0/1 reward (P(1) = 0.3): the measured KL estimates the exact discrete KL, not log n - (n-1)/n."""
    rng = np.random.default_rng(0)
    n, p = 4, 0.3
    q = 1 - (1 - p) ** n
    exact = q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))
    values = [measured_kl((rng.random(64) < p).astype(float), n)[0] for _ in range(400)]
    assert abs(np.mean(values) - exact) < 3 * np.std(values) / math.sqrt(len(values)) + 0.02
    assert exact < analytic_kl(n) - 0.1


def test_log_cdf_estimate_is_unbiased():
    """Given F, the count of m reference draws above the point is Binomial(m, 1 - F): averaging the estimate over
    that distribution gives log F (up to the cut series' remainder), where the plug-in does not."""
    m = 30
    for f in (0.6, 0.9, 0.97):
        probs = [math.comb(m, a) * (1 - f) ** a * f ** (m - a) for a in range(m + 1)]
        mean = sum(p * unbiased_log_cdf(a, m) for a, p in enumerate(probs))
        plug_in = sum(p * math.log((m - a + 1) / (m + 1)) for a, p in enumerate(probs))
        assert mean == pytest.approx(math.log(f), abs=1e-3 + (1 - f) ** (m + 1) / (m + 1) / f)
        assert abs(plug_in - math.log(f)) > abs(mean - math.log(f))


def test_expected_best_is_the_mean_and_the_max_at_the_ends():
    r = [3.0, 1.0, 2.0, 5.0]
    assert expected_best(r, 1) == pytest.approx(np.mean(r))
    assert expected_best(r, 4) == pytest.approx(5.0)
    # n = 2 from 4: average over the 6 pairs of their max
    pairs = [max(a, b) for i, a in enumerate(r) for b in r[i + 1:]]
    assert expected_best(r, 2) == pytest.approx(np.mean(pairs))


# ----------------------------------------------------------------------------------------------
# Optuna search


def test_edit_search_is_seeded_and_reproducible(model):
    vector = contrastive(model, PAIRS, reduce="mean")
    kwargs = dict(coef_range=(10.0, 1000.0), n_trials=6, n_startup_trials=2, max_new_tokens=4)
    first = edit_search(model, vector, PROMPTS[:2], crc_reward, seed=7, **kwargs)
    second = edit_search(model, vector, PROMPTS[:2], crc_reward, seed=7, **kwargs)
    other = edit_search(model, vector, PROMPTS[:2], crc_reward, seed=8, **kwargs)
    cols = ["number", "layer", "coef", "positions", "reward_mean", "kl_mean", "pareto"]
    pd.testing.assert_frame_equal(first.trials[cols], second.trials[cols])
    assert not first.trials["coef"].equals(other.trials["coef"])
    front = first.pareto
    assert len(front) >= 1 and front["pareto"].all()
    # nothing on the front is dominated by another trial
    for row in front.itertuples():
        better = first.trials[(first.trials["reward_mean"] >= row.reward_mean) & (first.trials["kl_mean"] <= row.kl_mean)
                              & ((first.trials["reward_mean"] > row.reward_mean) | (first.trials["kl_mean"] < row.kl_mean))]
        assert better.empty


def test_edit_search_budget_makes_expensive_trials_infeasible(model):
    vector = contrastive(model, PAIRS, reduce="mean")
    result = edit_search(model, vector, PROMPTS[:2], crc_reward, coef_range=(10.0, 1000.0), n_trials=4,
                         n_startup_trials=4, max_new_tokens=4, kl_budget=0.0)
    assert not result.trials["feasible"].any() and result.cheapest(-1.0) is None


# ----------------------------------------------------------------------------------------------
# Gao fits, collateral, figure


def test_fit_gao_recovers_known_coefficients():
    kl = np.array([0.2, 0.5, 1.0, 2.0, 4.0, 8.0])
    for form, (alpha, beta) in (("bon", (1.5, 0.3)), ("rl", (0.8, 0.25))):
        gain = gao_curve(form, alpha, beta, kl)
        fit = fit_gao(kl, gain, form)
        assert fit["alpha"] == pytest.approx(alpha, abs=1e-9) and fit["beta"] == pytest.approx(beta, abs=1e-9)
        noisy = gain + np.random.default_rng(1).normal(0, 0.01, len(kl))
        fit = fit_gao(kl, noisy, form, stderr=np.full(len(kl), 0.01))
        assert abs(fit["alpha"] - alpha) < 4 * fit["alpha_stderr"] + 1e-3
    assert math.isnan(fit_gao([0.0, 1.0], [0.0, 1.0], "bon")["alpha"])


def test_collateral_kl_is_zero_without_a_change_and_positive_with_one(model):
    assert collateral_kl(model, None)["collateral_kl_mean"] == 0.0
    vector = contrastive(model, PAIRS, reduce="mean")
    edit = Steering(vector, [1], 500.0)
    moved = collateral_kl(model, edit)
    assert moved["collateral_kl_mean"] > 0 and moved["collateral_kl_max"] >= moved["collateral_kl_mean"]
    tokens = top_moved_tokens(model, Steering(vector, [1], 500.0), k=5)
    up, down = tokens[tokens["direction"] == "up"], tokens[tokens["direction"] == "down"]
    assert (up["delta_prob"] > 0).all() and (down["delta_prob"] < 0).all()
    assert up["delta_prob"].is_monotonic_decreasing and down["delta_prob"].is_monotonic_increasing


def test_frontier_figure_keeps_every_point_inside_the_axes():
    points = pd.DataFrame({
        "kind": ["base", "best-of-n", "best-of-n", "steering", "steering", "fine-tuning"],
        "method": ["base model", "best-of-n", "best-of-n", "steer", "steer", "PPO"],
        "layer": [np.nan, np.nan, np.nan, 3, 3, np.nan],
        "kl_exact_mean": [0.0, 0.0, 0.19, 0.002, 40.0, 1.3],
        "kl_exact_stderr": [0.0, 0.0, 0.02, 0.001, 9.0, 0.2],
        "reward_mean": [1.0, 1.0, 1.4, 1.01, 25.0, 2.0],
        "reward_stderr": [0.1, 0.1, 0.1, 0.1, 3.0, 0.2],
        "hit": [np.nan, np.nan, np.nan, True, False, np.nan],
    })
    fig = frontier_figure(points)
    ax = fig.axes[0]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert ax.get_xscale() == "log"
    drawn = [line.get_xydata() for line in ax.get_lines()  # markers, lines and error-bar caps (data coordinates)
             if len(line.get_xydata()) and line.get_transform() == ax.transData]
    xy = np.concatenate(drawn)
    assert len(xy) >= len(points)
    assert (xy[:, 0] >= x0).all() and (xy[:, 0] <= x1).all() and (xy[:, 1] >= y0).all() and (xy[:, 1] <= y1).all()
    assert x0 < 0.002 - 0.001 and x1 > 49.0 and y1 > 28.0  # error bars included


# ----------------------------------------------------------------------------------------------
# CLI and report


def test_cli_errors_are_clear(capsys, tmp_path):
    from rlhf_interp.cli import main

    assert main(["edit-search", "--model", "tiny-test", "--coefs", "1"]) == 2
    assert "--coefs takes LOW,HIGH" in capsys.readouterr().err
    assert main(["frontier", "checkpoints", "--model", "tiny-test", "--n-prompts", "2", "--max-new-tokens", "2",
                 "--out", str(tmp_path)]) == 2
    assert "needs at least one --run" in capsys.readouterr().err


def test_cli_frontier_best_of_n_writes_points(tmp_path):
    from rlhf_interp.cli import main

    out = tmp_path / "bon"
    assert main(["frontier", "best-of-n", "--model", "tiny-test", "--reward", "length", "--n", "1,2",
                 "--pool-size", "4", "--n-prompts", "3", "--max-new-tokens", "3", "--out", str(out)]) == 0
    points = pd.read_csv(out / "points.csv")
    assert list(points["kind"]) == ["base", "best-of-n", "best-of-n"]
    assert points["kl_analytic"].iloc[2] == pytest.approx(math.log(2) - 0.5)
    assert (out / "frontier.png").stat().st_size > 1000


def _analysis():
    from rlhf_interp.report.rebuild import load_analysis

    return load_analysis(Path(__file__).resolve().parent.parent / "analyses" / "frontier.py")


def _v2_rows() -> list[dict]:
    """A v2 frontier as the measuring code writes it: base, best-of-n, two steering layers, a PPO trajectory."""
    rows = [{"method": "base model", "kind": "base", "setting": "no change", "reward_mean": 1.0, "reward_stderr": 0.1}]
    for n, kl, r in ((1, 0.0, 1.0), (2, 0.19, 1.3), (4, 0.64, 1.6), (8, 1.2, 1.8), (16, 1.8, 2.0), (32, 2.5, 2.1)):
        rows.append({"method": "best-of-n", "kind": "best-of-n", "setting": f"n={n}", "n": n, "reward_mean": r,
                     "reward_stderr": 0.05, "kl_exact_mean": kl, "kl_exact_stderr": 0.02,
                     "kl_analytic": math.log(n) - (n - 1) / n})
    for layer, scale in ((4, 0.3), (20, 0.5)):
        for budget in (1.0, 2.0, 4.0):
            rows.append({"method": "steer: contrastive", "kind": "steering", "setting": f"layer {layer}",
                         "layer": layer, "budget": budget, "hit": True, "strength": budget,
                         "kl_exact_mean": budget * 1.01, "kl_exact_stderr": 0.1, "reward_mean": 1 + scale * budget,
                         "reward_stderr": 0.1, "collateral_kl_mean": 0.01 * budget, "collateral_kl_stderr": 0.001})
    for step, kl, r in ((10, 0.5, 1.5), (20, 1.5, 2.4), (30, 3.0, 3.0)):
        rows.append({"method": "PPO (all layers)", "kind": "fine-tuning", "setting": f"step {step}", "step": step,
                     "trajectory": True, "last": step == 30, "freeze_layers": 0, "lora_r": 0,
                     "wall_seconds": 10.0 * step, "kl_exact_mean": kl, "kl_exact_stderr": 0.1, "reward_mean": r,
                     "reward_stderr": 0.1})
    for row in rows:  # as the measuring code writes them: 16 prompts, one continuation each
        row["n_sequences"] = 16
    return rows


def test_report_renders_from_csvs_and_states_its_numbers(tmp_path):
    """The page is drawn from CSVs alone; the headline's numbers are the reward_at_budget table's."""
    from rlhf_interp.report import write_tables

    analysis = _analysis()
    points = analysis.tidy_points(pd.DataFrame(_v2_rows()))
    scan = pd.DataFrame({"vector": "contrastive", "layer": [0, 10, 20, 29], "budget": 2.0, "hit": True,
                         "strength": [0.1, 0.2, 0.3, 0.4], "reward_mean": [1.2, 1.5, 1.9, 2.2], "reward_stderr": 0.1,
                         "kl_exact_mean": 2.0, "n_sequences": 16})
    report_dir = tmp_path / "edit_vs_finetune"
    write_tables(report_dir, {"points": points, "layer_scan": scan,
                              "notes": pd.DataFrame({"part": ["finetune"], "note": ["run runs/x is absent; skipped"]})},
                 config={"budgets": [1.0, 2.0, 4.0], "reward": "char_count", "seed": 0, "collateral_budget": 2.0,
                         "cpu_seconds_total": 60.0})
    out = analysis.render(report_dir).save()
    page = (out / "index.html").read_text()
    table = pd.read_csv(out / "reward_at_budget.csv")
    at2 = table[(table["budget"] == 2.0) & (table["method"] != "base model")].dropna(subset=["reward_mean"])
    best = at2.loc[at2["reward_mean"].idxmax()]
    # The PPO trajectory is not interpolated between checkpoints (reward need not be monotone in KL), so at 2 nats
    # it has no value; best-of-n (interpolated in log n) edges out steering's 2.0.
    assert table[(table["budget"] == 2.0) & table["method"].str.startswith("PPO")]["reward_mean"].isna().all()
    assert best["method"] == "best-of-n" and best["reward_mean"] > 2.0
    claims = {c["id"]: c for c in json.loads((out / "report.json").read_text())["claims"]}
    claim = claims["most_reward_at_2_nats"]
    assert claim["value"] == pytest.approx(best["reward_mean"]) and claim["low"] < claim["value"] < claim["high"]
    assert claim["n"]["prompts"] == 16
    assert claim["sentence"] in (out / "README.md").read_text()
    assert claims["top_two_at_2_nats"]["verdict"]  # best-of-n vs steering: decided or bounded, never silent
    assert "run runs/x is absent" in page  # missing runs are said on the page
    fits = pd.read_csv(out / "fits.csv")
    assert set(fits["form"]) == {"bon", "rl"} and fits["alpha"].notna().all()
    # "Does a later layer cost less?" is a paired comparison of the scan's first and last layers, with a verdict.
    assert claims["later_layer"]["verdict"] and claims["later_layer"]["sentence"] in (out / "README.md").read_text()
    assert (out / "frontier.png").exists() and (out / "freezing.png").exists()
