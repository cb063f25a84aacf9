"""Edits: steering, ablations and direction removal as context managers over a `TransformerBridge`.

Why context managers: an edit that outlives its experiment silently corrupts every later number.
Each edit adds its hooks on ``__enter__`` and removes exactly those hooks on ``__exit__`` — also
when the body raises — so after the ``with`` block the model's logits are bit-for-bit the
unedited ones. Edits compose: ``with a, b:`` or ``with a + b:`` (a `Combined` edit).

An edit is a model-free description until it is bound to a model with ``edit.on(model)`` (or
``model=`` in the constructor); functions that take a model and an edit (``measure.kl_shift``)
bind it for you. Binding validates layers, heads and vector sizes against the model.

Positions. Steering and ablations act on *absolute* positions of the sequence, which is not what
a hook sees during KV-cached generation: the prompt pass has sequence length P, then every new
token arrives alone. A small tracker (a forward pre-hook on the HF decoder, active while any edit
is) reads ``attention_mask`` and ``past_key_values`` of every pass and derives, per token:

- ``column``: its index in the padded sequence (prompt columns are ``0..P-1``);
- ``real_pos``: its position among the row's real tokens (BOS = 0; left padding is not counted);
- ``is_real``: whether it is a real token (pads are never edited).

``positions="prompt"`` selects real tokens with ``column < P``, ``"generated"`` those with
``column >= P`` (every new token, the first one included), ``"all"`` every real token, and a
``slice`` (or int) selects by ``real_pos``. ``P`` is the width of the first pass without a KV cache;
a later cache-free pass that starts with the same prompt tokens (generation without the KV cache,
or scoring prompt + continuation) keeps it. Set it explicitly with `prompt_length`.

Ablation targets (strings, or a list of them): ``"L"`` a whole layer (its attention and MLP
outputs, ``hook_attn_out`` + ``hook_mlp_out``), ``"L.attn"``, ``"L.mlp"``, ``"L.H"`` one attention
head (through ``blocks.L.attn.hook_z``, which is per *query* head: under grouped-query attention
several query heads share one key/value head, and each still has its own ``hook_z`` slice).
"""

from __future__ import annotations

import re
import weakref
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

Positions = Literal["all", "prompt", "generated"] | slice | int
STEERING_HOOKS: tuple[str, ...] = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
ABLATION_KINDS: tuple[str, ...] = ("zero", "mean", "resample")
REFERENCE_PROMPTS_DEFAULT = 32  # shipped prompts used for mean / resample ablation when none are given


class EditError(ValueError):
    """An edit was given something the model cannot take; the message names the valid choices."""


# ----------------------------------------------------------------------------------------------
# Validation helpers (shared by every edit)


def n_layers(model) -> int:
    return int(model.cfg.n_layers)


def resolve_layers(model, layers: int | Iterable[int] | str) -> list[int]:
    """``"all"``, an int or ints (negative counts from the end) -> sorted valid layer indices."""
    total = n_layers(model)
    if isinstance(layers, str):
        if layers != "all":
            raise EditError(f"layers must be 'all', an int or a list of ints, got {layers!r}.")
        return list(range(total))
    items = [layers] if isinstance(layers, int) else list(layers)
    out: list[int] = []
    for layer in items:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise EditError(f"Layer {layer!r} is not an int; valid layers are 0..{total - 1} (or 'all').")
        if not -total <= layer < total:
            raise EditError(f"Layer {layer} does not exist: this model has {total} layers; valid layers are "
                            f"0..{total - 1} (negative numbers count from the end), or 'all'.")
        out.append(layer % total)
    return sorted(set(out))


def steering_hook_name(hook: str, layer: int) -> str:
    """``"resid_post"`` (or ``"hook_resid_post"``) at layer L -> ``"blocks.L.hook_resid_post"``."""
    short = hook[len("hook_"):] if hook.startswith("hook_") else hook
    if short not in STEERING_HOOKS:
        raise EditError(f"Unknown hook {hook!r}. Valid hooks: {', '.join(STEERING_HOOKS)} "
                        f"(blocks.L.hook_<name>; 'hook_resid_post' is accepted too).")
    return f"blocks.{layer}.hook_{short}"


