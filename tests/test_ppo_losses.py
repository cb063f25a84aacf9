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
