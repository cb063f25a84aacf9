"""Weight-space patching: swap one layer's (attention's, MLP's) weights of the donor into the receiver.

The weight twin of activation patching: an activation patch imports a component's output *as the donor
computed it* (from the donor's own inputs); a weight swap imports the component's *function* and lets it
run on the receiver's inputs. Where the two agree the change is local to that component.

``swapped_weights`` copies the donor's tensors into the receiver's parameters in place and copies the
saved originals back on exit (also on error), so the receiver is bit-for-bit restored; no second model
is built. Parameters are matched by their Hugging Face names (`rlhf_interp.checkpoints.plain_param_name`)
and grouped with `rlhf_interp.diff.classify_param`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import pandas as pd
import torch

from rlhf_interp.checkpoints import plain_param_name
from rlhf_interp.diff import ModelMismatchError, check_compatible, classify_param
from rlhf_interp.edits import resolve_layers
from rlhf_interp.patching.scores import DIRECTIONS, Patch, check_directions, run_patches

SWAP_COMPONENTS: tuple[str, ...] = ("attn", "mlp", "block")


def _in_component(stem: str, group: str, component: str) -> bool:
    """``attn``: the attention weights and the norm before them (ln1, q/k norms); ``mlp``: the MLP and ln2."""
    if component == "block":
        return True
    if component == "attn":
        return group == "attention" or stem.startswith(("ln1.", "attn."))
    return group == "mlp" or stem.startswith(("ln2", "mlp."))


def layer_parameters(model, layer: int, component: str = "block") -> dict[str, torch.nn.Parameter]:
    """The receiver's parameters of one layer's ``component`` (``attn``, ``mlp`` or ``block``), by HF name."""
    if component not in SWAP_COMPONENTS:
        raise ValueError(f"Unknown weight component {component!r}; use one of {', '.join(SWAP_COMPONENTS)}.")
    hf = getattr(model, "original_model", model)
    out: dict[str, torch.nn.Parameter] = {}
    for key, param in hf.named_parameters():
        name = plain_param_name(key)
        found, stem, group = classify_param(name)
        if found == layer and name not in out and _in_component(stem, group, component):
            out[name] = param
    if not out:
        raise ValueError(f"Layer {layer} of this model has no {component!r} parameters to swap.")
    return out


@contextmanager
def swapped_weights(receiver, donor, layer: int, component: str = "block") -> Iterator[list[str]]:
    """Inside the block, ``receiver``'s layer ``layer`` ``component`` weights are the donor's; yields their names.

    Both models must share an architecture (`ModelMismatchError` otherwise). On exit every swapped tensor
    gets its saved original back (exact: a copy, not a subtraction).
    """
    check_compatible(receiver, donor)
    mine = layer_parameters(receiver, layer, component)
    theirs = layer_parameters(donor, layer, component)
    if set(mine) != set(theirs):
        raise ModelMismatchError(f"Layer {layer} {component!r} holds different tensors: only in the receiver "
                                 f"{sorted(set(mine) - set(theirs))[:3]}, only in the donor "
                                 f"{sorted(set(theirs) - set(mine))[:3]}.")
    saved: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, param in mine.items():
                if param.shape != theirs[name].shape:
                    raise ModelMismatchError(f"{name}: receiver shape {tuple(param.shape)} vs donor "
                                             f"{tuple(theirs[name].shape)}.")
                saved[name] = param.detach().clone()
                param.copy_(theirs[name].detach())
        yield sorted(mine)
    finally:
        with torch.no_grad():
            for name, original in saved.items():
                mine[name].copy_(original)


def weight_patching(base, tuned, texts: Sequence[str], *, components: Sequence[str] = SWAP_COMPONENTS,
                    layers: int | Iterable[int] | str = "all", directions: Sequence[str] = DIRECTIONS,
                    reward_token_ids: Sequence[int] | None = None, batch_size: int = 8) -> pd.DataFrame:
    """Swap each (layer, component) of the donor's weights into the receiver; one row per direction x layer x
    component, columns as in `rlhf_interp.patching.scores.COLUMNS` (``component`` is attn / mlp / block)."""
    check_compatible(base, tuned)
    bad = [c for c in components if c not in SWAP_COMPONENTS]
    if bad or not components:
        raise ValueError(f"Unknown weight component(s) {bad or list(components)}; use {', '.join(SWAP_COMPONENTS)}.")
    directions = check_directions(directions)
    patches = []
    for direction in directions:
        receiver, donor = (base, tuned) if direction == "into_base" else (tuned, base)
        for layer in resolve_layers(base, layers):
            for component in components:
                patches.append(Patch(direction, layer, component,
                                     lambda batch, r=receiver, d=donor, l=layer, c=component: swapped_weights(r, d, l, c)))
    return run_patches(base, tuned, texts, patches, reward_token_ids=reward_token_ids, batch_size=batch_size,
                       desc="weight patching")
