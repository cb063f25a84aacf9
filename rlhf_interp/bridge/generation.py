"""Batched sampling from a bridge with the toolkit's tokenization convention.

Why a helper around ``bridge.generate``: every caller (edit measurements, rollouts) needs the same
three things back — the token ids of prompt + continuation, which of them are real (left padding,
tokens after EOS), and the continuation text alone — and must pass our left-padded, BOS-prefixed
tokens *with* their attention mask (without it the pads shift every real token's position).

Layout of a `Generation` (``P`` = padded prompt width, ``T`` = number of new columns)::

    tokens          [batch, P + T]  prompt (left-padded) then sampled ids; after EOS the bridge writes EOS
    attention_mask  [batch, P + T]  1 on real prompt tokens and on generated tokens up to and including EOS
    generated_mask  [batch, P + T]  1 only on generated tokens up to and including EOS
"""

from __future__ import annotations

import functools
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from jaxtyping import Int
from torch import Tensor

from rlhf_interp.bridge.interventions import suspended
from rlhf_interp.bridge.precision import autocast
from rlhf_interp.bridge.tokens import tokenize
from rlhf_interp.bridge.twin import Twin, mirrored_hooks, twin_of
from rlhf_interp.core.masks import continuation_mask
from rlhf_interp.core.seeding import seeded


@dataclass
class Generation:
    """Prompts and their sampled continuations, with the masks every later computation needs."""

    prompts: list[str]
    tokens: Int[Tensor, "batch seq"]
    attention_mask: Int[Tensor, "batch seq"]
    generated_mask: Int[Tensor, "batch seq"]
    prompt_len: int  # padded prompt width P: columns >= P were generated
    texts: list[str]  # continuations only (special tokens removed)

    @property
    def n_new_tokens(self) -> Int[Tensor, "batch"]:
        """Generated tokens per sequence (EOS included when it was sampled)."""
        return self.generated_mask.sum(dim=1)

    @property
    def prompt_mask(self) -> Int[Tensor, "batch seq"]:
        return self.attention_mask * (1 - self.generated_mask)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def select(self, rows: slice | list[int]) -> "Generation":
        """A sub-batch (same padded width)."""
        idx = list(range(len(self)))[rows] if isinstance(rows, slice) else list(rows)
        return Generation([self.prompts[i] for i in idx], self.tokens[idx], self.attention_mask[idx],
                          self.generated_mask[idx], self.prompt_len, [self.texts[i] for i in idx])


continuation_masks = continuation_mask  # the old name; the mask itself lives in rlhf_interp.core.masks


class KVCacheError(RuntimeError):
    """KV-cached generation disagrees with uncached generation: the installed libraries do not fit together."""


# Bridges already checked, with the samplers checked on each (weak keys: a freed model is forgotten).
_KV_CHECKED: "weakref.WeakKeyDictionary[object, set[str]]" = weakref.WeakKeyDictionary()
SAMPLERS: tuple[str, ...] = ("auto", "bridge")
_CANARY_PROMPTS = ["The capital of France is", "Hello"]  # two lengths, so the check covers left padding
_CANARY_TOKENS = 4
_NEAR_TIE = 1e-3  # logit gap below which a greedy choice may legitimately differ


def _library_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("transformers", "transformer-lens", "torch"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def _bridge_sample(bridge, tokens: Tensor, mask: Tensor, *, max_new_tokens: int, do_sample: bool,
                   temperature: float, top_k: int | None, top_p: float | None, stop_at_eos: bool,
                   use_past_kv_cache: bool) -> Tensor:
    """Sampling through TransformerLens's own loop (every hook point available)."""
    return bridge.generate(tokens, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=do_sample,
                           temperature=temperature, top_k=top_k, top_p=top_p, stop_at_eos=stop_at_eos,
                           use_past_kv_cache=use_past_kv_cache, return_type="tokens", verbose=False)


def _twin_sample(bridge, twin: Twin, tokens: Tensor, mask: Tensor, *, max_new_tokens: int, do_sample: bool,
                 temperature: float, top_k: int | None, top_p: float | None, stop_at_eos: bool,
                 use_past_kv_cache: bool) -> Tensor:
    """Sampling with Hugging Face's ``generate`` on the bridge's twin, with the bridge's conventions: the same
    distribution (logits / temperature, optional top-k / top-p), and EOS written after a row's first EOS."""
    from transformers import GenerationConfig

    eos = bridge.tokenizer.eos_token_id if stop_at_eos else None
    pad = eos if eos is not None else bridge.tokenizer.pad_token_id
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature if do_sample else None,
        top_k=(top_k or 0) if do_sample else None, top_p=top_p if do_sample else None,
        eos_token_id=eos, pad_token_id=pad if pad is not None else 0, use_cache=use_past_kv_cache)
    return twin.model.generate(tokens, attention_mask=mask, generation_config=config)


