"""Training a Bradley-Terry reward model on preference pairs: a seeded train/validation split, loss and
accuracy per epoch (tqdm, and ``OUT/metrics.jsonl``), early stopping on the validation loss, and the best
epoch's weights saved as ``OUT/model/`` (see `rlhf_interp.reward.model` for the layout).

CPU-sized by default: all blocks but the last 2 are frozen, and the frozen prefix is computed once
(`rlhf_interp.reward.prefix`), so epochs cost a fraction of a forward pass.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from rlhf_interp.bridge.freezing import freeze_layers
from rlhf_interp.bridge.heads import HEAD_KINDS, ValueHead
from rlhf_interp.bridge.loading import load_model
from rlhf_interp.core.io import append_jsonl, atomic_write_text
from rlhf_interp.core.seeding import seed_everything
from rlhf_interp.reward.model import (DEFAULT_HOOK, METRICS_FILE, MODEL_SUBDIR, RewardModel, bradley_terry_loss,
                                      preference_accuracy)
from rlhf_interp.reward.prefix import Scorer
from rlhf_interp.reward.preferences import PreferencePair, read_preferences, split_pairs

TRAINABLE_LAYERS_BY_DEFAULT = 2


@dataclass
class RewardTrainingConfig:
    """How a reward model is trained (saved into its meta.json)."""

    epochs: int = 4
    batch_size: int = 16  # preference pairs per optimizer step
    lr: float = 2e-5  # trainable backbone blocks
    head_lr: float = 1e-3
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    val_fraction: float = 0.1
    patience: int = 2  # epochs without a lower validation loss before stopping (0: never stop early)
    freeze_layers: int | None = None  # freeze blocks 0..N-1; None: all but the last 2 (CPU-sized)
    head_only: bool = False  # freeze the whole backbone, train the head alone
    head: str = "linear"  # "linear" or "mlp" (the PPO value head's two kinds)
    hook: str = DEFAULT_HOOK  # where the head reads the residual stream
    cache_activations: bool = True  # compute the frozen blocks once (Llama-family models; checked, else full passes)
    score_batch_size: int = 64  # texts per no-grad forward (validation, cache, normalisation)
    seed: int = 0

    def validate(self) -> "RewardTrainingConfig":
        checks = {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": self.lr >= 0,
                  "head_lr": self.head_lr > 0, "val_fraction": 0 < self.val_fraction < 1, "patience": self.patience >= 0,
                  "score_batch_size": self.score_batch_size >= 1, "max_grad_norm": self.max_grad_norm > 0,
                  "freeze_layers": self.freeze_layers is None or self.freeze_layers >= 0,
                  "head": self.head in HEAD_KINDS}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"Invalid reward-model training option(s): {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}. "
                             f"epochs, batch_size, score_batch_size >= 1; lr >= 0; head_lr, max_grad_norm > 0; "
                             f"0 < val_fraction < 1; patience, freeze_layers >= 0; head 'linear' or 'mlp'.")
        return self


def frozen_layer_count(config: RewardTrainingConfig, n_layers: int) -> int:
    """How many leading blocks are frozen: all with head_only, else freeze_layers (default: all but the last 2)."""
    if config.head_only:
        return n_layers
    n = max(0, n_layers - TRAINABLE_LAYERS_BY_DEFAULT) if config.freeze_layers is None else config.freeze_layers
    if n > n_layers:
        raise ValueError(f"freeze_layers = {n} but the model has {n_layers} layers (use head_only to freeze all).")
    return n


def set_trainable(bridge, n_frozen: int) -> list[torch.nn.Parameter]:
    """Blocks ``n_frozen..`` and the final norm train (none of them when all are frozen); embeddings stay
    frozen: SmolLM2 ties them to the unembedding, which the RM does not use."""
    return freeze_layers(bridge, n_frozen, train_embeddings=False,
                         train_final_norm=n_frozen < int(bridge.cfg.n_layers))


def _epoch_record(epoch: int, split: str, loss: float, accuracy: float, seconds: float) -> dict[str, Any]:
    return {"epoch": epoch, "split": split, "loss": loss, "accuracy": accuracy, "seconds": seconds}


def _snapshot(head: torch.nn.Module, params: list[torch.nn.Parameter]) -> dict[str, Any]:
    return {"head": copy.deepcopy(head.state_dict()), "params": [p.detach().clone() for p in params]}


def _restore(head: torch.nn.Module, params: list[torch.nn.Parameter], state: dict[str, Any]) -> None:
    head.load_state_dict(state["head"])
    with torch.no_grad():
        for p, saved in zip(params, state["params"]):
            p.copy_(saved)


@dataclass
class FitResult:
    """What one `fit_reward_model` call did: its per-epoch records and which epoch's weights it kept."""

    frame: pd.DataFrame  # epoch, split, loss, accuracy, seconds (epoch 0: the weights it started from)
    best_epoch: int
    n_train: int
    n_val: int
    cached_prefix: bool


