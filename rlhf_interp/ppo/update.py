"""One update of the policy on one phase's data: for each minibatch the algorithm hands out, its loss, one step.

Read top to bottom it is the inner loop of Schulman et al. (2017) as CleanRL writes it -- forward, loss,
backward, clip the gradient norm, step -- with the algorithm-specific part (which minibatches, which loss)
in `rlhf_interp.ppo.algorithms` (PPO: clipped policy loss + clipped value loss + entropy bonus + the KL term when
it is placed in the loss; GRPO / RLOO: no value loss; DPO: its pairs and its loss). The first minibatch of a
rollout starts from the rollout's own policy pass (`Rollout.take_live`).

A rollout collected in bf16 (``Rollout.precision``): each minibatch's forward runs in bf16 too, under
`bridge.precision.autocast`, one block per forward (never across an optimizer step: its cast cache would serve
the pre-step weights); backward follows the forward's dtypes, and weights, gradients, AdamW state, log-probs and
losses stay fp32.
"""

from __future__ import annotations

from typing import Any

import torch

from rlhf_interp.ppo.algorithms import Algorithm, UpdateContext
from rlhf_interp.ppo.rollout import Rollout


class TrainingDivergedError(FloatingPointError):
    """A NaN or inf appeared; the last checkpoint on disk is the last good state."""


STAT_KEYS = ("policy_loss", "value_loss", "entropy_bonus", "clip_fraction", "approx_kl", "kl_loss", "grad_norm")
_MAX_KEYS = ("max_abs_log_ratio",)  # reduced by max over the phase's steps, the rest by mean


def ppo_update(algorithm: Algorithm, ctx: UpdateContext, optimizer: torch.optim.Optimizer, scheduler: Any,
               params: list[torch.nn.Parameter], rollout: Rollout, advantages: torch.Tensor,
               returns: torch.Tensor | None, orders: list[torch.Tensor], kl_coef: float, phase: int
               ) -> dict[str, float]:
    """Step once per minibatch of ``algorithm.minibatches`` (one shuffled order of the batch per epoch,
    ``orders``) and return the mean of each loss statistic over the steps (``max_abs_log_ratio``: the max).
    ``params``: what the gradient norm is clipped over. ``ctx.dist``: a `ppo.distributed.Distributed` when
    several processes share the batch (gradients are then all-reduced, weighted by tokens)."""
    totals: dict[str, list[float]] = {}
    for batch, mask in algorithm.minibatches(ctx, rollout, advantages, returns, orders, phase):
        loss, stats = algorithm.loss(batch, kl_coef, ctx)  # forward: the algorithm's loss on this minibatch
        _check_finite({"loss": loss, **{k: v for k, v in stats.items() if torch.is_tensor(v) and v.ndim == 0}})
        del batch

        optimizer.zero_grad(set_to_none=True)
        if ctx.dist is None:
            loss.backward()
        else:  # every process's gradients -> the gradient over the global minibatch
            ctx.dist.backward(loss, mask, params)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, ctx.config.max_grad_norm)
        _check_finite({"gradient norm": grad_norm})
        optimizer.step()
        scheduler.step()

        for key, value in {**stats, "grad_norm": grad_norm}.items():
            totals.setdefault(key, []).append(float(value.detach()) if torch.is_tensor(value) else float(value))
    out = {k: (max(v) if k in _MAX_KEYS else sum(v) / len(v)) for k, v in totals.items()}
    out.update(algorithm.phase_stats(rollout, returns))
    return out


def _check_finite(terms: dict[str, torch.Tensor]) -> None:
    """Stop before the optimizer steps on a NaN/inf, naming the term (the caller adds phase and checkpoint)."""
    bad = [name for name, term in terms.items() if not torch.isfinite(term)]
    if bad:
        values = ", ".join(f"{name} {float(term):.4g}" for name, term in terms.items())
        raise TrainingDivergedError(f"{' and '.join(bad)} became non-finite ({values}). Lower lr / head_lr or kl_coef.")
