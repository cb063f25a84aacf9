"""kl.py against float64 references and the estimators against exact KL."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_interp.core.finite import all_finite
from rlhf_interp.core.kl import (AdaptiveKLController, entropy, js_divergence, kl_both_ways_and_entropy, kl_divergence,
                            kl_estimate, kl_estimate_importance_weighted, penalty_kl, sampling_logprobs)


def _reference_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(p_logits.double(), -1)
    q = torch.softmax(q_logits.double(), -1)
    return (p * (p.log() - q.log())).sum(-1)


def test_kl_js_entropy_match_float64():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, 11, generator=g), torch.randn(3, 5, 11, generator=g) * 2
    torch.testing.assert_close(kl_divergence(a, b).double(), _reference_kl(a, b), atol=1e-5, rtol=1e-5)
    pa, pb = torch.softmax(a.double(), -1), torch.softmax(b.double(), -1)
    m = (pa + pb) / 2
    js_ref = 0.5 * (pa * (pa / m).log()).sum(-1) + 0.5 * (pb * (pb / m).log()).sum(-1)
    torch.testing.assert_close(js_divergence(a, b).double(), js_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy(a).double(), -(pa * pa.log()).sum(-1), atol=1e-5, rtol=1e-5)
    assert kl_divergence(a, a).abs().max() == 0 and js_divergence(a, a).abs().max() == 0 and (js_divergence(a, b) <= math.log(2) + 1e-6).all()
    assert not torch.allclose(kl_divergence(a, b), kl_divergence(b, a))  # KL is not symmetric


@pytest.mark.parametrize("top_k", [None, 3])
def test_kl_both_ways_and_entropy_in_one_sweep_match_float64(top_k):
    """The rollout's fused statistics, with full-support distributions and with tokens excluded by top-k
    (probability 0: the slow, 0 * log 0 = 0 path, where KL(Q||P) is infinite)."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 6, 13, generator=g) * 3, torch.randn(4, 6, 13, generator=g)
    logp, logq = sampling_logprobs(a, 0.7, top_k=top_k), sampling_logprobs(b, 0.7)
    forward, reverse, ent = kl_both_ways_and_entropy(logp, logq)
    p, q = logp.double().exp(), logq.double().exp()
    lp = torch.where(p > 0, logp.double(), 0.0)
    torch.testing.assert_close(forward.double(), (p * (lp - torch.where(p > 0, logq.double(), 0.0))).sum(-1),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent.double(), -(p * lp).sum(-1), atol=1e-5, rtol=1e-5)
    if top_k is None:
        torch.testing.assert_close(reverse.double(), (q * (logq.double() - logp.double())).sum(-1), atol=1e-5, rtol=1e-5)
    else:
        assert torch.isinf(reverse).all()  # Q puts mass where P has none


def test_all_finite_sees_nan_and_both_infinities():
    x = torch.randn(3, 7, 50)
    assert all_finite(x) and all_finite(torch.empty(0))
    for bad in (float("nan"), float("inf"), float("-inf")):
        y = x.clone()
        y[1, 2, 3] = bad
        assert not all_finite(y), bad


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_estimators_within_three_standard_errors(estimator):
    g = torch.Generator().manual_seed(1)
    p_logits, q_logits = torch.randn(20, generator=g), torch.randn(20, generator=g) * 0.3
    exact = _reference_kl(p_logits, q_logits).item()
    logp, logq = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    x = torch.multinomial(logp.exp(), 200_000, replacement=True, generator=g)
    samples = kl_estimate(logp[x], logq[x], estimator).double()
    mean, se = samples.mean().item(), samples.std().item() / math.sqrt(len(samples))
    if estimator == "k2":  # biased: close when P and Q are close, not exactly unbiased
        assert abs(mean - exact) < 0.1 * exact + 3 * se
    else:
        assert abs(mean - exact) < 3 * se, (mean, exact, se)
    if estimator in ("k2", "k3"):
        assert (samples >= 0).all()


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_swapped_kl_estimators_by_importance_weights(estimator):
    g = torch.Generator().manual_seed(2)
    p_logits, q_logits = torch.randn(15, generator=g), torch.randn(15, generator=g) * 0.5
    exact_reverse = _reference_kl(q_logits, p_logits).item()
    logp, logq = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    x = torch.multinomial(logp.exp(), 400_000, replacement=True, generator=g)
    samples = kl_estimate_importance_weighted(logp[x], logq[x], estimator).double()
    se = samples.std().item() / math.sqrt(len(samples))
    assert abs(samples.mean().item() - exact_reverse) < 3 * se


def test_penalty_kl_exact_directions_and_errors():
    g = torch.Generator().manual_seed(3)
    pi, ref = torch.randn(2, 4, 9, generator=g), torch.randn(2, 4, 9, generator=g)
    lp, lr = torch.zeros(2, 4), torch.zeros(2, 4)
    torch.testing.assert_close(penalty_kl(lp, lr, estimator="exact", logits_policy=pi, logits_ref=ref), kl_divergence(pi, ref))
    torch.testing.assert_close(penalty_kl(lp, lr, direction="ref_pi", estimator="exact", logits_policy=pi,
                                          logits_ref=ref), kl_divergence(ref, pi))
    with pytest.raises(ValueError, match="k2"):
        penalty_kl(lp, lr, direction="ref_pi", estimator="k2")
    with pytest.raises(ValueError, match="direction"):
        penalty_kl(lp, lr, direction="sideways")
    with pytest.raises(ValueError, match="'forward' meant KL\\(pi\\|\\|ref\\)"):
        penalty_kl(lp, lr, direction="forward")
    with pytest.raises(ValueError, match="logits"):
        penalty_kl(lp, lr, estimator="exact")


def test_old_metric_names_and_recorded_values_are_mapped():
    from rlhf_interp.core.kl import upgrade_kl_name, upgrade_kl_record

    assert upgrade_kl_name("kl_forward_per_token") == "kl_pi_ref_per_token"
    assert upgrade_kl_name("kl_reverse_k3_per_token") == "kl_ref_pi_k3_per_token"
    assert upgrade_kl_name("kl_reverse_seq_k1") == "kl_ref_pi_seq_k1"
    assert upgrade_kl_name("reward_mean") == "reward_mean" and upgrade_kl_name("kl_coef") == "kl_coef"
    assert upgrade_kl_record({"kl_direction": "forward", "kl_forward_per_token": 0.1, "phase": 3}) == {
        "kl_direction": "pi_ref", "kl_pi_ref_per_token": 0.1, "phase": 3}


def test_adaptive_controller_moves_toward_target():
    ctl = AdaptiveKLController(coef=0.1, target=0.05, horizon=100)
    assert ctl.update(0.5, n_steps=10) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # error clipped at +0.2
    ctl2 = AdaptiveKLController(coef=0.1, target=0.05, horizon=100)
    assert ctl2.update(0.045, n_steps=10) == pytest.approx(0.1 * (1 - 0.1 * 0.1))
