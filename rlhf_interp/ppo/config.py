"""One validated, flat config object per PPO run: loaded from YAML, overridden by ``key=value`` strings,
saved next to the run's outputs so every result says how it was made."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from rlhf_interp.kl import check_kl_option


@dataclass
class PPOConfig:
    # --- model and data
    model: str = "smollm2-135m"  # anything load_model accepts
    ref_model: str | None = None  # the KL's anchor (same tokenizer); None: the policy's starting weights (`model`)
    prompts: str = "default"  # "default" (shipped openings), a .txt or .jsonl file
    device: str | None = None  # None: CUDA when present, else CPU
    seed: int = 0

    # --- reward
    reward: str = "char_count"  # builtin name, module:function, or reward_model:PATH
    reward_kwargs: dict = field(default_factory=dict)  # e.g. {char: "."}
    reward_scale: float = 1.0
    normalize_reward: bool = False  # divide scores by a running std of the scores
    missing_eos_penalty: float | None = None  # subtracted when a sample does not end with EOS

    # --- rollouts
    phases: int = 50
    batch_size: int = 16  # prompts per phase
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_k: int | None = None  # refused in PPO (validate says why); fields kept so old configs get a clear error
    top_p: float | None = None
    stop_at_eos: bool = False

    # --- KL penalty
    kl_coef: float = 0.1
    # forward: KL(pi||ref) (Ziegler et al.); reverse: KL(ref||pi). Some RL libraries use the opposite words.
    kl_direction: Literal["forward", "reverse"] = "forward"
    kl_estimator: Literal["exact", "k1", "k2", "k3"] = "k1"
    # reward: per-token penalty in the reward (the KL over the policy's own states, which move with it);
    # loss: a loss term (the per-token KL at the rollout's states). Table and derivations: docs/kl.md.
    kl_placement: Literal["reward", "loss"] = "reward"
    adaptive_kl: bool = False  # Ziegler et al. controller
    kl_target: float = 0.08  # per-token target for the adaptive controller (nats)
    kl_horizon: int = 10000  # in samples

    # --- PPO
    ppo_epochs: int = 4
    minibatch_size: int = 8
    gamma: float = 1.0
    gae_lambda: float = 0.95  # 1.0 gives Monte-Carlo returns minus the value baseline (ARENA's simple form)
    whiten_advantages: bool = True
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    value_loss_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 1.0

    # --- optimisation
    lr: float = 2e-5
    head_lr: float = 5e-4
    warmup_phases: int = 0
    lr_decay: bool = True  # linear decay to 0 over the run, after warm-up
    weight_decay: float = 0.0

    # --- what is trained
    value_head: Literal["mlp", "linear"] = "mlp"
    value_head_hook: str = "ln_final.hook_normalized"
    freeze_layers: int = 0  # freeze blocks 0..N-1
    train_embeddings: bool = False  # SmolLM2 ties embedding and unembedding; frozen by default
    lora_r: int = 0  # > 0: train LoRA adapters instead of full weights (the reference is the adapter-off model)
    lora_alpha: int = 16
    lora_targets: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"])

    # --- logging and checkpoints
    log_every: int = 1
    sample_every: int = 5  # write sample generations every N phases (0: never)
    checkpoint_every: int = 10  # 0: only at the end
    keep_checkpoints: int | None = None  # None: keep all (the diff trajectory needs them)
    tensorboard: bool = False
    wandb_project: str | None = None

    def validate(self) -> "PPOConfig":
        """Reject values outside their range, naming the field and the allowed range."""
        ranges: dict[str, tuple[float, float]] = {
            "phases": (1, 1e9), "batch_size": (1, 1e6), "max_new_tokens": (1, 1e5), "temperature": (1e-4, 100),
            "kl_coef": (0, 1e3), "kl_target": (1e-6, 1e3), "kl_horizon": (1, 1e12), "ppo_epochs": (1, 1000),
            "minibatch_size": (1, 1e6), "gamma": (0, 1), "gae_lambda": (0, 1), "clip_range": (1e-6, 10),
            "clip_range_value": (0, 1e6), "value_loss_coef": (0, 1e3), "entropy_coef": (0, 1e3),
            "max_grad_norm": (0, 1e6), "lr": (0, 1), "head_lr": (0, 1), "warmup_phases": (0, 1e9),
            "freeze_layers": (0, 1e4), "lora_r": (0, 4096), "log_every": (1, 1e9), "sample_every": (0, 1e9),
            "checkpoint_every": (0, 1e9), "reward_scale": (-1e6, 1e6), "weight_decay": (0, 10),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (low <= value <= high):
                raise ValueError(f"Config field {name!r} = {value!r} is out of range: allowed {low:g} to {high:g}.")
        for name in ("top_k", "top_p"):
            if getattr(self, name) is not None:
                raise ValueError(
                    f"Config field {name!r} = {getattr(self, name)!r} is not supported in PPO; set it to null and use "
                    f"'temperature' to shape sampling. Why: truncation gives every token outside the kept set "
                    f"probability 0, so KL(ref||pi) is infinite, and the truncated policy gets no gradient on the "
                    f"tokens it cut, while the KL to the untruncated reference penalises the cut itself.")
        if self.minibatch_size > self.batch_size or self.batch_size % self.minibatch_size:
            raise ValueError(f"Config field 'minibatch_size' = {self.minibatch_size} must divide batch_size "
                             f"= {self.batch_size}.")
        for f in fields(self):
            allowed = _literal_values(get_type_hints(type(self))[f.name])
            if allowed and getattr(self, f.name) not in allowed:
                raise ValueError(f"Config field {f.name!r} = {getattr(self, f.name)!r} is not allowed: use one of {allowed}.")
        check_kl_option(self.kl_direction, self.kl_estimator, self.kl_placement)
        if self.ref_model is not None and not str(self.ref_model).strip():
            raise ValueError("Config field 'ref_model' is empty: give a model name or directory, or null for `model`.")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> "PPOConfig":
        """Load a YAML file (or the defaults) and apply ``key=value`` overrides (values parsed as YAML)."""
        data: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            if not path.exists():
                raise FileNotFoundError(f"Config file {path} does not exist.")
            data = yaml.safe_load(path.read_text()) or {}
            if not isinstance(data, dict):
                raise ValueError(f"{path} must hold a mapping of config fields, got {type(data).__name__}.")
        for item in overrides or []:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ValueError(f"Override {item!r} must look like key=value.")
            data[key.strip()] = yaml.safe_load(raw)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PPOConfig":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"Unknown config field(s) {unknown}. Known fields: {sorted(known)}.")
        hints = get_type_hints(cls)
        coerced = {k: _coerce(k, hints[k], v) for k, v in data.items()}
        return cls(**coerced).validate()


def _literal_values(annotation: Any) -> tuple:
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def _numeric_kind(annotation: Any) -> type | None:
    """float or int when the field holds a number (possibly Optional), else None."""
    options = get_args(annotation) or (annotation,)
    for kind in (float, int):
        if kind in options:
            return kind
    return None


def _coerce(name: str, annotation: Any, value: Any) -> Any:
    """YAML 1.1 reads ``1e-5`` as a string and ``1`` as an int where a float is meant: fix those."""
    kind = _numeric_kind(annotation)
    if kind is None or value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return kind(float(value)) if kind is int else float(value)
        except ValueError as err:
            raise ValueError(f"Config field {name!r} expects a number, got {value!r}.") from err
    return float(value) if kind is float and isinstance(value, int) else value
