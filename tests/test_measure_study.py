"""The KL-direction study's measurements (rlhf_interp.measure): behaviour rates and token-id diversity, teacher-forced scores,
coverage of the reference, and the k1/k2/k3 estimator audit against exact KLs on an enumerable case."""

from __future__ import annotations

import math
import sys

import pandas as pd
import pytest
import torch

from rlhf_interp.bridge import bridge_from_hf, build_tiny_model, load_tokenizer
from rlhf_interp.core.kl import entropy, kl_divergence
from rlhf_interp.measure.behaviour import (
    Behaviour,
    behaviour_rates,
    chunked_distinct,
    collapse_onset,
    pattern_count,
    token_distinct,
)
from rlhf_interp.measure.coverage import (
    ReferenceSamples,
    coverage_summary,
    draw_reference_samples,
    measure_coverage,
)
from rlhf_interp.measure.kl_estimator_audit import (
    binned_audit,
    estimates,
    overall_audit,
    sequence_sums,
)
from rlhf_interp.measure.token_scores import forward_of, score_tokens
from rlhf_interp.reward import get_reward, score

PROMPTS = ["The old lighthouse keeper", "Hi", "Once upon a time in a quiet village,"]


@pytest.fixture(scope="module")
def other():
    """A policy far from `tiny`: other random weights, unembedding x 20 (sharp where `tiny` is near uniform)."""
    hf = build_tiny_model(seed=1)
    with torch.no_grad():
        hf.lm_head.weight.mul_(20.0)
    return bridge_from_hf(hf, load_tokenizer(), name="tiny-sharp")


@pytest.fixture(scope="module")
def refs(tiny):
    return draw_reference_samples(tiny, PROMPTS, n_per_prompt=4, max_new_tokens=6, seed=0)


# ----------------------------------------------------------------------------------------------
# behaviour and diversity


def test_behaviour_counts_rates_and_absence_reward():
    texts = ["Hello, world.\nBye", "no mark here", "A, b, c", "\n\n"]
    comma = Behaviour("comma", ",")
    assert comma.counts(texts).tolist() == [1.0, 0.0, 2.0, 0.0]
    assert comma.rate(texts) == 0.5
    assert pattern_count(texts, r"\n").tolist() == [1.0, 0.0, 0.0, 2.0]
    word_i = Behaviour("I", r"\bI\b")
    assert word_i.present(["I am", "It is", "so I said", "Iris"]).tolist() == [True, False, True, False]
    rates = behaviour_rates(texts, [comma, Behaviour("newline", r"\n")]).set_index("behaviour")
    assert rates.loc["newline", "rate"] == 0.5 and rates.loc["comma", "mean_count"] == 0.75
    # The reward the suppression task trains on, through the same path the trainer uses.
    cfg = comma.reward_config()
    reward = get_reward(cfg["reward"], **cfg["reward_kwargs"])
    assert (score(reward, texts) * cfg["reward_scale"]).tolist() == [-1.0, 0.0, -2.0, 0.0]
    with pytest.raises(ValueError, match="not a valid regular expression"):
        Behaviour("bad", "(")


def test_token_id_distinct_n_and_collapse_onset():
    tokens = torch.tensor([[9, 5, 6, 5, 6], [9, 5, 6, 7, 2]])
    mask = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 1, 1, 1]])  # column 0 is not generated
    d = token_distinct(tokens, mask, exclude=[2])
    # ids: [5,6,5,6] and [5,6,7]: unigrams 3 distinct / 7; bigrams (5,6),(6,5),(5,6),(5,6),(6,7): 3 / 5
    assert d["distinct_1"] == pytest.approx(3 / 7) and d["distinct_2"] == pytest.approx(3 / 5)
    assert d["distinct_3"] == pytest.approx(3 / 3)  # (5,6,5), (6,5,6), (5,6,7)
    halves = chunked_distinct(tokens, mask, chunk=1, exclude=[2])
    assert halves["distinct_1"] == pytest.approx((2 / 4 + 3 / 3) / 2)
    assert collapse_onset([1, 2, 3, 4], [0.9, 0.5, 0.3, 0.2], base=0.8) == 3
    assert collapse_onset([1, 2], [0.9, 0.8], base=0.8) is None


