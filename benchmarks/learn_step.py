"""The PPO learn step against the hardware: achieved GFLOP/s vs a measured matmul peak, fp32 and bf16, with a
profile of where the time that is not matmul goes.

    python benchmarks/learn_step.py [--model smollm2-135m] [--batch 8] [--prompt 12] [--gen 24] [--reps 5]

Peak: the median of square ``torch.mm`` (n = 2048) in fp32 and in bf16. Learn step: exactly the update's
minibatch step (`rlhf_interp.ppo.rollout.policy_forward`: policy forward with the value head, logits only at
the ``gen`` predicting columns, fp32 log-softmax and gather; backward; AdamW on every block weight and the
head; embeddings frozen, the PPO default; fused AdamW, as the trainer builds it), in ``fp32`` and ``bf16`` (`bridge.precision`: autocast, fp32
unembedding). FLOPs from the shapes, matmuls only: per token 2 x (block weights) forward, plus attention's
QK^T and PV (2 x 2 x seq x d_head x heads per layer), plus the unembedding at the ``gen`` kept columns;
backward = 2x forward for the blocks (input and weight gradients) and 1x for the frozen unembedding (input
gradient only). Each mode's own profile (torch.profiler, one step) is split into matmul kernels and the rest,
so the JSON says how much of the step is not matmul and which operators that is; and one AdamW step alone,
foreach vs fused. Writes
``benchmarks/results/learn_step.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import set_threads, write_result

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
              "aten::_scaled_dot_product", "mkldnn", "aten::mkldnn_linear")


def matmul_peak(dtype, n: int = 2048, reps: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def step_flops(cfg, batch: int, seq: int, gen: int) -> dict[str, float]:
    """Matmul FLOPs of one learn step from the model's shapes (see the module docstring)."""
    d, layers, heads, kv_heads = cfg.d_model, cfg.n_layers, cfg.n_heads, getattr(cfg, "n_key_value_heads", None)
    d_head, d_mlp, vocab = cfg.d_head, cfg.d_mlp, cfg.d_vocab
    kv = (kv_heads or heads) * d_head
    block_weights = layers * (d * heads * d_head + 2 * d * kv + heads * d_head * d + 3 * d * d_mlp)
    tokens = batch * seq
    block_fwd = 2 * block_weights * tokens + layers * 2 * 2 * batch * seq * seq * heads * d_head
    unembed_fwd = 2 * d * vocab * batch * gen
    head_fwd = 2 * (d * 4 * d + 4 * d) * tokens  # the MLP value head
    forward = block_fwd + unembed_fwd + head_fwd
    backward = 2 * block_fwd + unembed_fwd + 2 * head_fwd
    return {"forward": forward, "backward": backward, "total": forward + backward}


def profile_split(prof) -> dict:
    """Self CPU time of the step: matmul kernels vs everything else, with the ten largest others."""
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    is_matmul = [any(k in e.key for k in MATMUL_OPS) for e in events]
    matmul = sum(e.self_cpu_time_total for e, m in zip(events, is_matmul) if m)
    others = sorted((e for e, m in zip(events, is_matmul) if not m), key=lambda e: -e.self_cpu_time_total)[:10]
    return {"self_cpu_ms": total / 1e3, "matmul_fraction": matmul / total if total else 0.0,
            "top_other_ops": [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "calls": e.count,
                               "fraction": e.self_cpu_time_total / total} for e in others]}


