"""A rank-one weight edit of one MLP's output matrix, in the style of ROME / MEMIT (Meng et al. 2022, 2023).

Why a weight edit next to steering: a steering vector adds the same vector at every position; a rank-one
edit of ``W_out`` (``blocks.L.mlp.out``, HF ``mlp.down_proj``) adds it only in proportion to how much
the MLP's hidden activation looks like one *key*. It is the smallest weight change that makes one
input produce one output, so it is the natural "surgical" point between steering and fine-tuning.

Derivation. The MLP writes ``W k`` into the residual stream for a hidden activation (key) ``k``
(``W``: [d_model, d_mlp]). We want a new ``W'`` that maps the key ``k*`` to a value ``v*`` while
changing what it does on typical keys as little as possible, measured by the keys' second moment
``C = E[k k^T]`` (over tokens of a text set)::

    minimise   E || (W' - W) k ||^2  =  tr( (W' - W) C (W' - W)^T )     subject to   W' k* = v*

With ``D = W' - W`` and a Lagrange multiplier ``lambda`` (a d_model vector) the stationarity condition
``2 D C = lambda k*^T`` gives ``D = (lambda / 2) (C^{-1} k*)^T``; the constraint ``D k* = v* - W k*``
fixes ``lambda / 2 = (v* - W k*) / (k*^T C^{-1} k*)``. Hence the closed form (ROME's eq. 2)::

    W' = W + (v* - W k*) (C^{-1} k*)^T / (k*^T C^{-1} k*)

a rank-one update (an outer product). With ``C = I`` it is the minimum-Frobenius-norm update.
``C`` is estimated from a text set plus a ridge ``ridge * tr(C) / d_mlp * I`` (a few hundred tokens
do not pin down 1536 dimensions; the ridge keeps ``C^{-1}`` finite).

Key and value here (`rank_one_edit`):
- ``k*`` = the mean input to ``W_out`` (``blocks.L.mlp.out.hook_in``) over the real non-BOS tokens
  of the prompts: the "typical prompt" key;
- ``v* = W k* + strength * u``, where ``u`` is the unit direction in the residual stream that most
  raises the mean log-probability of a target token class (e.g. every token containing ``"."`` for
  the period reward): the gradient of that log-probability with respect to ``blocks.L.hook_mlp_out``,
  averaged over the prompts' positions. ``strength`` is the edit's one knob (0 = no edit), in units of
  the residual-stream norm; the equal-KL bisection turns it.

The edit acts at every position (prompt and generated), through the weights, so it needs no
position tracking and works with the KV cache.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from rlhf_interp.bridge import capture_texts, tokenize
from rlhf_interp.bridge.hook_names import block_hook
from rlhf_interp.core.hashing import tensor_digest
from rlhf_interp.core.masks import content_mask
from rlhf_interp.edits.base import Edit, resolve_layers
from rlhf_interp.edits.errors import EditError


def key_hook(layer: int) -> str:
    """The input of layer ``layer``'s MLP output matrix (its hidden activation)."""
    return block_hook(layer, "mlp.out.hook_in")


def output_matrix(model, layer: int) -> Tensor:
    """``W_out`` of layer ``layer`` ([d_model, d_mlp]; output = W @ hidden): the tensor the forward uses."""
    try:
        return model.blocks[layer].mlp.out.weight  # a bias (if any) does not depend on the key: left alone
    except (AttributeError, IndexError) as err:
        raise EditError(f"The rank-one edit needs an MLP output matrix at blocks.{layer}.mlp.out (a Llama-style "
                        f"TransformerBridge); this model has none ({err}).") from err


# ----------------------------------------------------------------------------------------------
# Statistics of the keys


@torch.no_grad()
def key_statistics(model, layer: int, texts: Sequence[str], *, batch_size: int = 16
                   ) -> tuple[Float[Tensor, "d_mlp"], Float[Tensor, "d_mlp d_mlp"], int]:
    """Mean and second moment ``E[k k^T]`` of the MLP hidden activation over real non-BOS tokens
    (float64, streamed batch by batch), and the number of tokens."""
    name = key_hook(layer)
    total: Tensor | None = None
    outer: Tensor | None = None
    count = 0
    for batch in capture_texts(model, list(texts), [name], batch_size=batch_size, stop_at_layer=layer + 1):
        keep = content_mask(batch.attention_mask, keep_bos_if_alone=True).to(batch[name].device)
        keys = batch[name][keep].double().cpu()  # [n_tokens, d_mlp]
        total = keys.sum(0) if total is None else total + keys.sum(0)
        outer = keys.T @ keys if outer is None else outer + keys.T @ keys
        count += keys.shape[0]
    assert total is not None and outer is not None
    return total / count, outer / count, count


def inverse_covariance_key(key: Tensor, second_moment: Tensor | None, ridge: float = 1e-2) -> Tensor:
    """``C^{-1} k`` with ``C = second_moment + ridge * tr(C)/d * I`` (``second_moment=None``: ``C = I``)."""
    key = key.double()
    if second_moment is None:
        return key.clone()
    d = second_moment.shape[0]
    c = second_moment.double() + ridge * torch.trace(second_moment.double()) / d * torch.eye(d, dtype=torch.float64)
    return torch.linalg.solve(c, key)