# ----------------------------------------------------------------------------------------------
# teacher-forced scores


def test_score_tokens_matches_unpadded_single_rows(tiny, other, refs):
    gen = refs.samples
    scores = score_tokens(forward_of(other), gen.tokens, gen.attention_mask, gen.generated_mask, gen.prompt_len,
                          reference=forward_of(tiny), batch_size=5)
    assert scores.mask.shape == (12, 6) and bool(scores.mask.all())
    for row in (0, 5, 11):  # prompts of different lengths: left padding must not change anything
        real = gen.attention_mask[row].bool()
        ids = gen.tokens[row][real][None]
        with torch.no_grad():
            lp = torch.log_softmax(other(ids).double(), -1)[0, -7:-1]
            lq = torch.log_softmax(tiny(ids).double(), -1)[0, -7:-1]
        new = ids[0, -6:]
        assert torch.allclose(scores.logp[row].double(), lp.gather(-1, new[:, None]).squeeze(-1), atol=2e-4)
        assert torch.allclose(scores.logp_ref[row].double(), lq.gather(-1, new[:, None]).squeeze(-1), atol=2e-4)
        assert torch.allclose(scores.kl_pi_ref[row].double(), kl_divergence(lp, lq), atol=2e-4)
        assert torch.allclose(scores.kl_ref_pi[row].double(), kl_divergence(lq, lp), atol=2e-4)
        assert torch.allclose(scores.entropy[row].double(), entropy(lp), atol=2e-4)
    frame = scores.to_frame(run="x")
    assert len(frame) == 72 and set(frame.columns) >= {"row", "pos", "logp", "logp_ref", "kl_pi_ref", "run"}
    assert scores.per_token("kl_pi_ref") == pytest.approx(float(scores.kl_pi_ref.mean()), rel=1e-5)


# ----------------------------------------------------------------------------------------------
# coverage


def test_coverage_of_a_model_against_itself_loses_nothing(tiny, refs, tmp_path):
    table, tokens = measure_coverage(forward_of(tiny), refs, reference=forward_of(tiny))
    assert list(table["kind"].value_counts().sort_index()) == [3, 12]  # 3 greedy, 12 samples
    assert table["delta"].abs().max() < 1e-4
    summary = coverage_summary(table)
    assert summary["lost_10x"] == 0.0 and summary["lost_100x"] == 0.0
    assert abs(summary["kl_ref_pi_seq_k1"]) < 1e-4 and abs(summary["kl_ref_pi_seq_exact"]) < 1e-5
    assert abs(summary["greedy_delta"]) < 1e-4
    # The greedy continuation is the reference's argmax path: each of its tokens beats any sampled one on average.
    assert summary["greedy_logprob_ref"] / 6 > table.loc[table.kind == "sample", "logprob_ref"].mean() / 6
    # Saved and loaded samples give the same table.
    path = refs.save(tmp_path / "refs.pt")
    again, _ = measure_coverage(forward_of(tiny), ReferenceSamples.load(path))
    pd.testing.assert_series_equal(again["logprob_policy"], table["logprob_policy"])
    assert tokens.mask.shape == (12, 6)


