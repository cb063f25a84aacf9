"""Ablations: replace the output of attention heads, attention layers, MLPs or whole layers.

Targets (strings, or a list of them): ``"L"`` a whole layer (its attention and MLP outputs,
``hook_attn_out`` + ``hook_mlp_out``), ``"L.attn"``, ``"L.mlp"``, ``"L.H"`` one attention head
(through ``blocks.L.attn.hook_z``, which is per *query* head: under grouped-query attention several
query heads share one key/value head, and each still has its own ``hook_z`` slice).
"""

from __future__ import annotations

import re
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Literal, Sequence

import torch
from torch import Tensor

from rlhf_interp.bridge.activations import capture_texts
from rlhf_interp.bridge.hook_names import block_hook
from rlhf_interp.core.hashing import text_digest
from rlhf_interp.core.masks import content_mask, left_align, pad_rows
from rlhf_interp.edits.base import Edit, EditError, n_layers
from rlhf_interp.edits.positions import (Positions, PositionTracker, check_positions, positions_key,
                                         positions_label, tracker)

ABLATION_KINDS: tuple[str, ...] = ("zero", "mean", "resample")
REFERENCE_PROMPTS_DEFAULT = 32  # shipped prompts used for mean / resample ablation when none are given
REFERENCE_CACHE_SIZE = 4  # reference-activation stores kept (least recently used dropped first)


@dataclass(frozen=True)
class Target:
    """One ablation target: a layer's attention output, MLP output, or one attention head."""

    layer: int
    component: Literal["attn", "mlp", "head"]
    head: int | None = None

    @property
    def hook(self) -> str:
        if self.component == "head":
            return block_hook(self.layer, "attn.hook_z")
        return block_hook(self.layer, f"hook_{self.component}_out")

    def __str__(self) -> str:
        return f"{self.layer}.{self.head}" if self.component == "head" else f"{self.layer}.{self.component}"


_TARGET = re.compile(r"^\s*(-?\d+)(?:\.(attn|mlp|\d+))?\s*$")


def parse_targets(target: str | int | tuple | Iterable) -> list[Target]:
    """``"3"`` (whole layer), ``"3.attn"``, ``"3.mlp"``, ``"3.5"`` (head 5 of layer 3), ``(3, 5)``, or a list."""
    if isinstance(target, Target):
        return [target]
    if isinstance(target, int) and not isinstance(target, bool):
        return [Target(target, "attn"), Target(target, "mlp")]
    if isinstance(target, tuple) and len(target) == 2 and all(isinstance(x, int) for x in target):
        return [Target(target[0], "head", target[1])]
    if isinstance(target, str):
        parts = [p for p in target.split(",") if p.strip()]
        if len(parts) > 1:
            return parse_targets(parts)
        if not parts:
            return []
        match = _TARGET.match(parts[0])
        if not match:
            raise EditError(f"Cannot read ablation target {target!r}. Use 'L' (whole layer), 'L.attn', 'L.mlp' "
                            f"or 'L.H' (attention head H of layer L), e.g. '3', '3.attn', '3.5'.")
        layer, what = int(match.group(1)), match.group(2)
        if what is None:
            return [Target(layer, "attn"), Target(layer, "mlp")]
        if what in ("attn", "mlp"):
            return [Target(layer, what)]
        return [Target(layer, "head", int(what))]
    out: list[Target] = []
    for item in target:
        out.extend(parse_targets(item))
    return out


# ----------------------------------------------------------------------------------------------
# Reference activations for mean and resample ablation


class ReferenceActivations:
    """Activations of a reference prompt set, left-aligned by real position, computed once per hook."""

    def __init__(self, prompts: Sequence[str], batch_size: int = 16):
        self.prompts = list(prompts)
        self.batch_size = batch_size
        self.tokens: dict[str, Tensor] = {}  # hook -> [n_ref, max_len, ...] (left-aligned: BOS at 0)
        self.lengths: Tensor | None = None
        self.means: dict[str, Tensor] = {}  # hook -> mean over real non-BOS tokens

    def ensure(self, model, hooks: Iterable[str]) -> None:
        missing = sorted(set(hooks) - set(self.tokens))
        if not missing:
            return
        chunks: dict[str, list[Tensor]] = {h: [] for h in missing}
        lengths: list[Tensor] = []
        for batch in capture_texts(model, self.prompts, missing, batch_size=self.batch_size):
            lengths.append(batch.attention_mask.sum(dim=1).cpu())
            for h in missing:
                chunks[h].append(left_align(batch[h].detach().float().cpu(), batch.attention_mask.cpu()))
        self.lengths = torch.cat(lengths)
        for h in missing:
            acts = pad_rows([row for chunk in chunks[h] for row in chunk], side="right")[0]
            valid = (torch.arange(acts.shape[1])[None, :] < self.lengths[:, None]).long()
            keep = content_mask(valid, keep_bos_if_alone=False)
            self.tokens[h] = acts
            self.means[h] = acts[keep if keep.any() else valid.bool()].mean(dim=0)


_REFERENCES: "OrderedDict[tuple, tuple[weakref.ref, ReferenceActivations]]" = OrderedDict()


def reference_activations(model, prompts: Sequence[str], batch_size: int = 16) -> ReferenceActivations:
    """The reference-activation store of ``model`` on ``prompts`` (cached by prompt content; bounded LRU)."""
    key = (id(model), text_digest(prompts), len(prompts), batch_size)
    entry = _REFERENCES.get(key)
    if entry is None or entry[0]() is not model:
        entry = (weakref.ref(model), ReferenceActivations(prompts, batch_size))
        _REFERENCES[key] = entry
    _REFERENCES.move_to_end(key)
    while len(_REFERENCES) > REFERENCE_CACHE_SIZE:
        _REFERENCES.popitem(last=False)
    return entry[1]


