"""The Edit protocol: an edit is a context manager over a bridge.

Why context managers: an edit that outlives its experiment silently corrupts every later number.
Each edit adds its hooks on ``__enter__`` and removes exactly those hooks on ``__exit__`` — also
when the body raises — so after the ``with`` block the model's logits are bit-for-bit the
unedited ones. Edits compose: ``with a, b:`` or ``with a + b:`` (a `Combined` edit).

An edit is a model-free description until it is bound to a model with ``edit.on(model)`` (or
``model=`` in the constructor); functions that take a model and an edit (``measure.kl_shift``)
bind it for you. Binding validates layers, heads and vector sizes against the model.

Every edit has a `cache_key`: what it does, by content (a steering vector's values, not its repr),
so caches of edited logits or activations never confuse two different edits.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Callable, Hashable, Iterable

import torch
from jaxtyping import Float
from torch import Tensor

from rlhf_interp.bridge.hook_names import block_hook
from rlhf_interp.bridge.interventions import activate, active, suspended  # noqa: F401  (suspended: re-exported)
from rlhf_interp.edits.errors import EditError
from rlhf_interp.edits.positions import tracker

STEERING_HOOKS: tuple[str, ...] = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


# ----------------------------------------------------------------------------------------------
# Validation helpers (shared by every edit)


def n_layers(model) -> int:
    return int(model.cfg.n_layers)


def resolve_layers(model, layers: int | Iterable[int] | str) -> list[int]:
    """``"all"``, an int or ints (negative counts from the end) -> sorted valid layer indices."""
    total = n_layers(model)
    check_layers_arg(layers)
    if isinstance(layers, str):
        return list(range(total))
    items = [layers] if isinstance(layers, int) else list(layers)
    if not items:
        raise EditError(f"layers is empty: give at least one layer (0..{total - 1}) or 'all'.")
    out: list[int] = []
    for layer in items:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise EditError(f"Layer {layer!r} is not an int; valid layers are 0..{total - 1} (or 'all').")
        if not -total <= layer < total:
            raise EditError(f"Layer {layer} does not exist: this model has {total} layers; valid layers are "
                            f"0..{total - 1} (negative numbers count from the end), or 'all'.")
        out.append(layer % total)
    return sorted(set(out))


def check_layers_arg(layers: Any) -> None:
    """Model-free check of a ``layers`` argument: 'all', an int, or an iterable of ints (not floats, not bools)."""
    if isinstance(layers, str):
        if layers != "all":
            raise EditError(f"layers must be 'all', an int or a list of ints, got {layers!r}.")
        return
    if isinstance(layers, bool) or not isinstance(layers, (int, Iterable)) or isinstance(layers, (bytes, dict)):
        raise EditError(f"layers must be 'all', an int or a list of ints, got {layers!r} "
                        f"({type(layers).__name__}).")
    if isinstance(layers, (list, tuple, range)):  # other iterables are checked item by item when resolved
        for layer in layers:
            if not isinstance(layer, int) or isinstance(layer, bool):
                raise EditError(f"Layer {layer!r} is not an int; give layers as ints (negative counts from the "
                                f"end), or 'all'.")


def check_vector(vector: Tensor, what: str = "Steering vector") -> Tensor:
    """A real floating-point tensor with only finite values (bool, int and complex vectors are refused:
    adding them would be silently cast; a NaN or inf would turn every later number into NaN)."""
    if not isinstance(vector, Tensor):
        raise EditError(f"{what} must be a tensor, got {type(vector).__name__}.")
    if not vector.is_floating_point():
        raise EditError(f"{what} has dtype {vector.dtype}; it must be a real floating-point tensor "
                        f"(e.g. vector.float()).")
    bad = (~torch.isfinite(vector)).sum().item()
    if bad:
        raise EditError(f"{what} has {bad} non-finite value(s) (NaN or inf) of {vector.numel()}: rebuild it "
                        f"(a NaN usually comes from an empty text set or a diverged model).")
    return vector


def short_hook(hook: str) -> str:
    """``"hook_resid_post"`` or ``"resid_post"`` -> ``"resid_post"`` (validated)."""
    short = hook[len("hook_"):] if hook.startswith("hook_") else hook
    if short not in STEERING_HOOKS:
        raise EditError(f"Unknown hook {hook!r}. Valid hooks: {', '.join(STEERING_HOOKS)} "
                        f"(blocks.L.hook_<name>; 'hook_resid_post' is accepted too).")
    return short


def steering_hook_name(hook: str, layer: int) -> str:
    """``"resid_post"`` (or ``"hook_resid_post"``) at layer L -> ``"blocks.L.hook_resid_post"``."""
    return block_hook(layer, f"hook_{short_hook(hook)}")


def unit_direction(direction: Tensor, d_model: int) -> Float[Tensor, "d_model"]:
    """A float direction of size d_model, normalized to unit length (float32, on CPU)."""
    direction = check_vector(torch.as_tensor(direction).detach(), "Direction").flatten().float().cpu()
    if direction.numel() != d_model:
        raise EditError(f"Direction has size {direction.numel()} but the model's d_model is {d_model}; "
                        f"build it on the same model.")
    norm = direction.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise EditError("Direction has zero (or non-finite) norm; it cannot be normalized.")
    return direction / norm


# ----------------------------------------------------------------------------------------------
# Which edits are on


def active_edits(model) -> list["Edit"]:
    """The edits currently entered on ``model`` (outermost first)."""
    return active(model)


def active_edits_key(model) -> tuple:
    """Content key of the edits acting on ``model`` right now (suspended ones do not act)."""
    return tuple(e.cache_key() for e in active_edits(model) if not e._suspended)


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

    def cache_key(self) -> Hashable:
        """Everything that changes what this edit does, by content (vector values, not repr)."""
        raise NotImplementedError(f"{type(self).__name__} must define cache_key().")

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
            t = tracker(model)
            t.attach()
            stack.callback(t.detach)
            hooks = self._hook_fns()
            if hooks:
                stack.enter_context(model.hooks(fwd_hooks=hooks))
            stack.callback(activate(model, self))
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

    def cache_key(self) -> Hashable:
        return ("none",)

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

    def cache_key(self) -> Hashable:
        return ("combined", *(e.cache_key() for e in self.edits))

    def describe(self) -> dict[str, Any]:
        return {"edit": " + ".join(e.name for e in self.edits)}

    def __repr__(self) -> str:
        return " + ".join(repr(e) for e in self.edits) or "Combined()"


def edit_columns(edit: Edit | None) -> dict[str, Any]:
    """Describe an edit as flat columns for a tidy DataFrame."""
    return (edit or NoEdit()).describe()
