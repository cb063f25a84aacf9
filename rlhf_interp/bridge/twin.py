"""A plain Hugging Face twin of a bridge: the same weight tensors, no TransformerLens wrapping, for sampling.

Why: KV-cached sampling runs one short forward per new token, and through the bridge every step pays
TransformerLens's Python: about 4.5x the module calls of the plain model (most of them hook points) and an
attention written in Python, a fixed cost per step that no batch size hides (`benchmarks/rollout_vs_generate.py`).
The twin is the model's own class built around the bridge's own leaf modules (its Linear, Embedding and norm
objects, or PEFT's LoRA layers around them; not copies): an optimizer step, a weight edit, a ``.data`` swap or an
adapter switched off on the bridge is the twin's at once, and it costs no memory. It runs Hugging
Face's ``generate`` with sdpa attention.

Hooks stay on. A TransformerLens hook point that wraps the input or output of a Hugging Face module (the
residual stream before/after each block, attention and MLP outputs, q/k/v/z, the MLP's hidden layer, norms,
embedding, unembedding) is the same tensor in the twin at that module's boundary. While hooks are active,
`mirrored_hooks` puts a plain PyTorch hook on the twin's module that runs the bridge's own hook point there,
so the user's hook functions -- with their ``hook`` argument, context, shape conversions and edits' switches
-- run on the same values as on the bridge. Hooks on points that live inside TransformerLens's own attention or
norm code (attention scores and pattern, rotary q/k, norm scale, ``hook_mlp_in``) have no twin; then
`mirrored_hooks` reports it and the caller samples through the bridge; so it does for a plain PyTorch hook on
one of the bridge's own modules (it would not run in the twin). Hooks that watch the decoder itself
(`rlhf_interp.bridge.hf.watch_forward_passes`: position tracking of edits) are shared with the twin's decoder.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Any, Iterator

from torch import Tensor, nn

from rlhf_interp.bridge.hf import _config_copy, hf_model_of, plain_param_name

# How the generic TransformerLens component finds its input (`GeneralizedComponent.forward`): these keyword
# names first, then the first positional tensor. The twin's pre-hooks look in the same places.
_INPUT_KWARGS = ("input", "hidden_states", "input_ids", "query_input", "x", "inputs_embeds")
# Hook points of these names, inside these components, are the component's own input / output.
_BOUNDARY = {"hook_in": "in", "hook_out": "out"}
# Packages (and our cache-name adapter) whose forward hooks on the bridge's modules are wiring, not a user's hook.
_LIBRARY_HOOKS = ("transformer_lens.", "transformers.", "rlhf_interp.bridge.cache_compat")
# The decoder module whose hooks (forward-pass watchers) the twin shares.
_SHARED_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
                      "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


@dataclass
class Twin:
    """The plain model and, per bridge hook point it can mirror, the twin module and side ("in" / "out")."""

    model: nn.Module
    param_ids: tuple[int, ...]  # the bridge's parameters when the twin was built (a swap means: rebuild)
    boundaries: dict[int, tuple[Any, nn.Module, str]]  # id(hook point) -> (hook point, twin module, side)
    bridge_modules: list[nn.Module]  # the bridge's own modules other than hook points and the shared decoder


_TWINS: "weakref.WeakKeyDictionary[Any, Twin | None]" = weakref.WeakKeyDictionary()


def _param_ids(hf_model) -> tuple[int, ...]:
    return tuple(id(p) for p in hf_model.parameters())


def _build(bridge) -> Twin | None:
    """The twin, or None when this model cannot be mirrored (no Hugging Face model behind it, or parameters
    the plain class has no place for)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, GenerationConfig
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
    from transformer_lens.model_bridge.generalized_components.rotary_embedding import RotaryEmbeddingBridge
    from transformer_lens.hook_points import HookPoint

    hf = hf_model_of(bridge)
    if hf is bridge or not hasattr(hf, "config") or not hasattr(hf, "generate"):
        return None
    try:
        config = _config_copy(hf)
        with init_empty_weights(include_buffers=False):  # parameters on "meta" (replaced below), buffers real
            twin = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    except (ValueError, KeyError, TypeError):
        return None
    # The bridge's leaf modules themselves (Linear, Embedding, norms -- or PEFT's LoRA layers around them) go into
    # the twin at their Hugging Face paths: same objects, so same weights, adapters and adapter switches.
    twin_paths = dict(twin.named_modules())
    for path, component in hf.named_modules(remove_duplicate=False):
        original = component._modules.get("_original_component") if isinstance(component, GeneralizedComponent) \
            else None
        plain = plain_param_name(path)
        if original is None or plain not in twin_paths or plain == "" or \
                any(isinstance(m, GeneralizedComponent) for m in original.modules()):
            continue  # not a leaf: its children are swapped one by one
        owner, _, leaf = plain.rpartition(".")
        setattr(twin.get_submodule(owner), leaf, original)
    if {id(p) for p in twin.parameters()} != {id(p) for p in hf.parameters()}:
        return None  # a parameter one side lacks (a different head, an unplaced module): not the same model
    device = next(hf.parameters()).device
    for owner in twin.modules():  # buffers (rotary frequencies) were built on the CPU
        for leaf, buffer in list(owner.named_buffers(recurse=False)):
            owner.register_buffer(leaf, buffer.to(device), persistent=leaf not in owner._non_persistent_buffers_set)
    twin.generation_config = GenerationConfig()  # no model defaults (top_k=50, eos) merged into our arguments
    shared = {id(m) for m in hf.modules()}
    for module in twin.modules():  # inference mode for the twin's own containers; the bridge's modules keep theirs
        if id(module) not in shared:
            module.training = False

    twin_modules = dict(twin.named_modules())
    boundaries: dict[int, tuple[Any, nn.Module, str]] = {}
    for path, component in hf.named_modules(remove_duplicate=False):
        if not isinstance(component, GeneralizedComponent) or isinstance(component, RotaryEmbeddingBridge):
            continue  # rotary embeddings return (cos, sin): TransformerLens hooks them inside attention
        target = twin_modules.get(plain_param_name(path))
        if target is None:
            continue
        for attr, side in _BOUNDARY.items():
            point = component._modules.get(attr)
            if point is not None:
                boundaries[id(point)] = (point, target, side)
    decoder, twin_decoder = getattr(hf, "base_model", hf), getattr(twin, "base_model", twin)
    for attr in _SHARED_HOOK_DICTS:  # the same dict objects: watchers added later apply to both
        setattr(twin_decoder, attr, getattr(decoder, attr))
    others = [m for m in hf.modules() if m is not decoder and not isinstance(m, HookPoint)]
    return Twin(twin, _param_ids(hf), boundaries, others)


