"""Activation patching between a base and a tuned bridge: run one model with one activation of the other.

Per layer and component (TransformerLens names), the receiver's activation is replaced by the donor's on
the same tokens, at every position. Two readings of the same table:

- **Total effect of a component** (rows ``hook_attn_out`` / ``hook_mlp_out``): the component's output as the
  donor computed it (its own change plus whatever earlier changes fed it), everything else the receiver's.
  Overlapping: a change planted in layer 3 also shows, partly, in every later component it feeds.
- **Additive attribution along the residual stream** (`residual_attribution`, from the ``hook_resid_pre``
  (layer 0, the embedding), ``hook_resid_mid`` and ``hook_resid_post`` rows): a residual patch carries every
  change made up to that point, so the *increment* in fraction recovered from just before a component to
  just after it is what that component adds, given everything earlier. The increments, plus the final
  ``ln_final + unembed`` step, sum to exactly 1 (all of the base->tuned KL).

See `rlhf_interp.patching.scores` for the directions, the positions counted and the fraction recovered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import pandas as pd
import torch
from torch import Tensor

from rlhf_interp.diff.stream import RESID_HOOKS, block_hook
from rlhf_interp.edits import resolve_layers
from rlhf_interp.patching.scores import DIRECTIONS, Patch, check_directions, run_patches

COMPONENTS: tuple[str, ...] = ("hook_attn_out", "hook_mlp_out", "hook_resid_mid", "hook_resid_post")
EMBED = "hook_resid_pre"  # patched at layer 0 only: elsewhere it equals the previous layer's hook_resid_post


def hooks_to_replace(layer: int, component: str) -> list[str]:
    """The hook points a patch of ``component`` at ``layer`` replaces.

    ``hook_resid_mid`` (the residual stream after attention) is replaced as ``hook_resid_pre`` +
    ``hook_attn_out`` together: in TransformerLens 4's bridge ``blocks.L.hook_resid_mid`` is an alias of
    ``blocks.L.ln2.hook_in``, the MLP's *input* only, so replacing it leaves the skip connection unpatched.
    The two together make the residual after attention the donor's, read by both the MLP and the skip.
    """
    if component == "hook_resid_mid":
        return [block_hook(layer, "hook_resid_pre"), block_hook(layer, "hook_attn_out")]
    return [block_hook(layer, component)]


def _replace_with(value: Tensor):
    def hook(act: Tensor, hook=None) -> Tensor:
        if act.shape != value.shape:
            raise ValueError(f"Cannot patch {getattr(hook, 'name', 'this hook')}: the receiver's activation has shape "
                             f"{tuple(act.shape)}, the donor's {tuple(value.shape)}. Patch on the same tokens.")
        return value.to(device=act.device, dtype=act.dtype)

    return hook


@contextmanager
def patched(model, replacements: Mapping[str, Tensor]) -> Iterator[None]:
    """Run ``model`` with the named activations (full hook names) replaced by the given tensors.

    The replacements must come from a run on the same token batch. Hooks are removed on exit, also on error.
    """
    with model.hooks(fwd_hooks=[(name, _replace_with(value)) for name, value in replacements.items()]):
        yield


def activation_patching(base, tuned, texts: Sequence[str], *, components: Sequence[str] = COMPONENTS,
                        layers: int | Iterable[int] | str = "all", directions: Sequence[str] = DIRECTIONS,
                        embedding: bool = True, reward_token_ids: Sequence[int] | None = None,
                        batch_size: int = 8, return_per_text: bool = False,
                        reverse_components: Sequence[str] | None = None
                        ) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Patch each (layer, component) of one model into the other; one tidy row per direction x layer x component.

    ``embedding`` adds one row per direction for ``hook_resid_pre`` at layer 0 (the embedding output), which
    `residual_attribution` needs when the embeddings were trained. Columns: see
    `rlhf_interp.patching.scores.COLUMNS`. Cost: one forward of the receiver per row and batch, none where
    the donor's activation equals the receiver's exactly (layers training froze: the patch changes nothing). With
    ``return_per_text`` also the per-text sums (`rlhf_interp.patching.scores.PER_TEXT_COLUMNS`) for intervals
    over texts (`rlhf_interp.patching.intervals`). ``reverse_components``: the components patched into tuned,
    when fewer than into base are wanted (the reverse direction costs as much per patch; default the same).
    """
    bad = [c for c in components if c not in RESID_HOOKS]
    if bad or not components:
        raise ValueError(f"Unknown or empty hook point(s) {bad or list(components)}; patching replaces these per-block "
                         f"hook points (TransformerLens names): {', '.join(RESID_HOOKS)}.")
    components = tuple(dict.fromkeys(components))
    reverse = components if reverse_components is None else tuple(dict.fromkeys(reverse_components))
    if set(reverse) - set(RESID_HOOKS):
        raise ValueError(f"Unknown reverse hook point(s) {sorted(set(reverse) - set(RESID_HOOKS))}; use "
                         f"{', '.join(RESID_HOOKS)}.")
    directions = check_directions(directions)
    layer_list = resolve_layers(base, layers)
    head = [(0, EMBED)] if embedding else []
    targets = {d: head + [(layer, c) for layer in layer_list for c in (components if d == "into_base" else reverse)]
               for d in directions}
    names = list(dict.fromkeys(name for d in directions for layer, c in targets[d]
                               for name in hooks_to_replace(layer, c)))
    patches = []
    for direction in directions:
        receiver, donor = (base, "tuned") if direction == "into_base" else (tuned, "base")
        for layer, component in targets[direction]:
            hooks = hooks_to_replace(layer, component)
            patches.append(Patch(direction, layer, component, lambda batch, r=receiver, d=donor, h=tuple(hooks):
                                 patched(r, {n: getattr(batch, d)[n] for n in h}),
                                 unchanged=lambda batch, h=tuple(hooks): all(torch.equal(batch.base[n], batch.tuned[n])
                                                                             for n in h)))
    return run_patches(base, tuned, texts, patches, hook_names=names, reward_token_ids=reward_token_ids,
                       batch_size=batch_size, desc="activation patching", return_per_text=return_per_text)


