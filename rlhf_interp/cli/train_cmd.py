"""``rlhf-interp train CONFIG --out RUN_DIR [--set k=v ...] [--resume]``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="PPO with a KL penalty (writes metrics.jsonl, samples, HF checkpoints)",
                            description="Train a policy with PPO. CONFIG is a YAML file of PPOConfig fields "
                                        "(see configs/). Resume a killed run with --resume.")
    parser.add_argument("config", nargs="?", help="YAML config (optional with --resume: the run's config.yaml is used)")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set kl_coef=0.05 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    parser.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlhf_interp.ppo import PPOConfig, PPOTrainer
    from rlhf_interp.ppo.trainer import model_summary

    run_dir = Path(args.out)
    if args.resume:
        trainer = PPOTrainer.resume(run_dir, overrides=args.overrides, progress=not args.no_progress)
        print(f"resuming {run_dir} at phase {trainer.phase}")
    else:
        if args.config is None:
            raise ValueError("Give a CONFIG file (e.g. configs/periods.yaml), or --resume to continue a run.")
        if (run_dir / "metrics.jsonl").exists():
            raise ValueError(f"{run_dir} already holds a run (metrics.jsonl). Use --resume to continue it, "
                             f"or choose another --out.")
        trainer = PPOTrainer(PPOConfig.load(args.config, args.overrides), run_dir, progress=not args.no_progress)
    print(model_summary(trainer))
    trainer.train()
    last = trainer.history[-1]
    print(f"done: phase {last['phase']}, reward {last['reward_mean']:.3f}, KL(pi||ref) per token "
          f"{last['kl_forward_per_token']:.4f}, entropy {last['entropy']:.3f}; checkpoints in {run_dir}")
    return 0
