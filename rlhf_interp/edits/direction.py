"""Direction ablation and its weight-edit twin (Arditi et al. 2024): remove one direction from the
residual stream, either with hooks (`DirectionAblation`) or in the weights (`orthogonalize_weights`)."""

from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable

import torch
from jaxtyping import Float
from torch import Tensor

from rlhf_interp.bridge.hf import UnsupportedArchitecture, residual_writers, untied_copy
from rlhf_interp.bridge.hook_names import block_hook
from rlhf_interp.bridge.loading import bridge_from_hf, model_source
from rlhf_interp.core.hashing import tensor_digest
from rlhf_interp.edits.base import Edit, EditError, resolve_layers, unit_direction


def project_out(x: Float[Tensor, "... d_model"], direction: Float[Tensor, "d_model"]) -> Float[Tensor, "... d_model"]:
    """``x - (x . r) r`` for a unit ``r``: the component of x along r removed."""
    r = direction.to(device=x.device, dtype=x.dtype)
    return x - (x @ r).unsqueeze(-1) * r


class DirectionAblation(Edit):
    """Remove a direction from the residual stream: at each chosen layer, project it out of
    ``hook_resid_pre`` and out of what the layer writes (``hook_attn_out``, ``hook_mlp_out``).

    With ``layers="all"`` no component ever sees or writes the direction, which is what
    `orthogonalize_weights` does to the weights. Acts at every position (pads included, as the
    weight edit does).
    """

    name = "direction_ablation"

    def __init__(self, direction: Tensor, layers: int | Iterable[int] | str = "all", *, model=None):
        self.direction_arg = torch.as_tensor(direction).detach()
        self.layers_arg = layers
        self.direction: Tensor | None = None
        self.layers: list[int] = []
        super().__init__(model)

    def _validate(self, model) -> None:
        self.layers = resolve_layers(model, self.layers_arg)
        self.direction = unit_direction(self.direction_arg, int(model.cfg.d_model))

    def _hook_fns(self) -> list[tuple[str, Callable]]:
        def hook(act: Tensor, hook=None) -> Tensor:
            return act if self._suspended else project_out(act, self.direction)

        return [(block_hook(layer, f"hook_{what}"), hook) for layer in self.layers
                for what in ("resid_pre", "attn_out", "mlp_out")]

    def cache_key(self) -> Hashable:
        layers = tuple(self.layers) if self.layers else repr(self.layers_arg)
        return ("direction_ablation", layers, tensor_digest(self.direction_arg))

    def describe(self) -> dict[str, Any]:
        return {"edit": self.name, "layer": "all" if self.layers_arg == "all" else ",".join(map(str, self.layers))}

    def __repr__(self) -> str:
        return f"DirectionAblation(layers={self.layers_arg!r})"


@torch.no_grad()
def orthogonalize_weights(model, direction: Tensor):
    """A new bridge whose weights cannot write ``direction`` into the residual stream.

    Orthogonalizes the token embedding (rows), every attention output projection and every MLP
    down projection (columns in d_model, plus their biases if any) to the unit direction: the
    weight-edit equivalent of ``DirectionAblation(direction, layers="all")``. Tied embeddings are
    untied first, so the unembedding stays the original one. ``model`` is not modified.
    """
    r = unit_direction(direction, int(model.cfg.d_model))
    fresh = untied_copy(model)
    try:
        writers = residual_writers(fresh)
    except UnsupportedArchitecture as err:
        raise EditError(f"orthogonalize_weights {err}") from err
    r_ = r.to(device=writers.embedding.device, dtype=writers.embedding.dtype)
    embed = writers.embedding
    embed.copy_(embed - (embed @ r_)[:, None] * r_[None, :])
    for linear in writers.outputs:
        w = linear.weight  # [d_model, d_in]: output = w @ x
        w.copy_(w - r_[:, None] * (r_ @ w)[None, :])
        if linear.bias is not None:
            linear.bias.copy_(linear.bias - (linear.bias @ r_) * r_)
    return bridge_from_hf(fresh, model.tokenizer, name=f"{model_source(model)}+orthogonalized")
