"""One validated, flat config object per PPO run: loaded from YAML, overridden by ``key=value`` strings,
saved next to the run's outputs so every result says how it was made.

Validation has two steps. Types first, by pydantic from the field annotations (ints stay ints — ``2.5``
for ``phases`` is refused, ``2.0`` becomes ``2`` —, bools are YAML true/false only, dicts and lists have
their shapes, YAML 1.1's ``1e-5`` string becomes a float); then ranges and the rules between fields.
Every message names the field, the value, and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from rlhf_interp.core.io import atomic_write_text

from rlhf_interp.core.kl import LEGACY_DIRECTIONS, legacy_direction_message, upgrade_kl_record
from rlhf_interp.ppo.kl_penalty import KLPenalty


@dataclass
class PPOConfig:
    # --- model and data
    model: str = "smollm2-135m"  # anything load_model accepts
    ref_model: str | None = None  # the KL's anchor (same tokenizer); None: the policy's starting weights (`model`)
    prompts: str = "default"  # "default" (shipped openings), a .txt or .jsonl file
    device: str | None = None  # None: CUDA when present, else CPU
    # bf16: bfloat16 autocast for sampling, the policy, value and reference passes and the learn step; weights,
    # optimizer, logits, log-probs and losses stay fp32 (bridge/precision.py; its drift from fp32 is tested below
    # 1e-3 nats per token). Pays on GPUs and on CPUs with bf16 matmul units (avx512_bf16, AMX).
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: int = 0

    # --- reward
    reward: str = "char_count"  # builtin name, module:function, or reward_model:PATH
    reward_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {char: "."}
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
    # The KL by its argument order: pi_ref = KL(pi||ref) (Ziegler et al., InstructGPT; mode-seeking), ref_pi =
    # KL(ref||pi) (mass-covering). The old words forward/reverse are refused (the field uses them both ways round).
    kl_direction: Literal["pi_ref", "ref_pi"] = "pi_ref"
    kl_estimator: Literal["exact", "k1", "k2", "k3"] = "k1"
    # reward: per-token penalty in the reward (the KL over the policy's own states, which move with it);
    # loss: a loss term (the per-token KL at the rollout's states); sequence (ref_pi only): KL(ref||pi) of whole
    # sequences, a loss term on a bank of the reference's own samples. All of it is decided in one place,
    # `ppo.kl_penalty.KLPenalty`; table and derivations: docs/kl.md.
    kl_placement: Literal["reward", "loss", "sequence"] = "reward"
    kl_bank_size: int = 4  # sequence placement: reference samples per prompt, drawn once (ppo/reference_bank.py)
    kl_bank_per_step: int = 1  # sequence placement: bank samples per prompt in each PPO step (a less noisy gradient)
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

    # --- algorithm: what turns a phase's samples into a loss (rlhf_interp/ppo/algorithms/, docs/algorithms.md)
    # ppo: value head + GAE; grpo: group mean (/ std) baseline, KL in the loss; rloo: leave-one-out baseline;
    # dpo: preference pairs (preference_data), the rollout only measures.
    algorithm: Literal["ppo", "grpo", "rloo", "dpo"] = "ppo"
    group_size: int = 1  # samples per prompt in a phase (batch_size / group_size prompts); grpo and rloo: >= 2
    grpo_scale_rewards: bool = True  # grpo: divide by the group's std (as published); false: Dr. GRPO (no std)
    preference_data: str | None = None  # dpo: JSONL of {prompt, chosen, rejected} (`rlhf-interp reward-model synth`)
    dpo_beta: float = 0.1  # dpo: the KL strength beta of DPO's loss

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
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"])

    # --- iterated online RLHF (Bai et al. 2022): keep a learned RM (reward=reward_model:PATH) up with the policy.
    # Every N phases, label fresh pairs of the policy's own samples and fine-tune the RM on them; versions are
    # saved in RUN/reward_models/, metrics say which version scored each phase (`rlhf_interp.ppo.rm_refresh`).
    rm_refresh_every: int | None = None  # None: the RM stays frozen
    rm_refresh_pairs: int = 32  # pairs labelled per refresh (two samples of one prompt each; ties dropped)
    rm_refresh_source: str = "char_count"  # what labels them: builtin reward, module:function, reward_model:PATH
    rm_refresh_source_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {char: "."}
    rm_refresh_label_noise: float = 0.0  # probability that a pair's labels are swapped (as in `reward-model synth`)
    rm_refresh_epochs: int = 2  # fine-tuning epochs per refresh (lr, batch size, frozen blocks: the RM's own)
    rm_refresh_replay: int | None = 32  # earlier pairs (the RM's data, earlier refreshes) mixed in; None: all

    # --- logging and checkpoints
    log_every: int = 1
    sample_every: int = 5  # write sample generations every N phases (0: never)
    checkpoint_every: int = 10  # 0: only at the end
    keep_checkpoints: int | None = None  # >= 1: keep the newest N; None: keep all (the diff trajectory needs them)
    tensorboard: bool = False
    wandb_project: str | None = None

    def validate(self) -> "PPOConfig":
        """Check types (values converted in place: ``2.0`` -> ``2``), then ranges and rules between fields;
        a bad value raises ValueError naming the field, the value and what is allowed."""
        if self.kl_direction in LEGACY_DIRECTIONS:  # before the type check: its message explains both conventions
            raise ValueError(f"Config field {legacy_direction_message(self.kl_direction)}")
        _check_types(self)
        ranges: dict[str, tuple[float, float]] = {
            "phases": (1, 1e9), "batch_size": (1, 1e6), "max_new_tokens": (1, 1e5), "temperature": (1e-4, 100),
            "kl_coef": (0, 1e3), "kl_target": (1e-6, 1e3), "kl_horizon": (1, 1e12), "ppo_epochs": (1, 1000),
            "minibatch_size": (1, 1e6), "gamma": (0, 1), "gae_lambda": (0, 1), "clip_range": (1e-6, 10),
            "clip_range_value": (0, 1e6), "value_loss_coef": (0, 1e3), "entropy_coef": (0, 1e3),
            "max_grad_norm": (0, 1e6), "lr": (0, 1), "head_lr": (0, 1), "warmup_phases": (0, 1e9),
            "freeze_layers": (0, 1e4), "lora_r": (0, 4096), "log_every": (1, 1e9), "sample_every": (0, 1e9),
            "checkpoint_every": (0, 1e9), "reward_scale": (-1e6, 1e6), "weight_decay": (0, 10),
            "rm_refresh_pairs": (2, 1e6), "kl_bank_size": (1, 1e4), "kl_bank_per_step": (1, 1e4), "rm_refresh_label_noise": (0, 1), "rm_refresh_epochs": (1, 1000),
            "group_size": (1, 1e6), "dpo_beta": (1e-6, 1e3),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (low <= value <= high):
                raise ValueError(f"Config field {name!r} = {value!r} is out of range: allowed {low:g} to {high:g}.")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"Config field {f.name!r} = {value!r} is not a finite number.")
        for name in ("rm_refresh_every", "rm_refresh_replay"):
            value, low = getattr(self, name), 1 if name == "rm_refresh_every" else 0
            if value is not None and value < low:
                raise ValueError(f"Config field {name!r} = {value!r} is out of range: use a whole number >= {low}, or "
                                 f"null ({'the RM stays frozen' if low else 'replay every earlier pair'}).")
        if self.kl_bank_per_step > self.kl_bank_size:
            raise ValueError(f"Config field 'kl_bank_per_step' = {self.kl_bank_per_step} is larger than kl_bank_size = "
                             f"{self.kl_bank_size}: a step cannot use more reference samples than the bank holds; raise "
                             "kl_bank_size or lower kl_bank_per_step.")
        if self.rm_refresh_every is not None and not self.rm_refresh_source.strip():
            raise ValueError("Config field 'rm_refresh_source' is empty: name the reward that labels the refresh "
                             "pairs, e.g. char_count or module:function.")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            raise ValueError(f"Config field 'keep_checkpoints' = {self.keep_checkpoints!r} would delete every "
                             f"checkpoint: use a count >= 1 (the newest N are kept), or null to keep all.")
        if not self.lora_targets and self.lora_r > 0:
            raise ValueError("Config field 'lora_targets' is empty while lora_r > 0: list module names, "
                             "e.g. [q_proj, v_proj].")
        for name in ("model", "prompts", "reward", "value_head_hook"):
            if not getattr(self, name).strip():
                raise ValueError(f"Config field {name!r} is empty: give a value (default "
                                 f"{getattr(type(self)(), name)!r}).")
        if self.device is not None:
            _check_device(self.device)
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
        KLPenalty.from_config(self)  # the direction x estimator x placement is accepted (or refused with the reason)
        from rlhf_interp.ppo.algorithms import get_algorithm  # its own refusals (KL placements, groups, pairs)

        get_algorithm(self.algorithm).check(self)
        if self.ref_model is not None and not str(self.ref_model).strip():
            raise ValueError("Config field 'ref_model' is empty: give a model name or directory, or null for `model`.")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None, *,
             recorded: bool = False) -> "PPOConfig":
        """Load a YAML file (or the defaults) and apply ``key=value`` overrides (values parsed as YAML).

        ``recorded=True``: the file is a run's own ``config.yaml`` (resume, comparisons), so values recorded under
        old names are mapped (``kl_direction: forward`` -> ``pi_ref``); a config a user writes gets the error."""
        data: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            if not path.exists():
                raise FileNotFoundError(f"Config file {path} does not exist.")
            if path.is_dir():
                raise ValueError(f"Config {path} is a directory: give a YAML file of PPOConfig fields.")
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except UnicodeDecodeError as err:
                raise ValueError(f"Config {path} is not UTF-8 text (byte {err.start}): give a YAML file.") from err
            except yaml.YAMLError as err:
                raise ValueError(f"Config {path} is not valid YAML: {_yaml_problem(err)}.") from err
            if not isinstance(data, dict):
                raise ValueError(f"{path} must hold a mapping of config fields, got {type(data).__name__}.")
        if recorded and isinstance(data, dict):
            data = upgrade_kl_record(data)
        for item in overrides or []:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ValueError(f"Override {item!r} must look like key=value.")
            try:
                data[key.strip()] = yaml.safe_load(raw)
            except yaml.YAMLError as err:
                raise ValueError(f"Override {item!r}: the value is not valid YAML ({_yaml_problem(err)}); quote "
                                 f"strings with special characters, e.g. --set 'reward_kwargs={{char: \":\"}}'.") from err
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PPOConfig":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"Unknown config field(s) {unknown}. Known fields: {sorted(known)}.")
        if any(not isinstance(k, str) for k in data):
            raise ValueError(f"Config keys must be field names, got {sorted(map(repr, data))}.")
        return cls(**data).validate()


def _literal_values(annotation: Any) -> tuple:
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def _numeric_kind(annotation: Any) -> type | None:
    """float or int when the field holds a number (possibly Optional), else None."""
    options = get_args(annotation) or (annotation,)
    for kind in (float, int):
        if kind in options:
            return kind
    return None


@lru_cache(maxsize=1)
def _type_adapters() -> dict[str, Any]:
    """One pydantic TypeAdapter per field, built from the annotations once."""
    from pydantic import TypeAdapter

    return {f.name: TypeAdapter(get_type_hints(PPOConfig)[f.name]) for f in fields(PPOConfig)}


_TYPE_WORDS = {"int_from_float": "a whole number", "int_parsing": "a whole number", "int_type": "a whole number",
               "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
               "bool_type": "true or false", "dict_type": "a mapping, e.g. {char: '.'}",
               "list_type": "a list, e.g. [q_proj, v_proj]", "string_type": "a string"}


def _check_types(config: "PPOConfig") -> None:
    """Validate each field against its annotation (pydantic, lax mode minus bool<->number) and store the
    converted value; the first bad field raises ValueError."""
    from pydantic import ValidationError

    adapters = _type_adapters()
    hints = get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        kind = _numeric_kind(hints[f.name])
        if value is None and type(None) not in (get_args(hints[f.name]) or ()):
            raise ValueError(f"Config field {f.name!r} cannot be null; remove the line to use the default "
                             f"{getattr(type(config)(), f.name)!r}.")
        if kind is not None and isinstance(value, bool):
            words = _TYPE_WORDS["float_type" if kind is float else "int_type"]
            raise ValueError(f"Config field {f.name!r} = {value!r} must be {words}, not a boolean.")
        if kind is int and isinstance(value, str):  # YAML 1.1 reads 1e4 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if _literal_values(hints[f.name]):
            continue  # named choices: validate() lists them
        if hints[f.name] is bool and not isinstance(value, bool):
            raise ValueError(f"Config field {f.name!r} = {value!r} must be true or false.")
        try:
            converted = adapters[f.name].validate_python(value)
        except ValidationError as err:
            error = err.errors()[0]
            words = _TYPE_WORDS.get(error["type"], error["msg"])
            if error["loc"]:  # an item of a list or dict
                where = "key" if error["loc"][-1] == "[key]" else "item"
                raise ValueError(f"Config field {f.name!r} = {value!r}: {where} {error['loc'][0]!r} must be "
                                 f"{words}.") from None
            raise ValueError(f"Config field {f.name!r} = {value!r} must be {words}.") from None
        setattr(config, f.name, converted)


def _check_device(device: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Config field 'device' = {device!r} is not a device: use cpu, cuda, cuda:N or null "
                         f"(CUDA when present, else CPU).") from err
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Config field 'device' = {device!r}, but CUDA is not available on this machine: use "
                         f"device=cpu, or null to pick CUDA only when present.")


def _yaml_problem(err: Exception) -> str:
    """PyYAML's error as one clause: what it was parsing and where it started, then what went wrong where."""
    def at(mark) -> str:
        return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""

    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    opened = f"{context}{at(getattr(err, 'context_mark', None))}: " if context else ""
    return f"{opened}{problem}{at(getattr(err, 'problem_mark', None))}"