class Ablation(Edit):
    """Replace the output of attention heads, attention layers, MLPs or whole layers.

    ``kind``: ``"zero"``; ``"mean"`` (the mean over the real non-BOS tokens of ``reference_prompts``:
    BOS is an attention sink whose outlying activations would dominate a mean); ``"resample"``
    (row ``i`` takes, at real position ``p``, the activation of reference prompt ``(i + shift) % n``
    at position ``min(p, its length - 1)``). Reference activations are computed once (with other
    edits suspended) and cached per model and prompt set. An empty target list is the identity.
    """

    name = "ablation"

    def __init__(self, target, kind: str = "zero", *, reference_prompts: Sequence[str] | None = None,
                 positions: Positions = "all", shift: int = 1, model=None):
        if kind not in ABLATION_KINDS:
            raise EditError(f"Unknown ablation kind {kind!r}; use one of {', '.join(ABLATION_KINDS)}.")
        self.target_arg = target
        self.targets = parse_targets(target)
        self.kind = kind
        self.positions = check_positions(positions)
        self.shift = int(shift)
        self._reference_prompts = list(reference_prompts) if reference_prompts is not None else None
        if kind != "zero" and self._reference_prompts is not None and not self._reference_prompts:
            raise EditError(f"{kind} ablation needs reference prompts to take activations from, got an empty list: "
                            f"pass some (or reference_prompts=None for {REFERENCE_PROMPTS_DEFAULT} shipped ones).")
        self._refs: ReferenceActivations | None = None
        super().__init__(model)

    @property
    def reference_prompts(self) -> list[str]:
        if self._reference_prompts is None:
            from rlhf_interp.prompts import load_prompts

            self._reference_prompts = load_prompts(limit=REFERENCE_PROMPTS_DEFAULT, seed=0)
        return self._reference_prompts

    def _validate(self, model) -> None:
        total, n_heads = n_layers(model), int(model.cfg.n_heads)
        n_kv = getattr(model.cfg, "n_key_value_heads", None) or n_heads
        fixed = []
        for t in self.targets:
            if not -total <= t.layer < total:
                raise EditError(f"Ablation target {t} names layer {t.layer}, but this model has {total} layers "
                                f"(valid: 0..{total - 1}).")
            if t.component == "head" and not 0 <= t.head < n_heads:
                raise EditError(f"Head {t.head} in ablation target {t} is out of range: the model has {n_heads} "
                                f"attention (query) heads per layer, valid 0..{n_heads - 1}"
                                + (f" ({n_kv} key/value heads are shared under grouped-query attention; "
                                   f"hook_z is per query head)." if n_kv != n_heads else "."))
            fixed.append(Target(t.layer % total, t.component, t.head))
        self.targets = fixed

    def _by_hook(self) -> dict[str, list[int] | None]:
        """hook name -> heads to ablate (None = the whole activation)."""
        out: dict[str, list[int] | None] = {}
        for t in self.targets:
            if t.component == "head":
                heads = out.setdefault(t.hook, [])
                if t.head not in heads:
                    heads.append(t.head)
            else:
                out[t.hook] = None
        return out

    def _prepare(self) -> None:
        if self.kind != "zero" and self.targets:
            self._refs = reference_activations(self.model, self.reference_prompts)
            self._refs.ensure(self.model, self._by_hook().keys())

    def _hook_fns(self) -> list[tuple[str, Callable]]:
        t = tracker(self.model)
        return [(name, self._make_hook(name, heads, t)) for name, heads in self._by_hook().items()]

    def _replacement(self, name: str, act: Tensor) -> Tensor:
        if self.kind == "zero":
            return torch.zeros_like(act)
        assert self._refs is not None
        if self.kind == "mean":
            return self._refs.means[name].to(device=act.device, dtype=act.dtype).expand_as(act)
        refs, lengths = self._refs.tokens[name], self._refs.lengths
        batch, seq = act.shape[:2]
        info = tracker(self.model).current
        real_pos = info.real_pos if info is not None and info.real_pos.shape == (batch, seq) \
            else torch.arange(seq).expand(batch, seq)
        src = (torch.arange(batch) + self.shift) % refs.shape[0]
        pos = torch.minimum(real_pos.cpu(), (lengths[src] - 1)[:, None])
        return refs[src[:, None], pos].to(device=act.device, dtype=act.dtype)

    def _make_hook(self, name: str, heads: list[int] | None, t: PositionTracker) -> Callable:
        def hook(act: Tensor, hook=None) -> Tensor:
            if self._suspended:
                return act
            new = self._replacement(name, act)
            sel = t.selection(self.positions, act.shape[0], act.shape[1])
            if sel is not None:
                shape = sel.shape + (1,) * (act.ndim - 2)
                new = torch.where(sel.view(shape), new, act)
            if heads is None:
                return new
            out = act.clone()
            out[:, :, heads] = new[:, :, heads]
            return out

        return hook

    def cache_key(self) -> Hashable:
        refs = text_digest(self.reference_prompts) if self.kind != "zero" and self.targets else None
        return ("ablation", tuple(map(str, self.targets)), self.kind, positions_key(self.positions), self.shift, refs)

    def describe(self) -> dict[str, Any]:
        return {"edit": self.name, "target": ",".join(map(str, self.targets)), "kind": self.kind,
                "positions": positions_label(self.positions)}

    def __repr__(self) -> str:
        return f"Ablation([{', '.join(map(str, self.targets))}], kind={self.kind!r})"
