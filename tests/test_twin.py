"""The bridge's plain Hugging Face twin (`rlhf_interp.bridge.twin`): same weights, same hooks, same samples.

The twin samples for `generate` whenever it can run every active hook, so these tests compare it with the
bridge itself: logits with a hook at every hook point it mirrors, and greedy/sampled tokens.
"""

from __future__ import annotations

import copy

import pytest
import torch

from rlhf_interp.bridge.generation import generate
from rlhf_interp.bridge.tokens import tokenize
from rlhf_interp.bridge.twin import mirrored_hooks, twin_of

PROMPTS = ["The capital of France is", "Hi", "Once upon a time, in a small village by the sea,"]


@pytest.fixture(scope="module")
def own_tiny(tiny):
    """A private copy of the tiny bridge (these tests change weights)."""
    return copy.deepcopy(tiny)


def _nudge(calls: list[str], name: str):
    """A hook that adds a fixed pattern to float activations, shifts token ids (and counts its calls)."""
    def hook(act: torch.Tensor, hook) -> torch.Tensor:
        calls.append(name)
        if not act.is_floating_point():
            return (act + 1) % 1000
        pattern = torch.sin(torch.arange(act.numel(), dtype=act.dtype, device=act.device)).reshape(act.shape)
        return act + 0.3 * pattern

    return hook


def _twin_logits(bridge, twin, tokens, mask):
    with mirrored_hooks(bridge, twin) as mirrored:
        assert mirrored
        return twin.model(tokens, attention_mask=mask).logits


def _assert_same_at_real_positions(a, b, mask, msg=""):
    """Logits agree where tokens are real (left pads attend differently in sdpa and eager attention; nothing
    real reads them)."""
    keep = mask.bool()
    torch.testing.assert_close(a[keep], b[keep], atol=1e-4, rtol=1e-4, msg=(lambda m: f"{msg}: {m}") if msg else None)


@torch.no_grad()
def test_every_mirrored_hook_point_acts_as_on_the_bridge(own_tiny):
    bridge = own_tiny
    twin = twin_of(bridge)
    assert twin is not None
    tokens, mask = tokenize(bridge, PROMPTS)
    plain = bridge(tokens, attention_mask=mask, return_type="logits")
    _assert_same_at_real_positions(twin.model(tokens, attention_mask=mask).logits, plain, mask)
    names = {}
    for name, point in bridge.hook_dict.items():
        if id(point) in twin.boundaries:
            names.setdefault(id(point), name)
    assert len(names) >= 20 * bridge.cfg.n_layers // 2, "too few hook points mirrored"
    for name in names.values():
        bridge_calls, twin_calls = [], []
        with bridge.hooks(fwd_hooks=[(name, _nudge(bridge_calls, name))]):
            hooked = bridge(tokens, attention_mask=mask, return_type="logits")
        with bridge.hooks(fwd_hooks=[(name, _nudge(twin_calls, name))]):
            mirrored = _twin_logits(bridge, twin, tokens, mask)
        assert len(bridge_calls) == len(twin_calls) == 1, name
        _assert_same_at_real_positions(mirrored, hooked, mask, name)
        assert not torch.allclose(hooked[mask.bool()], plain[mask.bool()], atol=1e-3), f"{name}: the hook did nothing"


@torch.no_grad()
def test_hooks_the_twin_cannot_run_send_sampling_through_the_bridge(own_tiny):
    bridge = own_tiny
    twin = twin_of(bridge)
    calls: list[str] = []

    def halve(pattern: torch.Tensor, hook) -> torch.Tensor:  # the same change with and without the KV cache
        calls.append(hook.name)
        return pattern * 0.5

    with bridge.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", halve)]):
        with mirrored_hooks(bridge, twin) as mirrored:
            assert not mirrored  # the pattern exists only inside TransformerLens's attention
        auto = generate(bridge, PROMPTS, max_new_tokens=5, do_sample=False, stop_at_eos=False)
        assert calls, "the hook did not run"
        via_bridge = generate(bridge, PROMPTS, max_new_tokens=5, do_sample=False, stop_at_eos=False, sampler="bridge")
    assert torch.equal(auto.tokens, via_bridge.tokens)
    plain = generate(bridge, PROMPTS, max_new_tokens=5, do_sample=False, stop_at_eos=False)
    assert not torch.equal(plain.tokens, auto.tokens)  # the hook acted, so the comparison above means something


@torch.no_grad()
def test_sampling_stays_on_the_twin_after_bridge_passes_with_a_mirrored_hook(own_tiny):
    """TransformerLens wires capture hooks of its own into a block on its first pass; they must not be taken
    for a user's hook (which would silently send all sampling back through the bridge)."""
    from rlhf_interp.bridge.generation import _sampler
    from rlhf_interp.edits import Steering

    bridge = own_tiny
    tokens, mask = tokenize(bridge, PROMPTS)
    bridge(tokens, attention_mask=mask)
    bridge.run_with_cache(tokens, attention_mask=mask, names_filter=["blocks.0.hook_mlp_in"])
    with Steering(torch.ones(bridge.cfg.d_model), layers=1).on(bridge), _sampler(bridge, "auto") as (name, _):
        assert name == "twin"