def test_coverage_of_a_different_model_loses_modes_and_estimates_kl_ref_pi(tiny, other, refs):
    table, _ = measure_coverage(forward_of(other), refs, reference=forward_of(tiny))
    summary = coverage_summary(table)
    samples = table[table.kind == "sample"]
    # The near-uniform reference's samples are mostly tokens the sharp policy all but rules out: modes lost.
    assert summary["lost_1000x"] > 0.9 and summary["delta_median"] < -math.log(1000)
    assert summary["kl_ref_pi_seq_k1"] > 10.0
    # -mean(delta) and the exact per-state sum both estimate the sequence-level KL(ref || pi).
    assert summary["kl_ref_pi_seq_exact"] == pytest.approx(summary["kl_ref_pi_seq_k1"], rel=0.15)
    assert (samples["logprob_ref"] <= 0).all() and (samples["n_tokens"] == 6).all()


# ----------------------------------------------------------------------------------------------
# estimator audit on an enumerable case


def _categorical_tokens(p_logits: torch.Tensor, q_logits: torch.Tensor, n: int, seed: int) -> pd.DataFrame:
    """Tokens sampled from softmax(p_logits) with their exact KLs: one state, ``n`` samples, as if scored."""
    logp, logq = torch.log_softmax(p_logits.double(), -1), torch.log_softmax(q_logits.double(), -1)
    x = torch.multinomial(logp.exp(), n, replacement=True, generator=torch.Generator().manual_seed(seed))
    return pd.DataFrame({"row": torch.arange(n).numpy() // 8, "pos": torch.arange(n).numpy() % 8,
                         "logp": logp[x].numpy(), "logp_ref": logq[x].numpy(),
                         "kl_pi_ref": float(kl_divergence(logp, logq)), "kl_ref_pi": float(kl_divergence(logq, logp))})


def test_estimators_agree_with_exact_expectations_on_a_categorical():
    g = torch.Generator().manual_seed(0)
    pi, ref = torch.randn(12, generator=g), torch.randn(12, generator=g)
    logp, logq = torch.log_softmax(pi.double(), -1), torch.log_softmax(ref.double(), -1)
    kl_f, kl_r = float(kl_divergence(logp, logq)), float(kl_divergence(logq, logp))
    n = 40_000
    long = estimates(_categorical_tokens(pi, ref, n, seed=1), "policy")
    audit = overall_audit(long).set_index(["setting", "estimator"])
    # Unbiased: KL(pi||ref) k1, k3 and the importance-weighted KL(ref||pi) k1, k3, within 4 standard errors.
    for setting, name, truth in [("pi_ref|policy", "k1", kl_f), ("pi_ref|policy", "k3", kl_f),
                                 ("ref_pi|policy-iw", "k1", kl_r), ("ref_pi|policy-iw", "k3", kl_r)]:
        row = audit.loc[(setting, name)]
        assert row["exact_mean"] == pytest.approx(truth)
        assert abs(row["estimate_mean"] - truth) < 4 * row["bias_stderr"], (setting, name)
    # k2 is biased: its expectation is E_pi[(log r)^2] / 2, computed exactly over the 12 outcomes.
    k2_truth = float((logp.exp() * 0.5 * (logq - logp) ** 2).sum())
    k2 = audit.loc[("pi_ref|policy", "k2")]
    assert abs(k2["estimate_mean"] - k2_truth) < 4 * k2["bias_stderr"]
    assert abs(k2["bias"]) > 4 * k2["bias_stderr"]  # and that differs from the KL
    # Only k1 goes negative; k3's spread is below k1's at this distance (Schulman's table).
    assert audit.loc[("pi_ref|policy", "k1"), "share_negative"] > 0.1
    assert audit.loc[("pi_ref|policy", "k2"), "share_negative"] == 0
    assert audit.loc[("pi_ref|policy", "k3"), "share_negative"] == 0
    # Tokens sampled from the reference estimate KL(ref||pi) with the roles swapped.
    back = overall_audit(estimates(_categorical_tokens(ref, pi, n, seed=2).rename(
        columns={"logp": "logp_ref", "logp_ref": "logp", "kl_pi_ref": "kl_ref_pi", "kl_ref_pi": "kl_pi_ref"}),
        "reference")).set_index(["setting", "estimator"])
    row = back.loc[("ref_pi|reference", "k1")]
    assert row["exact_mean"] == pytest.approx(kl_r) and abs(row["estimate_mean"] - kl_r) < 4 * row["bias_stderr"]


