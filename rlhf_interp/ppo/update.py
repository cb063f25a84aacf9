"""One PPO update: ``ppo_epochs`` passes of clipped steps over shuffled minibatches of one rollout.

Read top to bottom it is the inner loop of Schulman et al. (2017) as CleanRL writes it: forward, clipped
policy loss, clipped value loss, entropy bonus, the KL term when it is placed in the loss
(`kl.kl_loss_terms`), one optimizer step. The first minibatch starts from the rollout's own policy pass
(`Rollout.take_live`): before any step the policy is the one that sampled, so that pass is not repeated.

A rollout collected in bf16 (``Rollout.precision``): each minibatch's forward runs in bf16 too, under
`bridge.precision.autocast`, one block per forward (never across an optimizer step: its cast cache would serve
the pre-step weights); backward follows the forward's dtypes, and weights, gradients, AdamW state, log-probs and
losses stay fp32.
"""

from __future__ import annotations

from typing import Any

import torch

from rlhf_interp.kl import entropy_from_logprobs, masked_mean, sampling_logprobs
from rlhf_interp.ppo.kl_penalty import KLPenalty
from rlhf_interp.ppo.reference_bank import sequence_kl_loss
from rlhf_interp.ppo import losses
from rlhf_interp.ppo.rollout import Rollout, gather_logprobs, policy_forward


class TrainingDivergedError(FloatingPointError):
    """A NaN or inf appeared; the last checkpoint on disk is the last good state."""


STAT_KEYS = ("policy_loss", "value_loss", "entropy_bonus", "clip_fraction", "approx_kl", "kl_loss", "grad_norm")


def ppo_update(policy, head, optimizer: torch.optim.Optimizer, scheduler: Any, params: list[torch.nn.Parameter],
               rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor, orders: list[torch.Tensor],
               config: Any, kl_coef: float, dist: Any = None, kl_penalty: Any = None, reference: Any = None
               ) -> dict[str, float]:
    """Run the epochs (one shuffled order of the batch each, ``orders``) and return the mean of each loss
    statistic, ``max_abs_log_ratio`` and ``explained_variance``. ``config``: the run's `PPOConfig`;
    ``params``: what the gradient norm is clipped over (policy and head). ``dist``: a
    `ppo.distributed.Distributed` when several processes share the batch (gradients are then all-reduced)."""
    cfg = config
    kl_penalty = kl_penalty or KLPenalty.from_config(cfg)
    totals: dict[str, list[float]] = {k: [] for k in STAT_KEYS}
    max_log_ratio = 0.0
    gen = rollout.gen_tokens
    for epoch, order in enumerate(orders):
        for idx in order.split(cfg.minibatch_size):
            idx = idx.to(rollout.tokens.device)
            live = rollout.take_live()
            if live is not None and torch.equal(live.rows, idx):
                logits, values = live.logits, live.values
            else:
                logits, values = policy_forward(policy, head, rollout.tokens[idx], rollout.attention_mask[idx],
                                                rollout.prompt_len, cfg.value_head_hook, rollout.precision)
            del live
            mask = rollout.gen_mask[idx]
            logp_all = sampling_logprobs(logits, cfg.temperature)
            logprobs = gather_logprobs(logp_all, gen[idx])
            old_logprobs = rollout.logprobs[idx]
            pg_loss, clip_fraction, approx_kl = losses.policy_loss(logprobs, old_logprobs, advantages[idx], mask,
                                                                   cfg.clip_range)
            v_loss = losses.value_loss(values, rollout.values[idx], returns[idx], mask, cfg.clip_range_value)
            with torch.set_grad_enabled(cfg.entropy_coef != 0 and torch.is_grad_enabled()):  # else: logged only
                ent = masked_mean(entropy_from_logprobs(logp_all), mask)
            kl_loss = kl_penalty.loss_term(logprobs, old_logprobs, rollout.ref_logprobs[idx], mask, logp_all,
                                           None if rollout.ref_logp_all is None else rollout.ref_logp_all[idx])
            if kl_loss is None and rollout.bank is not None:  # sequence-level KL(ref||pi) on the reference's samples
                kl_loss = sequence_kl_loss(kl_penalty, policy, head, rollout.bank, idx, epoch,
                                           value_hook=cfg.value_head_hook, temperature=cfg.temperature,
                                           precision=rollout.precision, reference=reference)
            if kl_loss is None:
                kl_loss = torch.zeros((), device=logits.device)
            _check_finite({"policy": pg_loss, "value": v_loss, "entropy": ent, "KL": kl_loss})
            loss = pg_loss + cfg.value_loss_coef * v_loss - cfg.entropy_coef * ent + kl_coef * kl_loss

            optimizer.zero_grad(set_to_none=True)
            if dist is None:
                loss.backward()
            else:  # every process's gradients -> the gradient over the global minibatch
                dist.backward(loss, mask, params)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            _check_finite({"gradient norm": grad_norm})
            optimizer.step()
            scheduler.step()

            with torch.no_grad():
                max_log_ratio = max(max_log_ratio, float(((logprobs - old_logprobs).abs() * mask).max()))
            for key, value in zip(STAT_KEYS, (pg_loss, v_loss, ent, clip_fraction, approx_kl, kl_loss, grad_norm)):
                totals[key].append(float(value.detach()) if torch.is_tensor(value) else float(value))
    stats = {k: sum(v) / len(v) for k, v in totals.items()}
    stats["max_abs_log_ratio"] = max_log_ratio  # how far pi moved from pi_old within the phase (0 before a step)
    stats["explained_variance"] = losses.explained_variance(rollout.values, returns, rollout.gen_mask)
    return stats


def _check_finite(terms: dict[str, torch.Tensor]) -> None:
    """Stop before the optimizer steps on a NaN/inf, naming the term (the caller adds phase and checkpoint)."""
    bad = [name for name, term in terms.items() if not torch.isfinite(term)]
    if bad:
        values = ", ".join(f"{name} {float(term):.4g}" for name, term in terms.items())
        raise TrainingDivergedError(f"{' and '.join(bad)} became non-finite ({values}). Lower lr / head_lr or kl_coef.")
