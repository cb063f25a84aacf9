"""Time PPO phases on a model and quote throughput against the machine's fp32 matmul peak.

    python benchmarks/ppo_phase.py --config configs/periods.yaml --phases 3 [--peak-gflops 120]

Prints seconds per phase (rollout vs update), tokens/s, and an estimate of achieved GFLOP/s:
forward ~ 2 N FLOPs per token (N = parameters, the tied unembedding counted once as a matmul); backward =
activation gradients through the unembedding and the unfrozen blocks (2 FLOPs per such parameter) plus weight
gradients of the trainable parameters (2 per parameter).
Skip the first phase (warm-up) when quoting.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from rlhf_interp.ppo import PPOConfig, PPOTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/periods.yaml")
    parser.add_argument("--phases", type=int, default=3)
    parser.add_argument("--peak-gflops", type=float, default=120.0, help="measured fp32 matmul peak of the machine")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    config = PPOConfig.load(args.config, [f"phases={args.phases}", "checkpoint_every=0", *args.overrides])
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = PPOTrainer(config, run_dir, progress=False)
        n_params = sum(p.numel() for p in trainer.hf_policy.parameters())
        n_trainable = sum(p.numel() for p in trainer.trainable_parameters())
        n_embed = trainer.hf_policy.get_input_embeddings().weight.numel()
        n_layers = trainer.policy.cfg.n_layers
        n_backprop = n_embed + (n_params - n_embed) * (n_layers - config.freeze_layers) / n_layers
        start = time.perf_counter()
        history = trainer.train()
        total = time.perf_counter() - start
    timed = history[1:] or history
    per_phase = statistics.median(m["seconds"] for m in timed)
    rollout = statistics.median(m["rollout_seconds"] for m in timed)
    seq = config.max_new_tokens + 12  # ~12 prompt tokens with BOS
    tokens = config.batch_size * seq
    flops = (2 * n_params * config.batch_size * config.max_new_tokens  # sampling
             + 2 * 2 * n_params * tokens  # policy + reference passes
             + config.ppo_epochs * 2 * (n_params + n_backprop + n_trainable) * tokens)  # updates: fwd + bwd
    print(f"model {config.model}: {n_params / 1e6:.1f} M params; batch {config.batch_size} x {config.max_new_tokens} new tokens; "
          f"{config.ppo_epochs} epochs x {config.batch_size // config.minibatch_size} minibatches")
    print(f"median seconds/phase {per_phase:.2f} (rollout {rollout:.2f}, update {per_phase - rollout:.2f}); "
          f"{config.batch_size * config.max_new_tokens / per_phase:.1f} generated tokens/s; total {total:.1f} s")
    print(f"~{flops / 1e9:.0f} GFLOP per phase -> {flops / 1e9 / per_phase:.1f} GFLOP/s = "
          f"{100 * flops / 1e9 / per_phase / args.peak_gflops:.0f}% of the {args.peak_gflops:.0f} GFLOP/s matmul peak "
          f"(attention and softmax FLOPs not counted)")


if __name__ == "__main__":
    main()
