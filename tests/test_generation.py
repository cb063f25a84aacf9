"""KV-cached generation must equal uncached generation, token for token.

Why these tests exist: transformers 5.24 renamed the cache argument that transformer-lens 4.3 reads, and
cached generation became garbage after the first token while only three steering tests noticed. Here the
plain path is compared directly (several prompts, left padding, batch > 1), with each kind of edit
active, and the runtime canary (`check_kv_cache`) is shown to catch exactly that break.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from rlhf_interp.edits import Ablation, DirectionAblation, NoEdit, Steering
from rlhf_interp.bridge.generation import KVCacheError, check_kv_cache, generate

PROMPTS = ["The capital of France is", "Hi", "Once upon a time, in a small village by the sea,", "2 + 2 ="]


def _greedy_pair(model, prompts, n=8, sampler="auto"):
    """Cached greedy tokens (on the twin where it can run the edit's hooks) and the truth: the bridge itself,
    without a cache."""
    cached = generate(model, prompts, max_new_tokens=n, do_sample=False, stop_at_eos=False, sampler=sampler)
    uncached = generate(model, prompts, max_new_tokens=n, do_sample=False, stop_at_eos=False,
                        use_past_kv_cache=False, sampler="bridge")
    return cached, uncached


def _edits(model):
    d = model.cfg.d_model
    g = torch.Generator().manual_seed(0)
    vector = torch.randn(d, generator=g) * 4
    return {
        "none": NoEdit(),
        "steer_all": Steering(vector, layers=1, positions="all"),
        "steer_prompt": Steering(vector, layers=0, positions="prompt"),
        "steer_generated": Steering(vector, layers=1, positions="generated"),
        "steer_slice": Steering(vector, layers=0, positions=slice(2, None, 2)),
        "ablate_zero_layer": Ablation("1", kind="zero"),
        "ablate_mean_head": Ablation((1, 0), kind="mean", reference_prompts=PROMPTS),
        "direction": DirectionAblation(torch.randn(d, generator=g), layers="all"),
    }


@pytest.mark.parametrize("sampler", ["auto", "bridge"])
@pytest.mark.parametrize("edit_name", [
    "none", "steer_all", "steer_prompt", "steer_generated", "steer_slice", "ablate_zero_layer",
    "ablate_mean_head", "direction"])
def test_cached_equals_uncached_tiny(tiny, edit_name, sampler):
    edit = _edits(tiny)[edit_name].on(tiny)
    with edit:
        cached, uncached = _greedy_pair(tiny, PROMPTS, sampler=sampler)
    assert cached.tokens.shape == uncached.tokens.shape
    assert torch.equal(cached.tokens, uncached.tokens), (cached.texts, uncached.texts)


def test_edits_do_change_generation(tiny):
    """Guard for the test above: the edits it uses really act on the output (else equality is vacuous)."""
    plain = generate(tiny, PROMPTS, max_new_tokens=8, do_sample=False, stop_at_eos=False)
    for name, edit in _edits(tiny).items():
        if name == "none":
            continue
        with edit.on(tiny):
            edited = generate(tiny, PROMPTS, max_new_tokens=8, do_sample=False, stop_at_eos=False)
        assert not torch.equal(edited.tokens, plain.tokens), name


@contextlib.contextmanager
def _cache_ignored(model):
    """Reproduce the transformers-5.24 break: attention never sees (so never updates) the KV cache -- in the
    bridge's attention and in its twin's."""
    from rlhf_interp.bridge.twin import twin_of

    def drop_cache(module, args, kwargs):
        kwargs = dict(kwargs)
        for key in ("past_key_values", "past_key_value", "layer_past", "cache"):
            kwargs.pop(key, None)
        return args, kwargs

    attention = [block.attn for block in model.blocks] + [layer.self_attn for layer in twin_of(model).model.model.layers]
    handles = [module.register_forward_pre_hook(drop_cache, with_kwargs=True) for module in attention]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("sampler", ["auto", "bridge"])
def test_canary_passes_on_a_healthy_model(tiny, sampler):
    check_kv_cache(tiny, force=True, sampler=sampler)  # raises on failure


@pytest.mark.parametrize("sampler", ["auto", "bridge"])
def test_canary_raises_a_clear_error_on_a_broken_cache(tiny, sampler):
    with _cache_ignored(tiny):
        cached, uncached = _greedy_pair(tiny, PROMPTS[:2], sampler=sampler)
        assert not torch.equal(cached.tokens, uncached.tokens)  # the simulated break is real
        with pytest.raises(KVCacheError) as err:
            check_kv_cache(tiny, force=True, sampler=sampler)
    message = str(err.value)
    for words in ("transformers", "transformer-lens", "constraints.txt", "use_past_kv_cache=False"):
        assert words in message
    check_kv_cache(tiny, force=True, sampler=sampler)  # healthy again once the break is gone


def test_generate_runs_the_canary_once_per_model(tiny, monkeypatch):
    from rlhf_interp.bridge import generation

    calls = []
    real = generation.check_kv_cache
    monkeypatch.setattr(generation, "_KV_CHECKED", generation.weakref.WeakKeyDictionary())
    monkeypatch.setattr(generation, "check_kv_cache", lambda m, **kw: (calls.append(m), real(m, **kw)))
    generate(tiny, "Hi", max_new_tokens=2, do_sample=False)
    generate(tiny, "Hi", max_new_tokens=2, do_sample=False)
    generate(tiny, "Hi", max_new_tokens=2, do_sample=False, use_past_kv_cache=False)
    assert len(calls) == 2 and generation._KV_CHECKED.get(tiny) == {"twin"}


def test_generate_refuses_a_broken_cache(tiny, monkeypatch):
    from rlhf_interp.bridge import generation

    monkeypatch.setattr(generation, "_KV_CHECKED", generation.weakref.WeakKeyDictionary())
    with _cache_ignored(tiny), pytest.raises(KVCacheError):
        generate(tiny, PROMPTS, max_new_tokens=4)


@pytest.mark.integration
@pytest.mark.parametrize("edit_name", ["none", "steer_generated", "ablate_zero_layer"])
def test_cached_equals_uncached_smollm2(smol, edit_name):
    edit = _edits(smol)[edit_name].on(smol)
    with edit:  # 6 tokens: 5 decoding steps read the cache (a cache that breaks shows from the second token on);
        cached, uncached = _greedy_pair(smol, PROMPTS, n=6)  # the uncached truth costs one full pass per token
    assert torch.equal(cached.tokens, uncached.tokens), (cached.texts, uncached.texts)
    if edit_name == "none":
        assert cached.texts[0].startswith(" Paris")


@contextlib.contextmanager
def _cache_renamed(model):
    """Reproduce transformers >= 5.24 on an older transformers: each decoder layer hands its attention the KV
    cache as ``cache=`` instead of ``past_key_values=`` (a no-op where the layer already does so)."""
    def rename(module, args, kwargs):
        if kwargs.get("past_key_values") is None:
            return None
        kwargs = dict(kwargs)
        kwargs["cache"] = kwargs.pop("past_key_values")
        return args, kwargs

    handles = [layer.register_forward_pre_hook(rename, with_kwargs=True)
               for layer in model.original_model.model.layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def test_renamed_cache_argument_reaches_the_bridge_attention(tiny):
    """The cache-name adapter keeps bridge sampling right when transformers passes ``cache=``; without it the
    simulated rename breaks cached decoding exactly as transformers 5.24/5.25 do (so the test can fail)."""
    from rlhf_interp.bridge.cache_compat import ADAPTER_ATTRIBUTE, adapt_cache_argument

    with _cache_renamed(tiny):
        cached, uncached = _greedy_pair(tiny, PROMPTS, sampler="bridge")
        assert torch.equal(cached.tokens, uncached.tokens)
        check_kv_cache(tiny, force=True, sampler="bridge")
        adapters = [m for m in tiny.modules() if getattr(m, ADAPTER_ATTRIBUTE, None) is not None]
        assert len(adapters) == len(tiny.blocks)
        for module in adapters:
            getattr(module, ADAPTER_ATTRIBUTE).remove()
            setattr(module, ADAPTER_ATTRIBUTE, None)
        try:
            cached, uncached = _greedy_pair(tiny, PROMPTS, sampler="bridge")
            assert not torch.equal(cached.tokens, uncached.tokens)
            with pytest.raises(KVCacheError):
                check_kv_cache(tiny, force=True, sampler="bridge")
        finally:
            assert adapt_cache_argument(tiny) == len(tiny.blocks)
    check_kv_cache(tiny, force=True, sampler="bridge")