def unit_direction(direction: Tensor, d_model: int) -> Float[Tensor, "d_model"]:
    """A float direction of size d_model, normalized to unit length (float32, on CPU)."""
    direction = torch.as_tensor(direction).detach().flatten().float().cpu()
    if direction.numel() != d_model:
        raise EditError(f"Direction has size {direction.numel()} but the model's d_model is {d_model}; "
                        f"build it on the same model.")
    norm = direction.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise EditError("Direction has zero (or non-finite) norm; it cannot be normalized.")
    return direction / norm


def _check_positions(positions: Positions) -> Positions:
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = slice(positions, positions + 1)
    if isinstance(positions, slice):
        for bound in (positions.start, positions.stop):
            if bound is not None and bound < 0:
                raise EditError(f"positions slice {positions} has a negative bound; during generation the end of "
                                f"the sequence is not known yet. Use absolute positions (BOS = 0).")
        if positions.step is not None and positions.step <= 0:
            raise EditError(f"positions slice step must be positive, got {positions.step}.")
        return positions
    if positions not in ("all", "prompt", "generated"):
        raise EditError(f"positions must be 'all', 'prompt', 'generated', an int or a slice; got {positions!r}.")
    return positions


# ----------------------------------------------------------------------------------------------
# Position tracking: absolute positions during KV-cached generation


@dataclass
class PassInfo:
    """Where the tokens of the current forward pass sit in their sequence (all [batch, seq])."""

    column: Int[Tensor, "batch seq"]
    real_pos: Int[Tensor, "batch seq"]
    is_real: Bool[Tensor, "batch seq"]
    prompt_len: int

    def select(self, positions: Positions) -> Bool[Tensor, "batch seq"]:
        if positions == "all":
            return self.is_real
        if positions == "prompt":
            return self.is_real & (self.column < self.prompt_len)
        if positions == "generated":
            return self.is_real & (self.column >= self.prompt_len)
        assert isinstance(positions, slice)
        start = positions.start or 0
        step = positions.step or 1
        sel = (self.real_pos >= start) & ((self.real_pos - start) % step == 0)
        if positions.stop is not None:
            sel &= self.real_pos < positions.stop
        return self.is_real & sel


class PositionTracker:
    """Reads every forward pass's mask and cache length (pre-hook on the HF decoder) while edits are active."""

    def __init__(self, model):
        self._model = weakref.ref(model)
        self.users = 0
        self.handle = None
        self.current: PassInfo | None = None
        self.prompt_tokens: Tensor | None = None
        self.forced_prompt_len: int | None = None

    def attach(self) -> None:
        if self.users == 0:
            hf = self._model().original_model
            decoder = getattr(hf, "base_model", hf)
            self.handle = decoder.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        self.users += 1

    def detach(self) -> None:
        self.users -= 1
        if self.users == 0 and self.handle is not None:
            self.handle.remove()
            self.handle, self.current, self.prompt_tokens = None, None, None

    def _pre_hook(self, module, args, kwargs) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        source = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
        if source is None:
            self.current = None
            return
        batch, seq = source.shape[:2]
        past = kwargs.get("past_key_values")
        past_len = int(past.get_seq_length()) if past is not None and hasattr(past, "get_seq_length") else 0
        device = source.device
        column = (past_len + torch.arange(seq, device=device)).expand(batch, seq)
        mask = kwargs.get("attention_mask")
        if isinstance(mask, Tensor) and mask.ndim == 2 and mask.shape[0] == batch and mask.shape[1] >= seq:
            full = mask.long()
            real_pos = (torch.cumsum(full, dim=1) - 1)[:, -seq:]
            is_real = full[:, -seq:].bool()
        else:
            real_pos, is_real = column, torch.ones(batch, seq, dtype=torch.bool, device=device)
        if past_len == 0:
            prompt_len = self._prompt_len_for(input_ids, seq)
        else:
            prompt_len = self.current.prompt_len if self.current is not None else past_len
        self.current = PassInfo(column, real_pos.clamp_min(0), is_real, prompt_len)

    def _prompt_len_for(self, input_ids: Tensor | None, seq: int) -> int:
        if self.forced_prompt_len is not None:
            return self.forced_prompt_len
        known = self.prompt_tokens
        if (input_ids is not None and known is not None and known.shape[0] == input_ids.shape[0]
                and known.shape[1] <= seq and torch.equal(input_ids[:, :known.shape[1]], known)):
            return known.shape[1]  # the same prompt, continued without a KV cache
        self.prompt_tokens = input_ids.detach().clone() if input_ids is not None else None
        return seq

    def selection(self, positions: Positions, batch: int, seq: int) -> Bool[Tensor, "batch seq"] | None:
        """Which tokens of the current pass to edit (None = every token: no position info)."""
        info = self.current
        if info is None:
            return None
        if info.column.shape != (batch, seq):
            raise RuntimeError(f"Edit position tracking is out of sync: the hook sees [batch={batch}, seq={seq}] "
                               f"but the last forward pass had {tuple(info.column.shape)}. Run the model through "
                               f"its normal forward (not start_at_layer) while edits are active.")
        return info.select(positions)