@contextmanager
def _sampler(bridge, sampler: str) -> Iterator[tuple[str, Callable[..., Tensor]]]:
    """The fastest way to sample that keeps every active hook: the twin when it can run them all
    (`rlhf_interp.bridge.twin`), otherwise the bridge. Yields its name ("twin" / "bridge") and function."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")
    twin = twin_of(bridge) if sampler == "auto" else None
    if twin is None:
        yield "bridge", functools.partial(_bridge_sample, bridge)
        return
    with mirrored_hooks(bridge, twin) as mirrored:
        if mirrored:
            yield "twin", functools.partial(_twin_sample, bridge, twin)
        else:
            yield "bridge", functools.partial(_bridge_sample, bridge)


@torch.no_grad()
def check_kv_cache(bridge, *, force: bool = False, sampler: str = "auto") -> None:
    """Raise `KVCacheError` if KV-cached greedy generation differs from the uncached model.

    Why: a library upgrade once broke the cache silently (transformers 5.24 renamed the cache argument
    that transformer-lens 4.3 reads, so every decode step attended to itself alone) and PPO trained on
    garbage without an error. A few greedy tokens of two prompts are generated with the cache (by the sampler
    `generate` would use: the bridge's twin or the bridge itself), then teacher-forced through the bridge
    without it: every cached choice must be the uncached argmax (up to near-ties). So the check also proves
    that the twin is the bridge's model. Edits active on the bridge are suspended for the check. Runs once per
    bridge and sampler (~0.1-0.5 s).
    """
    with suspended(bridge):
        with _sampler(bridge, sampler) as (name, sample):
            checked = _KV_CHECKED.setdefault(bridge, set())
            if name in checked and not force:
                return
            tokens, mask = tokenize(bridge, _CANARY_PROMPTS)
            prompt_len = tokens.shape[1]
            out = sample(tokens, mask, max_new_tokens=_CANARY_TOKENS, do_sample=False, temperature=1.0, top_k=None,
                         top_p=None, stop_at_eos=False, use_past_kv_cache=True)
        # Outside the sampler: the twin shares the bridge's leaf modules, and its mirrored hooks are gone now.
        full_mask = torch.cat([mask, torch.ones_like(out[:, prompt_len:])], dim=1)
        logits = bridge(out, attention_mask=full_mask, return_type="logits").float()
    predicted = logits[:, prompt_len - 1:-1]  # logits that chose each generated column
    chosen = out[:, prompt_len:]
    top2 = predicted.topk(2, dim=-1).values
    chosen_logit = predicted.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
    wrong = (chosen_logit < top2[..., 0] - _NEAR_TIE) & ((top2[..., 0] - top2[..., 1]) > _NEAR_TIE)
    if bool(wrong.any()):
        row, col = [int(i) for i in wrong.nonzero()[0]]
        decode = bridge.tokenizer.decode
        raise KVCacheError(
            f"KV-cached generation ({name}) disagrees with the uncached model, so sampled text would be garbage "
            f"(prompt {_CANARY_PROMPTS[row]!r}: cached greedy {decode(chosen[row])!r}, but at new token {col + 1} "
            f"the uncached model prefers {decode(predicted[row, col].argmax())!r}). Installed: "
            f"{_library_versions()}. This happens when transformers and transformer-lens disagree about the "
            "cache argument (transformers >= 5.24 with transformer-lens 4.3). Fix: install the tested versions, "
            "`pip install -c constraints.txt -e .` (or `pip install 'transformers<5.24'`), or pass "
            "use_past_kv_cache=False (about 6x slower)."
        )
    checked.add(name)


@torch.no_grad()
def generate(bridge, prompts: list[str] | str, *, max_new_tokens: int = 24, do_sample: bool = True,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, use_past_kv_cache: bool = True, stop_at_eos: bool = True,
             precision: str = "fp32", sampler: str = "auto") -> Generation:
    """Sample continuations of ``prompts`` in one left-padded batch (BOS prepended, as `tokenize` does).

    ``seed`` makes sampling reproducible without touching the caller's global RNG (the same seed
    gives the same samples for the same logits, which keeps sweeps comparable setting to setting).
    Hooks and edits that are active on ``bridge`` stay active during generation. ``sampler="auto"`` samples
    on the bridge's plain Hugging Face twin (same weights, raw ``generate`` speed) when every active hook has
    a place there, else through the bridge; ``"bridge"`` always through the bridge. ``precision``: "fp32" or
    "bf16" (`rlhf_interp.bridge.precision.autocast`, frozen weights cast once). The first KV-cached call per
    sampler runs `check_kv_cache` (raises `KVCacheError` if the cache is broken).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise ValueError("generate needs at least one prompt.")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    if use_past_kv_cache:
        check_kv_cache(bridge, sampler=sampler)
    tokens, mask = tokenize(bridge, prompts)
    prompt_len = tokens.shape[1]
    with _sampler(bridge, sampler) as (name, sample), seeded(seed), \
            autocast(bridge, precision, cast_frozen_once=True, finite_scores=name == "bridge"):
        out = sample(tokens, mask, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                     top_k=top_k, top_p=top_p, stop_at_eos=stop_at_eos, use_past_kv_cache=use_past_kv_cache)
    new_tokens = out[:, prompt_len:]
    eos = bridge.tokenizer.eos_token_id
    gen_mask = continuation_mask(new_tokens, [eos] if (stop_at_eos and eos is not None) else [])
    attention_mask = torch.cat([mask, gen_mask], dim=1)
    generated_mask = torch.cat([torch.zeros_like(mask), gen_mask], dim=1)
    texts = [bridge.tokenizer.decode(row[m.bool()], skip_special_tokens=True)
             for row, m in zip(new_tokens.cpu(), gen_mask.cpu())]
    return Generation(list(prompts), out, attention_mask, generated_mask, prompt_len, texts)