TRAINING_STATE = "training_state.pt"  # OUT/: the last whole epoch (weights, optimizer, best so far) for --resume


def fit_reward_model(rm: RewardModel, pairs: list[PreferencePair], config: RewardTrainingConfig, n_frozen: int, *,
                     metrics_path: Path | None = None, progress: bool = True, keep: str = "best",
                     state_path: Path | None = None, resume_state: dict[str, Any] | None = None,
                     fingerprint: dict[str, Any] | None = None) -> FitResult:
    """Train ``rm`` in place (its head and blocks ``n_frozen..``) on ``pairs`` with the Bradley-Terry loss.

    Why separate from `train_reward_model`: the same loop trains a new RM and fine-tunes an existing one on
    fresh pairs (`rlhf_interp.reward.refresh`). ``keep="best"`` keeps the epoch with the lowest validation
    loss — epoch 0, the weights it came with, included —; ``keep="last"`` the last epoch (a validation set of a
    few pairs picks by noise). Then every weight is frozen again and the normalisation set to the mean and std
    of the raw scores of the training texts. Records are appended to ``metrics_path`` if given.

    ``state_path``: after every whole epoch (and after the first validation) the training state — weights being
    trained, optimizer, shuffling generator, the best epoch's weights so far, the records, ``fingerprint`` — is
    written there atomically, so an interrupted fit keeps what it had; ``resume_state`` (`read_training_state`)
    continues from such a state exactly as if never stopped.
    """
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}.")
    train_pairs, val_pairs = split_pairs(pairs, config.val_fraction, config.seed)
    head = rm.head
    head.requires_grad_(True)
    backbone_params = set_trainable(rm.bridge, n_frozen)

    # Texts: train chosen, train rejected, val chosen, val rejected — referred to by index from here on.
    texts = ([p.chosen for p in train_pairs] + [p.rejected for p in train_pairs]
             + [p.chosen for p in val_pairs] + [p.rejected for p in val_pairs])
    n_train, n_val = len(train_pairs), len(val_pairs)
    scorer = Scorer(rm, texts, n_frozen, use_cache=config.cache_activations, batch_size=config.score_batch_size,
                    progress=progress)
    val_c = list(range(2 * n_train, 2 * n_train + n_val))
    val_r = [i + n_val for i in val_c]

    groups = [{"params": list(head.parameters()), "lr": config.head_lr}]
    if backbone_params and config.lr > 0:
        groups.append({"params": backbone_params, "lr": config.lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    trainable = [p for g in groups for p in g["params"]]

    records: list[dict[str, Any]] = []

    def log(record: dict[str, Any]) -> None:
        records.append(record)
        if metrics_path is not None:
            append_jsonl(metrics_path, record)

    def validate() -> tuple[float, float]:
        head.eval()
        scores = scorer.scores_no_grad(val_c + val_r, config.score_batch_size)
        head.train()
        rc, rr = scores[:n_val], scores[n_val:]
        return float(bradley_terry_loss(rc, rr)), float(preference_accuracy(rc, rr))

    generator = torch.Generator().manual_seed(config.seed)

    def save_state(epoch: int) -> None:
        if state_path is None:
            return
        from rlhf_interp.core.io import atomic_path, save_torch

        state = {"epoch": epoch, "stale": stale, "records": records, "fingerprint": fingerprint or {},
                 "current": _snapshot(head, backbone_params), "best_loss": best["loss"], "best_epoch": best["epoch"],
                 "best": best["state"], "optimizer": optimizer.state_dict(), "generator": generator.get_state()}
        with atomic_path(state_path) as tmp:
            save_torch(state, tmp)

    if resume_state is None:
        start = time.perf_counter()
        val_loss, val_acc = validate()
        log(_epoch_record(0, "val", val_loss, val_acc, time.perf_counter() - start))
        best = {"loss": val_loss, "epoch": 0, "state": _snapshot(head, backbone_params)}
        stale, first_epoch = 0, 1
        save_state(0)
    else:  # continue after the state's last whole epoch
        _restore(head, backbone_params, resume_state["current"])
        optimizer.load_state_dict(resume_state["optimizer"])
        generator.set_state(resume_state["generator"])
        records.extend(resume_state["records"])
        best = {"loss": resume_state["best_loss"], "epoch": resume_state["best_epoch"], "state": resume_state["best"]}
        stale, first_epoch = int(resume_state["stale"]), int(resume_state["epoch"]) + 1
        if metrics_path is not None:  # the log says exactly what the state holds (a torn or later line dropped)
            atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in records))
    for epoch in range(first_epoch, config.epochs + 1):
        if resume_state is not None and epoch == first_epoch and config.patience and keep == "best" \
                and stale >= config.patience:
            break  # it had stopped early already
        start = time.perf_counter()
        order = torch.randperm(n_train, generator=generator).tolist()
        bar = tqdm(range(0, n_train, config.batch_size), desc=f"RM epoch {epoch}/{config.epochs}",
                   disable=not progress, unit="step")
        total_loss = total_acc = 0.0
        head.train()
        for step in bar:
            idx = order[step:step + config.batch_size]
            scores = scorer.scores(idx + [i + n_train for i in idx]).float()
            rc, rr = scores[:len(idx)], scores[len(idx):]
            loss = bradley_terry_loss(rc, rr)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"Reward-model loss became {loss.item()} in epoch {epoch}; lower lr/head_lr.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            total_loss += loss.item() * len(idx)
            total_acc += float(preference_accuracy(rc.detach(), rr.detach())) * len(idx)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        seconds = time.perf_counter() - start
        log(_epoch_record(epoch, "train", total_loss / n_train, total_acc / n_train, seconds))
        val_loss, val_acc = validate()
        log(_epoch_record(epoch, "val", val_loss, val_acc, time.perf_counter() - start - seconds))
        if progress:
            tqdm.write(f"epoch {epoch}: train loss {total_loss / n_train:.4f} acc {total_acc / n_train:.3f} | "
                       f"val loss {val_loss:.4f} acc {val_acc:.3f}")
        if val_loss < best["loss"] - 1e-6 or keep == "last":
            best = {"loss": val_loss, "epoch": epoch, "state": _snapshot(head, backbone_params)}
            stale = 0
        else:
            stale += 1
            if config.patience and stale >= config.patience and keep == "best":
                save_state(epoch)
                if progress:
                    tqdm.write(f"early stop: validation loss has not improved for {stale} epoch(s)")
                break
        save_state(epoch)

    _restore(head, backbone_params, best["state"])
    head.eval()
    for p in trainable:
        p.requires_grad_(False)
    train_scores = scorer.scores_no_grad(list(range(2 * n_train)), config.score_batch_size)
    rm.mean, rm.std = float(train_scores.mean()), float(train_scores.std().clamp_min(1e-6))
    return FitResult(pd.DataFrame(records), best["epoch"], n_train, n_val, scorer.cache is not None)


