"""The algorithm interface: what differs between PPO, GRPO, RLOO and DPO, behind one small class.

A phase (`rlhf_interp.ppo.trainer.PPOTrainer.run_phase`) is the same for every algorithm: sample a rollout and
score it, then ``algorithm.advantages`` (the credit each generated token gets), then ``ppo_update``, which asks
``algorithm.minibatches`` for the minibatches of the phase and ``algorithm.loss`` for each one's loss, and takes
one optimizer step per minibatch. Read the trainer's ``run_phase`` and the algorithm's module and you have read
the whole phase.

An algorithm is one module in this package with one subclass of `Algorithm`:

- ``check(config)``: refuse the options whose meaning it does not keep (e.g. a KL placement whose gradient is
  not proved for its advantages; docs/algorithms.md);
- ``advantages(scores, rollout, kl_coef, dist)``: per-token advantages and the value head's targets (``None``
  for critic-free algorithms);
- ``minibatches(...)``: the phase's minibatches (default: ``ppo_epochs`` shuffled passes over the rollout);
- ``loss(batch, kl_coef)``: the minibatch's loss and its logged statistics.

and one line in `rlhf_interp.ppo.algorithms.ALGORITHMS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch
from torch import Tensor

from rlhf_interp.core.kl import entropy_from_logprobs, masked_mean, sampling_logprobs
from rlhf_interp.ppo import losses
from rlhf_interp.ppo.kl_penalty import KLPenalty
from rlhf_interp.ppo.reference_bank import sequence_kl_loss
from rlhf_interp.ppo.rollout import Rollout, gather_logprobs, policy_forward


@dataclass(frozen=True)
class UpdateContext:
    """What the update needs besides the data: the models and this process's settings (its share of the batch)."""

    policy: Any  # TransformerBridge being trained
    head: Any  # value head (critic-free algorithms keep it, untrained, so every checkpoint has the same files)
    config: Any  # the run's PPOConfig as this process sees it (`Distributed.local_config`)
    dist: Any = None  # `Distributed` when several processes share the batch, else None
    reference: Any = None  # (tokens, attention_mask) -> reference logits; DPO scores its pairs with it
    kl_penalty: Any = None  # the run's `ppo.kl_penalty.KLPenalty` (its loss term, when the KL is one); None: no KL


@dataclass
class Minibatch:
    """One minibatch of a rollout as a loss sees it: per generated token, ``[rows, gen]`` (``logp_all``:
    ``[rows, gen, vocab]``), the current policy's log-probs with their graph, the rollout's, the reference's."""

    mask: Tensor
    logp_all: Tensor  # current policy, sampled distribution (logits / temperature), with grad
    logprobs: Tensor  # of the sampled tokens, with grad
    old_logprobs: Tensor  # pi_old: the policy that sampled
    ref_logprobs: Tensor
    advantages: Tensor
    ref_logp_all: Tensor | None = None  # only for the exact KL as a loss term
    values: Tensor | None = None  # value head, with grad (PPO)
    old_values: Tensor | None = None
    returns: Tensor | None = None
    kl_sequence: Tensor | None = None  # sequence-level KL(ref||pi) term on the reference bank, with grad


