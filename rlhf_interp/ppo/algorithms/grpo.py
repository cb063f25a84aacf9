"""GRPO, group relative policy optimisation (Shao et al. 2024, DeepSeekMath): ``group_size`` samples per prompt,
each one's advantage its score minus the group's mean score, divided by the group's standard deviation
(``grpo_scale_rewards: true``, GRPO as published) or not (``false``: Dr. GRPO, Liu et al. 2025). No value head.

advantages: ``A_i = (s_i - mean_g s) / (std_g s + eps)``, the same for every token of the sequence.
loss: PPO's clipped surrogate, entropy bonus, and the KL penalty as a loss term (placed in the loss; GRPO's
own choice), averaged over the minibatch's tokens.

Known biases, and what this implementation does about them (docs/algorithms.md):

- **Difficulty bias** (Liu et al. 2025): dividing by the group's std weights prompts whose samples score alike
  (too easy or too hard, small std) more than prompts with a spread; ``grpo_scale_rewards: false`` removes it.
  A group whose samples all score the same gets advantage 0 and teaches nothing (both settings).
- **Length bias** (Liu et al. 2025): GRPO as published averages each sequence's token losses first
  (``1/|o_i|``), so a long wrong answer is penalised less per token than a short one; here every loss is one
  masked mean over the minibatch's tokens (as DAPO), so no per-sequence length normaliser enters.
- **The baseline includes the sample itself**: ``E[grad log pi(x) (s(x) - mean_g s)]`` is ``(k-1)/k`` times
  the policy gradient (the direction is right); the std divides each group by a number that depends on its
  own samples, which biases the direction too. That is why the KL is refused in the reward for GRPO: its
  gradient would be scaled per group and no longer the gradient of the KL it names; in the loss it is exactly
  that gradient (tests/test_algorithms.py).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from rlhf_interp.ppo.algorithms.base import Algorithm, Minibatch, UpdateContext, clipped_policy_loss, over_global_batch
from rlhf_interp.ppo.algorithms.rloo import _check_groups
from rlhf_interp.ppo.rollout import Rollout

STD_EPS = 1e-4  # as TRL's GRPOTrainer: a group with equal scores gets 0, not 0/0


def group_relative_advantages(scores: Tensor, mask: Tensor, group_size: int, scale: bool) -> Tensor:
    """Per-token GRPO advantages ``[batch, gen]``; rows ``g*k .. g*k+k-1`` are the ``k`` samples of prompt g.

    A_i = (s_i - mean_g s) / (std_g s + eps)  (``scale``)  or  s_i - mean_g s  (Dr. GRPO)
    """
    grouped = scores.view(-1, group_size)
    advantage = grouped - grouped.mean(-1, keepdim=True)
    if scale:
        advantage = advantage / (grouped.std(-1, keepdim=True) + STD_EPS)
    return advantage.reshape(-1)[:, None] * mask


class GRPO(Algorithm):
    name = "grpo"
    penalty_placements = ("loss", "sequence")

    def placement_reason(self) -> str:
        return ("GRPO's group mean includes the sample itself and its std depends on the group's own samples, so "
                "a KL in the reward would get a per-group scaled gradient, not the gradient of the KL it names; as "
                "a loss term (GRPO's own choice) it keeps that gradient.")

    def check(self, config: Any) -> None:
        super().check(config)
        _check_groups(self.name, config)

    def advantages(self, scores: Tensor, rollout: Rollout, kl_coef: float, config: Any, dist: Any
                   ) -> tuple[Tensor, None]:
        # 1. group-relative scores over each prompt's group (the groups of the global batch)
        advantages = over_global_batch(
            dist, lambda s, m: group_relative_advantages(s, m, config.group_size, config.grpo_scale_rewards),
            scores, rollout.gen_mask)
        # 2. optional whitening over the global batch (off in configs/periods_grpo.yaml, as in GRPO)
        if config.whiten_advantages:
            advantages = dist.whiten(advantages, rollout.gen_mask)
        return advantages, None

    def loss(self, batch: Minibatch, kl_coef: float, ctx: UpdateContext) -> tuple[Tensor, dict[str, Tensor]]:
        return clipped_policy_loss(batch, kl_coef, ctx)