@torch.no_grad()
def test_a_pytorch_hook_on_a_bridge_module_sends_sampling_through_the_bridge(own_tiny):
    bridge = own_tiny
    calls: list[int] = []
    handle = bridge.blocks[0].mlp.register_forward_hook(lambda module, args, out: calls.append(1) or out * 0.5)
    try:
        with mirrored_hooks(bridge, twin_of(bridge)) as mirrored:
            assert not mirrored
        auto = generate(bridge, PROMPTS, max_new_tokens=4, do_sample=False, stop_at_eos=False)
        assert calls
        via_bridge = generate(bridge, PROMPTS, max_new_tokens=4, do_sample=False, stop_at_eos=False, sampler="bridge")
    finally:
        handle.remove()
    assert torch.equal(auto.tokens, via_bridge.tokens)


@torch.no_grad()
def test_twin_and_bridge_draw_the_same_samples(own_tiny):
    kwargs = dict(max_new_tokens=10, seed=7, stop_at_eos=True, temperature=0.8)
    twin = generate(own_tiny, PROMPTS, **kwargs)
    bridge = generate(own_tiny, PROMPTS, sampler="bridge", **kwargs)
    assert torch.equal(twin.tokens, bridge.tokens) and torch.equal(twin.attention_mask, bridge.attention_mask)
    assert twin.texts == bridge.texts
    top = dict(max_new_tokens=6, seed=3, stop_at_eos=False, top_k=5)
    assert torch.equal(generate(own_tiny, PROMPTS, **top).tokens,
                       generate(own_tiny, PROMPTS, sampler="bridge", **top).tokens)


def test_twin_shares_the_weights_and_follows_a_replaced_parameter(own_tiny):
    bridge = own_tiny
    twin = twin_of(bridge)
    shared = {id(p) for p in bridge.original_model.parameters()}
    assert {id(p) for p in twin.model.parameters()} == shared  # the same Parameter objects: no copy
    tokens, mask = tokenize(bridge, PROMPTS)
    weight = bridge.original_model.model.layers[0].mlp.down_proj.weight
    with torch.no_grad():
        weight.mul_(1.5)  # an in-place update (what an optimizer step does)
        _assert_same_at_real_positions(twin.model(tokens, attention_mask=mask).logits,
                                       bridge(tokens, attention_mask=mask, return_type="logits"), mask)
    hf_mlp = bridge.original_model.model.layers[0].mlp.down_proj._original_component
    hf_mlp.weight = torch.nn.Parameter(weight.detach() * 0.5)  # a new Parameter object: the twin is rebuilt
    rebuilt = twin_of(bridge)
    assert rebuilt is not twin and rebuilt.model.model.layers[0].mlp.down_proj.weight is hf_mlp.weight
    with torch.no_grad():
        _assert_same_at_real_positions(rebuilt.model(tokens, attention_mask=mask).logits,
                                       bridge(tokens, attention_mask=mask, return_type="logits"), mask)


@pytest.mark.integration
@torch.no_grad()
def test_bf16_on_the_twin_stays_as_close_to_fp32_as_the_bridge_with_left_padding(smol):
    """The twin samples bf16 rollouts with sdpa and no attention-mask fix: its next-token distributions must be
    finite on left-padded rows and drift from fp32 no more than the bridge's own bf16 pass does."""
    from rlhf_interp.bridge.precision import autocast, log_prob_drift

    twin = twin_of(smol)
    tokens, mask = tokenize(smol, PROMPTS)
    fp32 = smol(tokens, attention_mask=mask, return_type="logits")
    with autocast(smol, "bf16", finite_scores=False):
        on_twin = twin.model(tokens, attention_mask=mask).logits.float()
    with autocast(smol, "bf16"):
        on_bridge = smol(tokens, attention_mask=mask, return_type="logits").float()
    assert torch.isfinite(on_twin[mask.bool()]).all()
    twin_drift, bridge_drift = log_prob_drift(fp32, on_twin, mask), log_prob_drift(fp32, on_bridge, mask)
    assert twin_drift["kl_per_token"] <= 1.5 * bridge_drift["kl_per_token"] + 1e-4, (twin_drift, bridge_drift)
    out = generate(smol, PROMPTS, max_new_tokens=8, seed=0, stop_at_eos=False, precision="bf16")
    assert out.tokens.shape[1] == tokens.shape[1] + 8 and all(out.texts)


@torch.no_grad()
def test_a_lora_policy_samples_on_the_twin_with_its_adapters_and_without_them(tiny):
    """PEFT's LoRA layers are the bridge's leaf modules: the twin holds the same objects, so it samples with the
    adapters, and without them inside ``disable_adapter()`` (the PPO reference under LoRA), like the bridge."""
    from peft import LoraConfig, get_peft_model

    from rlhf_interp.bridge.embedded import build_tiny_model
    from rlhf_interp.bridge.loading import bridge_from_hf

    peft_model = get_peft_model(build_tiny_model(seed=3), LoraConfig(
        r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    bridge = bridge_from_hf(peft_model.base_model.model, tiny.tokenizer, name="tiny-lora")
    twin = twin_of(bridge)
    assert twin is not None
    assert {id(p) for p in twin.model.parameters()} == {id(p) for p in bridge.original_model.parameters()}
    kwargs = dict(max_new_tokens=6, do_sample=False, stop_at_eos=False)
    adapted = generate(bridge, PROMPTS, **kwargs)
    assert torch.equal(adapted.tokens, generate(bridge, PROMPTS, sampler="bridge", **kwargs).tokens)
    with peft_model.disable_adapter():
        plain = generate(bridge, PROMPTS, **kwargs)
        assert torch.equal(plain.tokens, generate(bridge, PROMPTS, sampler="bridge", **kwargs).tokens)
    assert not torch.equal(plain.tokens, adapted.tokens)  # the adapters act, so both comparisons mean something