def train_reward_model(data: list[PreferencePair] | str | Path, base: str, out_dir: str | Path,
                       config: RewardTrainingConfig | None = None, *, device: str | None = None,
                       progress: bool = True, overwrite: bool = False, resume: bool = False
                       ) -> tuple[RewardModel, pd.DataFrame]:
    """Train a Bradley-Terry RM on preference pairs (a list or a JSONL path) and save it to ``out_dir/model``.

    Returns the RM (best validation-loss epoch, normalised on its training texts) and a tidy DataFrame of
    per-epoch metrics: columns ``epoch`` (0 = before training), ``split`` ("train"/"val"), ``loss``
    (Bradley-Terry), ``accuracy`` (pairs ranked right), ``seconds`` (epoch wall time). The same records are
    streamed to ``out_dir/metrics.jsonl``.

    Interrupted work is kept: after every whole epoch ``out_dir/training_state.pt`` holds the weights, the
    optimizer and the best epoch so far; ``resume=True`` (``--resume``: the same command again) continues from
    it, and gives the same model as an uninterrupted run. Refused when the data, base model or a setting other
    than ``epochs`` / ``patience`` differs from the interrupted run's (the message names it).
    """
    config = (config or RewardTrainingConfig()).validate()
    pairs = read_preferences(data) if isinstance(data, (str, Path)) else list(data)  # validated before any loading
    if len(pairs) < 2:
        raise ValueError(f"Need at least 2 preference pairs (one to train on, one to validate), got {len(pairs)}.")
    out_dir = Path(out_dir)
    metrics_path = out_dir / METRICS_FILE
    state_path = out_dir / TRAINING_STATE
    if resume and overwrite:
        raise ValueError("--resume continues the training in --out and --overwrite deletes it: give one of them.")
    fingerprint = {"base": str(base), "data_sha256": _pairs_digest(pairs),
                   **{k: v for k, v in asdict(config).items() if k not in RESUMABLE_FIELDS}}
    resume_state = read_training_state(state_path, fingerprint) if resume else None
    if not resume and metrics_path.exists() and not overwrite:
        hint = (" It was interrupted: continue it with the same command plus --resume,"
                if state_path.exists() else "")
        raise ValueError(f"{out_dir} already holds a reward model's training ({METRICS_FILE}).{hint} Choose "
                         f"another --out or pass overwrite=True (--overwrite).")

    seed_everything(config.seed)
    bridge = load_model(base, device=device)
    head = ValueHead(bridge.cfg.d_model, config.head).to(next(bridge.parameters()).device)
    rm = RewardModel(bridge, head, hook_name=config.hook, base_model=str(base), batch_size=config.score_batch_size)
    n_frozen = frozen_layer_count(config, bridge.cfg.n_layers)
    if resume_state is None:
        atomic_write_text(metrics_path, "")
    try:
        fit = fit_reward_model(rm, pairs, config, n_frozen, metrics_path=metrics_path, progress=progress,
                               state_path=state_path, resume_state=resume_state, fingerprint=fingerprint)
    except BaseException as err:
        err.add_note(_kept_note(state_path, config))
        raise
    frame = fit.frame
    best_val = frame[(frame.split == "val") & (frame.epoch == fit.best_epoch)].iloc[0]
    rm.save(out_dir / MODEL_SUBDIR, extra_meta={
        "training": {**asdict(config), "frozen_layers": n_frozen, "cached_prefix": fit.cached_prefix},
        "data": {"source": str(data) if isinstance(data, (str, Path)) else "in-memory", "pairs": len(pairs),
                 "train_pairs": fit.n_train, "val_pairs": fit.n_val},
        "best_epoch": fit.best_epoch, "val_loss": float(best_val.loss), "val_accuracy": float(best_val.accuracy)})
    state_path.unlink(missing_ok=True)  # model/ holds the result now
    return rm, frame