def test_binned_audit_separates_states_and_sequence_spread_grows_with_length():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(10, generator=g)
    near = _categorical_tokens(base + 0.05 * torch.randn(10, generator=g), base, 4000, seed=4)
    far = _categorical_tokens(base + 1.5 * torch.randn(10, generator=g), base, 4000, seed=5)
    far["row"] += near["row"].max() + 1
    long = estimates(pd.concat([near, far], ignore_index=True), "policy")
    binned = binned_audit(long).query("setting == 'pi_ref|policy' and estimator == 'k1'")
    assert len(binned) == 2 and binned["n"].tolist() == [4000, 4000]
    low, high = binned.sort_values("bin_lo")["exact_mean"].tolist()
    assert low < 0.01 and high > 0.1
    # Relative noise of k1 is largest where the true KL is smallest.
    assert binned.sort_values("bin_lo")["rel_std"].iloc[0] > binned.sort_values("bin_lo")["rel_std"].iloc[1]
    sums = sequence_sums(long[long["row"] < 500], lengths=[2, 8]).set_index(["setting", "estimator", "length"])
    k1_2, k1_8 = sums.loc[("pi_ref|policy", "k1", 2)], sums.loc[("pi_ref|policy", "k1", 8)]
    # Independent tokens: the spread of the sum grows like sqrt(length), i.e. about 2x from 2 to 8 tokens.
    assert 1.6 < k1_8["sum_error_std"] / k1_2["sum_error_std"] < 2.5
    assert k1_8["exact_sum_mean"] == pytest.approx(4 * k1_2["exact_sum_mean"])
    assert sums.loc[("pi_ref|policy", "k3", 8), "share_negative_sum"] == 0.0
    # A length past the longest sequence is capped to it: one row, not copies of the whole-sequence sum.
    longest = int(long["pos"].max()) + 1
    capped = sequence_sums(long[long["row"] < 50], lengths=[2, longest, 10 * longest])
    assert sorted(capped["length"].unique()) == [2, longest]


# ----------------------------------------------------------------------------------------------
# matching runs at equal KL / reward


def test_runs_are_read_at_the_first_crossing_of_a_common_level():
    from rlhf_interp.measure.matched_runs import at_level, common_level, matched, seed_spread

    a = pd.DataFrame({"run": "a", "phase": [1, 2, 3, 4], "kl": [0.0, 0.1, 0.3, 0.2], "reward": [1.0, 2.0, 4.0, 9.0]})
    b = pd.DataFrame({"run": "b", "phase": [1, 2, 3], "kl": [0.0, 0.05, 0.25], "reward": [1.0, 1.0, 3.0]})
    point = at_level(a, "kl", 0.2, ["reward", "phase"])
    assert point["reward"] == pytest.approx(3.0) and point["phase"] == pytest.approx(2.5) and point["reached"] == 1
    assert at_level(a, "kl", 0.0, ["reward"])["reward"] == 1.0
    assert math.isnan(at_level(b, "kl", 0.3, ["reward"])["reward"])
    both = pd.concat([a, b])
    level = common_level(both, ["run"], "kl", fraction=0.8)
    assert level == pytest.approx(0.2)  # 0.8 x the smaller peak, 0.25
    table = matched(both, ["run"], "kl", level, ["reward"], order="phase").set_index("run")
    assert table.loc["b", "reward"] == pytest.approx(1.0 + (0.2 - 0.05) / 0.2 * 2.0)
    spread = seed_spread(table.reset_index().assign(task="t"), ["task"], ["reward"]).iloc[0]
    assert spread["n"] == 2 and spread["min"] == pytest.approx(2.5) and spread["max"] == pytest.approx(3.0)
