"""bf16 mixed precision on bridges: autocast that stays finite with left padding, and weights cast once per
generation. The one home of ``torch.autocast`` for this package's models.

Why a helper instead of a bare ``torch.autocast``:

1. **Left padding becomes NaN.** Hugging Face builds the causal/padding mask in fp32 with the fp32 minimum
   (-3.40e38) at masked keys; TransformerLens adds it to the attention scores in their dtype, and in bf16
   that minimum overflows to -inf (bf16's largest magnitude is 3.39e38). The leading pads of a left-padded
   row see no real key, so their whole score row is -inf and softmax returns NaN. One layer later the pads'
   NaN values meet every real query with an attention weight of exactly 0, and 0 * NaN = NaN: the whole
   row's logits are NaN. In fp32 those pad rows are finite (every key at -3.4e38: a uniform pattern that no
   real position reads). `autocast` restores exactly that: a hook on every ``attn.hook_attn_scores``
   (TransformerLens's public pre-softmax hook, after the mask) replaces -inf by the dtype's finite minimum.
   Real positions are untouched (a finite score minus 3.39e38 still has weight exactly 0 after softmax).
2. **Frozen weights are cast again at every decoding step.** Autocast caches the bf16 copy of a weight for
   the length of the ``autocast`` block only when the weight is a leaf that requires grad. A frozen weight
   -- the tied embedding/unembedding (49152 x 576 in SmolLM2), every base weight under LoRA -- is cast again
   at each of the ``max_new_tokens`` steps, which can cost more than the step's matmuls.
   ``cast_frozen_once=True`` marks frozen weights as requiring grad for the block (no-grad code only, so no
   graph and no gradient can result) and restores them on exit, also on error.
3. **``torch.inference_mode`` turns that cache off** (every call casts every weight again), and tensors made
   under it cannot be saved for a later backward (the rollout's log-probs, values and advantages feed the
   PPO loss). Sampling and the no-grad passes therefore use ``torch.no_grad``.
4. **Logits in fp32 where log-probs are read** (``fp32_logits=True``). Rounding the logits themselves to bf16
   roughly doubles the drift from fp32, and sampling at temperature T divides that rounding by T again
   (benchmarks/precision_drift.py). The scoring passes (policy, reference, update) therefore run the
   unembedding with autocast off. Sampling keeps bf16 logits: its draws are then scored by those passes, so
   its rounding moves which tokens are drawn (by the pure-bf16 drift measured there), not the log-probs PPO
   computes with.

An ``autocast`` block must not span an optimizer step: its cache would hand the next forward the bf16 copy
of the weights before the step. Enter one block per forward (what `ppo.rollout` and `ppo.update` do).
Master weights, optimizer state and every loss stay fp32: callers cast logits and values with ``.float()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from rlhf_interp.core.kl import kl_from_logprobs

PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
_SCORE_HOOK_SUFFIX = "attn.hook_attn_scores"


def check_precision(precision: str) -> str:
    """``precision`` if it is one of `PRECISIONS`; otherwise a ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not supported: use one of {PRECISIONS} (bf16 = bfloat16 "
                         f"autocast with fp32 weights and losses; fp16 would need loss scaling).")
    return precision


def _finite_scores(scores: torch.Tensor, hook) -> torch.Tensor:
    """-inf (a fully masked key in a low-precision dtype) -> the dtype's finite minimum; all else unchanged."""
    return scores.clamp_min(torch.finfo(scores.dtype).min)


def _is_score_hook(name: str) -> bool:
    return name.endswith(_SCORE_HOOK_SUFFIX)


def _models(models) -> list:
    """The distinct bridges given (one, several, None entries skipped; a reference may be the policy itself)."""
    if models is None:
        return []
    if isinstance(models, torch.nn.Module):
        return [models]
    return list({id(m): m for m in models if m is not None}.values())


@contextlib.contextmanager
def _frozen_weights_cached(models: list) -> Iterator[None]:
    if torch.is_grad_enabled():
        raise RuntimeError("cast_frozen_once is for no-grad code (sampling, reference passes): with gradients on "
                           "it would train frozen weights. Wrap the call in torch.no_grad().")
    frozen = {id(p): p for m in models for p in m.parameters() if p.is_floating_point() and not p.requires_grad}
    for p in frozen.values():
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen.values():
            p.requires_grad_(False)


@contextlib.contextmanager
def _fp32_unembed(model, device_type: str) -> Iterator[None]:
    """The unembedding of ``model`` runs with autocast off: fp32 logits (see the module docstring, point 4)."""
    if not isinstance(getattr(model, "unembed", None), torch.nn.Module):
        raise TypeError(f"fp32_logits needs a bridge with an `unembed` module; {type(model).__name__} has none.")

    def off(module, args):
        torch.set_autocast_enabled(device_type, False)
        return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    def on(module, args, output):
        torch.set_autocast_enabled(device_type, True)

    handles = [model.unembed.register_forward_pre_hook(off),
               model.unembed.register_forward_hook(on, always_call=True)]  # re-enabled also when it raises
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def autocast(models, precision: str = "fp32", *, cast_frozen_once: bool = False,
             fp32_logits: bool = False, finite_scores: bool = True) -> Iterator[None]:
    """Run ``models`` (a bridge or several) in ``precision`` inside the block.

    ``"fp32"``: nothing changes. ``"bf16"``: ``torch.autocast`` to bfloat16 on the models' device, finite
    attention scores in every model (see the module docstring, point 1); with ``cast_frozen_once`` (for
    no-grad code that runs a model many times, such as KV-cached sampling) frozen weights cast once (point 2);
    with ``fp32_logits`` the unembedding in fp32 (point 4). ``finite_scores=False`` leaves out point 1's hook,
    for code that runs the models' weights without TransformerLens's attention (`rlhf_interp.bridge.twin`:
    Hugging Face's sdpa masks pads with booleans and needs no fix).
    """
    check_precision(precision)
    models = _models(models)
    if precision == "fp32" or not models:
        yield
        return
    device_type = next(models[0].parameters()).device.type
    with contextlib.ExitStack() as stack:
        for model in models if finite_scores else ():
            stack.enter_context(model.hooks(fwd_hooks=[(_is_score_hook, _finite_scores)]))
        if fp32_logits:
            for model in models:
                stack.enter_context(_fp32_unembed(model, device_type))
        stack.enter_context(torch.autocast(device_type, dtype=torch.bfloat16))
        if cast_frozen_once:
            stack.enter_context(_frozen_weights_cached(models))
        yield


def log_prob_drift(logits_fp32: torch.Tensor, logits_other: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """How far a lower-precision pass moved the next-token distributions, on the positions ``mask`` marks.

    Returns ``kl_per_token`` (mean exact KL(p_fp32 || p_other), nats) and ``max_kl``; the bf16 option is kept
    only while ``kl_per_token`` stays below 1e-3 on real positions (tests/test_precision.py).
    """
    keep = mask.bool()
    a = torch.log_softmax(logits_fp32.float()[keep], dim=-1)
    b = torch.log_softmax(logits_other.float()[keep], dim=-1)
    kl = kl_from_logprobs(a, b)
    return {"kl_per_token": float(kl.mean()), "max_kl": float(kl.max()), "positions": int(keep.sum())}


__all__ = ["PRECISIONS", "autocast", "check_precision", "log_prob_drift"]
