"""PPO (Schulman et al. 2017; Ziegler et al. 2019 for language models): a learned value head as baseline, GAE.

advantages: per-token rewards ``r_t = -beta v_t`` (+ the score at the last token) through GAE with the value
head's values, the KL's own-token correction (`losses.penalised_advantages`, docs/kl.md), whitened over the
global batch. loss: the clipped surrogate + ``value_loss_coef`` x the clipped value loss - entropy bonus +
``beta`` x the KL term when it is placed in the loss.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from rlhf_interp.ppo import losses
from rlhf_interp.ppo.algorithms.base import Algorithm, Minibatch, UpdateContext, clipped_policy_loss
from rlhf_interp.ppo.rollout import Rollout


class PPO(Algorithm):
    name = "ppo"
    trains_value_head = True

    def advantages(self, scores: Tensor, rollout: Rollout, kl_coef: float, config: Any, dist: Any
                   ) -> tuple[Tensor, Tensor]:
        # 1. GAE over the per-token rewards (KL in the reward when placed there: kl_coef is then nonzero)
        advantages, returns = losses.penalised_advantages(scores, rollout.kl_value, rollout.kl_score, rollout.values,
                                                          rollout.gen_mask, kl_coef, config.gamma, config.gae_lambda)
        # 2. whitening over the global batch
        if config.whiten_advantages:
            advantages = dist.whiten(advantages, rollout.gen_mask)
        return advantages, returns

    def loss(self, batch: Minibatch, kl_coef: float, ctx: UpdateContext) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = ctx.config
        v_loss = losses.value_loss(batch.values, batch.old_values, batch.returns, batch.mask, cfg.clip_range_value)
        loss, stats = clipped_policy_loss(batch, kl_coef, ctx, value_term=cfg.value_loss_coef * v_loss)
        return loss, {**stats, "value_loss": v_loss}

    def phase_stats(self, rollout: Rollout, returns: Tensor | None) -> dict[str, float]:
        return {"explained_variance": losses.explained_variance(rollout.values, returns, rollout.gen_mask)}
