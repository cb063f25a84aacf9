from __future__ import annotations

import pytest
import torch

from rlhf_interp.ppo import losses


def test_gae_hand_computed():
    # Two tokens then padding; gamma 0.9, lambda 0.5.
    rewards = torch.tensor([[0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 9.0]])  # the masked value must not leak in
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    adv, ret = losses.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    delta1 = 1.0 + 0.9 * 0.0 - 0.2
    delta0 = 0.0 + 0.9 * 0.2 - 0.5
    a1 = delta1
    a0 = delta0 + 0.9 * 0.5 * a1
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + 0.5, a1 + 0.2, 0.0]]))


def test_gae_lambda_one_is_return_minus_baseline():
    rewards = torch.tensor([[0.1, -0.2, 2.0]])
    values = torch.tensor([[0.3, 0.4, 0.5]])
    mask = torch.ones(1, 3)
    adv, _ = losses.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    returns = torch.tensor([[1.9, 1.8, 2.0]])
    torch.testing.assert_close(adv, returns - values)


def test_per_token_rewards_put_score_on_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.1, 0.1, 0.1]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    r = losses.per_token_rewards(torch.tensor([5.0, 7.0]), kl, mask, kl_coef=0.5)
    torch.testing.assert_close(r, torch.tensor([[-0.05, 5.0 - 0.1, 0.0], [-0.05, -0.05, 7.0 - 0.05]]))


def test_policy_loss_clips():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.5]]))
    adv = torch.tensor([[1.0, 1.0]])
    loss, clip_fraction, _ = losses.policy_loss(new, old, adv, torch.ones(1, 2), clip_range=0.2)
    # min(1.5, 1.2) = 1.2 and min(0.5, 0.8) = 0.5
    assert loss.item() == pytest.approx(-(1.2 + 0.5) / 2)
    assert clip_fraction.item() == 1.0


def test_whiten_and_explained_variance():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = losses.whiten(x, mask)
    assert w[0, 3] == 0 and abs(w[0, :3].mean().item()) < 1e-6
    returns = torch.tensor([[1.0, 2.0, 3.0]])
    assert losses.explained_variance(returns, returns, torch.ones(1, 3)) == pytest.approx(1.0)
    assert losses.explained_variance(torch.full((1, 3), 2.0), returns, torch.ones(1, 3)) == pytest.approx(0.0, abs=1e-6)


def test_value_loss_and_its_clipping_hand_computed():
    values = torch.tensor([[1.0, 0.0, 0.5, 9.0]])
    old = torch.tensor([[0.5, 0.5, 0.5, 0.0]])
    returns = torch.tensor([[0.0, 1.0, 0.6, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last entry is padding: ignored
    # token 0: V moved +0.5 > eps 0.2 -> clipped V = 0.7; max((1-0)^2, (0.7-0)^2) = 1.0
    # token 1: V moved -0.5 -> clipped V = 0.3; max((0-1)^2, (0.3-1)^2) = 1.0
    # token 2: inside the range -> (0.5-0.6)^2 = 0.01 both ways
    clipped = losses.value_loss(values, old, returns, mask, clip_range=0.2)
    assert clipped.item() == pytest.approx(0.5 * (1.0 + 1.0 + 0.01) / 3)
    # Where clipping binds: V moved toward the return and past the range -> the clipped error counts.
    toward = losses.value_loss(torch.tensor([[0.9]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.ones(1, 1), 0.2)
    assert toward.item() == pytest.approx(0.5 * max((0.9 - 1) ** 2, (0.2 - 1) ** 2))
    unclipped = losses.value_loss(values, old, returns, mask, clip_range=0.0)
    assert unclipped.item() == pytest.approx(0.5 * (1.0 + 1.0 + 0.01) / 3)
    assert losses.value_loss(torch.tensor([[0.9]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.ones(1, 1),
                             0.0).item() == pytest.approx(0.5 * 0.01)


def test_penalised_advantages_credit_value_to_earlier_tokens_and_score_to_the_token_itself():
    value = torch.tensor([[0.1, 0.2, 0.4]])
    score = torch.tensor([[1.0, -1.0, 0.5]])
    mask = torch.ones(1, 3)
    baseline = torch.zeros(1, 3)
    adv, ret = losses.penalised_advantages(torch.tensor([2.0]), value, score, baseline, mask, kl_coef=0.5, gamma=1.0,
                                           lam=1.0)
    # returns: the reward stream only (score 2 at the end, -0.5 * value per token)
    torch.testing.assert_close(ret, torch.tensor([[2.0 - 0.5 * 0.7, 2.0 - 0.5 * 0.6, 2.0 - 0.5 * 0.4]]))
    # each token's own KL coefficient is the score, later tokens' values are credited to it
    torch.testing.assert_close(adv, torch.tensor([[2.0 - 0.5 * (1.0 + 0.6), 2.0 - 0.5 * (-1.0 + 0.4), 2.0 - 0.5 * 0.5]]))
    # score == value (forward k1): the textbook per_token_rewards + GAE, unchanged
    same, _ = losses.penalised_advantages(torch.tensor([2.0]), value, value, baseline, mask, 0.5, 1.0, 0.9)
    textbook, _ = losses.gae(losses.per_token_rewards(torch.tensor([2.0]), value, mask, 0.5), baseline, mask, 1.0, 0.9)
    assert torch.equal(same, textbook)


def test_running_std_of_a_constant_reward_is_one_not_zero():
    stats = losses.RunningStd()
    stats.update(torch.zeros(8))
    assert stats.std == 1.0  # dividing the scores by it must not give NaN
    stats.update(torch.tensor([1.0, 3.0]))
    assert stats.std == pytest.approx(torch.tensor([0.0] * 8 + [1.0, 3.0]).std().item())