def adamw_steps(params, reps: int = 3) -> dict[str, float]:
    """Median seconds of one AdamW step over ``params`` (random gradients), foreach vs fused, alternated: what
    switching the trainer to ``fused=True`` bought."""
    import torch
    from _bench_common import alternate

    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizers = {"foreach": torch.optim.AdamW(params, lr=1e-12, foreach=True),
                  "fused": torch.optim.AdamW(params, lr=1e-12, fused=True)}
    times = alternate({k: opt.step for k, opt in optimizers.items()}, reps=reps)
    for p in params:
        p.grad = None
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=8, help="minibatch rows (PPO default: 16 / 2)")
    parser.add_argument("--prompt", type=int, default=12, help="prompt tokens incl. BOS")
    parser.add_argument("--gen", type=int, default=24, help="generated tokens")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    args = parser.parse_args()
    threads = set_threads(args.threads)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from rlhf_interp import load_model
    from rlhf_interp.bridge.freezing import freeze_layers
    from rlhf_interp.bridge.heads import ValueHead
    from rlhf_interp.ppo.rollout import policy_forward

    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    model = load_model(args.model, device="cpu")
    freeze_layers(model.original_model, 0, train_embeddings=False)  # the PPO default: every block trained
    head = ValueHead(model.cfg.d_model)
    params = [p for p in model.original_model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-7, fused=True)  # as PPOTrainer builds it
    seq = args.prompt + args.gen
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(100, 10000, (args.batch, seq), generator=generator)
    tokens[:, 0] = model.tokenizer.bos_token_id or 1
    mask = torch.ones_like(tokens)
    mask[: args.batch // 2, : args.prompt // 3] = 0  # left padding in half the rows, as in a rollout
    flops = step_flops(model.cfg, args.batch, seq, args.gen)

    def step(precision: str) -> None:
        logits, values = policy_forward(model, head, tokens, mask, args.prompt, precision=precision)
        logp = torch.log_softmax(logits, -1).gather(-1, tokens[:, args.prompt:, None]).squeeze(-1)
        (-logp.mean() + values.square().mean()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    result = {"model": args.model, "batch": args.batch, "prompt": args.prompt, "gen": args.gen, "threads": threads,
              "gflop_per_step": flops["total"] / 1e9, "gflop_forward": flops["forward"] / 1e9,
              "peak_gflops": peaks, "modes": {}}
    for precision in ("fp32", "bf16"):
        step(precision)  # warm-up: first-call allocations and oneDNN kernel selection
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            step(precision)
            times.append(time.perf_counter() - t0)
        sec = statistics.median(times)
        gflops = flops["total"] / sec / 1e9
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(precision)
        split = profile_split(prof)
        result["modes"][precision] = {"seconds": sec, "seconds_all": times, "gflops": gflops,
                                      "fraction_of_peak": gflops / peaks[precision],
                                      "fraction_of_fp32_peak": gflops / peaks["fp32"], "profile": split}
        print(f"{precision}: {sec:.2f} s/step, {gflops:.1f} GFLOP/s = {100 * gflops / peaks[precision]:.0f}% of the "
              f"{peaks[precision]:.0f} GFLOP/s {precision} matmul peak; matmul {100 * split['matmul_fraction']:.0f}% "
              f"of the profiled time; largest others: "
              + ", ".join(f"{o['op']} {100 * o['fraction']:.0f}%" for o in split["top_other_ops"][:4]))
    result["adamw_step_seconds"] = adamw_steps(params)
    print("AdamW step alone: " + ", ".join(f"{k} {v:.3f} s" for k, v in result["adamw_step_seconds"].items()))
    fast = result["modes"]["bf16"]
    result["bf16_speedup"] = result["modes"]["fp32"]["seconds"] / fast["seconds"]
    result["headline"] = {
        "what": f"PPO learn step (batch {args.batch} x {seq} tokens, fwd+bwd+AdamW) vs the measured matmul peak",
        "result": (f"bf16 {fast['gflops']:.0f} GFLOP/s = {100 * fast['fraction_of_peak']:.0f}% of the bf16 peak "
                   f"({100 * fast['profile']['matmul_fraction']:.0f}% of its time in matmuls); fp32 "
                   f"{100 * result['modes']['fp32']['fraction_of_peak']:.0f}% of the fp32 peak; bf16 "
                   f"{result['bf16_speedup']:.2f}x faster"),
        "target": "stated, with a profile", "met": True}
    write_result("learn_step", {"learn_step": result})


if __name__ == "__main__":
    main()
