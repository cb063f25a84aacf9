"""Hand the KV cache to TransformerLens's attention under the name it reads, whatever transformers calls it.

Why: transformers 5.24 renamed the cache argument its decoder layers pass to attention
(``past_key_values`` -> ``cache``). transformer-lens 4.3's attention bridge reads only the old names
(``past_key_values`` / ``layer_past``), so with a newer transformers the cache is never updated and every
KV-cached decoding step through the bridge attends to itself alone: fluent first token, garbage after, no
error. A keyword-aware forward pre-hook (public PyTorch API, no private internals patched) copies the cache
to the old name on each attention bridge; with transformers < 5.24 it finds no ``cache`` argument and does
nothing. The KV canary (`bridge.generation`) still checks cached against uncached decoding on every model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

ADAPTER_ATTRIBUTE = "_rlhf_interp_cache_adapter"


def cache_argument(kwargs: dict[str, Any]) -> Any:
    """The KV cache a forward call was handed, under either name (None without a cache)."""
    past = kwargs.get("past_key_values")
    return past if past is not None else kwargs.get("cache")


def _cache_under_old_name(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict] | None:
    cache = kwargs.get("cache")
    if cache is None or kwargs.get("past_key_values") is not None:
        return None
    return args, {**kwargs, "past_key_values": cache}


def adapt_cache_argument(bridge: nn.Module) -> int:
    """Put the adapter on every attention bridge of ``bridge`` once; returns how many modules carry it."""
    count = 0
    for module in bridge.modules():
        if not callable(getattr(module, "_update_kv_cache", None)):
            continue  # only TransformerLens attention bridges read the cache from their keyword arguments
        if getattr(module, ADAPTER_ATTRIBUTE, None) is None:
            handle = module.register_forward_pre_hook(_cache_under_old_name, with_kwargs=True)
            setattr(module, ADAPTER_ATTRIBUTE, handle)
        count += 1
    return count