# ----------------------------------------------------------------------------------------------
# The value: a direction that raises a target token class


def target_direction(model, layer: int, prompts: Sequence[str], target_tokens: Sequence[int]
                     ) -> Float[Tensor, "d_model"]:
    """Unit direction ``u``: the gradient, with respect to an offset added to ``blocks.L.hook_mlp_out`` at
    every position, of the mean log-probability (over the prompts' real positions) of the target class."""
    if not target_tokens:
        raise EditError("target_tokens is empty: give at least one token id to raise.")
    tokens, mask = tokenize(model, list(prompts))
    d_model = int(model.cfg.d_model)
    param = next(model.parameters())
    offset = torch.zeros(d_model, dtype=param.dtype, device=param.device, requires_grad=True)
    ids = torch.as_tensor(list(target_tokens), device=param.device)

    def add(act: Tensor, hook=None) -> Tensor:
        return act + offset

    with torch.enable_grad(), model.hooks(fwd_hooks=[(block_hook(layer, "hook_mlp_out"), add)]):
        logits = model(tokens, attention_mask=mask).float()
        logp = torch.log_softmax(logits, dim=-1)
        target = torch.logsumexp(logp[..., ids], dim=-1)  # log P(next token in the class)
        real = mask.bool().to(target.device)
        objective = target[real].mean()
        (grad,) = torch.autograd.grad(objective, offset)
    grad = grad.detach().float().cpu()
    norm = grad.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise EditError(f"The target log-probability does not depend on layer {layer}'s MLP output (zero gradient); "
                        f"pick another layer or target.")
    return grad / norm


# ----------------------------------------------------------------------------------------------
# The edit


class RankOneEdit(Edit):
    """``W_out`` of one layer gets ``(v* - W k*) (C^{-1} k*)^T / (k*^T C^{-1} k*)`` added while the edit is active.

    ``key``: ``k*`` [d_mlp]. The value is either ``value`` (``v*`` [d_model]) or ``value_shift``
    (``v* = W k* + value_shift``, with ``W`` the weight at entry). ``cov_inv_key``: ``C^{-1} k*``
    (None: ``C = I``, the minimum-norm update). Build one from prompts with `rank_one_edit`.

    On entry the weight tensor is changed in place (a clone of the original is kept); on exit the
    clone is copied back, so the weights are bit-for-bit the original ones afterwards, also on error.
    While the edit is suspended (`rlhf_interp.edits.suspended`, e.g. a reference pass of another
    edit) a hook subtracts the update's contribution from the MLP's output, so the model computes the
    unedited function (to float rounding, ~1e-7).
    """

    name = "rank_one"

    def __init__(self, layer: int, key: Tensor, *, value: Tensor | None = None, value_shift: Tensor | None = None,
                 cov_inv_key: Tensor | None = None, strength: float | None = None, model=None):
        if (value is None) == (value_shift is None):
            raise EditError("RankOneEdit takes exactly one of value= (v*) or value_shift= (v* - W k*).")
        self.layer_arg = int(layer)
        self.layer: int | None = None
        self.key = torch.as_tensor(key).detach().flatten().double().cpu()
        self.value = None if value is None else torch.as_tensor(value).detach().flatten().double().cpu()
        self.value_shift = None if value_shift is None else torch.as_tensor(value_shift).detach().flatten().double().cpu()
        self.cov_inv_key = (self.key.clone() if cov_inv_key is None
                            else torch.as_tensor(cov_inv_key).detach().flatten().double().cpu())
        self.strength = strength
        self.unit_shift: Tensor | None = None  # the value direction u, when built from one (`with_strength`)
        self._saved: Tensor | None = None
        self._delta: Tensor | None = None
        self._hidden: Tensor | None = None
        super().__init__(model)

    # validation and the update ------------------------------------------------------------
    def _validate(self, model) -> None:
        self.layer = resolve_layers(model, self.layer_arg)[0]
        weight = output_matrix(model, self.layer)
        d_model, d_mlp = weight.shape
        if self.key.numel() != d_mlp or self.cov_inv_key.numel() != d_mlp:
            raise EditError(f"The rank-one key has size {self.key.numel()} (C^-1 k: {self.cov_inv_key.numel()}) but "
                            f"layer {self.layer}'s MLP has {d_mlp} hidden units: build it on the same model.")
        target = self.value if self.value is not None else self.value_shift
        if target.numel() != d_model:
            raise EditError(f"The rank-one value has size {target.numel()} but d_model is {d_model}.")
        if float(self.key @ self.cov_inv_key) <= 0:
            raise EditError("k*^T C^-1 k* is not positive: the key is zero or the covariance is not positive definite.")

    def update(self, weight: Tensor | None = None) -> Float[Tensor, "d_model d_mlp"]:
        """The rank-one update ``D`` for ``weight`` (default: the bound model's current ``W_out``), float64."""
        if weight is None:
            if self.model is None or self.layer is None:
                raise RuntimeError("Bind the edit to a model first (edit.on(model)).")
            weight = output_matrix(self.model, self.layer)
        w = weight.detach().double().cpu()
        current = w @ self.key
        value = self.value if self.value is not None else current + self.value_shift
        return torch.outer(value - current, self.cov_inv_key) / float(self.key @ self.cov_inv_key)

    # context manager ----------------------------------------------------------------------
    def _hook_fns(self) -> list[tuple[str, Callable]]:
        def keep_hidden(act: Tensor, hook=None) -> Tensor:
            self._hidden = act
            return act

        def undo_when_suspended(act: Tensor, hook=None) -> Tensor:
            if not self._suspended or self._delta is None or self._hidden is None:
                return act
            delta = self._delta.to(device=act.device, dtype=act.dtype)
            return act - self._hidden @ delta.T

        return [(key_hook(self.layer), keep_hidden), (block_hook(self.layer, "mlp.out.hook_out"), undo_when_suspended)]

    def __enter__(self) -> "RankOneEdit":
        super().__enter__()
        try:
            weight = output_matrix(self.model, self.layer)
            delta = self.update(weight)
            self._saved = weight.detach().clone()
            self._delta = delta.to(dtype=weight.dtype, device=weight.device)
            with torch.no_grad():
                weight.add_(self._delta)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> bool:
        try:
            if self._saved is not None:
                with torch.no_grad():
                    output_matrix(self.model, self.layer).copy_(self._saved)
        finally:
            self._saved, self._delta, self._hidden = None, None, None
            super().__exit__(*exc)
        return False

    # description --------------------------------------------------------------------------
    def with_strength(self, strength: float) -> "RankOneEdit":
        """The same key, covariance and value direction with ``value_shift = strength * unit_shift`` (unbound)."""
        unit = self.unit_shift
        if unit is None and self.value_shift is not None and self.value_shift.norm() > 0:
            unit = self.value_shift / self.value_shift.norm()
        if unit is None:
            raise EditError("with_strength needs a value direction: build the edit with rank_one_edit or a "
                            "non-zero value_shift.")
        edit = RankOneEdit(self.layer_arg, self.key, value_shift=float(strength) * unit, cov_inv_key=self.cov_inv_key,
                           strength=float(strength))
        edit.unit_shift = unit
        return edit

    def cache_key(self) -> Hashable:
        return ("rank_one", self.layer_arg, tensor_digest(self.key, self.value, self.value_shift, self.cov_inv_key))

    def describe(self) -> dict[str, Any]:
        return {"edit": self.name, "layer": self.layer if self.layer is not None else self.layer_arg,
                "strength": self.strength}

    def __repr__(self) -> str:
        return f"RankOneEdit(layer={self.layer_arg}, strength={self.strength})"


