"""The training loop: rollout -> advantages -> update -> log -> checkpoint, for every algorithm.

A thin stateful shell over the pure pieces in ``rollout.py``, ``algorithms/`` (what PPO, GRPO, RLOO and DPO do
differently: advantages and loss), ``update.py`` and ``kl.py``; what a checkpoint restores is a `TrainerState`.
Determinism: every phase seeds its own RNG from ``(seed, phase)``, so a run that is killed and
resumed from a checkpoint reproduces the uninterrupted run's metrics (bit for bit with a pinned CPU thread
count, e.g. ``OMP_NUM_THREADS``: the count chosen per phase follows the machine's load, `core/threads.py`). Policy and reference stay in eval
mode for the whole run (no dropout): the update's log-probs are those of the distribution that sampled.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from rlhf_interp.bridge.freezing import freeze_layers
from rlhf_interp.bridge.generation import generate
from rlhf_interp.bridge.heads import ValueHead
from rlhf_interp.bridge.loading import bridge_from_hf, load_hf_model, model_source
from rlhf_interp.bridge.run_dirs import latest_checkpoint, read_meta
from rlhf_interp.bridge.tokens import check_context, pair_problems
from rlhf_interp.core.allocator import reuse_freed_memory
from rlhf_interp.core.seeding import mix_seed
from rlhf_interp.core.threads import apply_threads
from rlhf_interp.core.kl import masked_mean
from rlhf_interp.ppo.kl_penalty import KLPenalty
from rlhf_interp.ppo.reference_bank import ReferenceBank
from rlhf_interp.ppo import rm_refresh
from rlhf_interp.ppo import run_dir as run_dir_lib
from rlhf_interp.ppo.config import PPOConfig
from rlhf_interp.ppo.distributed import Distributed, on_main
from rlhf_interp.ppo.algorithms import UpdateContext, get_algorithm
from rlhf_interp.ppo.losses import RunningStd
from rlhf_interp.ppo.rollout import Rollout, collect
from rlhf_interp.ppo.state import TrainerState
from rlhf_interp.ppo.update import TrainingDivergedError, ppo_update
from rlhf_interp.prompts import load_prompts
from rlhf_interp.reward.functions import RewardFn, get_reward

PhaseCallback = Callable[["PPOTrainer", dict[str, Any], Rollout], None]
_ORDER_TAG = 17  # the minibatch orders' stream (rm_refresh uses 20, dpo 31; ranks are 0, 1, ...)


class PPOTrainer:
    """PPO with a KL penalty against a frozen reference, on a `TransformerBridge` policy.

    ``callbacks`` are called after every phase with ``(trainer, metrics, rollout)``; raise
    ``StopIteration`` from one to end training early (a checkpoint is still written).

    One run per ``run_dir``: a new run refuses a directory that holds another (``overwrite=True`` deletes that
    run's files first); `resume` continues one. When training stops — an exception, Ctrl-C, SIGTERM — the last
    whole phase is checkpointed (Ctrl-C and SIGTERM first let the current phase finish).
    """

    def __init__(self, config: PPOConfig, run_dir: str | Path, *, reward: RewardFn | None = None,
                 callbacks: list[PhaseCallback] | None = None, progress: bool = True, overwrite: bool = False,
                 distributed: Distributed | None = None):
        self.config = config.validate()
        # One process, or this one's place among several (accelerate launch): see ppo/distributed.py.
        self.dist = distributed or Distributed.from_env(config.device)
        self.dist.check_config(self.config)
        self.run_dir = Path(run_dir)
        self.callbacks = list(callbacks or [])
        self.progress = progress and self.dist.is_main
        self.overwrite = overwrite
        self.algorithm = get_algorithm(self.config.algorithm)  # advantages + loss (rlhf_interp/ppo/algorithms/)
        self.resumed = False  # set by load_state: a resumed run continues its directory instead of claiming it
        self._mid_phase = False  # True from the first change of state in a phase until its logs are written
        self.device = self.dist.device
        reuse_freed_memory()  # phases free and reallocate the same [batch, gen, vocab] tensors (core/allocator.py)
        self.reward = reward or get_reward(config.reward, **config.reward_kwargs)
        if not callable(self.reward):
            raise ValueError(f"The reward {config.reward!r} is a {type(self.reward).__name__}, not a function "
                            f"list[str] -> scores; see rlhf_interp.reward.functions.")
        self.prompts = load_prompts(config.prompts)
        self._build_models(policy_source=config.model)
        check_context(self.policy, self.prompts, config.max_new_tokens, what="prompt")
        optimizer, scheduler = self._build_optimizer()
        self.dist.sync_parameters([*self.hf_policy.parameters(), *self.head.parameters()])
        self.kl_penalty = KLPenalty.from_config(self.config)  # the one place that knows direction/estimator/placement
        kl_ctl = self.kl_penalty.controller()
        # sequence-level KL(ref||pi): the reference's own samples per prompt, drawn once (re-drawn from seeds on resume)
        self.reference_bank = self._reference_bank() if self.kl_penalty.uses_bank else None
        self.state = TrainerState(0, optimizer, scheduler, kl_ctl, RunningStd())
        self.history: list[dict[str, Any]] = []
        self.state.rm_refresh = rm_refresh.from_trainer(self)  # None unless rm_refresh_every: the RM stays frozen

    # What the next phase depends on besides the weights lives in `self.state` (checkpointed as a whole).
    phase = property(lambda self: self.state.phase, lambda self, value: setattr(self.state, "phase", value))
    optimizer = property(lambda self: self.state.optimizer)
    scheduler = property(lambda self: self.state.scheduler)
    kl_ctl = property(lambda self: self.state.kl_ctl)
    reward_std = property(lambda self: self.state.reward_std)
    rm_refresh = property(lambda self: self.state.rm_refresh)

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
        problems = pair_problems(self.policy, reference, names=("policy", "ref_model"))
        if problems:  # checked as diff and measure check a pair: tokenizer content, not only its size
            raise ValueError(f"ref_model {source!r} does not share the policy's ({self.config.model!r}) tokenizer, so "
                             f"the KL would compare unrelated tokens:\n  - " + "\n  - ".join(problems)
                             + "\nFix: use a reference with the policy's tokenizer (e.g. the model it starts from).")
        return reference.eval()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.hf_policy.parameters() if p.requires_grad]

    def _build_optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        cfg = self.config
        steps_per_phase = cfg.ppo_epochs * (cfg.batch_size // cfg.minibatch_size)
        optimizer = torch.optim.AdamW(
            [{"params": self.trainable_parameters(), "lr": cfg.lr},
             {"params": list(self.head.parameters()), "lr": cfg.head_lr}],
            weight_decay=cfg.weight_decay,
            # One fused kernel per step instead of foreach's several passes over weights, gradients and moments;
            # the same numbers up to rounding (benchmarks/learn_step.py: adamw_step_seconds, foreach vs fused).
            fused=self.device.type in ("cpu", "cuda"),
        )
        warmup, total = cfg.warmup_phases * steps_per_phase, cfg.phases * steps_per_phase

        def schedule(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            if not cfg.lr_decay:
                return 1.0
            return max(0.0, 1.0 - (step - warmup) / max(1, total - warmup))

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    def _reference_bank(self) -> ReferenceBank:
        """The bank of reference samples: sampled from the reference bridge, or the adapter-off policy (LoRA)."""
        cfg = self.config

        def sample(prompts: list[str], seed: int):
            if self.reference is None:
                with self.peft_model.disable_adapter():
                    return generate(self.policy, prompts, max_new_tokens=cfg.max_new_tokens,
                                    temperature=cfg.temperature, stop_at_eos=cfg.stop_at_eos, seed=seed)
            return generate(self.reference, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            stop_at_eos=cfg.stop_at_eos, seed=seed)

        pad = self.policy.tokenizer.pad_token_id
        return ReferenceBank(sample, self.reference_logits, size=cfg.kl_bank_size, seed=cfg.seed,
                             temperature=cfg.temperature, pad_token_id=pad if pad is not None else 0)

    def reference_logits(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.reference is None:
            with self.peft_model.disable_adapter():
                return self.policy(tokens, attention_mask=attention_mask)
        return self.reference(tokens, attention_mask=attention_mask)

    # ------------------------------------------------------------------ one phase
    def _phase_prompts(self) -> list[str]:
        """``batch_size / group_size`` prompts, each ``group_size`` times in a row (a group: GRPO / RLOO)."""
        n, k = self.config.batch_size // self.config.group_size, self.config.group_size
        rng = random.Random(mix_seed(self.config.seed, self.phase))
        prompts = rng.sample(self.prompts, min(n, len(self.prompts))) if len(self.prompts) >= n \
            else [rng.choice(self.prompts) for _ in range(n)]
        prompts = [p for p in prompts for _ in range(k)]
        return self.dist.shard(prompts)  # every process draws the same batch and samples its own block

    def _minibatch_orders(self) -> list[torch.Tensor]:
        """One shuffled order of the batch per PPO epoch, seeded by (seed, phase) through `mix_seed` (the one
        derivation); the tag keeps this stream apart from the phase's sampling seed ``mix_seed(seed, phase)``."""
        cfg = self.dist.local_config(self.config)  # this process's share of the batch
        generator = torch.Generator().manual_seed(mix_seed(cfg.seed, self.phase, _ORDER_TAG))
        return [torch.randperm(cfg.batch_size, generator=generator) for _ in range(cfg.ppo_epochs)]

    def run_phase(self) -> tuple[dict[str, Any], Rollout]:
        """One phase, in the algorithm's order: 1. sample and score a rollout; 2. scores; 3. advantages (the
        algorithm's); 4. the update (the algorithm's minibatches and loss); 5. metrics; 6. the KL controller."""
        cfg = self.config
        rm_info = self.rm_refresh.before_phase() if self.rm_refresh is not None else {}  # before the phase's seed
        local = self.dist.local_config(cfg)  # batch and minibatch sizes of this process (all of them in one process)
        torch.manual_seed(self.dist.seed(cfg.seed, self.phase))
        start = time.perf_counter()
        # CPU threads for this phase: fewer when other processes keep cores busy (OpenMP workers spin-wait for a
        # descheduled sibling); the user's own count wins. Measured in ~0.1 s, counted in `seconds` (core/threads.py).
        # Not across processes: they measure at the same moment, each blind to the others (the launcher sets it).
        adapt = self.device.type == "cpu" and not self.dist.active
        threads = apply_threads() if adapt else torch.get_num_threads()
        self.policy.eval()
        orders = self._minibatch_orders()
        # 1. rollout: samples, their log-probs under policy and reference, the KL terms, the rewards
        rollout = collect(
            self.policy, self.head, self.reference_logits, self.reward, self._phase_prompts(),
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, stop_at_eos=cfg.stop_at_eos,
            kl_penalty=self.kl_penalty, value_hook=cfg.value_head_hook,
            grad_rows=orders[0][:local.minibatch_size] if self.algorithm.learns_from_rollout else None,
            precision=cfg.precision, reference_model=self.reference,  # bf16: one autocast block per forward
        )
        if self.reference_bank is not None:  # the reference's samples of these prompts (drawn once per prompt)
            rollout.bank = self.reference_bank.batch(rollout.prompts, self.phase * cfg.ppo_epochs, cfg.max_new_tokens)
        rollout_seconds = time.perf_counter() - start
        self._mid_phase = True  # from here the phase changes state: no checkpoint until it is whole and logged
        mask = rollout.gen_mask

        # 2. scores: optional EOS penalty, scale, normalisation.
        scores = rollout.scores * cfg.reward_scale
        if cfg.missing_eos_penalty is not None:
            ended = (rollout.gen_tokens == self.policy.tokenizer.eos_token_id).any(-1)
            scores = scores - cfg.missing_eos_penalty * (~ended).float()
        if cfg.normalize_reward:
            self.reward_std.update(self.dist.gather(scores))
            scores = scores / self.reward_std.std

        # 3. advantages, by the algorithm (the KL in them when it is placed in the reward)
        kl_coef = self.kl_ctl.coef
        advantages, returns = self.algorithm.advantages(scores, rollout, self.kl_penalty.reward_coef(kl_coef), cfg,
                                                        self.dist)

        # 4. the update: the algorithm's minibatches and loss, one optimizer step each
        ctx = UpdateContext(self.policy, self.head, local, self.dist if self.dist.active else None,
                            self.reference_logits, kl_penalty=None if self.kl_penalty.in_reward else self.kl_penalty)
        stats = ppo_update(self.algorithm, ctx, self.optimizer, self.scheduler,
                           self.trainable_parameters() + list(self.head.parameters()), rollout, advantages, returns,
                           orders, kl_coef, self.phase)
        stats = self.dist.mean_stats(stats)

        # 5. metrics of the global batch
        rollout = self.dist.gather_rollout(rollout)  # the global batch: metrics, logs and callbacks see all of it
        mask = rollout.gen_mask
        seconds = time.perf_counter() - start
        n_tokens = int(mask.sum().item())
        kl_seq = (rollout.kl_value * mask).sum(-1)
        metrics: dict[str, Any] = {
            "phase": self.phase + 1,
            "reward_mean": rollout.scores.mean().item(),
            "reward_std": rollout.scores.std().item() if len(rollout.scores) > 1 else 0.0,
            "kl_pi_ref_per_token": masked_mean(rollout.kl_pi_ref, mask).item(),
            "kl_ref_pi_per_token": masked_mean(rollout.kl_ref_pi, mask).item(),
            self.kl_penalty.value_metric: masked_mean(rollout.kl_value, mask).item(),
            "kl_penalty_per_sequence": kl_seq.mean().item(),
            "non_score_reward": (-self.kl_penalty.reward_coef(kl_coef) * kl_seq).mean().item(),
            "entropy": masked_mean(rollout.entropy, mask).item(),
            "kl_coef": kl_coef,
            "lr": self.optimizer.param_groups[0]["lr"],
            **stats,
            "gen_tokens_per_sample": n_tokens / mask.shape[0],
            "seconds": seconds,
            "rollout_seconds": rollout_seconds,
            "tokens_per_second": n_tokens / seconds,
            "threads": threads,
            **self.dist.phase_stats(),  # processes; peak CUDA memory
            **rm_info,
        }
        # 6. the adaptive KL coefficient, from the exact KL in the configured direction
        self.kl_ctl.update(metrics[self.kl_penalty.controlled_metric], cfg.batch_size)
        self.phase += 1
        return metrics, rollout

    # ------------------------------------------------------------------ loop, logging, checkpoints
    def train(self) -> list[dict[str, Any]]:
        """Run until ``config.phases``; returns the metrics of the phases run in this call."""
        cfg = self.config
        if self.phase == 0 and not self.resumed:
            self.dist.on_main(run_dir_lib.start_run, self.run_dir, overwrite=self.overwrite, config=cfg)
        self.dist.on_main(cfg.save, self.run_dir / "config.yaml")  # one process writes the run directory
        self._loggers = run_dir_lib.RunLoggers(self.run_dir, cfg)
        if self.dist.is_main:
            self._loggers.open()
        ran: list[dict[str, Any]] = []
        bar = tqdm(total=cfg.phases, initial=self.phase, desc=cfg.algorithm.upper(), disable=not self.progress, unit="phase")
        interrupt = run_dir_lib.stop_at_phase_boundary(lambda: f"phase {self.phase + 1}")
        try:
            with interrupt as stop_requested:
                self._loop(ran, bar, stop_requested)
        except BaseException as err:
            self._checkpoint_on_the_way_out(err)
            if isinstance(err, FloatingPointError) and not isinstance(err, TrainingDivergedError):
                raise TrainingDivergedError(f"Phase {self.phase + 1}: {err} The last good checkpoint (intact): "
                                            f"{latest_checkpoint(self.run_dir)}.") from err
            raise
        finally:
            bar.close()
            self._loggers.close()
        self._checkpoint_if_behind()
        return ran

    def _loop(self, ran: list[dict[str, Any]], bar, stop_requested) -> None:
        cfg = self.config
        while self.phase < cfg.phases:
            if stop_requested():
                if self.phase == 0:
                    raise run_dir_lib.TrainingInterrupted("Interrupted before the first phase ended: nothing to save. "
                                                          "Start again with --overwrite.")
                path = self._checkpoint_if_behind()
                raise run_dir_lib.TrainingInterrupted(
                    f"Interrupted after phase {self.phase} of {cfg.phases}; {path.name} holds it. Continue with "
                    f"`rlhf-interp train --resume --out {self.run_dir}` (PPOTrainer.resume).")
            metrics, rollout = self.run_phase()
            ran.append(metrics)
            self.history.append(metrics)
            if self.dist.is_main:
                self._loggers.log(self.phase, metrics, rollout)
            self._mid_phase = False  # the phase is whole: state and logs agree
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward_mean']:.2f}", kl=f"{metrics['kl_pi_ref_per_token']:.3f}",
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

    def _checkpoint_if_behind(self) -> Path:
        """Checkpoint the current phase unless the newest checkpoint already holds it; return that checkpoint."""
        latest = latest_checkpoint(self.run_dir)
        if latest is None or read_meta(latest).get("step") != self.phase:
            return self.save_checkpoint()
        return latest

    def _checkpoint_on_the_way_out(self, err: BaseException) -> None:
        """After an exception: checkpoint the last whole phase (never a phase cut in the middle, never a failed
        write again) and say so on the exception, for the CLI's one-line message."""
        if self._mid_phase or self.phase == 0 or getattr(err, "rlhf_interp_checkpoint_failed", False):
            latest = latest_checkpoint(self.run_dir)
            if self.phase and latest is not None:
                err.add_note(f"The last checkpoint is {latest}; continue with --resume.")
            return
        if isinstance(err, run_dir_lib.TrainingInterrupted):
            return
        try:
            path = self._checkpoint_if_behind()
        except Exception as save_err:  # keep the first error; say that the checkpoint failed too
            err.add_note(f"Writing a checkpoint of phase {self.phase} failed as well: {save_err}")
            return
        err.add_note(f"Phase {self.phase} is saved in {path}; continue with --resume.")

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<phase>`` atomically (see `rlhf_interp.ppo.run_dir.save_checkpoint`)."""
        return self.dist.on_main(run_dir_lib.save_checkpoint, self)

    @classmethod
    def resume(cls, run_dir: str | Path, *, overrides: list[str] | None = None, **kwargs) -> "PPOTrainer":
        """Continue a run from its latest checkpoint (config from ``run_dir/config.yaml`` + overrides)."""
        run_dir = Path(run_dir)
        ckpt = on_main(run_dir_lib.resume_point, run_dir)
        config = PPOConfig.load(run_dir / "config.yaml", overrides, recorded=True)
        run_dir_lib.check_resume_config(ckpt, config)  # a change that cannot take effect: refused before loading
        trainer = cls(config, run_dir, **kwargs)
        trainer.load_state(ckpt)
        return trainer

    def load_state(self, ckpt: Path) -> None:
        """Back to the state of checkpoint ``ckpt``; logs of later phases are trimmed."""
        run_dir_lib.load_checkpoint(self, ckpt)
        self.resumed = True


def model_summary(trainer: PPOTrainer) -> str:
    total = sum(p.numel() for p in trainer.hf_policy.parameters())
    trainable = sum(p.numel() for p in trainer.trainable_parameters())
    return (f"policy {model_source(trainer.policy)}: {total / 1e6:.1f} M parameters, {trainable / 1e6:.1f} M trainable; "
            f"value head {sum(p.numel() for p in trainer.head.parameters()) / 1e6:.2f} M")
