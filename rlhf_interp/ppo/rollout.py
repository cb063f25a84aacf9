"""Rollouts: sample continuations with the KV cache, then one forward pass per model over the samples.

One rollout holds everything the PPO update needs, for ``batch`` prompts and ``gen`` new tokens: the
sampled tokens, which of them are real (after the first EOS nothing is), the log-probs of each sampled
token under the policy and the reference, the values, the KL terms, and the reward scores.

Every log-prob is of the distribution that was sampled (`kl.sampling_logprobs`: logits / temperature),
for the policy and the reference alike, so the importance ratio, the KL and the entropy are about the
text that was generated. The policy pass keeps its autograd graph for the rows of the update's first
minibatch (``grad_rows``): the update starts from that pass instead of running it again.

Work per rollout: one KV-cached sampling pass (on the policy's plain Hugging Face twin, `bridge.twin`: same
weights, raw ``generate`` speed), one policy forward (values from a hook on the same pass) and one
reference forward; logits are unembedded only at the columns that predict generated tokens. Nothing runs under
``torch.inference_mode``: it turns off autocast's weight cache (bf16 sampling would cast every weight again at
every step), and its tensors could not be saved for the update's backward. ``precision="bf16"``: every pass
under `rlhf_interp.bridge.precision.autocast` (finite with left padding), logits, log-probs and values in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from rlhf_interp.bridge.generation import generate
from rlhf_interp.bridge.heads import ValueHead, forward_with_values
from rlhf_interp.bridge.precision import autocast
from rlhf_interp.core.finite import all_finite
from rlhf_interp.core.kl import kl_both_ways_and_entropy, sampling_logprobs
from rlhf_interp.ppo.kl_penalty import KLPenalty
from rlhf_interp.reward.functions import RewardFn, score

RefForward = Callable[[Tensor, Tensor], Tensor]  # (tokens, attention_mask) -> logits


@dataclass
class PolicyPass:
    """Raw logits and values at the generated positions, with their autograd graph, for ``rows``."""

    rows: Int[Tensor, "rows"]
    logits: Float[Tensor, "rows gen vocab"]
    values: Float[Tensor, "rows gen"]


@dataclass
class Rollout:
    prompts: list[str]
    completions: list[str]
    tokens: Int[Tensor, "batch seq"]  # prompt (left-padded) + generated
    attention_mask: Int[Tensor, "batch seq"]
    prompt_len: int  # generated tokens start at this column
    gen_mask: Float[Tensor, "batch gen"]
    logprobs: Float[Tensor, "batch gen"]  # policy at sampling time (pi_old), sampled distribution
    ref_logprobs: Float[Tensor, "batch gen"]
    values: Float[Tensor, "batch gen"]
    kl_value: Float[Tensor, "batch gen"]  # configured direction + estimator: the penalty's value (logged)
    kl_score: Float[Tensor, "batch gen"]  # a token's own coefficient in the reward placement (kl_reward_terms)
    kl_pi_ref: Float[Tensor, "batch gen"]  # exact KL(pi || ref) of the sampled distributions, for logging
    kl_ref_pi: Float[Tensor, "batch gen"]  # exact KL(ref || pi), for logging
    entropy: Float[Tensor, "batch gen"]
    scores: Float[Tensor, "batch"]  # raw reward of each completion
    ref_logp_all: Tensor | None = None  # [batch gen vocab], kept only for the exact KL as a loss term
    bank: Any = None  # `reference_bank.BankBatch` of these prompts (sequence-level KL(ref||pi) only), set by the trainer
    live: PolicyPass | None = None  # the update's first minibatch, graph attached
    precision: str = "fp32"  # of every pass above; the update's passes use the same, so pi / pi_old compares like

    @property
    def gen_tokens(self) -> Tensor:
        return self.tokens[:, self.prompt_len:]

    def take_live(self) -> PolicyPass | None:
        """Hand over the graph-carrying pass once (so its memory is freed after the first step)."""
        live, self.live = self.live, None
        return live


def policy_forward(policy, head: ValueHead, tokens: Tensor, attention_mask: Tensor, prompt_len: int,
                   value_hook: str = "ln_final.hook_normalized", precision: str = "fp32") -> tuple[Tensor, Tensor]:
    """Raw logits [b, gen, vocab] and values [b, gen] (fp32) at the positions that predict generated tokens.

    Logits at column c predict the token at c + 1: generated tokens are predicted from prompt_len - 1 on, and
    only those columns are unembedded (``logits_to_keep``; the prompt's columns would be thrown away).
    ``precision``: `bridge.precision.autocast` for this one forward (bf16 with the unembedding in fp32).
    """
    predicting = torch.arange(prompt_len - 1, tokens.shape[1] - 1, device=tokens.device)
    with autocast(policy, precision, fp32_logits=True):
        logits, values = forward_with_values(policy, head, tokens, attention_mask, value_hook,
                                             logits_to_keep=predicting)
    return logits.float(), values[:, predicting].float()


def gather_logprobs(logp_all: Float[Tensor, "batch gen vocab"], tokens: Int[Tensor, "batch gen"]
                    ) -> Float[Tensor, "batch gen"]:
    return logp_all.gather(-1, tokens[..., None]).squeeze(-1)


def _policy_pass(policy, head: ValueHead, tokens: Tensor, attention_mask: Tensor, prompt_len: int, value_hook: str,
                 grad_rows: Tensor | None, precision: str) -> tuple[Tensor, Tensor, PolicyPass | None]:
    """One pass over every row: ``grad_rows`` with autograd, the rest without. Returns detached full-batch
    logits and values, and the graph-carrying part."""
    batch = tokens.shape[0]
    live = None
    rest = torch.ones(batch, dtype=torch.bool, device=tokens.device)
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    if grad_rows is not None and len(grad_rows):
        grad_rows = grad_rows.to(tokens.device)
        with torch.enable_grad():
            logits, values = policy_forward(policy, head, tokens[grad_rows], attention_mask[grad_rows], prompt_len,
                                            value_hook, precision)
        live = PolicyPass(grad_rows, logits, values)
        rest[grad_rows] = False
        parts.append((grad_rows, logits.detach(), values.detach()))
    if rest.any():
        rows = rest.nonzero().squeeze(-1)
        with torch.no_grad():
            logits, values = policy_forward(policy, head, tokens[rows], attention_mask[rows], prompt_len, value_hook,
                                            precision)
        parts.append((rows, logits, values))
    if len(parts) == 1 and torch.equal(parts[0][0], torch.arange(batch, device=tokens.device)):
        return parts[0][1], parts[0][2], live
    logits = torch.empty((batch, *parts[0][1].shape[1:]), dtype=parts[0][1].dtype, device=tokens.device)
    values = torch.empty((batch, parts[0][2].shape[1]), dtype=parts[0][2].dtype, device=tokens.device)
    for rows, part_logits, part_values in parts:
        logits[rows], values[rows] = part_logits, part_values
    return logits, values, live


def collect(policy, head: ValueHead, reference: RefForward, reward: RewardFn, prompts: list[str], *,
            max_new_tokens: int, temperature: float = 1.0, stop_at_eos: bool = False,
            kl_penalty: KLPenalty | None = None,
            value_hook: str = "ln_final.hook_normalized", grad_rows: Tensor | None = None, precision: str = "fp32",
            reference_model=None) -> Rollout:
    """Sample, then one policy pass (log-probs, values) and one reference pass (log-probs) over the samples.

    Top-k / top-p are not offered here: PPO refuses them (`PPOConfig.validate` says why). ``precision``:
    "fp32" or "bf16" (`bridge.precision`); ``reference_model``: the bridge ``reference`` runs when it is not
    the policy itself, so that bf16 applies its attention-mask fix there too. ``kl_penalty``: the run's
    `KLPenalty` (default: KL(pi||ref), k1, in the reward), which gives each token its KL value and score.
    """
    kl_penalty = kl_penalty or KLPenalty()
    sampled = generate(policy, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                       stop_at_eos=stop_at_eos, precision=precision)
    tokens, attention_mask, prompt_len = sampled.tokens, sampled.attention_mask, sampled.prompt_len
    gen_tokens = tokens[:, prompt_len:]
    gen_mask = sampled.generated_mask[:, prompt_len:].float()

    logits, values, live = _policy_pass(policy, head, tokens, attention_mask, prompt_len, value_hook, grad_rows,
                                        precision)
    with torch.no_grad():
        with autocast([policy, reference_model], precision, fp32_logits=True):
            ref_logits = reference(tokens, attention_mask)[:, prompt_len - 1:tokens.shape[1] - 1].float()
        if not (all_finite(logits) and all_finite(ref_logits)):
            raise FloatingPointError("Non-finite logits in the rollout (policy or reference): training has diverged.")
        logp_all = sampling_logprobs(logits, temperature)
        ref_logp_all = sampling_logprobs(ref_logits, temperature)
        del logits, ref_logits
        logprobs, ref_logprobs = gather_logprobs(logp_all, gen_tokens), gather_logprobs(ref_logp_all, gen_tokens)
        kl_value, kl_score = kl_penalty.rollout_terms(logprobs, ref_logprobs, logp_all, ref_logp_all)
        kl_pi_ref, kl_ref_pi, entropy = kl_both_ways_and_entropy(logp_all, ref_logp_all)
        rollout = Rollout(
            prompts=list(prompts), completions=sampled.texts, tokens=tokens, attention_mask=attention_mask,
            prompt_len=prompt_len, gen_mask=gen_mask, logprobs=logprobs, ref_logprobs=ref_logprobs, values=values,
            kl_value=kl_value * gen_mask, kl_score=kl_score * gen_mask,
            kl_pi_ref=kl_pi_ref * gen_mask, kl_ref_pi=kl_ref_pi * gen_mask, entropy=entropy * gen_mask,
            scores=score(reward, sampled.texts).to(tokens.device),
            ref_logp_all=ref_logp_all if kl_penalty.keeps_ref_logp_all else None,
            live=live, precision=precision,
        )
    for name in ("values", "kl_value", "kl_score"):
        if not all_finite(getattr(rollout, name)):
            raise FloatingPointError(f"Non-finite {name} in the rollout: training has diverged.")
    return rollout
