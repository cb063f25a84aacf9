"""Every KL option PPO accepts estimates the gradient of the KL it names; the rest are refused.

Float64 tabular policies small enough to enumerate (one step over 6 tokens; three steps over 3 tokens),
the true gradient by autograd through the enumerated objective, the surrogate gradient through the very
functions the trainer calls (`rlhf_interp.ppo.kl_audit`). For the reward placement that is the policy
gradient PPO takes: the per-token penalty as reward, returns-to-go (GAE with lambda 1), a state-value
baseline, the clipped surrogate at ratio 1. For the loss placement it is the KL term, on-policy and
off-policy (theta != theta_old, as in PPO's later epochs and minibatches).
"""

from __future__ import annotations

import pytest
import torch

from rlhf_interp.kl import (LOG_RATIO_BOUND, check_kl_option, kl_loss_terms, kl_options, kl_reward_terms,
                            nearest_kl_option)
from rlhf_interp.ppo import PPOConfig, kl_audit, losses

N_SAMPLES = kl_audit.N_SAMPLES  # Monte-Carlo sequences per check (100,000)
ACCEPTED = [(d, e, p) for d, e, p, ok in kl_options() if ok]
REFUSED = [(d, e, p) for d, e, p, ok in kl_options() if not ok]
CASES = [(name, at, option) for name in kl_audit.PROBLEMS for option in ACCEPTED
         for at in ("on_policy", "off_policy") if not (at == "off_policy" and option[2] == "reward")]


def _problem(name: str, at: str) -> kl_audit.TabularProblem:
    return kl_audit.make_problem(**kl_audit.PROBLEMS[name], off_policy=kl_audit.OFF_POLICY if at == "off_policy" else 0.0)


@pytest.mark.parametrize("name,at,option", CASES, ids=["-".join((n, a, *o)) for n, a, o in CASES])
def test_accepted_option_estimates_the_named_gradient(name, at, option):
    result = kl_audit.check(_problem(name, at), *option, n_samples=N_SAMPLES)
    # Unbiased: the exact expectation over every sequence is the true gradient.
    assert result["expected_cosine"] > 1 - 1e-9 and result["expected_rel_error"] < 1e-6, result
    # And usable: the Monte-Carlo mean of N_SAMPLES sequences is close.
    assert result["mc_cosine"] >= 0.99 and result["mc_rel_error"] <= 0.05, result


@pytest.mark.parametrize("option", REFUSED, ids=["-".join(o) for o in REFUSED])
def test_refused_option_names_a_working_alternative(option):
    direction, estimator, placement = option
    alternative = nearest_kl_option(*option)
    assert alternative is not None and alternative in ACCEPTED
    with pytest.raises(ValueError, match=r"refused: .*Nearest working choice: kl_direction '{}', kl_estimator '{}', "
                                         r"kl_placement '{}'".format(*alternative)):
        PPOConfig(kl_direction=direction, kl_estimator=estimator, kl_placement=placement).validate()
    zeros = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="refused"):
        (kl_loss_terms(zeros, zeros, zeros, direction=direction, estimator=estimator) if placement == "loss"
         else kl_reward_terms(zeros, zeros, direction=direction, estimator=estimator))


def test_every_accepted_option_validates():
    for direction, estimator, placement in ACCEPTED:
        PPOConfig(kl_direction=direction, kl_estimator=estimator, kl_placement=placement).validate()
    assert len(ACCEPTED) + len(REFUSED) == 16


# --- what the audit found: the forms these surrogates replace, so the table in docs/kl.md stays honest


def _naive(name: str, option: tuple[str, str, str]) -> dict[str, float]:
    return kl_audit.check(_problem(name, "on_policy"), *option, n_samples=1000, naive=True)


