"""What keeping freed memory on the glibc heap buys a PPO phase (`rlhf_interp.core.allocator`).

    python benchmarks/allocator.py [--rounds 3] [--phases 4]

The same work as `trl_ppo_phase.py`'s "ours" (SmolLM2-135M, batch 16 x 24 new tokens, 2 epochs x 2 minibatches,
every weight trained, bf16), run in two kinds of subprocess, alternated ``--rounds`` times: as shipped (the
trainer calls `reuse_freed_memory`) and with that call replaced by a no-op (glibc's defaults: every block above
its mmap threshold is mapped afresh and page-faulted in again). The first phase of each process is dropped as
warm-up. Reports medians per phase, the ratio, and the minor page faults per phase of each side. Writes
``benchmarks/results/allocator.json``.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import median, report_to_parent, run_child, set_threads, write_result
from trl_ppo_phase import EPOCHS, MINIBATCHES, KL_COEF, LR


def child(args: argparse.Namespace) -> None:
    set_threads(args.threads)
    import tempfile

    from rlhf_interp.ppo import PPOConfig, PPOTrainer, trainer as trainer_module

    if args.child == "default":
        trainer_module.reuse_freed_memory = lambda *a, **k: False  # glibc's defaults
    config = PPOConfig.load(None, [
        "model=smollm2-135m", "reward=char_count", "reward_kwargs={char: '.'}", f"phases={args.phases}",
        "batch_size=16", "max_new_tokens=24", f"ppo_epochs={EPOCHS}", f"minibatch_size={16 // MINIBATCHES}",
        "freeze_layers=0", "train_embeddings=true", "kl_estimator=k1", "kl_placement=reward", "kl_direction=pi_ref",
        f"kl_coef={KL_COEF}", "adaptive_kl=false", f"lr={LR}", "checkpoint_every=0", "sample_every=0",
        "stop_at_eos=false", "precision=bf16"])
    faults: list[int] = []

    def count_faults(trainer, metrics, rollout) -> None:
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)

    with tempfile.TemporaryDirectory() as out:
        trainer = PPOTrainer(config, out, progress=False, callbacks=[count_faults])
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        history = trainer.train()
    per_phase = [b - a for a, b in zip([start, *faults[:-1]], faults)]
    report_to_parent({"seconds": [m["seconds"] for m in history], "faults": per_phase})


def spawn(which: str, args: argparse.Namespace) -> dict:
    flags = ["--phases", str(args.phases)] + (["--threads", str(args.threads)] if args.threads else [])
    return run_child(__file__, which, flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phases", type=int, default=4, help="PPO phases per process (first dropped)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    parser.add_argument("--child", choices=["shipped", "default"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    seconds: dict[str, list[float]] = {"shipped": [], "default": []}
    faults: dict[str, list[int]] = {"shipped": [], "default": []}
    for r in range(args.rounds):
        for which in ("shipped", "default"):
            out = spawn(which, args)
            seconds[which] += out["seconds"][1:]
            faults[which] += out["faults"][1:]
            print(f"round {r + 1}: {which:7s} " + " ".join(f"{t:.1f}" for t in out["seconds"]) + " s (first = warm-up)")
    shipped, default = median(seconds["shipped"]), median(seconds["default"])
    speedup = default / shipped
    print(f"median seconds per phase: freed memory reused {shipped:.2f}, glibc defaults {default:.2f} -> "
          f"{speedup:.2f}x; minor page faults per phase {median(faults['shipped']):.0f} vs "
          f"{median(faults['default']):.0f}")
    write_result("allocator", {"allocator": {
        "shipped_seconds": seconds["shipped"], "default_seconds": seconds["default"],
        "shipped_seconds_median": shipped, "default_seconds_median": default, "speedup": speedup,
        "shipped_faults_per_phase": faults["shipped"], "default_faults_per_phase": faults["default"],
        "work": {"model": "smollm2-135m", "batch": 16, "new_tokens": 24, "epochs": EPOCHS, "minibatches": MINIBATCHES,
                 "precision": "bf16", "rounds": args.rounds, "phases_per_process": args.phases},
        "headline": {"what": "PPO phase with freed memory kept on the glibc heap vs glibc's defaults (batch 16 x 24)",
                     "result": f"{speedup:.2f}x faster ({default:.1f} s -> {shipped:.1f} s per phase; page faults "
                               f"{median(faults['default']) / 1e3:.0f}k -> {median(faults['shipped']) / 1e3:.0f}k)",
                     "target": "", "met": None}}})


if __name__ == "__main__":
    main()