_TRACKERS: "weakref.WeakKeyDictionary[Any, PositionTracker]" = weakref.WeakKeyDictionary()
_ACTIVE: "weakref.WeakKeyDictionary[Any, list[Edit]]" = weakref.WeakKeyDictionary()


def _tracker(model) -> PositionTracker:
    if model not in _TRACKERS:
        _TRACKERS[model] = PositionTracker(model)
    return _TRACKERS[model]


@contextmanager
def prompt_length(model, n: int) -> Iterator[None]:
    """Tell edits that columns ``>= n`` of the following cache-free passes were generated.

    Needed when scoring stored prompt + continuation tokens with a ``positions="generated"`` or
    ``"prompt"`` edit (during ``generate`` the prompt width is known without it).
    """
    tracker = _tracker(model)
    before = tracker.forced_prompt_len
    tracker.forced_prompt_len = int(n)
    try:
        yield
    finally:
        tracker.forced_prompt_len = before


def active_edits(model) -> list["Edit"]:
    """The edits currently entered on ``model`` (outermost first)."""
    return list(_ACTIVE.get(model, []))


@contextmanager
def suspended(model) -> Iterator[None]:
    """Run ``model`` as if no edit were active (hooks stay attached but pass activations through)."""
    edits = active_edits(model)
    before = [e._suspended for e in edits]
    for e in edits:
        e._suspended = True
    try:
        yield
    finally:
        for e, state in zip(edits, before):
            e._suspended = state


# ----------------------------------------------------------------------------------------------
# The Edit protocol


class Edit:
    """Base class: subclasses describe their hooks in `_hook_fns`; this class scopes them."""

    model: Any = None
    name: str = "edit"

    def __init__(self, model=None):
        self._ctx: ExitStack | None = None
        self._suspended = False
        if model is not None:
            self.on(model)

    # binding ------------------------------------------------------------------------------
    def on(self, model) -> "Edit":
        """Bind to ``model`` (validating against it) and return self."""
        if self._ctx is not None and model is not self.model:
            raise RuntimeError(f"{self!r} is active on another model; exit it before binding it elsewhere.")
        self._validate(model)
        self.model = model
        return self

    def _validate(self, model) -> None:
        """Raise EditError when this edit does not fit ``model``."""

    def _prepare(self) -> None:
        """Work to do once before hooks go on (e.g. reference activations); runs with other edits suspended."""

    def _hook_fns(self) -> list[tuple[str, Callable]]:
        raise NotImplementedError

    # context manager ------------------------------------------------------------------------
    def __enter__(self) -> "Edit":
        if self.model is None:
            raise RuntimeError(f"{self!r} is not bound to a model: use `with edit.on(model):` "
                               f"(or pass model= when building it).")
        if self._ctx is not None:
            raise RuntimeError(f"{self!r} is already active; an edit can be entered once at a time.")
        model = self.model
        with suspended(model):
            self._prepare()
        stack = ExitStack()
        try:
            tracker = _tracker(model)
            tracker.attach()
            stack.callback(tracker.detach)
            hooks = self._hook_fns()
            if hooks:
                stack.enter_context(model.hooks(fwd_hooks=hooks))
            _ACTIVE.setdefault(model, []).append(self)
            stack.callback(lambda: _ACTIVE[model].remove(self))
        except BaseException:
            stack.close()
            raise
        self._suspended = False
        self._ctx = stack
        return self

    def __exit__(self, *exc) -> bool:
        stack, self._ctx = self._ctx, None
        if stack is not None:
            stack.close()
        return False

    def __add__(self, other: "Edit") -> "Combined":
        return Combined(self, other)

    @property
    def active(self) -> bool:
        return self._ctx is not None

    def describe(self) -> dict[str, Any]:
        """Plain-data description (for DataFrame columns and report configs)."""
        return {"edit": self.name}