def rank_one_edit(model, layer: int, prompts: Sequence[str], *, strength: float = 1.0,
                  target_tokens: Sequence[int] | None = None, direction: Tensor | None = None,
                  covariance: str = "keys", covariance_texts: Sequence[str] | None = None,
                  ridge: float = 1e-2) -> RankOneEdit:
    """A `RankOneEdit` at ``layer`` (bound to ``model``): key = mean MLP hidden activation on ``prompts``;
    value shift = ``strength`` times the unit direction ``direction`` (a residual-stream vector) or, when
    None, the direction that raises the log-probability of ``target_tokens`` (`target_direction`).

    ``covariance``: ``"keys"`` (second moment of the keys over ``covariance_texts``, default the prompts,
    plus the ridge) or ``"identity"``.
    """
    if covariance not in ("keys", "identity"):
        raise EditError(f"covariance must be 'keys' or 'identity', got {covariance!r}.")
    if (target_tokens is None) == (direction is None):
        raise EditError("rank_one_edit needs exactly one of target_tokens= (token ids to raise) or direction= "
                        "(a [d_model] vector).")
    layer = resolve_layers(model, int(layer))[0]
    key, second, _ = key_statistics(model, layer, prompts)
    if covariance == "keys":
        texts = list(covariance_texts) if covariance_texts is not None else list(prompts)
        second = second if covariance_texts is None else key_statistics(model, layer, texts)[1]
        cov_inv_key = inverse_covariance_key(key, second, ridge)
    else:
        cov_inv_key = inverse_covariance_key(key, None)
    if direction is None:
        unit = target_direction(model, layer, prompts, list(target_tokens)).double()
    else:
        unit = torch.as_tensor(direction).detach().flatten().double().cpu()
        if unit.norm() == 0:
            raise EditError("direction has zero norm.")
        unit = unit / unit.norm()
    edit = RankOneEdit(layer, key, value_shift=float(strength) * unit, cov_inv_key=cov_inv_key,
                       strength=float(strength), model=model)
    edit.unit_shift = unit
    return edit


__all__ = ["RankOneEdit", "inverse_covariance_key", "key_hook", "key_statistics", "output_matrix", "rank_one_edit",
           "target_direction"]
