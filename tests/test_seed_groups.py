"""Runs grouped by seed (rlhf_interp.measure.seed_groups), bands over seeds in the panels, and the PPO page's claims
over seeds (rlhf_interp.report.ppo_claims), on small synthetic run directories and metrics tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from rlhf_interp.measure.seed_groups import (
    check_group,
    group_label,
    group_runs,
    over_seeds,
    parse_group,
    seed_band,
    seed_ends,
)
from rlhf_interp.report.claims import check_claims

CONFIG = {"model": "tiny-test", "seed": 0, "phases": 4, "kl_coef": 1.0, "adaptive_kl": True, "kl_target": 0.2,
          "kl_estimator": "exact", "kl_placement": "loss", "checkpoint_every": 5, "log_every": 1}


def make_run(root, name, rewards, **settings):
    """A run directory as `rlhf-interp train` leaves it: config.yaml, metrics.jsonl (one line per phase)."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({**CONFIG, **settings}))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"phase": i + 1, "reward_mean": r}) + "\n"
                                             for i, r in enumerate(rewards)))
    return d


def test_runs_differing_only_in_seed_form_one_group(tmp_path):
    s = [make_run(tmp_path, f"ppo_s{i}", [1, 2], seed=i, checkpoint_every=5 + i) for i in range(3)]
    other = make_run(tmp_path, "ppo_t08", [1, 2], kl_target=0.08)
    groups = group_runs([s[0], other, s[1], s[2]])
    assert [g.label for g in groups] == ["ppo", "ppo_t08"]
    assert groups[0].runs == s and groups[0].seeds == [0, 1, 2]  # logging-only settings do not split a group
    assert groups[1].runs == [other] and groups[1].config["kl_target"] == 0.08 and "seed" not in groups[1].config


def test_labels_and_explicit_groups(tmp_path):
    assert group_label([tmp_path / "a_seed1", tmp_path / "a_seed2"]) == "a"
    assert group_label([tmp_path / "kl_direction_b5"]) == "kl_direction_b5"  # one run keeps its whole name
    assert group_label([tmp_path / "left_x", tmp_path / "left_y"]) == "left"
    a = make_run(tmp_path, "a", [1], seed=0)
    b = make_run(tmp_path, "b", [1], seed=1)
    c = make_run(tmp_path, "c", [1], seed=2, lr=1e-4)
    d = make_run(tmp_path, "d", [1], seed=1)
    label, dirs = parse_group(f"mine={a},{b}")
    group = check_group(label, dirs)
    assert group.label == "mine" and group.seeds == [0, 1]
    with pytest.raises(ValueError, match="differ in lr"):
        check_group("mixed", [a, c])
    with pytest.raises(ValueError, match="seeds .* repeat"):
        check_group("twice", [b, d])
    with pytest.raises(ValueError, match="LABEL=DIR"):
        parse_group("no-equals-sign")
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        group_runs([tmp_path / "nowhere"])


def test_seed_band_is_a_t_interval_over_seeds():
    frame = pd.DataFrame({"group": ["g"] * 7 + ["one"] * 2, "seed": [0, 1, 2, 0, 1, 2, 2, 0, 0],
                          "phase": [1, 1, 1, 2, 2, 2, 2, 1, 2],
                          "reward": [1.0, 2.0, 3.0, 4.0, 4.0, 3.0, 5.0, 7.0, 8.0]})
    band = seed_band(frame, "reward")
    assert list(zip(band["group"], band["phase"])) == [("g", 1), ("g", 2), ("one", 1), ("one", 2)]
    first = band.iloc[0]
    half = sps.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)  # values 1, 2, 3: sd 1
    assert first["mean"] == pytest.approx(2.0) and first["seeds"] == 3
    assert (first["low"], first["high"]) == pytest.approx((2 - half, 2 + half))
    assert band.iloc[1]["mean"] == pytest.approx(4.0)  # seed 2's two rows at phase 2 count once (mean 4)
    assert band.iloc[2]["seeds"] == 1 and math.isnan(band.iloc[2]["low"])  # one seed: no band


def test_seed_ends_and_interval_over_seeds():
    rows = [{"group": "g", "seed": s, "phase": p, "reward": s + p} for s in range(3) for p in range(1, 6)]
    ends = seed_ends(pd.DataFrame(rows), ["reward"], window=2)
    assert ends["reward_start"].tolist() == [1.0, 2.0, 3.0]
    assert ends["reward_end"].tolist() == [4.5, 5.5, 6.5]  # mean of phases 4 and 5
    assert (ends["end_from"].tolist(), ends["end_to"].tolist()) == ([4] * 3, [5] * 3)
    iv = over_seeds(ends["reward_end"])
    assert iv.value == pytest.approx(5.5) and iv.n == {"seeds": 3} and iv.method == "t over seeds"
    assert iv.half_width == pytest.approx(sps.t.ppf(0.975, 2) / np.sqrt(3))
    assert not np.isfinite(over_seeds([2.0]).high)  # one seed: no interval


