"""Property tests (hypothesis) of the KL mathematics and of PPO's advantage estimation: identities that must
hold for every input, checked on random float64 distributions, rewards and values, not a few hand-picked ones.

KL and JS: KL >= 0, KL(P||P) = 0, JS symmetric and within [0, log 2]; the per-sample estimators' exact
expectations under P (enumerated) equal the exact KL they estimate; entropy within [0, log n].
GAE: lambda = 1 gives the discounted return minus the value baseline; lambda = 0 gives the one-step TD error;
nothing flows back from past a sequence's end.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_interp.core.kl import (LOG_RATIO_BOUND, entropy, js_divergence, js_divergence_probs, kl_divergence, kl_estimate,
                            kl_estimate_importance_weighted, kl_from_logprobs)
from rlhf_interp.ppo.losses import gae, whiten

settings.register_profile("rlhf_interp", max_examples=150, deadline=None)
settings.load_profile("rlhf_interp")

LOGIT = st.floats(-20, 20, allow_nan=False, width=64)


@st.composite
def logit_pairs(draw, max_vocab: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float64 logit vectors over the same vocabulary (2..max_vocab tokens)."""
    n = draw(st.integers(2, max_vocab))
    p = draw(st.lists(LOGIT, min_size=n, max_size=n))
    q = draw(st.lists(LOGIT, min_size=n, max_size=n))
    return torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64)


@given(logit_pairs())
def test_kl_is_nonnegative_both_ways(pair):
    p, q = pair
    assert kl_divergence(p, q).item() >= -1e-12
    assert kl_divergence(q, p).item() >= -1e-12


@given(logit_pairs())
def test_kl_of_a_distribution_with_itself_is_zero(pair):
    p, _ = pair
    assert abs(kl_divergence(p, p).item()) <= 1e-12
    shifted = p + 3.7  # softmax does not see a constant shift
    assert abs(kl_divergence(p, shifted).item()) <= 1e-9


@given(logit_pairs())
def test_js_is_symmetric_and_between_zero_and_log_two(pair):
    p, q = pair
    a, b = js_divergence(p, q).item(), js_divergence(q, p).item()
    assert abs(a - b) <= 1e-12
    assert -1e-12 <= a <= math.log(2) + 1e-12
    assert abs(js_divergence(p, p).item()) <= 1e-12
    probs_p, probs_q = p.softmax(-1), q.softmax(-1)
    c = js_divergence_probs(probs_p, probs_q, eps=0.0).item()
    if probs_p.min() > 0 and probs_q.min() > 0:  # the probability form needs no zero entries (eps=0)
        assert abs(c - a) <= 1e-9


@given(logit_pairs())
def test_js_is_at_most_half_of_each_kl_sum(pair):
    """JS(P,Q) <= (KL(P||Q) + KL(Q||P)) / 4 (convexity of KL in its second argument, applied to both halves)."""
    p, q = pair
    bound = (kl_divergence(p, q) + kl_divergence(q, p)).item() / 4
    assert js_divergence(p, q).item() <= bound + 1e-10


@given(logit_pairs())
def test_estimators_are_unbiased_under_p_enumerated(pair):
    """E_{x~P}[k1] = E_{x~P}[k3] = KL(P||Q); the importance-weighted reverse ones give KL(Q||P); k2, k3 >= 0."""
    p, q = pair
    logp, logq = torch.log_softmax(p, -1), torch.log_softmax(q, -1)
    probs = logp.exp()
    forward, reverse = kl_from_logprobs(logp, logq).item(), kl_from_logprobs(logq, logp).item()
    inside_clamp = (logq - logp).abs().max() < LOG_RATIO_BOUND  # k3 and the weighted forms clamp log-ratios
    for estimator in ("k1", "k3") if inside_clamp else ("k1",):
        expected = (probs * kl_estimate(logp, logq, estimator)).sum().item()
        assert abs(expected - forward) <= 1e-8 * max(1.0, forward), estimator
    for estimator in ("k2", "k3"):
        assert kl_estimate(logp, logq, estimator).min().item() >= -1e-12
    if inside_clamp:
        for estimator in ("k1", "k3"):
            expected = (probs * kl_estimate_importance_weighted(logp, logq, estimator)).sum().item()
            assert abs(expected - reverse) <= 1e-7 * max(1.0, reverse), estimator


@given(logit_pairs())
def test_entropy_is_between_zero_and_log_vocab(pair):
    p, _ = pair
    h = entropy(p).item()
    assert -1e-12 <= h <= math.log(p.numel()) + 1e-12


@st.composite
def episodes(draw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rewards, values and a mask of 1..4 sequences of 1..7 tokens, each ending where its mask ends."""
    batch, length = draw(st.integers(1, 4)), draw(st.integers(1, 7))
    value = st.floats(-5, 5, allow_nan=False, width=64)
    rewards = torch.tensor(draw(st.lists(st.lists(value, min_size=length, max_size=length), min_size=batch,
                                         max_size=batch)), dtype=torch.float64)
    values = torch.tensor(draw(st.lists(st.lists(value, min_size=length, max_size=length), min_size=batch,
                                        max_size=batch)), dtype=torch.float64)
    lengths = draw(st.lists(st.integers(1, length), min_size=batch, max_size=batch))
    mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).to(torch.float64)
    return rewards, values, mask


@given(episodes(), st.floats(0, 1, width=64))
def test_gae_with_lambda_one_is_the_discounted_return_minus_the_value(episode, gamma):
    rewards, values, mask = episode
    advantages, returns = gae(rewards, values, mask, gamma, 1.0)
    for b in range(rewards.shape[0]):
        n = int(mask[b].sum())
        for t in range(n):
            discounted = sum(gamma ** (k - t) * rewards[b, k].item() for k in range(t, n))
            assert abs(advantages[b, t].item() - (discounted - values[b, t].item())) <= 1e-9
            assert abs(returns[b, t].item() - discounted) <= 1e-9
        assert not advantages[b, n:].any() and not returns[b, n:].any()  # nothing past the end


@given(episodes(), st.floats(0, 1, width=64))
def test_gae_with_lambda_zero_is_the_one_step_td_error(episode, gamma):
    rewards, values, mask = episode
    advantages, _ = gae(rewards, values, mask, gamma, 0.0)
    for b in range(rewards.shape[0]):
        n = int(mask[b].sum())
        for t in range(n):
            next_value = values[b, t + 1].item() if t + 1 < n else 0.0  # episodic: no bootstrap after the end
            delta = rewards[b, t].item() + gamma * next_value - values[b, t].item()
            assert abs(advantages[b, t].item() - delta) <= 1e-9


@given(episodes())
def test_whitened_advantages_have_zero_mean_and_unit_variance_on_real_tokens(episode):
    rewards, _, mask = episode
    real = rewards[mask.bool()]
    if real.numel() < 2 or real.var(unbiased=False) < 1e-3:
        return  # a constant batch has no scale to normalise
    out = whiten(rewards, mask)[mask.bool()]
    assert abs(out.mean().item()) <= 1e-9
    assert abs(out.var(unbiased=False).item() - 1) <= 1e-4