RESUMABLE_FIELDS = ("epochs", "patience", "score_batch_size")  # may change on --resume: they take effect as given


def _pairs_digest(pairs: list[PreferencePair]) -> str:
    text = json.dumps([[p.prompt, p.chosen, p.rejected] for p in pairs], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_training_state(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """An interrupted reward-model training's state (``torch.load(weights_only=True)``: a file holding more than
    tensors and plain data is refused unopened), checked to belong to the same data, base model and settings."""
    import pickle

    if not path.exists():
        done = (path.parent / MODEL_SUBDIR).exists()
        raise FileNotFoundError(
            f"Nothing to resume in {path.parent}: no {path.name} "
            + ("(the training finished: the reward model is in model/)." if done else
               "(no reward-model training was interrupted there). Start it without --resume (add --overwrite to "
               "replace what is there)."))
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds more than tensors and plain data, so it is refused unopened (unpickling it "
                         f"could run code: it was not written by this toolkit, or was altered). Delete it and start "
                         f"again with --overwrite.") from err
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"{path} is not a readable training state ({str(err).splitlines()[0]}): delete it and "
                         f"start again with --overwrite.") from err
    saved = state.get("fingerprint", {}) if isinstance(state, dict) else {}
    changed = [k for k in sorted(set(saved) | set(fingerprint)) if saved.get(k) != fingerprint.get(k)]
    if changed:
        what = ", ".join(f"{k} ({saved.get(k)!r} -> {fingerprint.get(k)!r})" for k in changed[:4])
        raise ValueError(f"--resume continues the interrupted training in {path.parent} as it was started, but "
                         f"{what} differ(s): run the same command (only {', '.join(RESUMABLE_FIELDS)} may change), "
                         f"or start again with --overwrite.")
    return state


def _kept_note(state_path: Path, config: RewardTrainingConfig) -> str:
    """What an interrupted or failed training kept, and how to continue."""
    try:
        state = torch.load(state_path, weights_only=True, map_location="cpu")
    except Exception:  # noqa: BLE001 - no state (or an unreadable one): nothing was kept
        return (f"No epoch was finished, so nothing was kept in {state_path.parent} but metrics.jsonl: run the "
                f"same command again with --overwrite.")
    return (f"Kept: {state['epoch']} of {config.epochs} epoch(s) in {state_path} (best so far: epoch "
            f"{state['best_epoch']}, val loss {state['best_loss']:.4f}); continue with the same command plus "
            f"--resume.")
