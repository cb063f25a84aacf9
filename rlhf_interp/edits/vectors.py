"""Steering vectors: where they come from, and how they are kept.

Sources, all returning a `SteeringVector` (one [d_model] vector per layer, read at ``blocks.L.hook_<hook>``):

- `mean_difference` — mean activation on texts that have a property minus texts that lack it
  (e.g. prompts with and without periods);
- `contrastive` — the mean of paired differences over (positive, negative) prompt pairs (ActAdd,
  Turner et al. 2023; CAA, Rimsky et al. 2024), read at the last token by default;
- `pca_direction` — the first principal component of those paired differences (RepE-style);
- `finetuning_direction` — tuned minus base model on the same tokens: the "fine-tuning direction".

Each text is first reduced to one vector per layer (``reduce="mean"``: mean over its real
non-BOS tokens — BOS is an attention sink with outlying norms; ``"last"``: its last token), so every
text weighs the same. Activations are streamed batch by batch (`rlhf_interp.bridge.activations`);
only the reduced vectors are kept.

Vectors are saved as safetensors (``layer.L`` tensors) with metadata: layers, hook, source, model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from rlhf_interp.bridge.activations import capture, capture_texts
from rlhf_interp.bridge.loading import model_source
from rlhf_interp.core.io import atomic_path
from rlhf_interp.core.masks import content_mask, last_token_index
from rlhf_interp.edits.base import check_vector, resolve_layers, short_hook, steering_hook_name

Reduce = Literal["mean", "last"]
VECTOR_FORMAT = "rlhf_interp.steering/1"


@dataclass
class SteeringVector:
    """Per-layer steering vectors plus where they came from."""

    vectors: dict[int, Float[Tensor, "d_model"]]
    hook: str = "resid_post"
    source: str = ""
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted(self.vectors)

    def __getitem__(self, layer: int) -> Tensor:
        return self.vectors[layer]

    def normalized(self) -> "SteeringVector":
        """Unit-length vectors (same directions)."""
        return SteeringVector({k: v / v.norm().clamp_min(1e-12) for k, v in self.vectors.items()}, self.hook,
                              self.source, self.model, {**self.meta, "normalized": True})

    def norms(self) -> pd.DataFrame:
        """Columns: layer, hook, norm."""
        return pd.DataFrame({"layer": self.layers, "hook": self.hook,
                             "norm": [float(self.vectors[k].norm()) for k in self.layers]})

    @classmethod
    def from_diff(cls, directions, hook: str = "hook_resid_post", kind: str | int = "mean",
                  layers: Iterable[int] | None = None, model: str = "") -> "SteeringVector":
        """Per-layer vectors from `rlhf_interp.diff` difference directions (``ModelDiff.vectors``):
        the base-to-tuned mean difference (``kind="mean"``) or principal component ``kind=i``."""
        layer_list = list(layers) if layers is not None else list(range(directions.mean.shape[1]))
        vectors = {layer: directions.vector(layer, hook, kind).detach().float().cpu() for layer in layer_list}
        return cls(vectors, short_hook(hook), "finetuning" if kind == "mean" else f"finetuning_pc{kind}", model,
                   {"from": "diff", "kind": kind, "n_tokens": getattr(directions, "n_tokens", None)})

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file (atomically) with the vectors and their metadata."""
        from safetensors.torch import save_file

        tensors = {f"layer.{k}": v.detach().float().cpu().contiguous() for k, v in self.vectors.items()}
        metadata = {"layers": ",".join(map(str, self.layers)), "hook": self.hook, "source": self.source,
                    "model": self.model, "meta": json.dumps(self.meta, default=str), "format": VECTOR_FORMAT}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "SteeringVector":
        """Read a file written by `save` (safetensors: no code runs on load); every vector is checked finite
        and of a real float dtype."""
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"Steering vector file {path} does not exist (save one with SteeringVector.save "
                                    f"or `rlhf-interp steer --save-vector`).")
        if path.is_dir():
            raise ValueError(f"Steering vector {path} is a directory: give the .safetensors file.")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                keys = list(handle.keys())
                tensors = {key: handle.get_tensor(key) for key in keys}
        except Exception as err:  # safetensors raises its own error types for a foreign or cut file
            raise ValueError(f"{path} is not a readable safetensors steering vector ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else 'unreadable'}). Save one with "
                             f"SteeringVector.save or `rlhf-interp steer --save-vector`; pickles (.pt) are not "
                             f"read, on purpose.") from err
        vectors = {}
        for key, tensor in tensors.items():
            layer = key.split(".", 1)[1] if key.startswith("layer.") else ""
            if not layer.lstrip("-").isdigit():
                raise ValueError(f"{path}: unexpected tensor {key!r}; a steering vector file holds 'layer.L' tensors.")
            vectors[int(layer)] = check_vector(tensor, f"{path}: vector of layer {layer}")
        if not vectors:
            raise ValueError(f"{path} holds no 'layer.L' tensors: it is not a steering vector file.")
        try:
            meta = json.loads(metadata.get("meta", "{}"))
        except ValueError:
            meta = {"unreadable_meta": metadata.get("meta")}
        return cls(vectors, metadata.get("hook", "resid_post"), metadata.get("source", ""), metadata.get("model", ""),
                   meta)