def test_panel_band_is_drawn_in_both_renderings():
    from rlhf_interp.report.layout import caption_problems, legend_marks
    from rlhf_interp.report.panels import Line, Panel, to_matplotlib, to_plotly

    line = Line("g: mean of 3 seeds", [1, 2, 3], [0.01, 0.1, 1.0], "#1f77b4", band=([-0.1, 0.05, 0.5], [0.1, 0.2, 2]))
    panels = [Panel("KL", "phase", "nats", [line], log_y=True)]
    chart = to_plotly(panels)
    fills = [t for t in chart.data if t.fill == "toself"]
    assert len(fills) == 1 and fills[0].showlegend is False
    assert list(fills[0].x) == [2, 3, 3, 2]  # the non-positive low end is left out on a log axis
    assert list(legend_marks(chart)) == ["g: mean of 3 seeds"]  # the band is no legend entry of its own
    assert caption_problems("mean with its 95% band", chart) == []
    fig = to_matplotlib(panels)
    assert len(fig.axes[0].collections) >= 1  # fill_between


def test_ppo_claims_over_three_seeds_and_one_kept_seed():
    from rlhf_interp.report import ppo_claims as pc

    rng = np.random.default_rng(0)
    group, kept = "ppo (KL adaptive coef 1, target 0.2, exact in loss)", "old (KL adaptive coef 1, exact in loss)"
    rows = []
    for seed in range(3):
        for p in range(1, 13):
            rows.append({"group": group, "seed": seed, "run": f"ppo_s{seed}", "phase": p,
                         "reward_mean": 1 + 0.1 * p + rng.normal(0, 0.1), "kl_pi_ref_per_token": 0.005 * p,
                         "entropy": 3.5 - 0.01 * p, "kl_coef": 1 - 0.05 * p, "seconds": 30.0, "reward_std": 1.0})
    for p in range(1, 13):
        rows.append({"group": kept, "seed": np.nan, "run": kept, "phase": p, "reward_mean": 2.0 + 0.01 * (p % 3),
                     "kl_pi_ref_per_token": 0.08, "entropy": 3.4, "kl_coef": 0.5, "seconds": 40.0, "reward_std": 1.0})
    metrics = pd.DataFrame(rows)
    diversity = pd.DataFrame([{"group": r, "run": r2, "phase": p, "distinct_2": d}
                              for r, r2 in [(group, "ppo_s0"), (group, "ppo_s1"), (group, "ppo_s2"), (kept, kept)]
                              for p, d in [(1, 0.95), (10, 0.9)]])
    runs = pd.DataFrame([{"group": group, "run": f"ppo_s{s}", "seed": s, "adaptive_kl": "True", "kl_target": 0.2}
                         for s in range(3)] + [{"group": kept, "run": kept, "seed": np.nan}])
    claims = {c.id: c for c in check_claims(pc.ppo_claims(metrics, pd.DataFrame(), runs, diversity))}
    per_seed = metrics[metrics.group == group].groupby("run").apply(
        lambda g: g.sort_values("phase").tail(pc.END_WINDOW)["reward_mean"].mean())
    end = claims["reward_end"]
    assert end.value == pytest.approx(per_seed.mean()) and end.n["seeds"] == 3
    assert (end.high - end.low) / 2 == pytest.approx(sps.t.ppf(0.975, 2) * per_seed.std(ddof=1) / np.sqrt(3))
    assert claims["reward_gain"].verdict.endswith("decided at 95%") and claims["reward_gain"].headline
    assert claims["kl_end"].params["where"] == "below"  # 0.05 at the end against a target of 0.2
    assert claims["distinct_2_change"].value == pytest.approx(-0.05)
    assert claims["other0_reward"].n["seeds"] == 1 and not claims["other0_reward"].headline
    assert "seed-to-seed variation is not included" in claims["other0_reward"].note
    summary = pc.group_summary(pc.run_ends(metrics, diversity))
    row = summary[(summary.group == group) & (summary.quantity == "reward")].iloc[0]
    assert row["seeds"] == 3 and row["end"] == pytest.approx(per_seed.mean())
    assert summary[summary.group == kept]["end_low"].isna().all()
