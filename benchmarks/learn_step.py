"""The PPO learn step against the hardware: achieved GFLOP/s vs a measured matmul peak, fp32 and bf16.

    python benchmarks/learn_step.py [--model smollm2-135m] [--batch 8] [--seq 40] [--reps 5]

Peak: the median of square ``torch.mm`` (n = 2048) in each dtype. Learn step: forward of the policy on
[batch, seq] tokens, log-softmax gather, backward through every layer, AdamW step; FLOPs from the shape:
6 x parameters x tokens for the matmuls (2 forward, 4 backward) plus the unembedding counted the same way.
Attention's own FLOPs are small at this length and not counted. A torch.profiler table of one step says
where the time that is not matmul goes. Writes ``benchmarks/results/learn_step.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import write_result  # noqa: E402


def matmul_peak(dtype, n: int = 2048, reps: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=40)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from rlhf_interp import load_model

    peaks = {"float32": matmul_peak(torch.float32), "bfloat16": matmul_peak(torch.bfloat16)}
    model = load_model(args.model, device="cpu")
    model.train(False)
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in model.original_model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    tokens = torch.randint(100, 1000, (args.batch, args.seq))
    flops = 6 * n_params * args.batch * args.seq

    def step(autocast: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(tokens, return_type="logits")
        logp = torch.log_softmax(logits.float(), -1)[:, :-1].gather(-1, tokens[:, 1:, None])
        (-logp.mean()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    result = {"model": args.model, "batch": args.batch, "seq": args.seq, "params": n_params,
              "gflop_per_step": flops / 1e9, "peak_gflops": peaks, "modes": {}}
    for mode, autocast in (("float32", False), ("bf16_autocast", True)):
        step(autocast)
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            step(autocast)
            times.append(time.perf_counter() - t0)
        sec = statistics.median(times)
        peak = peaks["bfloat16" if autocast else "float32"]
        result["modes"][mode] = {"seconds": sec, "gflops": flops / sec / 1e9, "fraction_of_peak": flops / sec / 1e9 / peak}
        print(f"{mode:14s}: {sec:.2f} s/step, {flops / sec / 1e9:.1f} GFLOP/s = "
              f"{100 * flops / sec / 1e9 / peak:.0f}% of the {peak:.0f} GFLOP/s {('bf16' if autocast else 'fp32')} matmul peak")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(False)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    print(table)
    result["profile_fp32_top"] = [
        {"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "calls": e.count}
        for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]]
    write_result("learn_step", {"learn_step": result})


if __name__ == "__main__":
    main()
