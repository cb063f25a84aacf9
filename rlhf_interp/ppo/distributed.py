"""Data-parallel PPO over several processes (Hugging Face accelerate; gloo on CPUs, NCCL on GPUs), and the
peak CUDA memory of each phase in the logs.

What each process does in a phase, and why the result is the one-process update on the whole batch:

- **Rollouts are sharded.** Every process draws the same ``batch_size`` prompts (seeded by ``(seed, phase)``)
  and samples its own contiguous block of ``batch_size / processes`` of them, with its own RNG stream.
- **Advantages are whitened over the global batch**: each process gathers every process's advantages and
  masks and whitens with `losses.whiten` itself (the one home of that formula), then keeps its own rows.
- **Gradients are all-reduced, weighted by tokens.** Each loss term is a masked mean over the minibatch's
  generated tokens. A plain average of per-process means (what DDP does) would weight a process's tokens by
  ``1 / its token count``, which differs between processes when sequences end at different lengths. `backward`
  instead sums ``n_r * grad_r`` and divides by ``sum n_r``: exactly the gradient of the masked mean over the
  global minibatch. One bucketed all-reduce per ~16M gradient values, as DDP does.
- **One process writes**: checkpoints, logs, the run directory's marker (`on_main`). Every process holds the
  same weights and optimizer state (same start, same reduced gradients), so rank 0's checkpoint resumes all.
- **Every process logs the global batch**: `gather_rollout` concatenates the rollouts, so the metrics (and the
  adaptive KL controller fed from them) are computed, identically on every rank, over all samples.

Why not ``accelerator.prepare(model)`` (DDP): the update's first minibatch reuses the rollout's own forward
pass, and the value head reads a hook of the bridge; DDP's reducer expects every forward to go through its
wrapper. Reducing gradients explicitly after ``backward`` needs neither, and gives the token weighting above.
FSDP (sharded weights) is not offered: at the sizes this toolkit trains (up to ~2B parameters) a replica per
GPU fits, and `docs/scaling.md` says when to move to LoRA or a frozen trunk instead.

bf16 is the config's ``precision`` (`bridge.precision`: one autocast block per forward, finite masks); this
module adds no autocast of its own -- a block around a whole phase would span optimizer steps and serve
stale cached bf16 weights.

Launch: ``accelerate launch --multi_gpu --num_processes N -m rlhf_interp.cli train CONFIG --out DIR`` (on CPUs
too: gloo), or ``rlhf-interp train CONFIG --out DIR --processes N``, which runs exactly that. A single
process (``WORLD_SIZE`` unset or 1) never touches ``torch.distributed``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor

from rlhf_interp.bridge.loading import select_device
from rlhf_interp.core.seeding import mix_seed

T = TypeVar("T")
BUCKET_NUMEL = 1 << 24  # gradient values per all-reduce (64 MB in fp32), like DDP's buckets
_MAX_STATS = ("max_abs_log_ratio",)  # per-phase statistics reduced by max, not mean


class Distributed:
    """This process's place in a run: ``rank`` of ``world_size``, its ``device``, and the collective steps the
    trainer needs. With one process every method is the identity (and no process group exists)."""

    def __init__(self, device: torch.device, *, rank: int = 0, world_size: int = 1):
        self.device, self.rank, self.world_size = device, rank, world_size

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_env(cls, device: str | None = None) -> Distributed:
        """One process, or the process group a launcher (accelerate / torchrun) described in the environment.

        ``device``: the config's ``device`` (None: this rank's GPU when there is one, else the CPU)."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls(select_device(device))
        from accelerate import PartialState

        cpu = not torch.cuda.is_available() or (device is not None and torch.device(device).type == "cpu")
        state = PartialState(cpu=cpu)
        chosen = torch.device("cpu") if cpu else state.device
        return cls(chosen, rank=state.process_index, world_size=state.num_processes)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Several processes (collectives run); False for a single process."""
        return self.world_size > 1

    # ------------------------------------------------------------------ batch layout
    def check_config(self, config: Any) -> None:
        """Each process samples ``batch_size / processes`` prompts and steps on ``minibatch_size / processes``."""
        for name in ("batch_size", "minibatch_size"):
            value = getattr(config, name)
            if value % self.world_size:
                raise ValueError(f"Config field {name!r} = {value} must be divisible by the number of processes "
                                 f"({self.world_size}): each process takes {name} / processes of it.")

    def local_config(self, config: T) -> T:
        """The config as one process sees it: its share of ``batch_size`` and ``minibatch_size``."""
        if not self.active:
            return config
        return dataclasses.replace(config, batch_size=config.batch_size // self.world_size,
                                   minibatch_size=config.minibatch_size // self.world_size)

    def shard(self, items: list[T]) -> list[T]:
        """This process's contiguous block of ``items`` (rank order = the original order when gathered)."""
        if not self.active:
            return items
        if len(items) % self.world_size:
            raise ValueError(f"{len(items)} items cannot be split evenly over {self.world_size} processes.")
        n = len(items) // self.world_size
        return items[self.rank * n:(self.rank + 1) * n]

    def seed(self, seed: int, phase: int) -> int:
        """The phase's sampling seed; each process its own stream (one process: exactly the old seed)."""
        return mix_seed(seed, phase) if not self.active else mix_seed(seed, phase, self.rank)

    # ------------------------------------------------------------------ collectives
    def gather(self, tensor: Tensor, *, dim: int = 1, pad_first: bool = False, pad_value: float = 0) -> Tensor:
        """Every process's rows, in rank order, padded along ``dim`` to the longest (accelerate's padding)."""
        if not self.active:
            return tensor
        from accelerate.utils import gather, pad_across_processes

        if tensor.ndim > dim:
            tensor = pad_across_processes(tensor.contiguous(), dim=dim, pad_index=pad_value, pad_first=pad_first)
        return gather(tensor.contiguous())

    def whiten(self, values: Tensor, mask: Tensor) -> Tensor:
        """`losses.whiten` over the global batch (all processes' entries), returning this process's rows."""
        from rlhf_interp.ppo.losses import whiten

        if not self.active:
            return whiten(values, mask)
        rows, width = values.shape
        full = whiten(self.gather(values), self.gather(mask))
        return full[self.rank * rows:(self.rank + 1) * rows, :width]

    def gather_rollout(self, rollout):
        """The whole batch's rollout on every process, for metrics, logs and callbacks (graphs dropped).

        Prompts are left-padded to the longest prompt, generations right-padded with mask 0; pad token id 0."""
        if not self.active:
            return rollout
        from accelerate.utils import gather_object

        prompt, gen = rollout.tokens[:, :rollout.prompt_len], rollout.tokens[:, rollout.prompt_len:]
        prompt_mask, gen_attention = (rollout.attention_mask[:, :rollout.prompt_len],
                                      rollout.attention_mask[:, rollout.prompt_len:])
        prompt, prompt_mask = self.gather(prompt, pad_first=True), self.gather(prompt_mask, pad_first=True)
        per_token = {f.name: self.gather(getattr(rollout, f.name)) for f in dataclasses.fields(rollout)
                     if f.name in ("gen_mask", "logprobs", "ref_logprobs", "values", "kl_value", "kl_score",
                                   "kl_pi_ref", "kl_ref_pi", "entropy")}
        return dataclasses.replace(
            rollout, prompts=gather_object(list(rollout.prompts)), completions=gather_object(list(rollout.completions)),
            tokens=torch.cat([prompt, self.gather(gen)], 1), prompt_len=prompt.shape[1],
            attention_mask=torch.cat([prompt_mask, self.gather(gen_attention)], 1), scores=self.gather(rollout.scores),
            ref_logp_all=None, live=None, **per_token)

    def mean_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """Per-process update statistics -> their mean over processes (``max_abs_log_ratio``: the max)."""
        if not self.active or not stats:
            return stats
        keys = sorted(stats)
        values = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=self.device)
        maxima = values.clone()
        torch.distributed.all_reduce(values)
        torch.distributed.all_reduce(maxima, op=torch.distributed.ReduceOp.MAX)
        return {k: float(maxima[i] if k in _MAX_STATS else values[i] / self.world_size) for i, k in enumerate(keys)}

    def backward(self, loss: Tensor, mask: Tensor, params: Iterable[torch.nn.Parameter]) -> None:
        """``loss.backward()``, then every process's gradients combined into the gradient of the loss over the
        global minibatch. ``loss`` must be a sum of masked means over ``mask`` (as PPO's terms are)."""
        loss.backward()
        if not self.active:
            return
        params = list(params)
        count = mask.detach().float().sum().to(self.device)
        total = count.clone()
        torch.distributed.all_reduce(total)
        scale_in, scale_out = float(count), 1.0 / max(float(total), 1.0)  # masked_mean clamps counts at 1 too
        for bucket in _buckets(params):
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in bucket]
            flat = torch._utils._flatten_dense_tensors(grads) * scale_in
            torch.distributed.all_reduce(flat)
            flat *= scale_out
            for p, reduced in zip(bucket, torch._utils._unflatten_dense_tensors(flat, grads)):
                if p.grad is None:
                    p.grad = reduced.clone()
                else:
                    p.grad.copy_(reduced)

    @torch.no_grad()
    def sync_parameters(self, params: Iterable[Tensor]) -> None:
        """Copy rank 0's weights to every process (as DDP does at start), so replicas cannot drift apart."""
        if self.active:
            for p in params:
                torch.distributed.broadcast(p.data, src=0)

    def barrier(self) -> None:
        if self.active:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    def on_main(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on rank 0 only (a write), then hand its result -- or its exception -- to every process."""
        if not self.active:
            return fn(*args, **kwargs)
        from accelerate.utils import broadcast_object_list

        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn(*args, **kwargs))
            except Exception as err:  # noqa: BLE001 -- every rank raises it, instead of the others waiting forever
                box[0] = ("error", err)
        broadcast_object_list(box, from_process=0)
        status, value = box[0]
        if status == "error":
            raise value
        return value

    # ------------------------------------------------------------------ device side
    def phase_stats(self) -> dict[str, float]:
        """Extra per-phase metrics: the number of processes (when several) and, on CUDA, the phase's peak
        ``torch.cuda.max_memory_allocated`` in GB (the largest over processes); the peak is then reset."""
        stats: dict[str, float] = {}
        if self.active:
            stats["processes"] = self.world_size
        if self.device.type == "cuda":
            peak = torch.tensor(torch.cuda.max_memory_allocated(self.device) / 1e9, device=self.device)
            if self.active:
                torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
            stats["cuda_max_memory_allocated_gb"] = float(peak)
            torch.cuda.reset_peak_memory_stats(self.device)
        return stats


def _buckets(params: list[torch.nn.Parameter]) -> Iterator[list[torch.nn.Parameter]]:
    """Consecutive groups of parameters of one dtype and device with at most `BUCKET_NUMEL` values each."""
    bucket: list[torch.nn.Parameter] = []
    size = 0
    for p in params:
        if bucket and (size + p.numel() > BUCKET_NUMEL or p.dtype != bucket[0].dtype or p.device != bucket[0].device):
            yield bucket
            bucket, size = [], 0
        bucket.append(p)
        size += p.numel()
    if bucket:
        yield bucket


def on_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`Distributed.on_main` for callers outside a trainer (the CLI claiming its run directory)."""
    return Distributed.from_env("cpu" if not torch.cuda.is_available() else None).on_main(fn, *args, **kwargs)


# ----------------------------------------------------------------------------------------------
# Launching


def launch_command(processes: int, cli_args: list[str], *, port: int | None = None) -> list[str]:
    """The ``accelerate launch`` command that runs ``rlhf-interp CLI_ARGS`` in ``processes`` processes
    (``--multi_gpu`` also drives several CPU processes over gloo)."""
    if processes < 2:
        raise ValueError(f"--processes {processes}: give 2 or more (one process needs no launcher).")
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no",  # precision: the config's
            "--main_process_port", str(port or free_port()), "-m", "rlhf_interp.cli", *cli_args]


def launch(processes: int, cli_args: list[str]) -> int:
    """Run the CLI in ``processes`` processes and wait; returns the launcher's exit code."""
    return subprocess.run(launch_command(processes, cli_args), check=False).returncode


def strip_processes_flag(argv: list[str]) -> list[str]:
    """``argv`` without ``--processes N`` / ``--processes=N`` (what each launched process runs)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            out.append(arg)
    return out


def free_port() -> int:
    """A TCP port free right now on this machine (for the process group's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
