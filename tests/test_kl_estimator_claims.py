"""The KL-estimator audit's claims are computed from its committed CSVs alone (its study directory is gone), every
one with n and a 95% interval; the 24-token k3-vs-k1 sequence-sum comparison reproduces issue 28's numbers and
states its verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlhf_interp.report.claims import check_claims
from rlhf_interp.report.kl_estimator_claims import (
    bin_claims,
    estimator_claims,
    sd_interval_from_summary,
    sequence_spread_claim,
)

CSV = Path(__file__).resolve().parents[1] / "reports" / "kl_estimators"


@pytest.fixture(scope="module")
def tables():
    return {name: pd.read_csv(CSV / f"{name}.csv") for name in ("binned", "sequence_spread", "sequence_spread_by_run")}


def test_sd_interval_covers_the_true_sd_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        x = rng.normal(0.0, 2.0, 30)
        low, high = sd_interval_from_summary(float(x.std(ddof=1)), 30)
        hits += low <= 2.0 <= high
    assert 0.93 <= hits / 2000 <= 0.97


def test_every_bin_of_every_estimator_has_bias_and_std_with_n_and_interval(tables):
    binned = tables["binned"]
    claims = check_claims(bin_claims(binned, min_n=30))
    kept = binned[binned["n"] >= 30]
    assert len(claims) == 2 * len(kept)
    by_id = {c.id: c for c in claims}
    row = kept[(kept["setting"] == "pi_ref|policy") & (kept["estimator"] == "k2") & (kept["kl_bin"] == "[1, 3)")].iloc[0]
    bias = by_id["bias_pi_ref_policy_k2_1000"]
    assert bias.value == pytest.approx(row["bias"]) and bias.n == {"tokens": int(row["n"])}
    half = bias.high - bias.value
    assert half == pytest.approx(1.9637 * row["bias_stderr"], rel=1e-3)  # t quantile, 629 df
    std = by_id["std_pi_ref_policy_k2_1000"]
    assert std.low < row["std"] < std.high and not std.headline


def test_issue_28s_sequence_sum_numbers_with_an_interval_and_a_verdict(tables):
    c = check_claims([sequence_spread_claim(tables["sequence_spread"], tables["sequence_spread_by_run"])])[0]
    assert round(c.params["k3_pooled"], 2) == 2.29 and round(c.params["k1_pooled"], 2) == 2.07
    by_run = tables["sequence_spread_by_run"]
    cells = by_run[(by_run["setting"] == "pi_ref|policy") & (by_run["length"] == 24)].pivot_table(
        index=["task", "penalty", "updates"], columns="estimator", values="sum_error_std")
    runs = (cells["k3"] - cells["k1"]).groupby(level=["task", "penalty"]).mean()
    assert c.value == pytest.approx(runs.mean()) and c.n == {"runs": 6, "checkpoints": 4, "sequences": 64}
    assert c.low < 0 < c.high and c.verdict.startswith("undecided")  # the excess rests on one run-checkpoint
    assert (c.params["worst_task"], c.params["worst_penalty"], c.params["worst_update"]) == ("suppress", "none", 20)


def test_the_page_headline_is_the_claims(tables):
    claims = check_claims(estimator_claims(tables["binned"], tables["sequence_spread"],
                                           tables["sequence_spread_by_run"]))
    assert [c.id for c in claims if c.headline] == ["k2_bias_at_large_kl", "k3_vs_k1_sequence_spread"]
    k2 = claims[0]
    assert k2.low > 0  # k2 is biased at large KL: E[k2] != KL
