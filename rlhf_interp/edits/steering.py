"""Steering: add ``coef * vector`` to a residual-stream hook at chosen layers and positions."""

from __future__ import annotations

import math
from typing import Any, Callable, Hashable, Iterable

import torch
from torch import Tensor

from rlhf_interp.core.hashing import tensor_digest
from rlhf_interp.edits.base import (Edit, EditError, check_layers_arg, check_vector, resolve_layers, short_hook,
                                    steering_hook_name)
from rlhf_interp.edits.positions import (Positions, PositionTracker, check_positions, positions_key,
                                         positions_label, tracker)


class Steering(Edit):
    """Add ``coef * vector`` to ``blocks.L.hook_<hook>`` at each layer L, at the chosen positions.

    ``vector``: one [d_model] tensor used at every layer, a ``{layer: [d_model]}`` dict, or a
    `SteeringVector` (per-layer vectors; ``layers=None`` uses all of its layers, and its ``hook`` is
    used unless ``hook`` is given). Works during KV-cached generation: positions are absolute (see
    `rlhf_interp.edits.positions`).
    """

    name = "steering"

    def __init__(self, vector, layers: int | Iterable[int] | str | None = None, coef: float = 1.0,
                 positions: Positions = "all", hook: str | None = None, *, model=None):
        per_layer = getattr(vector, "vectors", vector)
        if isinstance(per_layer, dict):
            try:
                self.vectors: dict[int, Tensor] | None = {int(k): torch.as_tensor(v).detach()
                                                          for k, v in per_layer.items()}
            except (TypeError, ValueError, RuntimeError) as err:
                raise EditError(f"Steering takes a {{layer: tensor}} dict with int layers; got keys "
                                f"{list(per_layer)[:5]} ({err}).") from err
            if not self.vectors:
                raise EditError("The steering vector holds no layers.")
            for layer, v in self.vectors.items():
                check_vector(v, f"Steering vector for layer {layer}")
            self.vector = None
            if layers is None:
                layers = sorted(self.vectors)
        else:
            try:
                self.vectors, self.vector = None, torch.as_tensor(vector).detach()
            except (TypeError, ValueError, RuntimeError) as err:
                raise EditError(f"Steering takes a [d_model] tensor, a {{layer: tensor}} dict or a SteeringVector, "
                                f"not {type(vector).__name__} (for diff directions use "
                                f"SteeringVector.from_diff(d.vectors) or d.vectors.vector(layer)).") from err
            check_vector(self.vector)
            if layers is None:
                raise EditError("Steering with a single vector needs layers= (an int, a list of ints, or 'all').")
        if hook is None:
            hook = getattr(vector, "hook", None) or "resid_post"
        self.hook = short_hook(hook)  # validates the hook name early
        if layers is not None and not isinstance(layers, (str, int, list, tuple)) and isinstance(layers, Iterable):
            layers = list(layers)  # a generator is read once: keep its items
        check_layers_arg(layers)
        self.layers_arg = layers
        try:
            self.coef = float(coef)
        except (TypeError, ValueError) as err:
            raise EditError(f"Steering coef must be a number, got {coef!r}.") from err
        if not math.isfinite(self.coef):
            raise EditError(f"Steering coef must be finite, got {coef!r}: an infinite push makes every "
                            f"activation and KL NaN.")
        self.positions = check_positions(positions)
        self.layers: list[int] = []
        super().__init__(model)

    def _vector_for(self, layer: int) -> Tensor:
        if self.vectors is None:
            return self.vector
        if layer not in self.vectors:
            raise EditError(f"The steering vector has no entry for layer {layer}; it has layers {sorted(self.vectors)}.")
        return self.vectors[layer]

    def _validate(self, model) -> None:
        self.layers = resolve_layers(model, self.layers_arg)
        d_model = int(model.cfg.d_model)
        for layer in self.layers:
            v = self._vector_for(layer)
            if v.ndim != 1 or v.numel() != d_model:
                raise EditError(f"Steering vector for layer {layer} has shape {tuple(v.shape)} (size {v.numel()}) "
                                f"but the model's d_model is {d_model}: build the vector on the same model.")

    def _hook_fns(self) -> list[tuple[str, Callable]]:
        t = tracker(self.model)
        return [(steering_hook_name(self.hook, layer), self._make_hook(self._vector_for(layer), t))
                for layer in self.layers]

    def _make_hook(self, vector: Tensor, t: PositionTracker) -> Callable:
        def hook(act: Tensor, hook=None) -> Tensor:
            if self._suspended:
                return act
            delta = (self.coef * vector).to(device=act.device, dtype=act.dtype)
            sel = t.selection(self.positions, act.shape[0], act.shape[1])
            if sel is None:
                return act + delta
            return act + sel.unsqueeze(-1).to(act.dtype) * delta

        return hook

    def cache_key(self) -> Hashable:
        layers = tuple(self.layers) if self.layers else repr(self.layers_arg)
        if self.vectors is None:
            digest = tensor_digest(self.vector)
        else:
            used = self.layers or sorted(self.vectors)
            digest = tensor_digest(*(self.vectors.get(layer) for layer in used))
        return ("steering", self.hook, layers, self.coef, positions_key(self.positions), digest)

    def describe(self) -> dict[str, Any]:
        return {"edit": self.name, "hook": self.hook, "layer": ",".join(map(str, self.layers or [self.layers_arg])),
                "coef": self.coef, "positions": positions_label(self.positions)}

    def __repr__(self) -> str:
        return (f"Steering(layers={self.layers or self.layers_arg}, coef={self.coef}, positions={self.positions!r}, "
                f"hook={self.hook!r})")