class NoEdit(Edit):
    """The identity edit: adds no hook (a baseline row in a sweep)."""

    name = "none"

    def _hook_fns(self) -> list[tuple[str, Callable]]:
        return []

    def __repr__(self) -> str:
        return "NoEdit()"


class Combined(Edit):
    """Several edits entered in order and exited in reverse (``a + b``)."""

    name = "combined"

    def __init__(self, *edits: Edit, model=None):
        self.edits: list[Edit] = []
        for e in edits:
            self.edits.extend(e.edits if isinstance(e, Combined) else [e])
        super().__init__(model)
        if model is None:
            bound = {id(e.model): e.model for e in self.edits if e.model is not None}
            if len(bound) > 1:
                raise EditError("Combined edits are bound to different models; bind them to one model.")
            if bound:
                self.on(next(iter(bound.values())))

    def on(self, model) -> "Combined":
        for e in self.edits:
            e.on(model)
        self.model = model
        return self

    def __enter__(self) -> "Combined":
        if self.model is None:
            raise RuntimeError("Combined edit is not bound to a model: use `with edit.on(model):`.")
        stack = ExitStack()
        try:
            for e in self.edits:
                stack.enter_context(e)
        except BaseException:
            stack.close()
            raise
        self._ctx = stack
        return self

    def describe(self) -> dict[str, Any]:
        return {"edit": " + ".join(e.name for e in self.edits)}

    def __repr__(self) -> str:
        return " + ".join(repr(e) for e in self.edits) or "Combined()"


# ----------------------------------------------------------------------------------------------
# Steering


class Steering(Edit):
    """Add ``coef * vector`` to ``blocks.L.hook_<hook>`` at each layer L, at the chosen positions.

    ``vector``: one [d_model] tensor used at every layer, a ``{layer: [d_model]}`` dict, or a
    ``steering.SteeringVector`` (per-layer vectors; ``layers=None`` uses all of its layers).
    Works during KV-cached generation: positions are absolute (see the module docstring).
    """

    name = "steering"

    def __init__(self, vector, layers: int | Iterable[int] | str | None = None, coef: float = 1.0,
                 positions: Positions = "all", hook: str = "resid_post", *, model=None):
        per_layer = getattr(vector, "vectors", vector)
        if isinstance(per_layer, dict):
            self.vectors: dict[int, Tensor] | None = {int(k): torch.as_tensor(v).detach() for k, v in per_layer.items()}
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
            if layers is None:
                raise EditError("Steering with a single vector needs layers= (an int, a list of ints, or 'all').")
        if getattr(vector, "hook", None) and hook == "resid_post":
            hook = vector.hook
        steering_hook_name(hook, 0)  # validates the hook name early
        self.hook = hook
        self.layers_arg = layers
        self.coef = float(coef)
        self.positions = _check_positions(positions)
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
        tracker = _tracker(self.model)
        fns = []
        for layer in self.layers:
            fns.append((steering_hook_name(self.hook, layer), self._make_hook(self._vector_for(layer), tracker)))
        return fns

    def _make_hook(self, vector: Tensor, tracker: PositionTracker) -> Callable:
        def hook(act: Tensor, hook=None) -> Tensor:
            if self._suspended:
                return act
            delta = (self.coef * vector).to(device=act.device, dtype=act.dtype)
            sel = tracker.selection(self.positions, act.shape[0], act.shape[1])
            if sel is None:
                return act + delta
            return act + sel.unsqueeze(-1).to(act.dtype) * delta

        return hook

    def describe(self) -> dict[str, Any]:
        pos = self.positions if isinstance(self.positions, str) else str(self.positions)
        return {"edit": self.name, "hook": self.hook, "layer": ",".join(map(str, self.layers or [self.layers_arg])),
                "coef": self.coef, "positions": pos}

    def __repr__(self) -> str:
        return f"Steering(layers={self.layers or self.layers_arg}, coef={self.coef}, positions={self.positions!r}, hook={self.hook!r})"


