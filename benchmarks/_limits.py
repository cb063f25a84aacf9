"""What a PPO phase could take on this machine at best: its matmul FLOPs at the measured matmul peak of the
precision it ran in, and its sampling's weight reads at the measured memory bandwidth.

Why measured, not a constant: a fixed "120 GFLOP/s" peak made `ppo_phase.py` print "235% of peak" on a CPU with
bf16 units (issue 34). The peaks come from `learn_step.json` (``peak_gflops``: median square ``torch.mm`` in fp32
and bf16, taken on a quiet machine) when that result exists, else from a quick measurement here (a few seconds,
both precisions, `learn_step.matmul_peak`). No result records a memory bandwidth, so it is measured here: the
median of large ``copy_`` calls (read + write bytes / time).

The limits (all lower bounds on the time, so each achieved fraction is <= 1 when the peaks are right):

- **update**: its matmul FLOPs / the peak of the phase's precision.
- **rollout**: sampling is memory-bound at small batch -- each decoding step reads every weight once (the tied
  unembedding counted once; bf16 sampling reads bf16 copies, 2 bytes a weight, fp32 reads 4), so sampling takes
  at least max(weight bytes x steps / bandwidth, sampling FLOPs / peak); the policy and reference scoring
  passes are compute-bound: their FLOPs / peak. The rollout's limit is the sum.
- **phase**: FLOPs of the whole phase / peak (``flop_limit_seconds``), and rollout + update limits
  (``limit_seconds``, the bandwidth-aware one).

FLOPs, matmuls only (attention scores and softmax not counted): forward ~ 2 N per token (N = parameters, the
tied unembedding once); backward = activation gradients through the unembedding and the unfrozen blocks (2 per
such parameter) plus weight gradients of the trainable parameters (2 per parameter).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

PRECISION_BYTES = {"fp32": 4, "bf16": 2}
# Profiler op names whose self time is matrix multiplication (dense layers, attention, their backward's mm calls).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_dot_product_flash_attention",
              "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward")
PROMPT_TOKENS = 12  # ~ prompt tokens with BOS in the bundled prompts (the FLOP count's sequence = this + new tokens)


def measure_peaks(n: int = 1024, reps: int = 5) -> dict[str, float]:
    """Square ``torch.mm`` GFLOP/s in fp32 and bf16 at the current torch threads (a few seconds at n = 1024)."""
    import torch

    from learn_step import matmul_peak  # one measurement of the peak for every benchmark

    return {"fp32": matmul_peak(torch.float32, n, reps), "bf16": matmul_peak(torch.bfloat16, n, reps)}


def machine_peaks(results: Path, *, n: int = 1024, reps: int = 5) -> dict:
    """``{"fp32", "bf16"}`` GFLOP/s with their ``source``: ``learn_step.json`` in ``results`` if it records
    them on this machine's CPU (`_bench_common.same_cpu`), else measured now (``n`` x ``n`` matmuls)."""
    from _bench_common import machine_info, same_cpu

    path = Path(results) / "learn_step.json"
    if path.exists():
        data = json.loads(path.read_text())
        peaks = data.get("learn_step", {}).get("peak_gflops", {})
        machine = data.get("machine", {})
        if all(isinstance(peaks.get(k), (int, float)) and peaks[k] > 0 for k in PRECISION_BYTES) and \
                same_cpu(machine, machine_info()):
            return {"fp32": float(peaks["fp32"]), "bf16": float(peaks["bf16"]), "source": str(path.name),
                    "measured": machine.get("date"), "threads": machine.get("torch_threads"),
                    "noisy": machine.get("noisy")}
    import torch

    return {**measure_peaks(n, reps), "source": f"measured now (torch.mm {n}x{n}, median of {reps})",
            "threads": torch.get_num_threads()}


