"""A learned reward model: a causal-LM backbone (any model `load_model` accepts) plus a scalar head read at
the last real token, trained with the Bradley-Terry loss ``-log sigmoid(r(chosen) - r(rejected))``.

What it scores: the text as given — a completion alone, not prompt + completion. PPO calls its reward
with the completions only (`rlhf_interp.ppo.rollout.collect`), so the RM is trained on exactly the
strings it will later be asked about; the ``prompt`` of a preference pair is kept for provenance but not
scored. A user whose preferences depend on the prompt can put the prompt into ``chosen``/``rejected``,
but such an RM then needs prompt-aware scoring, which the PPO trainer does not do.

The head is the PPO value head (`rlhf_interp.bridge.heads.ValueHead`, fed by a hook on the final residual
stream), so the RM's backbone stays a plain `TransformerBridge` that every analysis tool can open.

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

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from rlhf_interp.bridge.heads import DEFAULT_HEAD_HOOK, ValueHead, check_hook_name, values_from_hook
from rlhf_interp.bridge.loading import load_model
from rlhf_interp.bridge.tokens import tokenize
from rlhf_interp.core.masks import gather_last, last_token_index  # noqa: F401  (last_token_index: re-exported)

HEAD_FILE = "reward_head.safetensors"
MODEL_SUBDIR = "model"
METRICS_FILE = "metrics.jsonl"
DEFAULT_HOOK = DEFAULT_HEAD_HOOK


def bradley_terry_loss(r_chosen: Float[Tensor, "batch"], r_rejected: Float[Tensor, "batch"]) -> Float[Tensor, ""]:
    """Mean of ``-log sigmoid(r_chosen - r_rejected)``: the negative log-likelihood of the observed preferences."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def preference_accuracy(r_chosen: Float[Tensor, "batch"], r_rejected: Float[Tensor, "batch"]) -> Float[Tensor, ""]:
    """Fraction of pairs ranked the right way (a tie counts half: a constant scorer gets exactly 0.5)."""
    diff = r_chosen - r_rejected
    return ((diff > 0).float() + 0.5 * (diff == 0).float()).mean()


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
        path = save_hf_model(self.bridge, self.bridge.tokenizer, out_dir, meta=meta,
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
    bridge = load_model(model_dir, device=device, dtype=dtype, frozen=True)
    head = ValueHead(bridge.cfg.d_model, head_meta.get("kind", "linear"))
    head.load_state_dict(load_file(str(model_dir / HEAD_FILE)))
    head = head.to(device=next(bridge.parameters()).device).eval()
    head.requires_grad_(False)
    return RewardModel(bridge, head, hook_name=head_meta.get("hook", DEFAULT_HOOK),
                       base_model=meta.get("base_model", ""), mean=norm.get("mean", 0.0), std=norm.get("std", 1.0),
                       path=model_dir, meta=meta, batch_size=batch_size)