def test_naive_forms_were_wrong():
    # k1 differentiated as a loss: E[grad log pi] = 0, no gradient at all.
    assert _naive("one_step", ("forward", "k1", "loss"))["expected_rel_error"] == pytest.approx(1.0, abs=1e-9)
    # the importance-weighted reverse k1 (w log w) differentiated as a loss: more than 2x too large.
    assert _naive("one_step", ("reverse", "k1", "loss"))["expected_rel_error"] > 1.0
    # reverse k1 as a plain reward pushes the policy away from the reference.
    assert _naive("multi_step", ("reverse", "k1", "reward"))["expected_cosine"] < -0.9
    # the exact KL as a plain reward has no local gradient: on one step, none at all.
    assert _naive("one_step", ("forward", "exact", "reward"))["expected_rel_error"] == pytest.approx(1.0, abs=1e-9)
    # forward k1 as a plain reward is the textbook penalty, and right: the surrogate leaves it unchanged.
    assert _naive("multi_step", ("forward", "k1", "reward"))["expected_rel_error"] < 1e-9


def test_unweighted_k3_in_the_loss_has_the_reverse_gradient():
    """Tang & Munos (2025): grad k3 = (1 - ref/pi) grad log pi, whose expectation is grad KL(ref||pi)."""
    problem = _problem("multi_step", "on_policy")
    seqs = kl_audit.all_sequences(problem.vocab, problem.horizon)
    probs = kl_audit.sequence_logprob(problem.theta_old, seqs, kl_audit.state_index(seqs, problem.vocab)).exp()
    naive_forward_k3 = kl_audit.surrogate_gradient(problem, "forward", "k3", "loss", seqs, probs, naive=True)
    torch.testing.assert_close(naive_forward_k3, kl_audit.true_gradient(problem, "reverse", "loss"))
    assert kl_audit.compare(naive_forward_k3, kl_audit.true_gradient(problem, "forward", "loss"))["rel_error"] > 0.1


def test_k1_in_the_loss_drifts_under_repeated_steps_where_k3_converges():
    """Why k1 is refused in the loss although its importance-weighted form is unbiased: PPO takes many steps
    on one batch, and with a vocabulary far larger than the batch, k1's per-token minimum (not at pi = ref)
    wins. 200 tokens, 16 samples, 40 SGD steps on the same samples."""
    table = kl_audit.drift_table(seeds=3)
    for direction, df in table.groupby("direction"):
        k1, k3 = (df[df.estimator == e].set_index("seed") for e in ("k1", "k3"))
        assert (k3.kl_after < k3.kl_before).all(), direction
        assert (k1.kl_after > k3.kl_after).all(), direction
        assert k1.kl_after.mean() > k1.kl_before.mean(), direction  # on average it moved away


# --- guards


def test_log_ratios_are_clamped_before_exp():
    logp = torch.tensor([[0.0, -200.0, -1e4]], dtype=torch.float32, requires_grad=True)
    old = torch.tensor([[-1e4, 0.0, 0.0]])
    ref = torch.tensor([[-1e4, -1e4, 0.0]])
    loss, _, _ = losses.policy_loss(logp, old, torch.ones(1, 3), torch.ones(1, 3), clip_range=0.2)
    assert torch.isfinite(loss)
    for direction, estimator, placement in ACCEPTED:
        if placement == "loss" and estimator != "exact":
            terms = kl_loss_terms(logp, old, ref, direction=direction, estimator=estimator)
            assert torch.isfinite(terms).all(), (direction, estimator)
            terms.sum().backward()
            assert torch.isfinite(logp.grad).all(), (direction, estimator)
            logp.grad = None
        if placement == "reward" and estimator != "exact":
            value, score = kl_reward_terms(logp.detach(), ref, direction=direction, estimator=estimator)
            assert torch.isfinite(value).all() and torch.isfinite(score).all(), (direction, estimator)
    assert LOG_RATIO_BOUND == 20.0  # docs/kl.md states this bound


def test_unknown_values_are_named():
    with pytest.raises(ValueError, match="kl_placement 'sideways'"):
        check_kl_option("forward", "k1", "sideways")