def twin_of(bridge) -> Twin | None:
    """The bridge's twin (built once, rebuilt when the bridge's parameters were replaced), or None."""
    twin = _TWINS.get(bridge)
    if twin is None and bridge in _TWINS:
        return None
    if twin is None or twin.param_ids != _param_ids(hf_model_of(bridge)):
        twin = _build(bridge)
        _TWINS[bridge] = twin
    return twin


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _has_user_hooks(module: nn.Module) -> bool:
    """A forward hook on a bridge module that is not the libraries' own wiring: TransformerLens's blocks put
    capture hooks on their norms that feed its internal hook points (e.g. ``hook_mlp_in``, whose use
    `mirrored_hooks` checks itself), and Hugging Face's output capturing (attentions, hidden states) hooks
    its layers, which it does for the twin's own layers as well."""
    hooks = [*module._forward_pre_hooks.values(), *module._forward_hooks.values()]
    return any(not getattr(h, "__module__", "").startswith(_LIBRARY_HOOKS) for h in hooks)


def _hooked_points(bridge) -> list[Any]:
    """The bridge's hook points that have a forward hook (each once, aliases folded)."""
    return list({id(p): p for p in bridge.hook_dict.values() if _has_hooks(p)}.values())


def _replace_input(point, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    for name in _INPUT_KWARGS:
        if name in kwargs:
            return args, {**kwargs, name: point(kwargs[name])}
    if args and isinstance(args[0], Tensor):
        return (point(args[0]), *args[1:]), kwargs
    return args, kwargs


def _replace_output(point, output: Any) -> Any:
    if isinstance(output, tuple):
        return (point(output[0]), *output[1:])
    if isinstance(output, Tensor):
        return point(output)
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, Tensor):
        output.last_hidden_state = point(hidden)
    return output


@contextlib.contextmanager
def mirrored_hooks(bridge, twin: Twin) -> Iterator[bool]:
    """Inside the block the twin runs the bridge's active hooks at the same places; yields False (and mirrors
    nothing) when an active hook has no place in the twin -- the caller must then use the bridge."""
    points = _hooked_points(bridge)
    if any(id(p) not in twin.boundaries for p in points) or any(_has_user_hooks(m) for m in twin.bridge_modules):
        yield False
        return
    handles = []
    try:
        for point in points:
            _, module, side = twin.boundaries[id(point)]
            if side == "in":
                handles.append(module.register_forward_pre_hook(
                    lambda m, args, kwargs, p=point: _replace_input(p, args, kwargs), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(lambda m, args, out, p=point: _replace_output(p, out)))
        yield True
    finally:
        for handle in handles:
            handle.remove()


__all__ = ["Twin", "mirrored_hooks", "twin_of"]
