"""A learned reward model: a causal-LM backbone (any model `load_model` accepts) plus a scalar head read at
the last real token, trained with the Bradley-Terry loss ``-log sigmoid(r(chosen) - r(rejected))``.

What it scores: the text as given — a completion alone, not prompt + completion. PPO calls its reward
with the completions only (`rlhf_interp.ppo.rollout.collect`), so the RM is trained on exactly the
strings it will later be asked about; the ``prompt`` of a preference pair is kept for provenance but not
scored. A user whose preferences depend on the prompt can put the prompt into ``chosen``/``rejected``,
but such an RM then needs prompt-aware scoring, which the PPO trainer does not do.

The head is the PPO value head (`ValueHead`, fed by a hook on the final residual stream), so the RM's
backbone stays a plain `TransformerBridge` that every analysis tool can open.

Saved layout (``OUT`` is what ``reward-model train --out`` names)::

    OUT/metrics.jsonl                 # one line per epoch: train/val loss and accuracy
    OUT/model/                        # a Hugging Face directory (load_model(OUT) opens the backbone)
        config.json, model.safetensors, tokenizer files
        reward_head.safetensors       # the scalar head
        meta.json                     # base model, head kind and hook, normalisation mean/std, training config

Scores are normalised with the mean and std of the trained RM's raw scores on its training texts, so a
PPO run sees rewards of unit scale whatever the head learned.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from rlhf_interp.models import bridge_from_hf, load_hf_model, tokenize
from rlhf_interp.ppo.value_head import ValueHead, check_hook_name, values_from_hook
from rlhf_interp.preference_data import PreferencePair, read_preferences, split_pairs

HEAD_FILE = "reward_head.safetensors"
MODEL_SUBDIR = "model"
METRICS_FILE = "metrics.jsonl"
DEFAULT_HOOK = "ln_final.hook_normalized"
TRAINABLE_LAYERS_BY_DEFAULT = 2


# ----------------------------------------------------------------------------------------------
# Pure math


def bradley_terry_loss(r_chosen: Float[Tensor, "batch"], r_rejected: Float[Tensor, "batch"]) -> Float[Tensor, ""]:
    """Mean of ``-log sigmoid(r_chosen - r_rejected)``: the negative log-likelihood of the observed preferences."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def preference_accuracy(r_chosen: Float[Tensor, "batch"], r_rejected: Float[Tensor, "batch"]) -> Float[Tensor, ""]:
    """Fraction of pairs ranked the right way (a tie counts half: a constant scorer gets exactly 0.5)."""
    diff = r_chosen - r_rejected
    return ((diff > 0).float() + 0.5 * (diff == 0).float()).mean()


