"""The one loop every causal attribution shares: run base and tuned on the same tokens, then the receiver
again under each patch, and score every patched output against both models.

Why one loop: activation patching and weight swapping differ only in *how* the receiver is changed (a
hook, a weight copy); the tokens, the positions counted, the KLs and the reward proxy must be the same or
the two tables cannot be compared. A `Patch` carries that "how" as a context-manager factory.

Conventions (stated once, used by every table of this package):

- ``direction="into_base"``: the receiver is the base model, the donor the tuned one (does the tuned
  model's piece make base behave like tuned?); ``"into_tuned"``: the reverse (does base's piece undo it?).
- Positions: every real, non-pad, non-BOS token of the texts (BOS sees no context and both models agree
  there); each one's next-token distribution counts once. Means are over all such tokens of all texts.
- ``kl_patched_tuned`` = mean KL(patched || tuned), ``kl_patched_base`` = mean KL(patched || base) (nats;
  `rlhf_interp.core.kl.kl_divergence`, exact over the vocabulary).
- ``kl_clean`` = KL(receiver || donor) without a patch: KL(base || tuned) into base, KL(tuned || base) into tuned.
- ``fraction_recovered`` = 1 - KL(patched || donor) / KL(receiver || donor): 1 when the patched receiver
  reproduces the donor's outputs, 0 when the patch changed nothing, negative when it moved away.
  Into base this is 1 - KL(patched || tuned) / KL(base || tuned). A ratio of means over tokens.
- ``reward_proxy`` = mean over positions of log P(next token is in the rewarded class) (e.g. every token
  containing "."), the teacher-forced stand-in for the sampled reward; ``reward_proxy_recovered`` =
  (patched - receiver) / (donor - receiver) of that mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from rlhf_interp.diff import check_compatible
from rlhf_interp.diff.stream import PairedBatch, paired_batches
from rlhf_interp.core.kl import kl_divergence

DIRECTIONS: tuple[str, ...] = ("into_base", "into_tuned")

COLUMNS: tuple[str, ...] = (
    "direction", "layer", "component", "fraction_recovered", "kl_patched_tuned", "kl_patched_base", "kl_clean",
    "reward_proxy", "reward_proxy_recovered", "reward_proxy_receiver", "reward_proxy_donor", "n_tokens",
)


def check_directions(directions: Sequence[str]) -> tuple[str, ...]:
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad or not directions:
        raise ValueError(f"Unknown patching direction(s) {bad or list(directions)}; use 'into_base' (run base with "
                         f"the tuned model's piece) and/or 'into_tuned' (run tuned with base's).")
    return tuple(dict.fromkeys(directions))


def rewarded_token_ids(tokenizer, substring: str = ".") -> list[int]:
    """Ids of every vocabulary token whose decoded text contains ``substring`` (the rewarded token class)."""
    if not substring:
        raise ValueError("The rewarded token class needs a non-empty substring, e.g. '.'.")
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special and substring in tokenizer.decode([i])]
    if not ids:
        raise ValueError(f"No token of this tokenizer contains {substring!r}; pick another rewarded substring.")
    return ids


def class_logprob(logits: Float[Tensor, "n vocab"], token_ids: Tensor | None) -> Tensor:
    """log P(next token in ``token_ids``) per position (zeros when no class is given)."""
    if token_ids is None:
        return torch.zeros(logits.shape[0], dtype=logits.dtype)
    return torch.logsumexp(torch.log_softmax(logits, dim=-1)[:, token_ids.to(logits.device)], dim=-1)


@dataclass
class Sums:
    """Running sums over counted tokens of one patched (or clean) output."""

    kl_tuned: float = 0.0
    kl_base: float = 0.0
    proxy: float = 0.0
    n: int = 0

    @torch.no_grad()
    def add(self, logits: Tensor, base_logits: Tensor, tuned_logits: Tensor, keep: Bool[Tensor, "batch pos"],
            token_ids: Tensor | None, chunk: int = 256) -> None:
        """Add the counted positions of one batch (in chunks of positions, to bound vocab-sized temporaries)."""
        p_all, base_all, tuned_all = logits[keep], base_logits[keep], tuned_logits[keep]
        for start in range(0, p_all.shape[0], chunk):
            p = p_all[start:start + chunk]
            self.kl_tuned += float(kl_divergence(p, tuned_all[start:start + chunk]).double().sum())
            self.kl_base += float(kl_divergence(p, base_all[start:start + chunk]).double().sum())
            self.proxy += float(class_logprob(p, token_ids).double().sum())
        self.n += int(keep.sum())

    def mean(self, name: str) -> float:
        return getattr(self, name) / max(self.n, 1)


@dataclass(frozen=True)
class Patch:
    """One intervention: which model receives it and a factory for the context manager that applies it.

    ``apply(batch)`` is entered around the receiver's forward pass on ``batch.tokens``; it must undo itself
    on exit (also on error).
    """

    direction: str
    layer: int
    component: str
    apply: Callable[[PairedBatch], AbstractContextManager]


def run_patches(base, tuned, texts: Sequence[str], patches: Sequence[Patch], *, hook_names: Sequence[str] = (),
                reward_token_ids: Sequence[int] | None = None, batch_size: int = 8, desc: str = "patching"
                ) -> pd.DataFrame:
    """Score every patch on ``texts``; one row per patch (columns `COLUMNS`, documented in the module).

    ``hook_names``: activations to capture from both models per batch (what the patches read from the batch).
    Raises `rlhf_interp.diff.ModelMismatchError` before any forward pass when the two models cannot be compared.
    """
    check_compatible(base, tuned)
    for patch in patches:
        check_directions([patch.direction])
    ids = torch.tensor(sorted(set(reward_token_ids)), dtype=torch.long) if reward_token_ids else None
    clean = {"base": Sums(), "tuned": Sums()}
    sums = [Sums() for _ in patches]
    for batch in paired_batches(base, tuned, texts, hook_names, batch_size=batch_size, desc=desc):
        keep = batch.token_mask.to(batch.base_logits.device)
        base_logits, tuned_logits = batch.base_logits.float(), batch.tuned_logits.float()
        clean["base"].add(base_logits, base_logits, tuned_logits, keep, ids)
        clean["tuned"].add(tuned_logits, base_logits, tuned_logits, keep, ids)
        for patch, acc in zip(patches, sums):
            receiver = base if patch.direction == "into_base" else tuned
            device = receiver.cfg.device
            with torch.no_grad(), patch.apply(batch):
                logits = receiver(batch.tokens.to(device), attention_mask=batch.attention_mask.to(device))
            acc.add(logits.float().to(keep.device), base_logits, tuned_logits, keep, ids)
    return pd.DataFrame([_row(patch, acc, clean, ids is not None) for patch, acc in zip(patches, sums)],
                        columns=list(COLUMNS))


def _row(patch: Patch, acc: Sums, clean: dict[str, Sums], has_proxy: bool) -> dict:
    receiver, donor = ("base", "tuned") if patch.direction == "into_base" else ("tuned", "base")
    kl_clean = clean[receiver].mean(f"kl_{donor}")
    kl_to_donor = acc.mean(f"kl_{donor}")
    proxy_r, proxy_d, proxy = clean[receiver].mean("proxy"), clean[donor].mean("proxy"), acc.mean("proxy")
    nan = float("nan")
    return {
        "direction": patch.direction, "layer": patch.layer, "component": patch.component,
        "fraction_recovered": 1.0 - kl_to_donor / kl_clean if kl_clean > 0 else nan,
        "kl_patched_tuned": acc.mean("kl_tuned"), "kl_patched_base": acc.mean("kl_base"), "kl_clean": kl_clean,
        "reward_proxy": proxy if has_proxy else nan,
        "reward_proxy_recovered": (proxy - proxy_r) / (proxy_d - proxy_r) if has_proxy and proxy_d != proxy_r else nan,
        "reward_proxy_receiver": proxy_r if has_proxy else nan, "reward_proxy_donor": proxy_d if has_proxy else nan,
        "n_tokens": acc.n,
    }