# ----------------------------------------------------------------------------------------------
# Ablation


@dataclass(frozen=True)
class Target:
    """One ablation target: a layer's attention output, MLP output, or one attention head."""

    layer: int
    component: Literal["attn", "mlp", "head"]
    head: int | None = None

    @property
    def hook(self) -> str:
        if self.component == "head":
            return f"blocks.{self.layer}.attn.hook_z"
        return f"blocks.{self.layer}.hook_{self.component}_out"

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


class _ReferenceActivations:
    """Activations of a reference prompt set, aligned by real position, computed once per hook."""

    def __init__(self, model, prompts: Sequence[str], batch_size: int = 16):
        self.prompts = list(prompts)
        self.batch_size = batch_size
        self.tokens: dict[str, Tensor] = {}  # hook -> [n_ref, max_len, ...] (left-aligned: BOS at 0)
        self.lengths: Tensor | None = None
        self.means: dict[str, Tensor] = {}  # hook -> mean over real non-BOS tokens

    @torch.no_grad()
    def ensure(self, model, hooks: Iterable[str]) -> None:
        from rlhf_interp.models import tokenize

        missing = sorted(set(hooks) - set(self.tokens))
        if not missing:
            return
        chunks: dict[str, list[Tensor]] = {h: [] for h in missing}
        lengths: list[Tensor] = []
        for start in range(0, len(self.prompts), self.batch_size):
            tokens, mask = tokenize(model, self.prompts[start:start + self.batch_size])
            _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=missing)
            n_real = mask.sum(dim=1).cpu()
            lengths.append(n_real)
            width = tokens.shape[1]
            for h in missing:
                act = cache[h].detach().float().cpu()
                aligned = torch.zeros_like(act)
                for row, n in enumerate(n_real.tolist()):
                    aligned[row, :n] = act[row, width - n:]
                chunks[h].append(aligned)
        lengths_all = torch.cat(lengths)
        max_len = int(lengths_all.max())
        self.lengths = lengths_all
        valid = torch.arange(max_len)[None, :] < lengths_all[:, None]
        not_bos = valid & (torch.arange(max_len)[None, :] > 0)
        if not_bos.sum() == 0:
            not_bos = valid
        for h in missing:
            padded = [torch.nn.functional.pad(c, [0, 0] * (c.ndim - 2) + [0, max_len - c.shape[1]]) for c in chunks[h]]
            acts = torch.cat(padded)
            self.tokens[h] = acts
            self.means[h] = acts[not_bos].mean(dim=0)


_REFERENCES: dict[tuple[int, tuple[str, ...]], tuple[weakref.ref, _ReferenceActivations]] = {}


def reference_activations(model, prompts: Sequence[str]) -> _ReferenceActivations:
    """The (cached) reference-activation store of ``model`` on ``prompts``."""
    key = (id(model), tuple(prompts))
    entry = _REFERENCES.get(key)
    if entry is None or entry[0]() is not model:
        entry = (weakref.ref(model), _ReferenceActivations(model, prompts))
        _REFERENCES[key] = entry
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
        self.positions = _check_positions(positions)
        self.shift = int(shift)
        self._reference_prompts = list(reference_prompts) if reference_prompts is not None else None
        self._refs: _ReferenceActivations | None = None
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
        tracker = _tracker(self.model)
        return [(name, self._make_hook(name, heads, tracker)) for name, heads in self._by_hook().items()]

    def _replacement(self, name: str, act: Tensor) -> Tensor:
        if self.kind == "zero":
            return torch.zeros_like(act)
        assert self._refs is not None
        if self.kind == "mean":
            return self._refs.means[name].to(device=act.device, dtype=act.dtype).expand_as(act)
        refs, lengths = self._refs.tokens[name], self._refs.lengths
        batch, seq = act.shape[:2]
        info = _tracker(self.model).current
        real_pos = info.real_pos if info is not None and info.real_pos.shape == (batch, seq) \
            else torch.arange(seq).expand(batch, seq)
        src = (torch.arange(batch) + self.shift) % refs.shape[0]
        pos = torch.minimum(real_pos.cpu(), (lengths[src] - 1)[:, None])
        return refs[src[:, None], pos].to(device=act.device, dtype=act.dtype)

    def _make_hook(self, name: str, heads: list[int] | None, tracker: PositionTracker) -> Callable:
        def hook(act: Tensor, hook=None) -> Tensor:
            if self._suspended:
                return act
            new = self._replacement(name, act)
            sel = tracker.selection(self.positions, act.shape[0], act.shape[1])
            if sel is not None:
                shape = sel.shape + (1,) * (act.ndim - 2)
                new = torch.where(sel.view(shape), new, act)
            if heads is None:
                return new
            out = act.clone()
            out[:, :, heads] = new[:, :, heads]
            return out

        return hook

    def describe(self) -> dict[str, Any]:
        pos = self.positions if isinstance(self.positions, str) else str(self.positions)
        return {"edit": self.name, "target": ",".join(map(str, self.targets)), "kind": self.kind, "positions": pos}

    def __repr__(self) -> str:
        return f"Ablation([{', '.join(map(str, self.targets))}], kind={self.kind!r})"


