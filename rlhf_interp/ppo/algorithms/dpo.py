"""DPO, direct preference optimisation (Rafailov et al. 2023), on preference pairs, against the run's reference.

    L = -E_{(x, y_w, y_l)} log sigmoid( beta [ (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x)) ] )

beta is ``dpo_beta``: DPO's KL strength (the optimum of the KL-regularised objective it fits is
``pi ~ ref exp(r / beta)``), so ``kl_coef`` must be 0 and ``adaptive_kl`` off. Pairs: ``preference_data``, a JSONL
file of ``{"prompt", "chosen", "rejected"}`` lines (`rlhf-interp reward-model synth` writes one, or bring
your own). Phase p trains on ``batch_size`` pairs, taken in order from one shuffled pass over the pairs per
epoch of the data (seeded by ``seed``), in ``ppo_epochs`` x ``batch_size / minibatch_size`` steps.

What DPO has in common with the online algorithms is everything else of a phase: the trainer samples its
rollout from the policy as for PPO, so DPO's (implicit) KL to the reference is measured exactly as theirs is
-- on the policy's own continuations, exact per token, both ways, with the same metric names -- and
checkpoints, resume, logs and the multi-process path are the same. The rollout is a measurement here: its
advantages are not used.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhf_interp.bridge.precision import autocast
from rlhf_interp.core.masks import pad_rows
from rlhf_interp.core.seeding import mix_seed
from rlhf_interp.core.kl import sampling_logprobs
from rlhf_interp.ppo.algorithms.base import Algorithm, Minibatch, UpdateContext
from rlhf_interp.ppo.rollout import Rollout, gather_logprobs
from rlhf_interp.reward.preferences import PreferencePair, read_preferences

_SEED_TAG = 31  # the pairs' order, apart from every other stream seeded by (seed, ...)


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float
             ) -> tuple[Tensor, dict[str, Tensor]]:
    """DPO's loss from the sequences' summed log-probs ``[pairs]``; statistics: accuracy and margin of the implicit
    reward ``beta log(pi/ref)``."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    with torch.no_grad():
        stats = {"dpo_accuracy": (margin > 0).float().mean(), "dpo_margin": margin.mean(),
                 "dpo_chosen_reward": chosen_reward.mean(), "dpo_rejected_reward": rejected_reward.mean()}
    return loss, stats


@lru_cache(maxsize=4)
def _pairs(path: str) -> tuple[PreferencePair, ...]:
    return tuple(read_preferences(path))


def phase_pairs(pairs: tuple[PreferencePair, ...], seed: int, phase: int, batch_size: int) -> list[PreferencePair]:
    """The ``batch_size`` pairs of phase ``phase`` (from 0): consecutive slices of one shuffled order of the pairs
    per pass over them (pass e shuffled by ``(seed, e)``), so every pair is used once per pass."""
    out: list[PreferencePair] = []
    position = phase * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(position, len(pairs))
        order = list(range(len(pairs)))
        random.Random(mix_seed(seed, epoch, _SEED_TAG)).shuffle(order)
        take = order[offset:offset + batch_size - len(out)]
        out.extend(pairs[i] for i in take)
        position += len(take)
    return out


def completion_logprobs(model_forward, tokenizer, prompts: list[str], completions: list[str], temperature: float,
                        device: torch.device, precision: str = "fp32", models: Any = None) -> Tensor:
    """``sum_t log p(y_t | x, y_<t)`` of each completion after its prompt ``[pairs]`` (BOS + prompt + completion,
    each tokenized alone as `bridge.tokenize` and the rollout do; left-padded). ``model_forward``: (tokens,
    attention_mask) -> logits. Gradients flow when the caller has them on."""
    rows, targets = [], []
    for prompt, completion in zip(prompts, completions):
        p = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"]
        rows.append(torch.tensor(p + c, dtype=torch.long))
        targets.append(torch.tensor([0] * len(p) + [1] * len(c), dtype=torch.long))
    tokens, attention = pad_rows(rows, side="left", value=tokenizer.pad_token_id)
    is_target, _ = pad_rows(targets, side="left", value=0)
    tokens, attention, is_target = tokens.to(device), attention.to(device), is_target.to(device)
    with autocast(models, precision, fp32_logits=True):
        logits = model_forward(tokens, attention)[:, :-1].float()
    logp = gather_logprobs(sampling_logprobs(logits, temperature), tokens[:, 1:])
    return (logp * is_target[:, 1:].to(logp.dtype)).sum(-1)


class DPO(Algorithm):
    name = "dpo"
    learns_from_rollout = False

    def check(self, config: Any) -> None:
        super().check(config)
        if not config.preference_data:
            raise ValueError("Config field 'preference_data' is empty: algorithm 'dpo' trains on preference pairs; "
                             "give a JSONL file of {prompt, chosen, rejected} lines (make one with `rlhf-interp "
                             "reward-model synth`).")
        if config.kl_coef != 0 or config.adaptive_kl:
            raise ValueError(f"Config field 'kl_coef' = {config.kl_coef} (adaptive_kl {config.adaptive_kl}) with "
                             f"algorithm 'dpo': DPO's KL strength is dpo_beta ({config.dpo_beta}); set kl_coef: 0 and "
                             f"adaptive_kl: false.")

    def advantages(self, scores: Tensor, rollout: Rollout, kl_coef: float, config: Any, dist: Any
                   ) -> tuple[Tensor, None]:
        return torch.zeros_like(rollout.gen_mask), None  # the rollout is a measurement; DPO learns from pairs

    def minibatches(self, ctx: UpdateContext, rollout: Rollout, advantages: Tensor, returns: Tensor | None,
                    orders: list[Tensor], phase: int) -> Iterator[tuple[Any, Tensor]]:
        """Minibatches of this phase's pairs (this process's block of them), in the rollout's shuffled orders."""
        cfg = ctx.config
        full = ctx.dist.world_size * cfg.batch_size if ctx.dist is not None else cfg.batch_size
        pairs = phase_pairs(_pairs(str(cfg.preference_data)), cfg.seed, phase, full)
        if ctx.dist is not None:
            pairs = ctx.dist.shard(pairs)
        for order in orders:
            for idx in order.split(cfg.minibatch_size):
                chosen = [pairs[i] for i in idx.tolist()]
                yield chosen, torch.ones(len(chosen), device=rollout.tokens.device)

    def loss(self, batch: list[PreferencePair], kl_coef: float, ctx: UpdateContext
             ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg, policy = ctx.config, ctx.policy
        prompts = [p.prompt for p in batch] * 2
        texts = [p.chosen for p in batch] + [p.rejected for p in batch]
        device = next(policy.parameters()).device
        precision = getattr(cfg, "precision", "fp32")
        policy_logp = completion_logprobs(lambda t, m: policy(t, attention_mask=m), policy.tokenizer, prompts, texts,
                                          cfg.temperature, device, precision, policy)
        with torch.no_grad():
            ref_logp = completion_logprobs(ctx.reference, policy.tokenizer, prompts, texts, cfg.temperature, device,
                                           precision, policy)
        n = len(batch)
        loss, stats = dpo_loss(policy_logp[:n], policy_logp[n:], ref_logp[:n], ref_logp[n:], cfg.dpo_beta)
        return loss, {"policy_loss": loss, **stats}
