"""Sweeps: evaluate many edits on the same prompts and seeds, one tidy row per setting."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
from tqdm.auto import tqdm

from rlhf_interp.edits.ablation import Ablation
from rlhf_interp.edits.base import Edit, edit_columns, resolve_layers
from rlhf_interp.edits.positions import positions_label
from rlhf_interp.edits.steering import Steering
from rlhf_interp.measure.token_shift import LogitsCache, kl_shift
from rlhf_interp.measure.sequences import evaluate_edit


def sweep(model, settings: Iterable[tuple[dict[str, Any], Edit] | Edit], prompts: Sequence[str],
          reward: str | Callable = "char_count", *, reference=None, max_new_tokens: int = 24, seed: int | None = 0,
          samples_per_prompt: int = 1, prompt_kl: bool = True, cache: LogitsCache | None = None,
          keep_sequences: bool = False, desc: str = "sweep") -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate each ``(columns, edit)`` setting (a bare edit describes itself); one row per setting.

    Columns: the setting's own columns, then `evaluate_edit`'s, then (``prompt_kl``) kl_prompt_mean
    and kl_prompt_max: the mean / max per-position KL(edited || reference) teacher-forced on the
    prompts (reference logits computed once for the whole sweep).
    """
    settings = [s if isinstance(s, tuple) else (edit_columns(s), s) for s in settings]
    if not settings:
        raise ValueError(f"{desc}: nothing to evaluate (no settings). Give at least one layer and coefficient, "
                         f"or one target.")
    cache = cache if cache is not None else LogitsCache(max_entries=2)
    rows, seq_frames = [], []
    for columns, edit in tqdm(settings, desc=desc, unit="setting"):
        summary, seqs = evaluate_edit(model, edit, prompts, reward, reference=reference, max_new_tokens=max_new_tokens,
                                      seed=seed, samples_per_prompt=samples_per_prompt, return_sequences=True)
        row = {**columns, **summary.iloc[0].to_dict()}
        if prompt_kl:
            start = time.perf_counter()
            per_token = kl_shift(model, edit, prompts, reference=reference, cache=cache)
            row["kl_prompt_mean"] = float(per_token["kl_pi_ref"].mean())
            row["kl_prompt_max"] = float(per_token["kl_pi_ref"].max())
            row["seconds"] += time.perf_counter() - start
        rows.append(row)
        if keep_sequences:
            seq_frames.append(seqs.assign(**columns))
    frame = pd.DataFrame(rows)
    if "n_sequences" in frame:
        frame["n_sequences"] = frame["n_sequences"].astype(int)
    if keep_sequences:
        return frame, pd.concat(seq_frames, ignore_index=True)
    return frame


def steering_settings(vector, layers: Iterable[int], coefs: Iterable[float], *, positions="all",
                      hook: str | None = None) -> list[tuple[dict[str, Any], Edit]]:
    """Layer x coefficient grid of `Steering` edits (columns: layer, coef, positions, hook).

    ``hook=None`` steers where the vector was read (a `SteeringVector`'s ``hook``; ``resid_post`` for a
    bare tensor). The ``hook`` column is the hook each edit actually uses.
    """
    layers, coefs = list(layers), list(coefs)
    if not layers or not coefs:
        raise ValueError(f"A steering sweep needs at least one layer and one coefficient; got layers {layers} and "
                         f"coefs {coefs}.")
    settings = []
    for layer in layers:
        for coef in coefs:
            edit = Steering(vector, [layer], coef, positions=positions, hook=hook)
            settings.append(({"layer": layer, "coef": float(coef), "positions": positions_label(edit.positions),
                              "hook": edit.hook}, edit))
    return settings


def steering_sweep(model, vector, layers: Iterable[int], coefs: Iterable[float], prompts: Sequence[str],
                   reward: str | Callable = "char_count", *, positions="all", hook: str | None = None, **kwargs):
    """`sweep` over a layer x coefficient grid of one steering vector (per-layer vectors allowed)."""
    return sweep(model, steering_settings(vector, layers, coefs, positions=positions, hook=hook), prompts, reward,
                 desc="steering sweep", **kwargs)


def ablation_sweep(model, targets: Iterable, prompts: Sequence[str], reward: str | Callable = "char_count", *,
                   kind: str = "zero", reference_prompts: Sequence[str] | None = None, **kwargs):
    """`sweep` over ablation targets (e.g. every head of a layer); columns: target, kind."""
    targets = list(targets)
    if not targets:
        raise ValueError("An ablation sweep needs at least one target, e.g. '3.attn' or '5.2'.")
    settings = [({"target": str(t) if not isinstance(t, (list, tuple)) else ",".join(map(str, t)), "kind": kind},
                 Ablation(t, kind, reference_prompts=reference_prompts)) for t in targets]
    return sweep(model, settings, prompts, reward, desc=f"{kind} ablation sweep", **kwargs)


def all_heads(model, layers: Iterable[int] | str = "all") -> list[str]:
    """``"L.H"`` targets for every query head of the given layers."""
    return [f"{layer}.{head}" for layer in resolve_layers(model, layers) for head in range(int(model.cfg.n_heads))]
