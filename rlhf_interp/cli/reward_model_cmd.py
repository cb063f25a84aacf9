"""``rlhf-interp reward-model synth|train|score``: make preference pairs, train a Bradley-Terry RM, score texts."""

from __future__ import annotations

import argparse
import json

from rlhf_interp.cli.common import (add_overwrite_arg, finite_float, input_paths, nonnegative_int, parse_options,
                                    positive_int)

TRAIN_OUTPUTS = ("metrics.jsonl", "model", "training_state.pt")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("reward-model", help="learned reward models: synthesize preference pairs, train, score",
                            description="Bradley-Terry reward models. Use one in PPO with `reward: reward_model:DIR`.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    p_synth = actions.add_parser("synth", help="sample two completions per prompt, label them by a reward function")
    p_synth.add_argument("--reward", required=True, help="builtin reward (char_count, length, sentiment) or module:function")
    p_synth.add_argument("--reward-arg", dest="reward_args", action="append", default=[], metavar="KEY=VALUE",
                         help="keyword for the reward, e.g. --reward-arg char=. (value parsed as YAML; repeatable)")
    p_synth.add_argument("--model", default="smollm2-135m", help="the sampler (anything load_model accepts)")
    p_synth.add_argument("--n-pairs", type=positive_int, required=True)
    p_synth.add_argument("--out", required=True, help="JSONL file to write (refused if it exists, unless --overwrite)")
    add_overwrite_arg(p_synth)
    p_synth.add_argument("--prompts", default="default", help="'default' (shipped openings), a .txt or .jsonl file")
    p_synth.add_argument("--max-new-tokens", type=positive_int, default=20)
    p_synth.add_argument("--batch-size", type=positive_int, default=64, help="sequences per sampling call (even)")
    p_synth.add_argument("--temperature", type=finite_float, default=1.0)
    p_synth.add_argument("--label-noise", type=finite_float, default=0.0, help="probability of swapping a pair's labels")
    p_synth.add_argument("--dtype", default=None, help="sampler dtype, e.g. bfloat16 (about 1.8x faster on this CPU)")
    p_synth.add_argument("--seed", type=int, default=0)
    p_synth.add_argument("--no-progress", action="store_true")
    p_synth.set_defaults(func=_synth)

    p_train = actions.add_parser("train", help="train a Bradley-Terry reward model on a preference JSONL file",
                                 description='DATA.jsonl: one {"prompt", "chosen", "rejected"} object per line. '
                                             "The RM scores chosen/rejected alone (PPO scores completions).")
    p_train.add_argument("data", help="preference JSONL file")
    p_train.add_argument("--base", required=True, help="backbone model (anything load_model accepts)")
    p_train.add_argument("--out", required=True, help="output directory (metrics.jsonl + model/)")
    p_train.add_argument("--epochs", type=positive_int, default=4)
    p_train.add_argument("--batch-size", type=positive_int, default=16, help="pairs per step")
    p_train.add_argument("--lr", type=finite_float, default=2e-5, help="learning rate of the trainable blocks")
    p_train.add_argument("--head-lr", type=finite_float, default=1e-3)
    p_train.add_argument("--val-fraction", type=finite_float, default=0.1)
    p_train.add_argument("--patience", type=nonnegative_int, default=2, help="epochs without val-loss improvement before stopping")
    p_train.add_argument("--freeze-layers", type=nonnegative_int, default=None,
                         help="freeze blocks 0..N-1 (default: all but the last 2)")
    p_train.add_argument("--head-only", action="store_true", help="freeze the whole backbone")
    p_train.add_argument("--head", choices=["linear", "mlp"], default="linear")
    p_train.add_argument("--no-cache", action="store_true", help="full forward passes every step (no frozen-prefix cache)")
    p_train.add_argument("--device", default=None)
    p_train.add_argument("--seed", type=int, default=0)
    p_train.add_argument("--overwrite", action="store_true", help="replace a reward model already in --out")
    p_train.add_argument("--resume", action="store_true",
                         help="continue an interrupted training in --out (the same command plus --resume)")
    p_train.add_argument("--no-progress", action="store_true")
    p_train.set_defaults(func=_train)

    p_score = actions.add_parser("score", help="score texts with a trained reward model")
    p_score.add_argument("model_dir", metavar="DIR", help="a reward-model directory (from reward-model train)")
    p_score.add_argument("--texts", required=True,
                         help="a .txt file (one text a line) or a .jsonl file (objects with a 'text' field)")
    p_score.add_argument("--field", default="text", help="JSONL field holding the text")
    p_score.add_argument("--raw", action="store_true", help="unnormalised scores")
    p_score.add_argument("--batch-size", type=positive_int, default=64)
    p_score.add_argument("--out", default=None, help="write a CSV (text, score) instead of printing")
    add_overwrite_arg(p_score)
    p_score.set_defaults(func=_score)


def _synth(args: argparse.Namespace) -> int:
    from rlhf_interp.bridge import load_model
    from rlhf_interp.prompts import load_prompts
    from rlhf_interp.reward import get_reward, synthesize_pairs, write_preferences

    from rlhf_interp.core.outdir import check_writable_file

    reward = get_reward(args.reward, **parse_options(args.reward_args, what="--reward-arg"))
    prompts = load_prompts(args.prompts)
    check_writable_file(args.out, overwrite=args.overwrite, inputs=input_paths(args))  # before sampling
    model = load_model(args.model, dtype=args.dtype)
    pairs, stats = synthesize_pairs(model, reward, prompts, args.n_pairs,
                                    max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                    temperature=args.temperature, label_noise=args.label_noise, seed=args.seed,
                                    progress=not args.no_progress)
    path = write_preferences(pairs, args.out)
    print(f"{stats.pairs} pairs -> {path} ({stats.ties} ties dropped of {stats.sampled_pairs} sampled, "
          f"{stats.flipped} labels flipped; {stats.tokens_generated} tokens in {stats.seconds:.0f} s)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from rlhf_interp.core.outdir import claim_dir
    from rlhf_interp.reward import RewardTrainingConfig, read_preferences, train_reward_model

    config = RewardTrainingConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, head_lr=args.head_lr,
                                  val_fraction=args.val_fraction, patience=args.patience,
                                  freeze_layers=args.freeze_layers, head_only=args.head_only, head=args.head,
                                  cache_activations=not args.no_cache, seed=args.seed).validate()
    read_preferences(args.data)  # a bad file fails here, before the model is loaded
    if args.resume:
        _resume_point(args)
    else:
        claim_dir(args.out, "reward-model train", TRAIN_OUTPUTS, overwrite=args.overwrite, inputs=input_paths(args),
                  hint="continue an interrupted training with --resume")
    rm, frame = train_reward_model(args.data, args.base, args.out, config, device=args.device,
                                   progress=not args.no_progress, overwrite=args.overwrite, resume=args.resume)
    meta = rm.meta
    print(f"reward model -> {rm.path}: best epoch {meta['best_epoch']}, val accuracy {meta['val_accuracy']:.3f}, "
          f"val loss {meta['val_loss']:.4f} ({meta['data']['train_pairs']} train / {meta['data']['val_pairs']} val "
          f"pairs); use it in PPO with  reward: reward_model:{args.out}")
    return 0


def _resume_point(args: argparse.Namespace) -> None:
    """``--resume``: --out must hold an interrupted `reward-model train` (checked, and locked, before loading)."""
    from pathlib import Path

    from rlhf_interp.core.outdir import OutputError, check_not_input, lock_dir, read_marker
    from rlhf_interp.reward.training import TRAINING_STATE

    out = Path(args.out)
    if args.overwrite:
        raise ValueError("--resume continues the training in --out and --overwrite deletes it: give one of them.")
    check_not_input(out, input_paths(args))
    if not out.is_dir():
        raise FileNotFoundError(f"No directory {out} to resume: start the training without --resume.")
    marker = read_marker(out)
    if marker is not None and marker.get("command") != "reward-model train":
        raise OutputError(f"{out} holds the output of `{marker.get('command')}`, not a reward-model training: "
                          f"nothing to resume.")
    lock_dir(out, "reward-model train --resume")
    if not (out / TRAINING_STATE).exists():
        done = (out / "model").exists()
        raise FileNotFoundError(f"Nothing to resume in {out}: no {TRAINING_STATE} "
                                + ("(the training finished: the reward model is in model/)." if done else
                                   "(stopped before its first validation). Start again with --overwrite."))


def _score(args: argparse.Namespace) -> int:
    import pandas as pd

    from rlhf_interp.prompts import load_prompts  # one reader for .txt / .jsonl text files
    from rlhf_interp.reward import load_reward_model

    from rlhf_interp.core.outdir import check_writable_file

    texts = load_prompts(args.texts, field=args.field)
    if not texts:
        raise ValueError(f"{args.texts} holds no texts.")
    if args.out:
        check_writable_file(args.out, overwrite=args.overwrite, inputs=input_paths(args))
    rm = load_reward_model(args.model_dir, batch_size=args.batch_size)
    scores = rm.score(texts, normalize=not args.raw).tolist()
    if args.out:
        pd.DataFrame({"text": texts, "score": scores}).to_csv(args.out, index=False)
        print(f"{len(texts)} scores -> {args.out}")
    else:
        for text, value in zip(texts, scores):
            print(f"{value:+.4f}\t{json.dumps(text, ensure_ascii=False)}")
    return 0