def _hook_names(model, layers, hook: str) -> dict[int, str]:
    return {layer: steering_hook_name(hook, layer) for layer in resolve_layers(model, layers)}


def _weights(mask: Tensor, reduce: Reduce) -> Float[Tensor, "batch pos"]:
    """Per-token weights that reduce a text to one vector: mean over real non-BOS tokens, or the last token."""
    if reduce == "mean":
        keep = content_mask(mask, keep_bos_if_alone=True).float()
        return keep / keep.sum(dim=1, keepdim=True)
    weights = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    weights[torch.arange(mask.shape[0], device=mask.device), last_token_index(mask)] = 1.0
    return weights


def reduced_activations(model, texts: Sequence[str], layers: int | Iterable[int] | str, hook: str = "resid_post",
                        reduce: Reduce = "mean", batch_size: int = 16) -> dict[int, Float[Tensor, "n d_model"]]:
    """One vector per text and layer: the mean over real non-BOS tokens, or the last token."""
    if reduce not in ("mean", "last"):
        raise ValueError(f"reduce must be 'mean' or 'last', got {reduce!r}.")
    names = _hook_names(model, layers, hook)
    out: dict[int, list[Tensor]] = {layer: [] for layer in names}
    for batch in capture_texts(model, texts, list(names.values()), batch_size=batch_size,
                               stop_at_layer=max(names) + 1):
        weights = _weights(batch.attention_mask, reduce)
        for layer, name in names.items():
            act = batch[name].float()
            out[layer].append(torch.einsum("bp,bpd->bd", weights.to(act.device), act).cpu())
    return {layer: torch.cat(chunks) for layer, chunks in out.items()}


def mean_difference(model, positive: Sequence[str], negative: Sequence[str], layers: int | Iterable[int] | str = "all",
                    hook: str = "resid_post", reduce: Reduce = "mean", batch_size: int = 16) -> SteeringVector:
    """mean(activations on ``positive``) - mean(activations on ``negative``), per layer."""
    pos = reduced_activations(model, positive, layers, hook, reduce, batch_size)
    neg = reduced_activations(model, negative, layers, hook, reduce, batch_size)
    vectors = {layer: pos[layer].mean(0) - neg[layer].mean(0) for layer in pos}
    return SteeringVector(vectors, short_hook(hook), "mean_difference", model_source(model),
                          {"reduce": reduce, "n_positive": len(positive), "n_negative": len(negative)})


def paired_differences(model, pairs: Sequence[tuple[str, str]], layers: int | Iterable[int] | str = "all",
                       hook: str = "resid_post", reduce: Reduce = "last", batch_size: int = 16
                       ) -> dict[int, Float[Tensor, "pairs d_model"]]:
    """activation(positive) - activation(negative) for each pair, per layer."""
    if not pairs:
        raise ValueError("No contrastive pairs given.")
    bad = [p for p in pairs if not (isinstance(p, (tuple, list)) and len(p) == 2)]
    if bad:
        raise ValueError(f"Contrastive pairs must be (positive, negative) text pairs; got {bad[0]!r}.")
    pos = reduced_activations(model, [p for p, _ in pairs], layers, hook, reduce, batch_size)
    neg = reduced_activations(model, [n for _, n in pairs], layers, hook, reduce, batch_size)
    return {layer: pos[layer] - neg[layer] for layer in pos}