def memory_bandwidth(megabytes: int = 512, reps: int = 5) -> dict:
    """GB/s of a large array copy (bytes read + written / median time) at the current torch threads."""
    import torch

    src = torch.ones(megabytes * (1 << 20) // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch: page faults are not bandwidth
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    moved = 2 * src.numel() * src.element_size()
    return {"gbs": moved / statistics.median(times) / 1e9, "source": f"measured now (copy of {megabytes} MiB, "
            f"median of {reps})", "threads": torch.get_num_threads()}


def phase_flops(n_params: int, n_backprop: float, n_trainable: int, *, batch: int, new_tokens: int,
                epochs: int) -> dict[str, float]:
    """Matmul FLOPs of one phase split into sampling, scoring (policy + reference passes) and update."""
    tokens = batch * (new_tokens + PROMPT_TOKENS)
    sampling = 2 * n_params * batch * new_tokens
    scoring = 2 * 2 * n_params * tokens
    update = epochs * 2 * (n_params + n_backprop + n_trainable) * tokens
    return {"sampling": sampling, "scoring": scoring, "rollout": sampling + scoring, "update": update,
            "total": sampling + scoring + update}


def phase_limits(counts: dict, work: dict, seconds: dict, peaks: dict, bandwidth_gbs: float) -> dict:
    """The limits of one phase and the achieved fraction of each.

    ``counts``: ``n_params``, ``n_backprop``, ``n_trainable``; ``work``: ``batch``, ``new_tokens``, ``epochs``,
    ``precision``; ``seconds``: measured medians ``phase``, ``rollout``, ``update``; ``peaks``: GFLOP/s per
    precision; ``bandwidth_gbs``: measured memory bandwidth."""
    precision = work["precision"]
    peak = peaks[precision] * 1e9
    flops = phase_flops(counts["n_params"], counts["n_backprop"], counts["n_trainable"], batch=work["batch"],
                        new_tokens=work["new_tokens"], epochs=work["epochs"])
    weight_bytes = counts["n_params"] * PRECISION_BYTES[precision]
    memory_seconds = weight_bytes * work["new_tokens"] / (bandwidth_gbs * 1e9)
    sampling_limit = max(memory_seconds, flops["sampling"] / peak)
    rollout_limit = sampling_limit + flops["scoring"] / peak
    update_limit = flops["update"] / peak
    flop_limit = flops["total"] / peak
    phase = seconds["phase"]
    return {
        "precision": precision, "peak_gflops": peaks[precision], "bandwidth_gbs": bandwidth_gbs, "counts": counts,
        "gflop": {k: v / 1e9 for k, v in flops.items()},
        "achieved_gflops": flops["total"] / phase / 1e9,
        "flop_limit_seconds": flop_limit, "fraction_of_flop_limit": flop_limit / phase,
        "rollout": {"weight_bytes_per_decode_step": weight_bytes, "decode_steps": work["new_tokens"],
                    "memory_limit_seconds": memory_seconds, "sampling_bound": "memory" if memory_seconds >=
                    flops["sampling"] / peak else "flops", "limit_seconds": rollout_limit,
                    "seconds": seconds["rollout"], "fraction_of_limit": rollout_limit / seconds["rollout"],
                    "fraction_of_memory_limit": memory_seconds / seconds["rollout"]},
        "update": {"limit_seconds": update_limit, "seconds": seconds["update"],
                   "fraction_of_limit": update_limit / seconds["update"]},
        "limit_seconds": rollout_limit + update_limit, "fraction_of_limit": (rollout_limit + update_limit) / phase,
    }


def matmul_share(run) -> dict:
    """Run ``run()`` once under torch's profiler and return the share of its CPU time spent in matmul kernels.

    Why: the FLOP limit assumes every matmul at the square-matrix peak; a phase's matmuls have smaller shapes
    (8-16 rows at decoding) and run slower. The measured share says what the phase would take if everything
    else took no time at all (``share x its seconds``): a floor no change short of fewer FLOPs or faster
    kernels can beat, and so the largest ratio against another trainer that such changes could reach."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    return {"matmul_share": matmul / total if total else float("nan"), "threads": torch.get_num_threads(),
            "top_ops": [{"op": e.key, "share": e.self_cpu_time_total / total} for e in top]}


def param_counts(trainer, freeze_layers: int) -> dict[str, float]:
    """Parameters of a `PPOTrainer`'s policy: all, those gradients flow back through, and the trainable ones."""
    n_params = sum(p.numel() for p in trainer.hf_policy.parameters())
    n_embed = trainer.hf_policy.get_input_embeddings().weight.numel()
    n_layers = trainer.policy.cfg.n_layers
    return {"n_params": n_params, "n_trainable": sum(p.numel() for p in trainer.trainable_parameters()),
            "n_backprop": n_embed + (n_params - n_embed) * (n_layers - freeze_layers) / n_layers}


def describe(limits: dict) -> str:
    """Two lines for a console: the phase against its FLOP limit, the rollout and update against theirs."""
    r, u = limits["rollout"], limits["update"]
    return (f"~{limits['gflop']['total']:.0f} GFLOP per phase -> {limits['achieved_gflops']:.1f} GFLOP/s = "
            f"{100 * limits['fraction_of_flop_limit']:.0f}% of the {limits['precision']} FLOP limit "
            f"({limits['flop_limit_seconds']:.2f} s at {limits['peak_gflops']:.0f} GFLOP/s)\n"
            f"rollout {100 * r['fraction_of_limit']:.0f}% of its limit ({r['limit_seconds']:.2f} s: sampling "
            f"{r['weight_bytes_per_decode_step'] / 1e6:.0f} MB of weights x {r['decode_steps']} steps at "
            f"{limits['bandwidth_gbs']:.1f} GB/s = {r['memory_limit_seconds']:.2f} s, {r['sampling_bound']}-bound, "
            f"+ scoring FLOPs); update {100 * u['fraction_of_limit']:.0f}% of its FLOP limit "
            f"({u['limit_seconds']:.2f} s)")