def residual_attribution(table: pd.DataFrame) -> pd.DataFrame:
    """Additive attribution of the recovered KL along the residual stream (see the module docstring).

    From an `activation_patching` table with ``hook_resid_post`` at every layer (and ``hook_resid_mid`` to
    split attention from MLP, ``hook_resid_pre`` at layer 0 for the embedding). One row per (step,)
    direction and part: ``layer`` (-1 for ``embed``, n_layers for ``unembed``), ``component`` (``embed``,
    ``attn``, ``mlp``, ``block`` when no resid_mid rows, ``unembed`` = ln_final + unembedding),
    ``increment`` (its share of the base->tuned KL; the increments of one direction sum to 1; a direction
    without residual rows, patched at its sublayers only, is left out),
    ``fraction_before``, ``fraction_after``.
    """
    keys = [k for k in ("step", "direction") if k in table.columns]
    rows = []
    for key, group in table.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        if not (group["component"] == "hook_resid_post").any() and (
                table["component"] == "hook_resid_post").any():
            continue  # a direction patched at its sublayers only (e.g. the reverse one) has no attribution
        f = {(int(r.layer), r.component): float(r.fraction_recovered) for r in group.itertuples()}
        layers = sorted(layer for layer, c in f if c == "hook_resid_post")
        if not layers or layers != list(range(len(layers))):
            raise ValueError("residual_attribution needs hook_resid_post patched at every layer 0..n-1; patch with "
                             "layers='all' and hook_resid_post among the components.")
        prev = f.get((0, EMBED), 0.0)
        steps = [(-1, "embed", 0.0, prev)]
        for layer in layers:
            if (layer, "hook_resid_mid") in f:
                mid = f[(layer, "hook_resid_mid")]
                steps += [(layer, "attn", prev, mid), (layer, "mlp", mid, f[(layer, "hook_resid_post")])]
            else:
                steps.append((layer, "block", prev, f[(layer, "hook_resid_post")]))
            prev = f[(layer, "hook_resid_post")]
        steps.append((len(layers), "unembed", prev, 1.0))
        for layer, component, before, after in steps:
            rows.append({**dict(zip(keys, key)), "layer": layer, "component": component,
                         "increment": after - before, "fraction_before": before, "fraction_after": after})
    return pd.DataFrame(rows)
