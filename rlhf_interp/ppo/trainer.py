"""The PPO loop: rollout -> advantages -> several epochs of clipped updates -> log -> checkpoint.

A thin stateful shell over the pure pieces in ``rollout.py``, ``losses.py`` and ``kl.py``.
Determinism: every phase seeds its own RNG from ``(seed, phase)``, so a run that is killed and
resumed from a checkpoint reproduces the uninterrupted run's metrics. Policy and reference stay in eval
mode for the whole run (no dropout): the update's log-probs are those of the distribution that sampled.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm.auto import tqdm

from rlhf_interp.bridge.freezing import freeze_layers
from rlhf_interp.bridge.heads import ValueHead
from rlhf_interp.bridge.hf import hf_state_dict, plain_param_name
from rlhf_interp.bridge.loading import bridge_from_hf, load_hf_model, model_source
from rlhf_interp.bridge.run_dirs import checkpoint_dir, latest_checkpoint, list_checkpoints, read_meta
from rlhf_interp.checkpoints import save_hf_model
from rlhf_interp.core.io import append_jsonl, write_jsonl
from rlhf_interp.core.seeding import mix_seed
from rlhf_interp.kl import AdaptiveKLController, FixedKLController, masked_mean
from rlhf_interp.ppo import losses
from rlhf_interp.ppo.config import PPOConfig
from rlhf_interp.ppo.losses import RunningStd
from rlhf_interp.ppo.rollout import Rollout, collect
from rlhf_interp.ppo.update import TrainingDivergedError, ppo_update
from rlhf_interp.prompts import load_prompts
from rlhf_interp.reward.functions import RewardFn, get_reward

PhaseCallback = Callable[["PPOTrainer", dict[str, Any], Rollout], None]


APPEND_ONLY_LOGS = ("metrics.jsonl", "samples.jsonl")  # one record per line, each with a "phase"


class PPOTrainer:
    """PPO with a KL penalty against a frozen reference, on a `TransformerBridge` policy.

    ``callbacks`` are called after every phase with ``(trainer, metrics, rollout)``; raise
    ``StopIteration`` from one to end training early (a checkpoint is still written).
    """

    def __init__(self, config: PPOConfig, run_dir: str | Path, *, reward: RewardFn | None = None,
                 callbacks: list[PhaseCallback] | None = None, progress: bool = True):
        self.config = config.validate()
        self.run_dir = Path(run_dir)
        self.callbacks = list(callbacks or [])
        self.progress = progress
        self.phase = 0
        self.device = torch.device(config.device) if config.device else None
        self.reward = reward or get_reward(config.reward, **config.reward_kwargs)
        self.prompts = load_prompts(config.prompts)
        self._build_models(policy_source=config.model)
        self._build_optimizer()
        self.kl_ctl = (AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
                       if config.adaptive_kl else FixedKLController(config.kl_coef))
        self.reward_std = RunningStd()
        self.history: list[dict[str, Any]] = []
        self._tb = self._wandb = None

    # ------------------------------------------------------------------ set-up
    def _build_models(self, policy_source: str, adapter_dir: Path | None = None) -> None:
        cfg = self.config
        hf, tokenizer, _ = load_hf_model(policy_source, device=self.device)
        self.device = next(hf.parameters()).device
        self.hf_policy = hf
        self.peft_model = None
        if cfg.lora_r > 0:
            from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

            self.peft_model = get_peft_model(hf, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                            target_modules=list(cfg.lora_targets)))
            if adapter_dir is not None:
                from safetensors.torch import load_file

                set_peft_model_state_dict(self.peft_model, load_file(str(adapter_dir / "adapter_model.safetensors")))
            # Boot on the inner model: hooks fire, and disable_adapter() turns it into the reference.
            self.policy = bridge_from_hf(self.peft_model.base_model.model, tokenizer, name=cfg.model)
        else:
            self.policy = bridge_from_hf(hf, tokenizer, name=cfg.model)
            freeze_layers(self.hf_policy, cfg.freeze_layers, train_embeddings=cfg.train_embeddings)
        # The reference: the adapter-off policy under LoRA when it is the starting model, else its own model.
        separate_ref = self.peft_model is None or (cfg.ref_model or cfg.model) != cfg.model
        self.reference = self._load_reference(cfg.ref_model or cfg.model) if separate_ref else None
        self.policy.rlhf_interp_source = cfg.model
        self.policy.eval()  # no dropout anywhere in the run: log-probs are of the sampling distribution
        torch.manual_seed(cfg.seed)  # the value head's initial weights are part of the run's seed
        self.head = ValueHead(self.policy.cfg.d_model, cfg.value_head).to(self.device)

    def _load_reference(self, source: str):
        ref_hf, ref_tok, _ = load_hf_model(source, device=self.device)
        reference = bridge_from_hf(ref_hf, ref_tok, name=source)
        for p in reference.parameters():
            p.requires_grad_(False)
        if reference.cfg.d_vocab != self.policy.cfg.d_vocab:
            raise ValueError(f"ref_model {source!r} has a vocabulary of {reference.cfg.d_vocab} tokens, the policy "
                             f"{self.config.model!r} {self.policy.cfg.d_vocab}: the KL compares next-token "
                             f"distributions, so both need the same tokenizer.")
        return reference.eval()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.hf_policy.parameters() if p.requires_grad]

    def _build_optimizer(self) -> None:
        cfg = self.config
        steps_per_phase = cfg.ppo_epochs * (cfg.batch_size // cfg.minibatch_size)
        self.optimizer = torch.optim.AdamW(
            [{"params": self.trainable_parameters(), "lr": cfg.lr},
             {"params": list(self.head.parameters()), "lr": cfg.head_lr}],
            weight_decay=cfg.weight_decay,
        )
        warmup, total = cfg.warmup_phases * steps_per_phase, cfg.phases * steps_per_phase

        def schedule(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            if not cfg.lr_decay:
                return 1.0
            return max(0.0, 1.0 - (step - warmup) / max(1, total - warmup))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)

    def reference_logits(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.reference is None:
            with self.peft_model.disable_adapter():
                return self.policy(tokens, attention_mask=attention_mask)
        return self.reference(tokens, attention_mask=attention_mask)

    # ------------------------------------------------------------------ one phase
    def _phase_prompts(self) -> list[str]:
        rng = random.Random(mix_seed(self.config.seed, self.phase))
        return rng.sample(self.prompts, min(self.config.batch_size, len(self.prompts))) if len(self.prompts) >= self.config.batch_size \
            else [rng.choice(self.prompts) for _ in range(self.config.batch_size)]

    def _minibatch_orders(self) -> list[torch.Tensor]:
        """One shuffled order of the batch per PPO epoch, seeded by (seed, phase)."""
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + self.phase)
        return [torch.randperm(cfg.batch_size, generator=generator) for _ in range(cfg.ppo_epochs)]

    def run_phase(self) -> tuple[dict[str, Any], Rollout]:
        cfg = self.config
        torch.manual_seed(mix_seed(cfg.seed, self.phase))
        start = time.perf_counter()
        self.policy.eval()
        orders = self._minibatch_orders()
        rollout = collect(
            self.policy, self.head, self.reference_logits, self.reward, self._phase_prompts(),
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, stop_at_eos=cfg.stop_at_eos,
            kl_direction=cfg.kl_direction, kl_estimator=cfg.kl_estimator, kl_placement=cfg.kl_placement,
            value_hook=cfg.value_head_hook, grad_rows=orders[0][:cfg.minibatch_size],
        )
        rollout_seconds = time.perf_counter() - start
        mask = rollout.gen_mask

        # Scores: optional EOS penalty, scale, normalisation.
        scores = rollout.scores * cfg.reward_scale
        if cfg.missing_eos_penalty is not None:
            ended = (rollout.gen_tokens == self.policy.tokenizer.eos_token_id).any(-1)
            scores = scores - cfg.missing_eos_penalty * (~ended).float()
        if cfg.normalize_reward:
            self.reward_std.update(scores)
            scores = scores / self.reward_std.std

        # Per-token rewards (the KL too, when placed there) and advantages (GAE), then whitening.
        kl_coef = self.kl_ctl.coef
        in_reward = cfg.kl_placement == "reward"
        advantages, returns = losses.penalised_advantages(scores, rollout.kl_value, rollout.kl_score, rollout.values,
                                                          mask, kl_coef if in_reward else 0.0, cfg.gamma,
                                                          cfg.gae_lambda)
        if cfg.whiten_advantages:
            advantages = losses.whiten(advantages, mask)

        stats = ppo_update(self.policy, self.head, self.optimizer, self.scheduler,
                           self.trainable_parameters() + list(self.head.parameters()), rollout, advantages, returns,
                           orders, cfg, kl_coef)
        seconds = time.perf_counter() - start
        n_tokens = int(mask.sum().item())
        kl_seq = (rollout.kl_value * mask).sum(-1)
        metrics: dict[str, Any] = {
            "phase": self.phase + 1,
            "reward_mean": rollout.scores.mean().item(),
            "reward_std": rollout.scores.std().item() if len(rollout.scores) > 1 else 0.0,
            "kl_forward_per_token": masked_mean(rollout.kl_forward, mask).item(),
            "kl_reverse_per_token": masked_mean(rollout.kl_reverse, mask).item(),
            f"kl_{cfg.kl_direction}_{cfg.kl_estimator}_per_token": masked_mean(rollout.kl_value, mask).item(),
            "kl_penalty_per_sequence": kl_seq.mean().item(),
            "non_score_reward": (-kl_coef * kl_seq).mean().item() if in_reward else 0.0,
            "entropy": masked_mean(rollout.entropy, mask).item(),
            "kl_coef": kl_coef,
            "lr": self.optimizer.param_groups[0]["lr"],
            **stats,
            "gen_tokens_per_sample": n_tokens / mask.shape[0],
            "seconds": seconds,
            "rollout_seconds": rollout_seconds,
            "tokens_per_second": n_tokens / seconds,
        }
        self.kl_ctl.update(metrics["kl_forward_per_token"] if cfg.kl_direction == "forward"
                           else metrics["kl_reverse_per_token"], cfg.batch_size)
        self.phase += 1
        return metrics, rollout

    # ------------------------------------------------------------------ loop, logging, checkpoints
    def train(self) -> list[dict[str, Any]]:
        """Run until ``config.phases``; returns the metrics of the phases run in this call."""
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(self.run_dir / "config.yaml")
        self._open_loggers()
        ran: list[dict[str, Any]] = []
        bar = tqdm(total=cfg.phases, initial=self.phase, desc="PPO", disable=not self.progress, unit="phase")
        try:
            while self.phase < cfg.phases:
                metrics, rollout = self.run_phase()
                ran.append(metrics)
                self.history.append(metrics)
                self._log(metrics, rollout)
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['reward_mean']:.2f}", kl=f"{metrics['kl_forward_per_token']:.3f}",
                                ent=f"{metrics['entropy']:.2f}", s=f"{metrics['seconds']:.1f}")
                if cfg.checkpoint_every and self.phase % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                stop = False
                for callback in self.callbacks:
                    try:
                        callback(self, metrics, rollout)
                    except StopIteration:
                        stop = True
                if stop:
                    break
        except FloatingPointError as err:
            raise TrainingDivergedError(f"Phase {self.phase + 1}: {err} The last good checkpoint (intact): "
                                        f"{latest_checkpoint(self.run_dir)}.") from err
        finally:
            bar.close()
            self._close_loggers()
        latest = latest_checkpoint(self.run_dir)
        if latest is None or read_meta(latest).get("step") != self.phase:
            self.save_checkpoint()
        return ran

    def _open_loggers(self) -> None:
        cfg = self.config
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                print("tensorboard is not installed (pip install tensorboard); logging to metrics.jsonl only.")
        if cfg.wandb_project:
            try:
                import wandb

                self._wandb = wandb.init(project=cfg.wandb_project, config=cfg.to_dict(), dir=str(self.run_dir))
            except ImportError:
                print("wandb is not installed (pip install wandb); logging to metrics.jsonl only.")

    def _close_loggers(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        self._tb = self._wandb = None

    def _log(self, metrics: dict[str, Any], rollout: Rollout) -> None:
        cfg = self.config
        if self.phase % cfg.log_every == 0 or self.phase == cfg.phases:
            append_jsonl(self.run_dir / "metrics.jsonl", metrics)
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, value, self.phase)
        if self._wandb is not None:
            self._wandb.log(metrics, step=self.phase)
        if cfg.sample_every and (self.phase % cfg.sample_every == 0 or self.phase == 1):
            for prompt, completion, value in zip(rollout.prompts, rollout.completions, rollout.scores.tolist()):
                append_jsonl(self.run_dir / "samples.jsonl", {"phase": self.phase, "prompt": prompt,
                                                              "completion": completion, "reward": value})

    @contextmanager
    def _merged_hf_model(self) -> Iterator[Any]:
        """The HF model to export: LoRA merged into the weights (so any tool loads it) or the policy itself."""
        if self.peft_model is None:
            yield self.hf_policy
            return
        self.peft_model.merge_adapter()
        try:
            yield self.peft_model.base_model.model
        finally:
            self.peft_model.unmerge_adapter()

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<phase>`` atomically: HF weights + tokenizer, value head, meta.json, trainer state."""
        target = checkpoint_dir(self.run_dir, self.phase)
        state = {
            "phase": self.phase,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "kl_controller": self.kl_ctl.state_dict(),
            "reward_std": self.reward_std.state_dict(),
        }
        extra_tensors = {"value_head.safetensors": self.head.state_dict()}
        if self.peft_model is not None:
            from peft import get_peft_model_state_dict

            adapter = {plain_param_name(k): v for k, v in get_peft_model_state_dict(self.peft_model).items()}
            extra_tensors["adapter/adapter_model.safetensors"] = adapter
        meta = {"step": self.phase, "base_model": self.config.model, "config": self.config.to_dict(),
                "metrics": self.history[-1] if self.history else {}, "value_head": {"kind": self.config.value_head,
                                                                                    "hook": self.config.value_head_hook}}
        with self._merged_hf_model() as hf:
            path = save_hf_model(hf, self.policy.tokenizer, target, meta=meta, extra_tensors=extra_tensors,
                                 extra_files={"trainer_state.pt": state})
        self._prune_checkpoints()
        return path

    def _prune_checkpoints(self) -> None:
        keep = self.config.keep_checkpoints
        if keep:
            for old in list_checkpoints(self.run_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def resume(cls, run_dir: str | Path, *, overrides: list[str] | None = None, **kwargs) -> "PPOTrainer":
        """Continue a run from its latest checkpoint (config from ``run_dir/config.yaml`` + overrides)."""
        run_dir = Path(run_dir)
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"No checkpoint-* directory in {run_dir} to resume from.")
        config = PPOConfig.load(run_dir / "config.yaml", overrides)
        trainer = cls(config, run_dir, **kwargs)
        trainer.load_state(ckpt)
        return trainer

    def load_state(self, ckpt: Path) -> None:
        from safetensors.torch import load_file

        if self.peft_model is not None:
            self._build_models(self.config.model, adapter_dir=ckpt / "adapter")
        else:
            # Policy weights from the checkpoint; the reference stays the base model.
            hf, _, _ = load_hf_model(ckpt, device=self.device)
            with torch.no_grad():
                own = {plain_param_name(k): p for k, p in self.hf_policy.named_parameters()}
                for key, value in hf_state_dict(hf).items():
                    if key in own:
                        own[key].copy_(value)
        self.head.load_state_dict(load_file(str(ckpt / "value_head.safetensors")))
        self._build_optimizer()
        state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.reward_std.load_state_dict(state["reward_std"])
        self.phase = int(state["phase"])
        # Phases after the checkpoint are run again: their log lines go, so none is written twice.
        for name in APPEND_ONLY_LOGS:
            kept = trim_log(self.run_dir / name, self.phase)
            if name == "metrics.jsonl":
                self.history = kept
        meta = read_meta(ckpt)
        if meta.get("base_model") not in (None, self.config.model):
            raise ValueError(f"Checkpoint {ckpt} was trained from {meta['base_model']!r}, config says {self.config.model!r}.")


def trim_log(path: Path, phase: int) -> list[dict[str, Any]]:
    """Rewrite an append-only JSONL log atomically with only its records up to ``phase``; return them.

    A last line without its newline was torn by a kill mid-write (its phase came after the checkpoint, which
    is written after the logs): it is dropped, as is every complete line of a later phase.
    """
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    complete = lines[:-1]  # the text after the last newline is "" or a torn record
    kept = [record for record in (json.loads(line) for line in complete if line.strip()) if record["phase"] <= phase]
    write_jsonl(path, kept)
    return kept


def model_summary(trainer: PPOTrainer) -> str:
    total = sum(p.numel() for p in trainer.hf_policy.parameters())
    trainable = sum(p.numel() for p in trainer.trainable_parameters())
    return (f"policy {model_source(trainer.policy)}: {total / 1e6:.1f} M parameters, {trainable / 1e6:.1f} M trainable; "
            f"value head {sum(p.numel() for p in trainer.head.parameters()) / 1e6:.2f} M")
