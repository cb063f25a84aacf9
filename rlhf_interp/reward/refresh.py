"""Reward-model versions, and fine-tuning an RM on fresh preferences — what iterated online RLHF (Bai et al.
2022) needs from the reward model, knowing nothing of the trainer that calls it (`rlhf_interp.ppo.rm_refresh`).

A *version* is what fine-tuning can change, and nothing else: the head, the trainable blocks (the RM's own
``frozen_layers``: blocks ``n_frozen..`` and the final norm) and the normalisation. Saving only that keeps a
SmolLM2 version at ~28 MB instead of 540 MB; its ``meta.json`` names the full RM it applies to (version 0).
Layout of one version directory (written atomically)::

    rm-v003/trainable.safetensors   # "head.<name>" and "backbone.<HF parameter name>" tensors, exact
    rm-v003/meta.json               # version, base (the full RM directory), frozen_layers, normalization, ...
    rm-v003/metrics.jsonl           # the fine-tune's epochs (as `train_reward_model` logs them), if any

`load_version` puts a version onto an RM loaded from its base; `open_version` loads a version on its own.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rlhf_interp.bridge.hf import hf_model_of, plain_param_name
from rlhf_interp.core.io import append_jsonl, atomic_dir
from rlhf_interp.reward.model import RewardModel, load_reward_model, preference_accuracy
from rlhf_interp.reward.preferences import PreferencePair
from rlhf_interp.reward.training import (
    TRAINABLE_LAYERS_BY_DEFAULT,
    FitResult,
    RewardTrainingConfig,
    fit_reward_model,
    set_trainable,
)

TENSORS_FILE = "trainable.safetensors"
META_FILE = "meta.json"
METRICS_FILE = "metrics.jsonl"


def rm_frozen_layers(rm: RewardModel) -> int:
    """How many leading blocks the RM was trained with frozen (its meta.json; else the training default)."""
    frozen = rm.meta.get("training", {}).get("frozen_layers")
    n_layers = int(rm.bridge.cfg.n_layers)
    return int(frozen) if frozen is not None else max(0, n_layers - TRAINABLE_LAYERS_BY_DEFAULT)


def rm_training_config(rm: RewardModel, **changes: Any) -> RewardTrainingConfig:
    """The RM's own training options (meta.json) with ``changes`` applied: a refresh trains like the original."""
    saved = rm.meta.get("training", {})
    known = {f.name for f in fields(RewardTrainingConfig)}
    config = RewardTrainingConfig(**{k: v for k, v in saved.items() if k in known})
    return replace(config, **changes).validate()


def trainable_parameters(rm: RewardModel, n_frozen: int) -> dict[str, torch.nn.Parameter]:
    """The backbone parameters fine-tuning with ``n_frozen`` frozen blocks changes, by HF name (flags untouched)."""
    hf = hf_model_of(rm.bridge)
    flags = {id(p): p.requires_grad for p in hf.parameters()}
    try:
        chosen = {id(p) for p in set_trainable(rm.bridge, n_frozen)}
    finally:
        for p in hf.parameters():
            p.requires_grad_(flags[id(p)])
    named: dict[str, torch.nn.Parameter] = {}
    for name, param in hf.named_parameters(remove_duplicate=False):
        if id(param) in chosen:
            chosen.discard(id(param))  # each tensor once (a tied weight is saved under its first name)
            named[plain_param_name(name)] = param
    return named


def version_tensors(rm: RewardModel, n_frozen: int) -> dict[str, Tensor]:
    """Everything a version saves, as CPU tensors: ``head.*`` and ``backbone.*``."""
    tensors = {f"head.{k}": v.detach().cpu().clone() for k, v in rm.head.state_dict().items()}
    tensors.update({f"backbone.{k}": p.detach().cpu().clone() for k, p in trainable_parameters(rm, n_frozen).items()})
    return tensors


