"""Teacher-forced per-token scores of fixed continuations under a model (and a reference): the log-prob of
each generated token, the entropy, and the exact KL in both directions at each state.

Why its own module: coverage (a policy scoring the reference's samples) and the estimator audit (exact
KL next to k1/k2/k3 from the sampled token) need the same numbers, computed chunk by chunk so a
``[rows, tokens, vocab]`` tensor of the whole set never sits in memory. Every formula is `rlhf_interp.core.kl`'s,
on the distribution that was sampled (`kl.sampling_logprobs`: temperature, top-k, top-p).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from rlhf_interp.core.kl import entropy_from_logprobs, kl_both_ways_and_entropy, sampling_logprobs

Forward = Callable[[Tensor, Tensor], Tensor]  # (tokens, attention_mask) -> logits [batch, seq, vocab]


def forward_of(bridge) -> Forward:
    """A bridge as a ``(tokens, attention_mask) -> logits`` function (`PPOTrainer.reference_logits` is one too)."""
    return lambda tokens, mask: bridge(tokens, attention_mask=mask)


@dataclass
class TokenScores:
    """Per generated token of ``rows`` sequences, ``[rows, T]`` each; zero where ``mask`` is 0.

    ``logp``: log-prob of the token in the text under the scored model; ``logp_ref``: under the reference;
    ``kl_pi_ref`` = exact KL(model || ref) at the token's state, ``kl_ref_pi`` = exact KL(ref || model);
    ``entropy`` of the model there. The reference fields are None when no reference was given.
    """

    mask: Float[Tensor, "rows T"]
    logp: Float[Tensor, "rows T"]
    entropy: Float[Tensor, "rows T"]
    logp_ref: Float[Tensor, "rows T"] | None = None
    kl_pi_ref: Float[Tensor, "rows T"] | None = None
    kl_ref_pi: Float[Tensor, "rows T"] | None = None

    def sums(self, name: str) -> Float[Tensor, " rows"]:
        """Per-sequence sum of a field over the real tokens (e.g. the sequence log-prob)."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"TokenScores.{name} was not computed: score with a reference to get it.")
        return (value * self.mask).sum(-1)

    def per_token(self, name: str) -> float:
        """Mean of a field over all real tokens."""
        return float(self.sums(name).sum() / self.mask.sum().clamp_min(1.0))

    def to_frame(self, **constants) -> pd.DataFrame:
        """One row per real token: ``row``, ``pos`` (0 = first generated token), every computed field, and
        ``constants`` as extra columns."""
        real = self.mask.bool()
        rows, pos = real.nonzero(as_tuple=True)
        data = {"row": rows.numpy(), "pos": pos.numpy()}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "mask" and value is not None:
                data[f.name] = value[real].double().numpy()
        frame = pd.DataFrame(data)
        for key, value in constants.items():
            frame[key] = value
        return frame

    @classmethod
    def cat(cls, parts: list[TokenScores]) -> TokenScores:
        """Stack parts with the same number of generated columns."""
        out = {}
        for f in fields(cls):
            values = [getattr(p, f.name) for p in parts]
            out[f.name] = None if any(v is None for v in values) else torch.cat(values)
        return cls(**out)


@torch.no_grad()
def score_tokens(model: Forward, tokens: Tensor, attention_mask: Tensor, generated_mask: Tensor, prompt_len: int,
                 *, reference: Forward | None = None, batch_size: int = 16, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None) -> TokenScores:
    """Score the generated columns (``>= prompt_len``) of left-padded ``tokens`` under ``model`` (and
    ``reference``), ``batch_size`` rows at a time. ``generated_mask`` is 1 on real generated tokens
    (a `Generation`'s fields fit directly)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    predicting = slice(prompt_len - 1, tokens.shape[1] - 1)  # logits at column c predict the token at c + 1
    parts = []
    for start in range(0, tokens.shape[0], batch_size):
        t, m = tokens[start:start + batch_size], attention_mask[start:start + batch_size]
        gen = t[:, prompt_len:]
        mask = generated_mask[start:start + batch_size, prompt_len:].float().cpu()
        logp_all = sampling_logprobs(model(t, m)[:, predicting], temperature, top_k, top_p)
        logp = logp_all.gather(-1, gen[..., None]).squeeze(-1)
        part = {"mask": mask, "logp": logp}
        if reference is None:
            part["entropy"] = entropy_from_logprobs(logp_all)
        else:
            ref_all = sampling_logprobs(reference(t, m)[:, predicting], temperature, top_k, top_p)
            kl_pi_ref, kl_ref_pi, entropy = kl_both_ways_and_entropy(logp_all, ref_all)
            part.update(entropy=entropy, logp_ref=ref_all.gather(-1, gen[..., None]).squeeze(-1),
                        kl_pi_ref=kl_pi_ref, kl_ref_pi=kl_ref_pi)
            del ref_all
        del logp_all
        real = mask.bool()  # where, not multiply: a truncated (-inf) log-prob off the mask must not become NaN
        parts.append(TokenScores(**{k: (torch.where(real, v.float().cpu(), 0.0) if k != "mask" else v)
                                    for k, v in part.items()}))
    return TokenScores.cat(parts)