def contrastive(model, pairs: Sequence[tuple[str, str]], layers: int | Iterable[int] | str = "all",
                hook: str = "resid_post", reduce: Reduce = "last", batch_size: int = 16) -> SteeringVector:
    """The mean paired difference (ActAdd / CAA)."""
    diffs = paired_differences(model, pairs, layers, hook, reduce, batch_size)
    return SteeringVector({layer: d.mean(0) for layer, d in diffs.items()}, short_hook(hook), "contrastive",
                          model_source(model), {"reduce": reduce, "n_pairs": len(pairs)})


def pca_direction(model, pairs: Sequence[tuple[str, str]], layers: int | Iterable[int] | str = "all",
                  hook: str = "resid_post", reduce: Reduce = "last", component: int = 0, batch_size: int = 16
                  ) -> SteeringVector:
    """Principal component ``component`` of the centred paired differences, per layer.

    Signed to agree with the mean difference, and scaled to the mean difference's projection on it,
    so a coefficient means the same as for `contrastive`.
    """
    diffs = paired_differences(model, pairs, layers, hook, reduce, batch_size)
    vectors: dict[int, Tensor] = {}
    explained: dict[str, float] = {}
    for layer, d in diffs.items():
        if component >= min(d.shape):
            raise ValueError(f"PCA component {component} needs more than {d.shape[0]} pairs.")
        _, s, vh = torch.linalg.svd((d - d.mean(0)).double(), full_matrices=False)
        pc = vh[component].float()
        proj = float(d.mean(0) @ pc)
        if proj < 0:
            pc, proj = -pc, -proj
        vectors[layer] = pc * proj
        explained[str(layer)] = float(s[component] ** 2 / (s ** 2).sum().clamp_min(1e-30))
    return SteeringVector(vectors, short_hook(hook), "pca", model_source(model),
                          {"reduce": reduce, "n_pairs": len(pairs), "component": component,
                           "explained_variance": explained})


def finetuning_direction(base, tuned, prompts: Sequence[str], layers: int | Iterable[int] | str = "all",
                         hook: str = "resid_post", batch_size: int = 16) -> SteeringVector:
    """mean over real non-BOS tokens of (tuned - base) activations on the same tokens, per layer."""
    if int(base.cfg.d_model) != int(tuned.cfg.d_model) or int(base.cfg.n_layers) != int(tuned.cfg.n_layers):
        raise ValueError(f"Base and tuned models differ in shape: d_model {base.cfg.d_model} vs {tuned.cfg.d_model}, "
                         f"layers {base.cfg.n_layers} vs {tuned.cfg.n_layers}; they must share an architecture.")
    names = _hook_names(base, layers, hook)
    stop = max(names) + 1
    sums = {layer: torch.zeros(int(base.cfg.d_model), dtype=torch.float64) for layer in names}
    count = 0.0
    for b in capture_texts(base, prompts, list(names.values()), batch_size=batch_size, stop_at_layer=stop):
        t = capture(tuned, b.tokens, b.attention_mask, list(names.values()), stop_at_layer=stop)
        keep = content_mask(b.attention_mask).double().cpu()
        for layer, name in names.items():
            sums[layer] += torch.einsum("bp,bpd->d", keep, t[name].double().cpu() - b[name].double().cpu())
        count += float(keep.sum())
    vectors = {layer: (s / max(count, 1.0)).float() for layer, s in sums.items()}
    return SteeringVector(vectors, short_hook(hook), "finetuning", model_source(tuned),
                          {"base": model_source(base), "tuned": model_source(tuned), "n_prompts": len(prompts)})


def residual_norms(model, texts: Sequence[str], layers: int | Iterable[int] | str = "all", hook: str = "resid_post",
                   batch_size: int = 16) -> pd.DataFrame:
    """Mean per-token norm of ``blocks.L.hook_<hook>`` over real non-BOS tokens: the scale a steering
    vector's norm should be compared with. Columns: layer, hook, resid_norm."""
    names = _hook_names(model, layers, hook)
    sums = {layer: 0.0 for layer in names}
    count = 0.0
    for batch in capture_texts(model, texts, list(names.values()), batch_size=batch_size,
                               stop_at_layer=max(names) + 1):
        keep = content_mask(batch.attention_mask).float().cpu()
        for layer, name in names.items():
            sums[layer] += float((batch[name].float().norm(dim=-1).cpu() * keep).sum())
        count += float(keep.sum())
    return pd.DataFrame({"layer": list(names), "hook": hook, "resid_norm": [sums[layer] / max(count, 1.0) for layer in names]})
