"""``rlhf-interp train CONFIG --out RUN_DIR [--set k=v ...] [--resume | --overwrite]``."""

from __future__ import annotations

import argparse

from rlhf_interp.cli.common import add_overwrite_arg


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="PPO with a KL penalty (writes metrics.jsonl, samples, HF checkpoints)",
                            description="Train a policy with PPO. CONFIG is a YAML file of PPOConfig fields "
                                        "(see configs/). One run per --out: continue a stopped run with --resume, "
                                        "or start it again with --overwrite.")
    parser.add_argument("config", nargs="?", help="YAML config (optional with --resume: the run's config.yaml is used)")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set kl_coef=0.05 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    add_overwrite_arg(parser)
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    parser.add_argument("--processes", type=int, default=1, metavar="N",
                        help="data-parallel over N processes (GPUs, or CPU processes over gloo): runs this command "
                             "under `accelerate launch` (docs/scaling.md)")
    parser.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlhf_interp.ppo import PPOConfig, PPOTrainer
    from rlhf_interp.ppo.run_dir import resume_point, start_run
    from rlhf_interp.ppo.trainer import model_summary

    from rlhf_interp.ppo.distributed import launch, on_main, strip_processes_flag

    if args.processes > 1:
        import sys

        if "train" not in sys.argv or not any(a.startswith("--processes") for a in sys.argv):
            raise ValueError("--processes works from the command line; from Python run `accelerate launch "
                             "--multi_gpu --num_processes N -m rlhf_interp.cli train ...`.")
        return launch(args.processes, strip_processes_flag(sys.argv[1:]))
    run_dir = Path(args.out)
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite deletes it: give one of them.")
    if args.resume:
        on_main(resume_point, run_dir)  # before loading anything: a clear message when there is nothing to resume
        if args.config is not None:
            _check_same_config(args.config, run_dir / "config.yaml", args.overrides)
        trainer = PPOTrainer.resume(run_dir, overrides=args.overrides, progress=not args.no_progress)
        print(f"resuming {run_dir} at phase {trainer.phase}")
    else:
        if args.config is None:
            raise ValueError("Give a CONFIG file (e.g. configs/periods.yaml), or --resume to continue a run.")
        config = PPOConfig.load(args.config, args.overrides)
        on_main(start_run, run_dir, overwrite=args.overwrite, config=config,  # writable, free, locked, not an
                inputs={"CONFIG": args.config})                                 # input: before any model loads
        trainer = PPOTrainer(config, run_dir, progress=not args.no_progress)
    print(model_summary(trainer))
    trainer.train()
    last = trainer.history[-1]
    print(f"done: phase {last['phase']}, reward {last['reward_mean']:.3f}, KL(pi||ref) per token "
          f"{last['kl_pi_ref_per_token']:.4f}, entropy {last['entropy']:.3f}; checkpoints in {run_dir}")
    return 0


def _check_same_config(given: str, saved, overrides: list[str] | None = None) -> None:
    """With --resume, CONFIG may be repeated but not changed: the same command plus --resume continues the run.
    Both sides get the same ``--set`` overrides, so a CONFIG that differs from the run's config.yaml only where
    --set says otherwise passes; what --set changes is then checked like any change on resume
    (`rlhf_interp.ppo.run_dir.check_resume_config`)."""
    from rlhf_interp.ppo import PPOConfig

    a = PPOConfig.load(given, overrides).to_dict()
    b = PPOConfig.load(saved, overrides, recorded=True).to_dict()
    changed = sorted(k for k in a if a[k] != b[k])
    if changed:
        raise ValueError(f"--resume continues the run as {saved} configures it, but {given} differs in "
                         f"{', '.join(f'{k} ({b[k]!r} -> {a[k]!r})' for k in changed[:5])}. Drop CONFIG and change "
                         f"fields with --set KEY=VALUE (e.g. --set phases=100), or start a new run in another --out.")