def last_token_index(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch"]:
    """Column of each row's last real token, for left or right padding alike."""
    positions = torch.arange(1, attention_mask.shape[1] + 1, device=attention_mask.device)
    return (attention_mask.bool() * positions).argmax(-1)


def gather_last(values: Float[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch"]:
    """The value at each row's last real token."""
    rows = torch.arange(values.shape[0], device=values.device)
    return values[rows, last_token_index(attention_mask).to(values.device)]


# ----------------------------------------------------------------------------------------------
# The model


class RewardModel:
    """Backbone bridge + scalar head + normalisation statistics."""

    def __init__(self, bridge, head: ValueHead, *, hook_name: str = DEFAULT_HOOK, base_model: str = "",
                 mean: float = 0.0, std: float = 1.0, path: str | Path | None = None,
                 meta: dict[str, Any] | None = None, batch_size: int = 64):
        check_hook_name(bridge, hook_name)
        if not (math.isfinite(std) and std > 0):
            raise ValueError(f"Reward normalisation std must be a positive number, got {std}.")
        self.bridge, self.head, self.hook_name = bridge, head, hook_name
        self.base_model, self.mean, self.std = base_model, float(mean), float(std)
        self.path = None if path is None else Path(path)
        self.meta = dict(meta or {})
        self.batch_size = batch_size

    # -- scoring
    def scores_from_tokens(self, tokens: Tensor, attention_mask: Tensor) -> Float[Tensor, "batch"]:
        """Raw scores (with grad when enabled) of a tokenized batch, read at the last real token."""
        with values_from_hook(self.bridge, self.head, self.hook_name) as out:
            self.bridge(tokens, attention_mask=attention_mask)
        return gather_last(out["values"], attention_mask)

    @torch.no_grad()
    def raw_scores(self, texts: list[str], *, batch_size: int | None = None, progress: bool = False) -> Float[Tensor, "batch"]:
        """Unnormalised scores, batched by length (less padding), in the order of ``texts``; on the CPU."""
        batch_size = batch_size or self.batch_size
        lengths = [len(t) for t in texts]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        scores = torch.empty(len(texts))
        was_training = self.head.training
        self.head.eval()
        for start in tqdm(range(0, len(texts), batch_size), desc="scoring", disable=not progress, unit="batch"):
            idx = order[start:start + batch_size]
            tokens, mask = tokenize(self.bridge, [texts[i] for i in idx])
            scores[idx] = self.scores_from_tokens(tokens, mask).float().cpu()
        self.head.train(was_training)
        return scores

    def normalize(self, raw: Tensor) -> Tensor:
        return (raw - self.mean) / self.std

    def score(self, texts: list[str], *, normalize: bool = True, batch_size: int | None = None) -> Float[Tensor, "batch"]:
        """Scores of ``texts`` (normalised by the training-text mean and std unless ``normalize=False``)."""
        raw = self.raw_scores(list(texts), batch_size=batch_size)
        return self.normalize(raw) if normalize else raw

    def as_reward(self, *, normalize: bool = True, batch_size: int | None = None) -> "RewardModelReward":
        """A reward function ``list[str] -> Tensor[batch]`` for PPO (no grad, batched)."""
        return RewardModelReward(self, normalize=normalize, batch_size=batch_size)

    # -- persistence
    def save(self, out_dir: str | Path, *, extra_meta: dict[str, Any] | None = None) -> Path:
        """Write the HF directory + head + meta.json atomically to ``out_dir`` (the ``model/`` folder)."""
        from rlhf_interp.checkpoints import save_hf_model

        meta = {**self.meta, **(extra_meta or {}), "kind": "reward_model", "base_model": self.base_model,
                "reward_head": {"kind": self.head.kind, "hook": self.hook_name, "file": HEAD_FILE},
                "normalization": {"mean": self.mean, "std": self.std},
                "input": "the text alone (a completion); the prompt is not scored"}
        path = save_hf_model(self.bridge.original_model, self.bridge.tokenizer, out_dir, meta=meta,
                             extra_tensors={HEAD_FILE: self.head.state_dict()})
        self.meta, self.path = meta, path
        return path


class RewardModelReward:
    """The callable PPO uses: scores completions with the RM, without grad."""

    def __init__(self, model: RewardModel, *, normalize: bool = True, batch_size: int | None = None):
        self.model, self.normalize, self.batch_size = model, normalize, batch_size
        self.reward_name = f"reward_model:{model.path}" if model.path is not None else "reward_model"

    def __call__(self, texts: list[str]) -> Tensor:
        return self.model.score(texts, normalize=self.normalize, batch_size=self.batch_size)


def resolve_model_dir(path: str | Path) -> Path:
    """``OUT`` or ``OUT/model``: the directory holding the head file."""
    path = Path(path).expanduser()
    for candidate in (path, path / MODEL_SUBDIR):
        if (candidate / HEAD_FILE).exists():
            return candidate
    raise FileNotFoundError(f"{path} is not a reward model: neither it nor {path / MODEL_SUBDIR} holds {HEAD_FILE}. "
                            f"Train one with `rlhf-interp reward-model train DATA.jsonl --base MODEL --out DIR`.")


def load_reward_model(path: str | Path, *, device: str | torch.device | None = None, dtype: str | None = None,
                      batch_size: int = 64, **unknown: Any) -> RewardModel:
    """Load a trained RM from ``OUT`` (or ``OUT/model``). ``get_reward("reward_model:PATH", **reward_kwargs)``
    calls this, so PPO's ``reward_kwargs`` may set ``device``, ``dtype`` and ``batch_size``."""
    from safetensors.torch import load_file

    if unknown:
        raise ValueError(f"reward_model:{path} got unknown option(s) {sorted(unknown)}; it accepts device, dtype and "
                         f"batch_size. In a PPO config, set reward_kwargs to {{}} or to those keys only.")

    model_dir = resolve_model_dir(path)
    meta = json.loads((model_dir / "meta.json").read_text()) if (model_dir / "meta.json").exists() else {}
    head_meta, norm = meta.get("reward_head", {}), meta.get("normalization", {})
    hf, tokenizer, _ = load_hf_model(model_dir, device=device, dtype=dtype)
    for p in hf.parameters():
        p.requires_grad_(False)
    bridge = bridge_from_hf(hf, tokenizer, name=str(model_dir))
    bridge.rlhf_interp_source = str(model_dir)
    head = ValueHead(bridge.cfg.d_model, head_meta.get("kind", "linear"))
    head.load_state_dict(load_file(str(model_dir / HEAD_FILE)))
    head = head.to(device=next(hf.parameters()).device).eval()
    for p in head.parameters():
        p.requires_grad_(False)
    return RewardModel(bridge, head, hook_name=head_meta.get("hook", DEFAULT_HOOK),
                       base_model=meta.get("base_model", ""), mean=norm.get("mean", 0.0), std=norm.get("std", 1.0),
                       path=model_dir, meta=meta, batch_size=batch_size)


# ----------------------------------------------------------------------------------------------
# Frozen-prefix cache: the residual entering the first trainable block is computed once, not every epoch


def tail_forward(bridge, resid: Float[Tensor, "batch pos d_model"], attention_mask: Tensor, start_layer: int) -> Tensor:
    """Run blocks ``start_layer..`` and the final norm on a residual stream (hooks fire as in a full pass).

    Uses the Hugging Face decoder's own pieces (Llama-family layout: ``model.layers``, ``model.rotary_emb``,
    ``model.norm``), because the bridge's ``start_at_layer`` still executes the earlier blocks. Positions
    are 0..pos-1: rotary attention depends only on relative positions, so left padding changes nothing.
    """
    from transformers.masking_utils import create_causal_mask

    decoder = bridge.original_model.model
    position_ids = torch.arange(resid.shape[1], device=resid.device).unsqueeze(0)
    causal_mask = create_causal_mask(config=decoder.config, inputs_embeds=resid, attention_mask=attention_mask,
                                     past_key_values=None, position_ids=position_ids)
    position_embeddings = decoder.rotary_emb(resid, position_ids=position_ids)
    hidden = resid
    for layer in decoder.layers[start_layer:]:
        hidden = layer(hidden, attention_mask=causal_mask, position_embeddings=position_embeddings,
                       position_ids=position_ids)
    return decoder.norm(hidden)


def _supports_tail(bridge, hook_name: str, start_layer: int) -> bool:
    decoder = getattr(bridge.original_model, "model", None)
    return (start_layer >= 1 and hook_name.startswith("ln_final")
            and all(hasattr(decoder, a) for a in ("layers", "rotary_emb", "norm")))


class PrefixCache:
    """``blocks.{N-1}.hook_resid_post`` of every text (real positions only), computed once without grad."""

    def __init__(self, bridge, texts: list[str], n_frozen: int, *, batch_size: int = 64, progress: bool = True):
        self.n_frozen = n_frozen
        self.resid: list[Tensor] = [torch.empty(0)] * len(texts)
        hook = f"blocks.{n_frozen - 1}.hook_resid_post"
        stop = n_frozen if n_frozen < bridge.cfg.n_layers else None  # stop_at_layer == n_layers returns logits
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.no_grad():
            for start in tqdm(range(0, len(texts), batch_size), desc=f"caching {hook}", disable=not progress,
                              unit="batch"):
                idx = order[start:start + batch_size]
                tokens, mask = tokenize(bridge, [texts[i] for i in idx])
                _, cache = bridge.run_with_cache(tokens, attention_mask=mask, names_filter=lambda n: n == hook,
                                                 stop_at_layer=stop)
                for row, i in enumerate(idx):
                    self.resid[i] = cache[hook][row, mask[row].bool()].clone()

    def batch(self, ids: list[int]) -> tuple[Float[Tensor, "batch pos d_model"], Int[Tensor, "batch pos"]]:
        """Left-padded residuals and their attention mask."""
        width = max(self.resid[i].shape[0] for i in ids)
        first = self.resid[ids[0]]
        resid = torch.zeros(len(ids), width, first.shape[-1], dtype=first.dtype, device=first.device)
        mask = torch.zeros(len(ids), width, dtype=torch.long, device=first.device)
        for row, i in enumerate(ids):
            n = self.resid[i].shape[0]
            resid[row, width - n:] = self.resid[i]
            mask[row, width - n:] = 1
        return resid, mask


class _Scorer:
    """Training-time scores of text ids: from the prefix cache when possible, else full forward passes."""

    def __init__(self, rm: RewardModel, texts: list[str], n_frozen: int, *, use_cache: bool, batch_size: int,
                 progress: bool):
        self.rm, self.texts, self.n_frozen, self.cache = rm, texts, n_frozen, None
        if use_cache and _supports_tail(rm.bridge, rm.hook_name, n_frozen):
            cache = PrefixCache(rm.bridge, texts, n_frozen, batch_size=batch_size, progress=progress)
            if self._cache_agrees(cache):
                self.cache = cache
            else:
                warnings.warn("The frozen-prefix shortcut does not reproduce the full forward pass for this model; "
                              "training with full forward passes instead (slower, same result).", stacklevel=3)

    def _head_input(self, run: Callable[[], Any]) -> Tensor:
        got: dict[str, Tensor] = {}

        def hook(x: Tensor, hook) -> Tensor:
            got["x"] = x.detach()
            return x

        with torch.no_grad(), self.rm.bridge.hooks(fwd_hooks=[(self.rm.hook_name, hook)]):
            run()
        return got["x"]

    def _cache_agrees(self, cache: PrefixCache) -> bool:
        """Check the shortcut on a few texts: the head's input at the last token must match a full pass."""
        ids = list(range(min(4, len(self.texts))))
        tokens, mask = tokenize(self.rm.bridge, [self.texts[i] for i in ids])
        resid, cache_mask = cache.batch(ids)
        try:
            tail = self._head_input(lambda: tail_forward(self.rm.bridge, resid, cache_mask, self.n_frozen))
        except Exception as err:  # an architecture whose layers take other arguments
            warnings.warn(f"Frozen-prefix shortcut failed ({type(err).__name__}: {err}).", stacklevel=3)
            return False
        full = self._head_input(lambda: self.rm.bridge(tokens, attention_mask=mask))
        rows = torch.arange(len(ids))
        a, b = full[rows, last_token_index(mask)], tail[rows, last_token_index(cache_mask)]
        return bool(((a - b).abs().max() <= 1e-3 * a.abs().max().clamp_min(1.0)).item())

    def scores(self, ids: list[int]) -> Float[Tensor, "batch"]:
        """Raw scores with grad (trainable tail + head)."""
        if self.cache is not None:
            resid, mask = self.cache.batch(ids)
            with values_from_hook(self.rm.bridge, self.rm.head, self.rm.hook_name) as out:
                tail_forward(self.rm.bridge, resid, mask, self.n_frozen)
            return gather_last(out["values"], mask)
        tokens, mask = tokenize(self.rm.bridge, [self.texts[i] for i in ids])
        return self.rm.scores_from_tokens(tokens, mask)

    @torch.no_grad()
    def scores_no_grad(self, ids: list[int], batch_size: int) -> Float[Tensor, "batch"]:
        out = [self.scores(ids[s:s + batch_size]).float().cpu() for s in range(0, len(ids), batch_size)]
        return torch.cat(out) if out else torch.empty(0)


# ----------------------------------------------------------------------------------------------
# Training


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
                  "head": self.head in ("linear", "mlp")}
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
    """Freeze everything, then unfreeze blocks ``n_frozen..`` and the final norm (none of them when all are frozen).

    Embeddings stay frozen: SmolLM2 ties them to the unembedding, which the RM does not use.
    """
    for p in bridge.parameters():
        p.requires_grad_(False)
    trainable: dict[int, torch.nn.Parameter] = {}
    if n_frozen < bridge.cfg.n_layers:
        modules = [bridge.blocks[i] for i in range(n_frozen, bridge.cfg.n_layers)] + [bridge.ln_final]
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(True)
                trainable[id(p)] = p
    return list(trainable.values())


def _epoch_record(epoch: int, split: str, loss: float, accuracy: float, seconds: float) -> dict[str, Any]:
    return {"epoch": epoch, "split": split, "loss": loss, "accuracy": accuracy, "seconds": seconds}


def train_reward_model(data: list[PreferencePair] | str | Path, base: str, out_dir: str | Path,
                       config: RewardTrainingConfig | None = None, *, device: str | None = None,
                       progress: bool = True, overwrite: bool = False) -> tuple[RewardModel, pd.DataFrame]:
    """Train a Bradley-Terry RM on preference pairs (a list or a JSONL path) and save it to ``out_dir/model``.

    Returns the RM (best validation-loss epoch, normalised on its training texts) and a tidy DataFrame of
    per-epoch metrics: columns ``epoch`` (0 = before training), ``split`` ("train"/"val"), ``loss``
    (Bradley-Terry), ``accuracy`` (pairs ranked right), ``seconds`` (epoch wall time). The same records are
    streamed to ``out_dir/metrics.jsonl``.
    """
    config = (config or RewardTrainingConfig()).validate()
    pairs = read_preferences(data) if isinstance(data, (str, Path)) else list(data)  # validated before any loading
    if len(pairs) < 2:
        raise ValueError(f"Need at least 2 preference pairs (one to train on, one to validate), got {len(pairs)}.")
    out_dir = Path(out_dir)
    metrics_path = out_dir / METRICS_FILE
    if metrics_path.exists() and not overwrite:
        raise ValueError(f"{out_dir} already holds a trained reward model ({METRICS_FILE}); choose another --out "
                         f"or pass overwrite=True (--overwrite).")
    train_pairs, val_pairs = split_pairs(pairs, config.val_fraction, config.seed)

    torch.manual_seed(config.seed)
    hf, tokenizer, _ = load_hf_model(base, device=device)
    bridge = bridge_from_hf(hf, tokenizer, name=str(base))
    bridge.rlhf_interp_source = str(base)
    model_device = next(hf.parameters()).device
    head = ValueHead(bridge.cfg.d_model, config.head).to(model_device)
    rm = RewardModel(bridge, head, hook_name=config.hook, base_model=str(base), batch_size=config.score_batch_size)
    n_frozen = frozen_layer_count(config, bridge.cfg.n_layers)
    backbone_params = set_trainable(bridge, n_frozen)

    # Texts: train chosen, train rejected, val chosen, val rejected — referred to by index from here on.
    texts = ([p.chosen for p in train_pairs] + [p.rejected for p in train_pairs]
             + [p.chosen for p in val_pairs] + [p.rejected for p in val_pairs])
    n_train, n_val = len(train_pairs), len(val_pairs)
    scorer = _Scorer(rm, texts, n_frozen, use_cache=config.cache_activations, batch_size=config.score_batch_size,
                     progress=progress)
    val_c = list(range(2 * n_train, 2 * n_train + n_val))
    val_r = [i + n_val for i in val_c]

    groups = [{"params": list(head.parameters()), "lr": config.head_lr}]
    if backbone_params and config.lr > 0:
        groups.append({"params": backbone_params, "lr": config.lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    trainable = [p for g in groups for p in g["params"]]

    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text("")
    records: list[dict[str, Any]] = []

    def log(record: dict[str, Any]) -> None:
        records.append(record)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def validate() -> tuple[float, float]:
        head.eval()
        scores = scorer.scores_no_grad(val_c + val_r, config.score_batch_size)
        head.train()
        rc, rr = scores[:n_val], scores[n_val:]
        return float(bradley_terry_loss(rc, rr)), float(preference_accuracy(rc, rr))

    start = time.perf_counter()
    val_loss, val_acc = validate()
    log(_epoch_record(0, "val", val_loss, val_acc, time.perf_counter() - start))
    best = {"loss": val_loss, "epoch": 0, "state": _snapshot(head, backbone_params)}
    generator = torch.Generator().manual_seed(config.seed)
    stale = 0
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(n_train, generator=generator).tolist()
        steps = range(0, n_train, config.batch_size)
        bar = tqdm(steps, desc=f"RM epoch {epoch}/{config.epochs}", disable=not progress, unit="step")
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
        if val_loss < best["loss"] - 1e-6:
            best = {"loss": val_loss, "epoch": epoch, "state": _snapshot(head, backbone_params)}
            stale = 0
        else:
            stale += 1
            if config.patience and stale >= config.patience:
                if progress:
                    tqdm.write(f"early stop: validation loss has not improved for {stale} epoch(s)")
                break

    _restore(head, backbone_params, best["state"])
    head.eval()
    for p in trainable:
        p.requires_grad_(False)
    train_scores = scorer.scores_no_grad(list(range(2 * n_train)), config.score_batch_size)
    rm.mean, rm.std = float(train_scores.mean()), float(train_scores.std().clamp_min(1e-6))
    frame = pd.DataFrame(records)
    best_val = frame[(frame.split == "val") & (frame.epoch == best["epoch"])].iloc[0]
    rm.save(out_dir / MODEL_SUBDIR, extra_meta={
        "training": {**asdict(config), "frozen_layers": n_frozen, "cached_prefix": scorer.cache is not None},
        "data": {"source": str(data) if isinstance(data, (str, Path)) else "in-memory", "pairs": len(pairs),
                 "train_pairs": n_train, "val_pairs": n_val},
        "best_epoch": best["epoch"], "val_loss": float(best_val.loss), "val_accuracy": float(best_val.accuracy)})
    return rm, frame


def _snapshot(head: torch.nn.Module, params: list[torch.nn.Parameter]) -> dict[str, Any]:
    return {"head": copy.deepcopy(head.state_dict()), "params": [p.detach().clone() for p in params]}


def _restore(head: torch.nn.Module, params: list[torch.nn.Parameter], state: dict[str, Any]) -> None:
    head.load_state_dict(state["head"])
    with torch.no_grad():
        for p, saved in zip(params, state["params"]):
            p.copy_(saved)
