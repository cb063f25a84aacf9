"""A bank of the reference's own samples per prompt, for the sequence-level KL(ref||pi) (placement ``sequence``).

KL(ref||pi) of whole sequences is an expectation over the *reference's* samples, whose states do not move with the
policy, so its gradient is ``-E_{x~ref}[sum_t grad log pi(x_t|x_<t)]``: samples from the reference, no importance
weights (docs/kl.md). The reference never changes, so each prompt's samples are drawn once and kept.

Keys and bounds: an entry is keyed on the prompt's text (its content, not its position in a list) and the bank
keeps at most ``max_prompts`` entries (least recently used dropped first). Every entry is drawn with its own seed,
``mix_seed(seed, digest(prompt))``, as one batch of ``size`` copies of that prompt alone (no padding from other
prompts), so a dropped entry, a resumed run or another process redraws exactly the same samples: the bank needs
no checkpoint.

Per PPO step the update uses one sample per prompt of its minibatch (`BankBatch.rows`): sample
``(phase * epochs + epoch) mod size``, so over a phase's epochs a prompt's samples take turns (an unbiased estimate
whichever sample is used; a larger bank lowers the variance across phases, ``docs/kl_sequence_bank.csv``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from rlhf_interp.core.hashing import text_digest
from rlhf_interp.core.seeding import mix_seed

# (prompts, seed) -> Generation of the reference (the trainer's sampler: the reference bridge, or the adapter-off policy)
SampleReference = Callable[[list[str], int], object]
# (tokens, attention_mask) -> reference logits at every position
ReferenceLogits = Callable[[Tensor, Tensor], Tensor]


@dataclass
class BankEntry:
    """``size`` reference samples of one prompt: generated tokens (right-padded to ``gen``), their mask, the
    prompt's tokens, and the reference's log-probs of each generated token (tempered: the sampled distribution)."""

    prompt_tokens: Tensor  # [prompt_len] (BOS first, no padding)
    gen_tokens: Tensor  # [size, gen]
    gen_mask: Tensor  # [size, gen] float
    ref_logprobs: Tensor  # [size, gen]


@dataclass
class BankBatch:
    """The bank samples of one rollout's prompts, left-padded to one prompt width: rows ``[batch, size, ...]``."""

    tokens: Tensor  # [batch, size, prompt_len + gen]
    attention_mask: Tensor  # [batch, size, prompt_len + gen]
    prompt_len: int
    gen_mask: Tensor  # [batch, size, gen]
    ref_logprobs: Tensor  # [batch, size, gen]
    offset: int  # which sample the first epoch uses (phase * epochs)

    def rows(self, idx: Tensor, epoch: int, per_step: int = 1) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(tokens, attention_mask, gen_mask, ref_logprobs)`` of ``per_step`` samples per prompt in ``idx`` for
        ``epoch`` (prompt-major rows): samples ``(offset + epoch) * per_step + i`` mod the bank's size, so
        successive epochs and phases cycle through the bank."""
        size = self.tokens.shape[1]
        js = torch.tensor([((self.offset + epoch) * per_step + i) % size for i in range(per_step)],
                          device=self.tokens.device)
        pick = (idx[:, None].to(self.tokens.device), js[None, :])
        return tuple(t[pick].flatten(0, 1) for t in (self.tokens, self.attention_mask, self.gen_mask,
                                                     self.ref_logprobs))


class ReferenceBank:
    def __init__(self, sample: SampleReference, reference_logits: ReferenceLogits, *, size: int, seed: int,
                 temperature: float, pad_token_id: int, max_prompts: int = 1024):
        if size < 1:
            raise ValueError(f"A reference bank needs at least one sample per prompt, got {size}.")
        self.sample, self.reference_logits = sample, reference_logits
        self.size, self.seed, self.temperature, self.pad = size, seed, temperature, pad_token_id
        self.max_prompts = max_prompts
        self.entries: OrderedDict[str, BankEntry] = OrderedDict()
        self.drawn = 0  # entries drawn so far (redraws after eviction included)

    def seed_of(self, prompt: str) -> int:
        return mix_seed(self.seed, int(text_digest([prompt])[:12], 16))

    def entry(self, prompt: str) -> BankEntry:
        key = text_digest([prompt])
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        entry = self._draw(prompt)
        self.entries[key] = entry
        while len(self.entries) > self.max_prompts:
            self.entries.popitem(last=False)
        return entry

    @torch.no_grad()
    def _draw(self, prompt: str) -> BankEntry:
        from rlhf_interp.core.kl import sampling_logprobs

        sampled = self.sample([prompt] * self.size, self.seed_of(prompt))
        tokens, mask, p = sampled.tokens, sampled.attention_mask, sampled.prompt_len
        logits = self.reference_logits(tokens, mask)[:, p - 1:tokens.shape[1] - 1].float()
        gen = tokens[:, p:]
        ref_logprobs = sampling_logprobs(logits, self.temperature).gather(-1, gen[..., None]).squeeze(-1)
        gen_mask = sampled.generated_mask[:, p:].float()
        self.drawn += 1
        return BankEntry(tokens[0, :p].clone(), gen.clone(), gen_mask, ref_logprobs * gen_mask)

    def batch(self, prompts: list[str], offset: int, gen: int) -> BankBatch:
        """The bank samples of ``prompts`` (drawn now if new), padded to ``gen`` generated tokens and one prompt width."""
        entries = [self.entry(p) for p in prompts]
        width = max(e.prompt_tokens.shape[0] for e in entries)
        b, s = len(entries), self.size
        device = entries[0].gen_tokens.device
        tokens = torch.full((b, s, width + gen), self.pad, dtype=entries[0].gen_tokens.dtype, device=device)
        attention = torch.zeros((b, s, width + gen), dtype=torch.long, device=device)
        gen_mask = torch.zeros((b, s, gen), device=device)
        ref_logprobs = torch.zeros((b, s, gen), device=device)
        for i, e in enumerate(entries):
            p, g = e.prompt_tokens.shape[0], min(e.gen_tokens.shape[1], gen)
            tokens[i, :, width - p:width] = e.prompt_tokens
            attention[i, :, width - p:width] = 1
            tokens[i, :, width:width + g] = e.gen_tokens[:, :g]
            attention[i, :, width:width + g] = e.gen_mask[:, :g].long()
            gen_mask[i, :, :g] = e.gen_mask[:, :g]
            ref_logprobs[i, :, :g] = e.ref_logprobs[:, :g]
        return BankBatch(tokens, attention, width, gen_mask, ref_logprobs, offset)


def sequence_kl_loss(penalty, policy, head, bank: BankBatch, idx: Tensor, epoch: int, *, value_hook: str,
                     temperature: float, precision: str = "fp32", reference: ReferenceLogits | None = None,
                     per_step: int = 1) -> Tensor:
    """The sequence-level KL(ref||pi) loss term (`KLPenalty.sequence_loss_term`) on ``per_step`` bank samples of each
    prompt in ``idx``, for this ``epoch``: one policy pass over the reference's text, with its graph (and, for the
    exact estimator, one reference pass: its full distribution at the bank's states is not kept between steps).
    More samples per step average more of the reference's sequences into each step's gradient (less noise)."""
    from rlhf_interp.core.kl import sampling_logprobs
    from rlhf_interp.ppo.rollout import gather_logprobs, policy_forward

    tokens, attention_mask, gen_mask, ref_logprobs = bank.rows(idx, epoch, per_step)
    p = bank.prompt_len
    logits, _ = policy_forward(policy, head, tokens, attention_mask, p, value_hook, precision)
    logp_all = sampling_logprobs(logits, temperature)
    logprobs = gather_logprobs(logp_all, tokens[:, p:])
    ref_logp_all = None
    if penalty.needs_full_logprobs:
        if reference is None:
            raise ValueError("The exact sequence-level KL needs the reference's logits.")
        with torch.no_grad():
            ref_logp_all = sampling_logprobs(reference(tokens, attention_mask)[:, p - 1:tokens.shape[1] - 1].float(),
                                             temperature)
    return penalty.sequence_loss_term(logprobs, ref_logprobs, gen_mask, logp_all=logp_all, ref_logp_all=ref_logp_all)
