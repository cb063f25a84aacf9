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
from dataclasses import dataclass, field

import pandas as pd
import torch
from jaxtyping import Bool
from torch import Tensor

from rlhf_interp.diff import check_compatible
from rlhf_interp.diff.stream import PairedBatch, paired_batches
from rlhf_interp.core.kl import kl_from_logprobs

DIRECTIONS: tuple[str, ...] = ("into_base", "into_tuned")

COLUMNS: tuple[str, ...] = (
    "direction", "layer", "component", "fraction_recovered", "kl_patched_tuned", "kl_patched_base", "kl_clean",
    "reward_proxy", "reward_proxy_recovered", "reward_proxy_receiver", "reward_proxy_donor", "n_tokens",
)
NONE = "unpatched"  # the component of the unpatched receiver's rows in a per-text table (patch -1)
# Per patch (``patch``: its index in the patches given, -1 for the unpatched receivers) and text (``text``: its
# index in the texts given): sums over the text's counted positions of
# KL(output || tuned), KL(output || base) and the reward proxy, and how many positions were counted.
PER_TEXT_COLUMNS: tuple[str, ...] = (
    "patch", "direction", "layer", "component", "text", "n_tokens", "kl_tuned_sum", "kl_base_sum", "proxy_sum",
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


@dataclass
class Sums:
    """Per-text sums over counted tokens of one patched (or clean) output, gathered batch by batch.

    Why per text: the texts are the random draw, so an interval for a ratio of means over positions (the
    fraction recovered) resamples texts, which needs each text's own sums (`per_text_frame`)."""

    kl_tuned: list[Tensor] = field(default_factory=list)
    kl_base: list[Tensor] = field(default_factory=list)
    proxy: list[Tensor] = field(default_factory=list)
    n: list[Tensor] = field(default_factory=list)

    @torch.no_grad()
    def add(self, logits: Tensor, base_logp: Tensor, tuned_logp: Tensor, keep: Bool[Tensor, "batch pos"],
            token_ids: Tensor | None, chunk: int = 256) -> None:
        """Add the counted positions of one batch (in chunks of positions, to bound vocab-sized temporaries).

        ``base_logp`` / ``tuned_logp``: the clean models' log-probabilities at the counted positions
        (``[n_kept, vocab]``, computed once per batch); ``logits``: this output's, ``[batch, pos, vocab]``."""
        rows = keep.nonzero()[:, 0]
        p_all = logits[keep]
        sums = torch.zeros(3, keep.shape[0], dtype=torch.float64)
        for start in range(0, p_all.shape[0], chunk):
            logp = torch.log_softmax(p_all[start:start + chunk], dim=-1)
            at = rows[start:start + chunk]
            sums[0].index_add_(0, at, kl_from_logprobs(logp, tuned_logp[start:start + chunk]).double())
            sums[1].index_add_(0, at, kl_from_logprobs(logp, base_logp[start:start + chunk]).double())
            if token_ids is not None:
                sums[2].index_add_(0, at, torch.logsumexp(logp[:, token_ids.to(logp.device)], dim=-1).double())
        self.kl_tuned.append(sums[0])
        self.kl_base.append(sums[1])
        self.proxy.append(sums[2])
        self.n.append(keep.sum(dim=1).long())

    def per_text(self) -> dict[str, Tensor]:
        """Each text's sums (``kl_tuned``, ``kl_base``, ``proxy``) and counted positions (``n``)."""
        return {name: torch.cat(getattr(self, name)) if getattr(self, name) else torch.zeros(0)
                for name in ("kl_tuned", "kl_base", "proxy", "n")}


@dataclass(frozen=True)
class Patch:
    """One intervention: which model receives it and a factory for the context manager that applies it.

    ``apply(batch)`` is entered around the receiver's forward pass on ``batch.tokens``; it must undo itself
    on exit (also on error). ``unchanged(batch)``, when given and true, says the patch leaves the receiver
    exactly as it is on this batch (e.g. it writes an activation equal to the receiver's own, as in layers
    that training froze): its forward pass is skipped and the receiver's clean logits are scored instead,
    the same numbers at no cost.
    """

    direction: str
    layer: int
    component: str
    apply: Callable[[PairedBatch], AbstractContextManager]
    unchanged: Callable[[PairedBatch], bool] | None = None


def run_patches(base, tuned, texts: Sequence[str], patches: Sequence[Patch], *, hook_names: Sequence[str] = (),
                reward_token_ids: Sequence[int] | None = None, batch_size: int = 8, desc: str = "patching",
                return_per_text: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Score every patch on ``texts``; one row per patch (columns `COLUMNS`, documented in the module).

    ``hook_names``: activations to capture from both models per batch (what the patches read from the batch).
    With ``return_per_text``, also the per-text sums (`PER_TEXT_COLUMNS`) the summary was made from, for
    intervals over texts (`rlhf_interp.patching.intervals`). Raises `rlhf_interp.diff.ModelMismatchError`
    before any forward pass when the two models cannot be compared.
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
        base_logp = torch.log_softmax(base_logits[keep], dim=-1)  # once per batch, shared by every patch
        tuned_logp = torch.log_softmax(tuned_logits[keep], dim=-1)
        clean["base"].add(base_logits, base_logp, tuned_logp, keep, ids)
        clean["tuned"].add(tuned_logits, base_logp, tuned_logp, keep, ids)
        for patch, acc in zip(patches, sums):
            receiver = base if patch.direction == "into_base" else tuned
            device = receiver.cfg.device
            if patch.unchanged is not None and patch.unchanged(batch):
                logits = base_logits if patch.direction == "into_base" else tuned_logits
            else:
                with torch.no_grad(), patch.apply(batch):
                    logits = receiver(batch.tokens.to(device), attention_mask=batch.attention_mask.to(device))
            acc.add(logits.float().to(keep.device), base_logp, tuned_logp, keep, ids)
    rows = [_text_rows(-1, direction, -1, NONE, clean[model]) for direction, model in (("into_base", "base"),
                                                                                   ("into_tuned", "tuned"))]
    rows += [_text_rows(i, patch.direction, patch.layer, patch.component, acc)
             for i, (patch, acc) in enumerate(zip(patches, sums))]
    per_text = pd.concat(rows, ignore_index=True)
    summary = summarize(per_text, has_proxy=ids is not None)
    return (summary, per_text) if return_per_text else summary


def _text_rows(index: int, direction: str, layer: int, component: str, acc: Sums) -> pd.DataFrame:
    sums = acc.per_text()
    return pd.DataFrame({"patch": index, "direction": direction, "layer": layer, "component": component,
                         "text": range(len(sums["n"])), "n_tokens": sums["n"].numpy(),
                         "kl_tuned_sum": sums["kl_tuned"].numpy(), "kl_base_sum": sums["kl_base"].numpy(),
                         "proxy_sum": sums["proxy"].numpy()}, columns=list(PER_TEXT_COLUMNS))


def summarize(per_text: pd.DataFrame, *, has_proxy: bool = True) -> pd.DataFrame:
    """The summary table (`COLUMNS`, one row per patch in the order first seen) from per-text sums: every mean
    is a sum over texts divided by the positions counted, so it equals the pooled mean over positions.

    ``per_text`` must hold the unpatched rows (patch -1, component `NONE`) of both directions' receivers."""
    clean = per_text[per_text["patch"] < 0].groupby("direction")[
        ["kl_tuned_sum", "kl_base_sum", "proxy_sum", "n_tokens"]].sum()
    patched = per_text[per_text["patch"] >= 0]
    totals = patched.groupby(["patch", "direction", "layer", "component"], sort=False)[
        ["kl_tuned_sum", "kl_base_sum", "proxy_sum", "n_tokens"]].sum()
    nan = float("nan")
    rows = []
    for (_, direction, layer, component), t in totals.iterrows():
        receiver, donor = ("into_base", "into_tuned") if direction == "into_base" else ("into_tuned", "into_base")
        kl_col = "kl_tuned_sum" if direction == "into_base" else "kl_base_sum"
        n = max(float(t["n_tokens"]), 1.0)
        kl_clean = clean.loc[receiver, kl_col] / max(float(clean.loc[receiver, "n_tokens"]), 1.0)
        kl_to_donor = t[kl_col] / n
        proxy_r = clean.loc[receiver, "proxy_sum"] / max(float(clean.loc[receiver, "n_tokens"]), 1.0)
        proxy_d = clean.loc[donor, "proxy_sum"] / max(float(clean.loc[donor, "n_tokens"]), 1.0)
        proxy = t["proxy_sum"] / n
        rows.append({
            "direction": direction, "layer": int(layer), "component": component,
            "fraction_recovered": 1.0 - kl_to_donor / kl_clean if kl_clean > 0 else nan,
            "kl_patched_tuned": t["kl_tuned_sum"] / n, "kl_patched_base": t["kl_base_sum"] / n, "kl_clean": kl_clean,
            "reward_proxy": proxy if has_proxy else nan,
            "reward_proxy_recovered": (proxy - proxy_r) / (proxy_d - proxy_r)
            if has_proxy and proxy_d != proxy_r else nan,
            "reward_proxy_receiver": proxy_r if has_proxy else nan, "reward_proxy_donor": proxy_d if has_proxy else nan,
            "n_tokens": int(t["n_tokens"]),
        })
    return pd.DataFrame(rows, columns=list(COLUMNS))
