"""RLOO, REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024): ``group_size`` samples per prompt,
each one's baseline the mean return of the *other* samples of its prompt. No value head.

advantages: the KL-penalised return of a sequence ``R_i = score_i - beta sum_t v_t`` minus the mean of the other
``k - 1`` returns of its group, the same for every token of the sequence; plus the KL's own-token correction
``-beta (c_t - v_t)`` (docs/kl.md: a token's own log-prob gradient must carry the KL's score ``c_t``, earlier
tokens its value ``v_t``). The leave-one-out baseline does not depend on the sample it is subtracted from, so
the policy gradient stays unbiased: with the KL in the reward, the expected gradient is exactly the gradient of
the KL the config names (tests/test_algorithms.py enumerates every group of a tabular policy to show it).
With ``whiten_advantages`` the advantages are then whitened over the global batch, as PPO's are.

loss: PPO's clipped surrogate over the ``ppo_epochs`` x minibatches of the phase (RLOO as TRL and OpenRLHF run
it), entropy bonus, and the KL term when it is placed in the loss. No value loss.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rlhf_interp.ppo.algorithms.base import Algorithm, Minibatch, UpdateContext, clipped_policy_loss, over_global_batch
from rlhf_interp.ppo.rollout import Rollout


def leave_one_out_advantages(scores: Tensor, kl_value: Tensor, kl_score: Tensor, mask: Tensor, kl_coef: float,
                             group_size: int) -> Tensor:
    """Per-token RLOO advantages ``[batch, gen]``; rows ``g*k .. g*k+k-1`` are the ``k`` samples of prompt g.

    A_{i,t} = (R_i - mean_{j != i} R_j) - beta (c_{i,t} - v_{i,t}),   R_i = score_i - beta sum_t v_{i,t}
    """
    k = group_size
    returns = scores - kl_coef * (kl_value * mask).sum(-1)
    grouped = returns.view(-1, k)
    baseline = (grouped.sum(-1, keepdim=True) - grouped) / (k - 1)
    advantage = (grouped - baseline).reshape(-1)
    return (advantage[:, None] - kl_coef * (kl_score - kl_value)) * mask


class RLOO(Algorithm):
    name = "rloo"

    def check(self, config: Any) -> None:
        super().check(config)
        _check_groups(self.name, config)

    def advantages(self, scores: Tensor, rollout: Rollout, kl_coef: float, config: Any, dist: Any
                   ) -> tuple[Tensor, None]:
        # 1. leave-one-out baseline over each prompt's group (the groups of the global batch)
        advantages = over_global_batch(
            dist, lambda s, v, c, m: leave_one_out_advantages(s, v, c, m, kl_coef, config.group_size),
            scores, rollout.kl_value, rollout.kl_score, rollout.gen_mask)
        # 2. optional whitening over the global batch
        if config.whiten_advantages:
            advantages = dist.whiten(advantages, rollout.gen_mask)
        return advantages, None

    def loss(self, batch: Minibatch, kl_coef: float, ctx: UpdateContext) -> tuple[Tensor, dict[str, Tensor]]:
        return clipped_policy_loss(batch, kl_coef, ctx)


def _check_groups(name: str, config: Any) -> None:
    if config.group_size < 2:
        raise ValueError(f"Config field 'group_size' = {config.group_size} is out of range for algorithm {name!r}: "
                         f"a group baseline needs at least 2 samples per prompt (use 4 to 8).")
    if config.batch_size % config.group_size:
        raise ValueError(f"Config field 'group_size' = {config.group_size} must divide batch_size = "
                         f"{config.batch_size}: each phase samples batch_size / group_size prompts, group_size "
                         f"times each.")
