"""Time PPO phases of any config and quote them against the machine's limits (`_limits.py`).

    python benchmarks/ppo_phase.py --config configs/periods.yaml --phases 3 [--peak-gflops G] [--bandwidth-gbs B]
    RLHF_BENCH_RESULTS=/tmp/bench python benchmarks/ppo_phase.py --config configs/tiny.yaml --phases 2 \
        --peak-n 512 --bandwidth-mb 64                                                  # smoke: seconds

Prints seconds per phase (rollout vs update), tokens/s, the phase's GFLOP/s as a fraction of the FLOP limit at
the measured matmul peak of the precision it ran in (``precision`` in the config), and the rollout's and the
update's fractions of their own limits (sampling: weight bytes read per decoding step x steps / the measured
memory bandwidth). Peaks: `learn_step.json` in the results directory when it records them, else measured here
(``--peak-n``); ``--peak-gflops`` overrides the peak of the phase's precision. The first phase (warm-up) is
not quoted when there are more. Writes ``benchmarks/results/ppo_phase_<config stem>.json`` (``ppo_phase.json``
is the TRL comparison's) with the fields of ``ppo_phase.json`` that apply to a single side (``ours_*``,
``work``) plus ``limits``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _bench_common import RESULTS, write_result
from _limits import describe, machine_peaks, memory_bandwidth, param_counts, phase_limits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/periods.yaml")
    parser.add_argument("--phases", type=int, default=3)
    parser.add_argument("--peak-gflops", type=float, default=None,
                        help="override the measured matmul peak of the phase's precision")
    parser.add_argument("--peak-n", type=int, default=1024, help="matmul size when the peak is measured here")
    parser.add_argument("--bandwidth-gbs", type=float, default=None, help="override the measured memory bandwidth")
    parser.add_argument("--bandwidth-mb", type=int, default=512, help="array size of the bandwidth measurement")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    from rlhf_interp.ppo import PPOConfig, PPOTrainer

    config = PPOConfig.load(args.config, [f"phases={args.phases}", "checkpoint_every=0", *args.overrides])
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = PPOTrainer(config, run_dir, progress=False)
        counts = param_counts(trainer, config.freeze_layers)
        start = time.perf_counter()
        history = trainer.train()
        total = time.perf_counter() - start
        # after the phases, at the threads the trainer chose for the last one
        peaks = machine_peaks(RESULTS, n=args.peak_n)
        bandwidth = memory_bandwidth(args.bandwidth_mb)
    precision = config.precision
    if args.peak_gflops:
        peaks = {**peaks, precision: args.peak_gflops, "source": "--peak-gflops"}
    if args.bandwidth_gbs:
        bandwidth = {"gbs": args.bandwidth_gbs, "source": "--bandwidth-gbs"}
    timed = history[1:] or history
    per_phase = statistics.median(m["seconds"] for m in timed)
    rollout = statistics.median(m["rollout_seconds"] for m in timed)
    work = {"batch": config.batch_size, "new_tokens": config.max_new_tokens, "epochs": config.ppo_epochs,
            "minibatches": config.batch_size // config.minibatch_size, "model": config.model, "config": args.config,
            "precision": precision, "phases_timed": len(timed)}
    limits = phase_limits(counts, work, {"phase": per_phase, "rollout": rollout, "update": per_phase - rollout},
                          peaks, bandwidth["gbs"])
    limits.update(peaks_source=peaks, bandwidth_source=bandwidth)
    print(f"model {config.model}: {counts['n_params'] / 1e6:.1f} M params; batch {config.batch_size} x "
          f"{config.max_new_tokens} new tokens; {config.ppo_epochs} epochs x {work['minibatches']} minibatches; "
          f"{precision}")
    print(f"median seconds/phase {per_phase:.2f} (rollout {rollout:.2f}, update {per_phase - rollout:.2f}); "
          f"{config.batch_size * config.max_new_tokens / per_phase:.1f} generated tokens/s; total {total:.1f} s")
    print(describe(limits) + f"\npeaks: {peaks['source']}; bandwidth: {bandwidth['source']}")
    result = {"ppo_phase": {
        "ours_seconds_median": per_phase, "ours_rollout_seconds_median": rollout,
        "ours_update_seconds_median": per_phase - rollout, "ours_seconds": [m["seconds"] for m in timed],
        "ours_rollout_seconds": [m["rollout_seconds"] for m in timed], "threads": [m.get("threads") for m in timed],
        "trainable": {"ours": {"trainable_policy_params": counts["n_trainable"]}}, "work": work, "limits": limits,
        "headline": {"what": f"PPO phase of {Path(args.config).name} ({config.model}, {precision}) vs the "
                             f"machine's limits", "result": (
            f"{per_phase:.2f} s/phase (n = {len(timed)}): {100 * limits['fraction_of_flop_limit']:.0f}% of the "
            f"{precision} FLOP limit; rollout {100 * limits['rollout']['fraction_of_limit']:.0f}% of its "
            f"memory+FLOP limit, update {100 * limits['update']['fraction_of_limit']:.0f}% of its FLOP limit"),
            "target": "within 3x of the limit (issue 34)", "met": bool(limits["fraction_of_limit"] >= 1 / 3)}}}
    write_result(f"ppo_phase_{Path(args.config).stem}", result)


if __name__ == "__main__":
    main()