# ----------------------------------------------------------------------------------------------
# Direction ablation and its weight-edit twin (Arditi et al. 2024)


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

        return [(f"blocks.{layer}.hook_{what}", hook) for layer in self.layers
                for what in ("resid_pre", "attn_out", "mlp_out")]

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
    from transformers import AutoModelForCausalLM

    from rlhf_interp.checkpoints import hf_state_dict
    from rlhf_interp.models import bridge_from_hf, model_source

    hf = model.original_model
    r = unit_direction(direction, int(model.cfg.d_model))
    state = {k: v.detach().clone() for k, v in hf_state_dict(hf).items()}
    config = hf.config.__class__.from_dict(hf.config.to_dict())
    tied = bool(getattr(config, "tie_word_embeddings", False))
    config.tie_word_embeddings = False
    config.output_attentions = False
    dtype = next(hf.parameters()).dtype
    device = next(hf.parameters()).device
    fresh = AutoModelForCausalLM.from_config(config, dtype=dtype,
                                             attn_implementation=hf.config._attn_implementation)
    if tied or "lm_head.weight" not in state:
        state["lm_head.weight"] = hf.get_output_embeddings().weight.detach().clone()
    fresh.load_state_dict(state, strict=True)
    fresh.to(device).eval()

    r_ = r.to(device=device, dtype=dtype)
    embed = fresh.get_input_embeddings().weight
    embed.copy_(embed - (embed @ r_)[:, None] * r_[None, :])
    layers = getattr(fresh.base_model, "layers", None)
    if layers is None:
        raise EditError(f"orthogonalize_weights needs decoder layers at model.layers (Llama-style); "
                        f"{type(fresh).__name__} has none.")
    for i, layer in enumerate(layers):
        outs = [getattr(getattr(layer, "self_attn", None), "o_proj", None), getattr(getattr(layer, "mlp", None), "down_proj", None)]
        if any(o is None for o in outs):
            raise EditError(f"orthogonalize_weights supports Llama-style layers (self_attn.o_proj, mlp.down_proj); "
                            f"layer {i} of {type(fresh).__name__} lacks one.")
        for linear in outs:
            w = linear.weight  # [d_model, d_in]: output = w @ x
            w.copy_(w - r_[:, None] * (r_ @ w)[None, :])
            if linear.bias is not None:
                linear.bias.copy_(linear.bias - (linear.bias @ r_) * r_)
    edited = bridge_from_hf(fresh, model.tokenizer, name=f"{model_source(model)}+orthogonalized")
    edited.rlhf_interp_source = f"{model_source(model)}+orthogonalized"
    return edited


def edit_columns(edit: Edit | None) -> dict[str, Any]:
    """Describe an edit as flat columns for a tidy DataFrame."""
    return (edit or NoEdit()).describe()


__all__ = [
    "ABLATION_KINDS", "STEERING_HOOKS", "Ablation", "Combined", "DirectionAblation", "Edit", "EditError", "NoEdit",
    "PassInfo", "PositionTracker", "Steering", "Target", "active_edits", "edit_columns", "orthogonalize_weights",
    "parse_targets", "project_out", "prompt_length", "reference_activations", "resolve_layers", "suspended",
    "unit_direction",
]
