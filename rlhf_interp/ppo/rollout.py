"""Rollouts: sample continuations with the KV cache, then score them token by token.

One rollout holds everything the PPO update needs, for ``batch`` prompts and ``gen`` new tokens:
the sampled tokens, which of them are real (after the first EOS nothing is), the policy's and the
reference's log-probs of each sampled token, the values, the per-token KL, and the reward scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from rlhf_interp.kl import entropy, kl_divergence, penalty_kl
from rlhf_interp.generation import generate
from rlhf_interp.ppo.value_head import ValueHead, forward_with_values
from rlhf_interp.rewards import RewardFn, score

RefForward = Callable[[Tensor, Tensor], Tensor]  # (tokens, attention_mask) -> logits


@dataclass
class Rollout:
    prompts: list[str]
    completions: list[str]
    tokens: Int[Tensor, "batch seq"]  # prompt (left-padded) + generated
    attention_mask: Int[Tensor, "batch seq"]
    prompt_len: int  # generated tokens start at this column
    gen_mask: Float[Tensor, "batch gen"]
    logprobs: Float[Tensor, "batch gen"]  # policy at sampling time (pi_old)
    ref_logprobs: Float[Tensor, "batch gen"]
    values: Float[Tensor, "batch gen"]
    kl_penalty: Float[Tensor, "batch gen"]  # the configured direction + estimator
    kl_forward: Float[Tensor, "batch gen"]  # exact KL(pi || ref), for logging
    kl_reverse: Float[Tensor, "batch gen"]  # exact KL(ref || pi), for logging
    entropy: Float[Tensor, "batch gen"]
    scores: Float[Tensor, "batch"]  # raw reward of each completion
    ref_logits: Tensor | None = None  # [batch gen vocab], kept only when the KL is a loss term with the exact estimator

    @property
    def gen_tokens(self) -> Tensor:
        return self.tokens[:, self.prompt_len:]


def gather_logprobs(logits: Float[Tensor, "batch gen vocab"], tokens: Int[Tensor, "batch gen"]
                    ) -> tuple[Float[Tensor, "batch gen"], Float[Tensor, "batch gen vocab"]]:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens[..., None]).squeeze(-1), logp


@torch.no_grad()
def collect(policy, head: ValueHead, reference: RefForward, reward: RewardFn, prompts: list[str], *,
            max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
            stop_at_eos: bool = False, kl_direction: str = "forward", kl_estimator: str = "k1",
            keep_ref_logits: bool = False, value_hook: str = "ln_final.hook_normalized") -> Rollout:
    """Sample, then one policy pass (log-probs, values) and one reference pass (log-probs) over the samples."""
    sampled = generate(policy, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                       top_p=top_p, stop_at_eos=stop_at_eos)
    tokens, attention_mask, prompt_len = sampled.tokens, sampled.attention_mask, sampled.prompt_len
    gen_tokens = tokens[:, prompt_len:]
    gen_mask = sampled.generated_mask[:, prompt_len:].float()

    # Logits at column c predict the token at c + 1: generated tokens are predicted from prompt_len - 1 on.
    predicting = slice(prompt_len - 1, tokens.shape[1] - 1)
    logits, values = forward_with_values(policy, head, tokens, attention_mask, value_hook)
    logits, values = logits[:, predicting].float(), values[:, predicting].float()
    ref_logits = reference(tokens, attention_mask)[:, predicting].float()
    if not (torch.isfinite(logits).all() and torch.isfinite(ref_logits).all()):
        raise FloatingPointError("Non-finite logits in the rollout (policy or reference): training has diverged.")

    logprobs, _ = gather_logprobs(logits, gen_tokens)
    ref_logprobs, _ = gather_logprobs(ref_logits, gen_tokens)
    return Rollout(
        prompts=list(prompts), completions=sampled.texts, tokens=tokens, attention_mask=attention_mask,
        prompt_len=prompt_len, gen_mask=gen_mask, logprobs=logprobs, ref_logprobs=ref_logprobs, values=values,
        kl_penalty=penalty_kl(logprobs, ref_logprobs, direction=kl_direction, estimator=kl_estimator,
                              logits_policy=logits, logits_ref=ref_logits) * gen_mask,
        kl_forward=kl_divergence(logits, ref_logits) * gen_mask,
        kl_reverse=kl_divergence(ref_logits, logits) * gen_mask,
        entropy=entropy(logits) * gen_mask,
        scores=score(reward, sampled.texts).to(tokens.device),
        ref_logits=ref_logits if keep_ref_logits else None,
    )