def save_version(rm: RewardModel, out_dir: str | Path, *, version: int, base: str | Path, n_frozen: int,
                 meta: dict[str, Any] | None = None, metrics: list[dict[str, Any]] | None = None) -> Path:
    """Write ``rm``'s trainable tensors and normalisation as version ``version`` of the RM at ``base``, atomically."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        save_file({k: v.contiguous() for k, v in version_tensors(rm, n_frozen).items()}, str(tmp / TENSORS_FILE))
        record = {**(meta or {}), "version": version, "base": str(base), "frozen_layers": n_frozen,
                  "normalization": {"mean": rm.mean, "std": rm.std}}
        (tmp / META_FILE).write_text(json.dumps(record, indent=2, default=str))
        for row in metrics or []:
            append_jsonl(tmp / METRICS_FILE, row)
    return out_dir


def read_version_meta(version_dir: str | Path) -> dict[str, Any]:
    path = Path(version_dir) / META_FILE
    if not path.exists():
        raise FileNotFoundError(f"{version_dir} is not a reward-model version: it has no {META_FILE}. Versions are "
                                f"written by a PPO run with rm_refresh_every set, under RUN/reward_models/.")
    return json.loads(path.read_text())


@torch.no_grad()
def load_version(rm: RewardModel, version_dir: str | Path) -> RewardModel:
    """Put the version in ``version_dir`` onto ``rm`` (loaded from the version's base), exactly; returns ``rm``."""
    from safetensors.torch import load_file

    meta = read_version_meta(version_dir)
    tensors = load_file(str(Path(version_dir) / TENSORS_FILE))
    own = trainable_parameters(rm, int(meta["frozen_layers"]))
    backbone = {k.removeprefix("backbone."): v for k, v in tensors.items() if k.startswith("backbone.")}
    if set(backbone) != set(own):
        raise ValueError(f"{version_dir} holds other backbone tensors than this RM trains with "
                         f"frozen_layers={meta['frozen_layers']} (missing {sorted(set(own) - set(backbone))[:3]}, "
                         f"extra {sorted(set(backbone) - set(own))[:3]}): load it onto its base {meta['base']}.")
    rm.head.load_state_dict({k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")})
    for name, param in own.items():
        param.copy_(backbone[name])
    rm.mean, rm.std = float(meta["normalization"]["mean"]), float(meta["normalization"]["std"])
    return rm


def open_version(version_dir: str | Path, **load_kwargs: Any) -> RewardModel:
    """A standalone RM of one version: its base loaded (`load_reward_model`), the version put on it."""
    meta = read_version_meta(version_dir)
    return load_version(load_reward_model(meta["base"], **load_kwargs), version_dir)


@torch.no_grad()
def pair_accuracy(rm: RewardModel, pairs: list[PreferencePair]) -> float:
    """Share of ``pairs`` the RM ranks as labelled (ties count half, like `preference_accuracy`)."""
    if not pairs:
        return float("nan")
    scores = rm.score([p.chosen for p in pairs] + [p.rejected for p in pairs], normalize=False)
    return float(preference_accuracy(scores[:len(pairs)], scores[len(pairs):]))


def finetune_reward_model(rm: RewardModel, pairs: list[PreferencePair], *, epochs: int, seed: int,
                          n_frozen: int | None = None, keep: str = "last", progress: bool = False) -> FitResult:
    """Fine-tune ``rm`` in place on ``pairs`` with its own training options (lr, batch size, frozen blocks) for
    ``epochs`` epochs, and refit the normalisation on the training texts (`fit_reward_model`).

    ``keep="last"`` by default: a refresh's validation split is a handful of pairs, too few to pick an epoch
    by (``"best"`` picks by validation loss, no change included); it is still logged, as held-out accuracy."""
    if len(pairs) < 2:
        raise ValueError(f"Fine-tuning a reward model needs at least 2 preference pairs (one to train on, one to "
                         f"validate), got {len(pairs)}.")
    n_frozen = rm_frozen_layers(rm) if n_frozen is None else n_frozen
    config = rm_training_config(rm, epochs=epochs, seed=seed)
    was_training = rm.bridge.training
    rm.bridge.eval()  # no dropout: the scores it trains on are those it will give
    try:
        return fit_reward_model(rm, pairs, config, n_frozen, progress=progress, keep=keep)
    finally:
        rm.bridge.train(was_training)


__all__ = ["META_FILE", "METRICS_FILE", "TENSORS_FILE", "finetune_reward_model", "load_version", "open_version",
           "pair_accuracy", "read_version_meta", "rm_frozen_layers", "rm_training_config", "save_version",
           "trainable_parameters", "version_tensors"]