class Algorithm:
    """Advantages and loss of one training algorithm; see the module docstring for the contract."""

    name: ClassVar[str]
    trains_value_head: ClassVar[bool] = False
    # KL placements whose gradient is proved for this algorithm's advantages (tests/test_algorithms.py).
    penalty_placements: ClassVar[tuple[str, ...]] = ("reward", "loss", "sequence")
    learns_from_rollout: ClassVar[bool] = True  # False (DPO): the rollout only measures; no graph kept for it

    def check(self, config: Any) -> None:
        """Raise ValueError for a config this algorithm refuses (the field, the value, the alternative)."""
        KLPenalty.from_config(config).require_placement(self.penalty_placements, f"algorithm {self.name!r}",
                                                        f"{self.placement_reason()} (docs/algorithms.md)")
        if config.batch_size % config.group_size:
            raise ValueError(f"Config field 'group_size' = {config.group_size} must divide batch_size = "
                             f"{config.batch_size}: each phase samples batch_size / group_size prompts, group_size "
                             f"times each.")

    def placement_reason(self) -> str:
        return ""

    def advantages(self, scores: Tensor, rollout: Rollout, kl_coef: float, config: Any, dist: Any
                   ) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def minibatches(self, ctx: UpdateContext, rollout: Rollout, advantages: Tensor, returns: Tensor | None,
                    orders: list[Tensor], phase: int) -> Iterator[tuple[Minibatch, Tensor]]:
        """``(minibatch, mask)`` per optimizer step: one shuffled order of the batch per epoch (``orders``), cut
        into ``minibatch_size`` rows. The first starts from the rollout's own policy pass (`Rollout.take_live`)."""
        cfg = ctx.config
        gen = rollout.gen_tokens
        for epoch, order in enumerate(orders):
            for idx in order.split(cfg.minibatch_size):
                idx = idx.to(rollout.tokens.device)
                live = rollout.take_live()
                if live is not None and torch.equal(live.rows, idx):
                    logits, values = live.logits, live.values
                else:
                    logits, values = policy_forward(ctx.policy, ctx.head, rollout.tokens[idx],
                                                    rollout.attention_mask[idx], rollout.prompt_len,
                                                    cfg.value_head_hook, rollout.precision)
                del live
                logp_all = sampling_logprobs(logits, cfg.temperature)
                mask = rollout.gen_mask[idx]
                yield Minibatch(
                    mask=mask, logp_all=logp_all, logprobs=gather_logprobs(logp_all, gen[idx]),
                    old_logprobs=rollout.logprobs[idx], ref_logprobs=rollout.ref_logprobs[idx],
                    advantages=advantages[idx],
                    ref_logp_all=None if rollout.ref_logp_all is None else rollout.ref_logp_all[idx],
                    values=values if self.trains_value_head else None,
                    old_values=rollout.values[idx] if self.trains_value_head else None,
                    returns=None if returns is None else returns[idx],
                    kl_sequence=None if rollout.bank is None else sequence_kl_loss(
                        ctx.kl_penalty, ctx.policy, ctx.head, rollout.bank, idx, epoch, value_hook=cfg.value_head_hook,
                        temperature=cfg.temperature, precision=rollout.precision, reference=ctx.reference,
                        per_step=cfg.kl_bank_per_step)), mask

    def loss(self, batch: Minibatch, kl_coef: float, ctx: UpdateContext) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def phase_stats(self, rollout: Rollout, returns: Tensor | None) -> dict[str, float]:
        """Statistics of the whole phase added after the update (PPO: the critic's explained variance)."""
        return {}


def clipped_policy_loss(batch: Minibatch, kl_coef: float, ctx: UpdateContext, value_term: Tensor | float = 0.0
                        ) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped surrogate, the entropy bonus and the KL loss term: the part PPO, GRPO and RLOO share.

    L = -E[min(rho A, clip(rho) A)] (+ value_term) - c_ent H + beta KL_loss   (masked means over the tokens)
    """
    cfg = ctx.config
    mask = batch.mask
    pg_loss, clip_fraction, approx_kl = losses.policy_loss(batch.logprobs, batch.old_logprobs, batch.advantages,
                                                           mask, cfg.clip_range)
    with torch.set_grad_enabled(cfg.entropy_coef != 0 and torch.is_grad_enabled()):  # else: logged only
        ent = masked_mean(entropy_from_logprobs(batch.logp_all), mask)
    kl_loss = torch.zeros((), device=batch.logprobs.device, dtype=batch.logprobs.dtype)
    if ctx.kl_penalty is not None:  # the KL as a loss term (None when it is in the reward): `KLPenalty` decides
        term = ctx.kl_penalty.loss_term(batch.logprobs, batch.old_logprobs, batch.ref_logprobs, mask,
                                        batch.logp_all, batch.ref_logp_all)
        kl_loss = term if term is not None else batch.kl_sequence if batch.kl_sequence is not None else kl_loss
    loss = pg_loss + value_term - cfg.entropy_coef * ent + kl_coef * kl_loss  # PPO's order of terms, kept
    with torch.no_grad():
        max_log_ratio = ((batch.logprobs - batch.old_logprobs).abs() * mask).max()
    return loss, {"policy_loss": pg_loss, "entropy_bonus": ent, "clip_fraction": clip_fraction,
                  "approx_kl": approx_kl, "kl_loss": kl_loss, "max_abs_log_ratio": max_log_ratio}


def over_global_batch(dist: Any, fn, *tensors: Tensor) -> Tensor:
    """``fn`` of the whole batch (every process's rows, in rank order), returning this process's rows: group
    baselines need every member of a group, wherever it was sampled. One process: ``fn(*tensors)``."""
    if dist is None or not dist.active:
        return fn(*tensors)
    rows, width = tensors[0].shape[0], tensors[-1].shape[-1]
    full = fn(*(dist.gather(t) for t in tensors))
    mine = full[dist.rank * rows:(dist.rank + 1) * rows]
    return mine[:, :width] if mine.ndim > 1 else mine

