"""A PPO phase of this toolkit vs one update of TRL 1.12's PPO, on identical work, alternated in one run.

    pip install -e ".[bench]"       # TRL 1.12.0 (the last release with PPO), never a main dependency
    python benchmarks/trl_ppo_phase.py --rounds 3 --updates 3 [--precision bf16] [--trl-precision fp32]
    RLHF_BENCH_RESULTS=/tmp/bench python benchmarks/trl_ppo_phase.py --rounds 1 --updates 2 --batch 4 --new-tokens 8  # smoke

Identical work: SmolLM2-135M-Instruct as policy and frozen reference, the same prompts, batch 16 x 24 new
tokens sampled at temperature 1, 2 PPO epochs x 2 minibatches, every policy weight trained (embeddings too,
so both policies train the same parameters), forward k1 KL in the reward, reward = number of '.' in the
continuation (a model-free counter in both). TRL trains its usual full-size critic (SmolLM2 as
AutoModelForSequenceClassification); ours puts a value head on the policy's final residual stream.
Precision: ours ``--precision`` (default bf16: `rlhf_interp.bridge.precision`, drift from fp32 < 1e-3 nats per
token, tests/test_precision.py); TRL ``--trl-precision`` (default fp32, its CPU default; bf16 sets
``bf16=True``, accelerate's autocast). Each side runs in its own subprocess (memory does not leak across), the
two alternate ``--rounds`` times, and the first update/phase of each process is dropped as warm-up.
Absolute times drift on a shared machine; the ratio of medians measured in the same run is what holds.
``--trl-malloc`` hands TRL's process the glibc malloc settings this toolkit's trainer sets for itself
(`rlhf_interp.core.allocator`), to show how much of the gap that alone is (``ppo_phase_trl_malloc.json``).
Writes ``benchmarks/results/ppo_phase.json`` with ``{"ppo_phase": {"trl_ratio": ...}}`` (TRL seconds per
update / ours per phase: > 1 means ours is faster).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _bench_common import median, report_to_parent, run_child, set_threads, write_result

EPOCHS, MINIBATCHES, KL_COEF, LR = 2, 2, 0.05, 1e-5


def run_ours(updates: int, batch: int, new_tokens: int, precision: str) -> dict:
    from rlhf_interp.ppo import PPOConfig, PPOTrainer

    config = PPOConfig.load(None, [
        "model=smollm2-135m", "reward=char_count", "reward_kwargs={char: '.'}", f"phases={updates}",
        f"batch_size={batch}", f"max_new_tokens={new_tokens}", f"ppo_epochs={EPOCHS}",
        f"minibatch_size={batch // MINIBATCHES}", "freeze_layers=0", "train_embeddings=true", "kl_estimator=k1",
        "kl_placement=reward", "kl_direction=pi_ref", f"kl_coef={KL_COEF}", "adaptive_kl=false", f"lr={LR}",
        "checkpoint_every=0", "sample_every=0", "stop_at_eos=false", f"precision={precision}"])
    with tempfile.TemporaryDirectory() as out:
        trainer = PPOTrainer(config, out, progress=False)
        trainable = sum(p.numel() for p in trainer.trainable_parameters())
        head = sum(p.numel() for p in trainer.head.parameters())
        history = trainer.train()
    return {"seconds": [m["seconds"] for m in history], "rollout_seconds": [m["rollout_seconds"] for m in history],
            "trainable_policy_params": trainable, "trainable_value_params": head}


def run_trl(updates: int, batch: int, new_tokens: int, precision: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from rlhf_interp.bridge.embedded import embedded_model_dir, fetch_embedded
    from rlhf_interp.prompts import load_prompts

    model_dir = fetch_embedded() if not (embedded_model_dir() / "config.json").exists() else embedded_model_dir()
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    period_ids = torch.tensor([i for t, i in tok.get_vocab().items() if "." in tok.convert_tokens_to_string([t])])

    class PeriodCounter(torch.nn.Module):
        """TRL calls ``getattr(rm, rm.base_model_prefix)(...).hidden_states[-1]`` then ``rm.score``: count '.'s."""

        base_model_prefix = "backbone"

        def __init__(self, context_length: int):
            super().__init__()
            self.context_length = context_length
            self.dummy = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

        def backbone(self, input_ids, attention_mask, **_):
            counts = torch.isin(input_ids, period_ids).float() * attention_mask
            counts[:, :self.context_length] = 0
            return type("Out", (), {"hidden_states": [counts.cumsum(1).unsqueeze(-1)]})()

        def score(self, hidden):
            return hidden

    prompts = load_prompts(limit=batch * (updates + 1), seed=0)
    encoded = [tok(tok.bos_token + p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(len(e) for e in encoded)
    dataset = Dataset.from_dict({"input_ids": [[tok.pad_token_id] * (width - len(e)) + e for e in encoded]})
    policy = AutoModelForCausalLM.from_pretrained(model_dir)
    ref = AutoModelForCausalLM.from_pretrained(model_dir)
    value = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    value.config.pad_token_id = tok.pad_token_id
    times: list[float] = []

    class Timer(TrainerCallback):
        def __init__(self):
            self.last = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            now = time.perf_counter()
            times.append(now - self.last)
            self.last = now

    with tempfile.TemporaryDirectory() as out:
        args = PPOConfig(output_dir=out, use_cpu=True, per_device_train_batch_size=batch,  # TRL: the rollout batch, split into num_mini_batches
                         gradient_accumulation_steps=1, num_mini_batches=MINIBATCHES, num_ppo_epochs=EPOCHS,
                         total_episodes=batch * updates, response_length=new_tokens, temperature=1.0,
                         kl_coef=KL_COEF, kl_estimator="k1", learning_rate=LR, local_rollout_forward_batch_size=batch,
                         num_sample_generations=0, report_to=[], save_strategy="no", logging_steps=1000,
                         stop_token=None, missing_eos_penalty=None, seed=0, bf16=precision == "bf16")
        trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref,
                             reward_model=PeriodCounter(width), train_dataset=dataset, value_model=value,
                             callbacks=[Timer()])
        trainer.callback_handler.callbacks[-1].last = time.perf_counter()
        trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
        critic = sum(p.numel() for p in value.parameters() if p.requires_grad)
        trainer.train()
    return {"seconds": times, "trainable_policy_params": trainable, "trainable_value_params": critic}


def child(args: argparse.Namespace) -> None:
    set_threads(args.threads)
    run = run_ours if args.child == "ours" else run_trl
    precision = args.precision if args.child == "ours" else args.trl_precision
    report_to_parent(run(args.updates, args.batch, args.new_tokens, precision))


def spawn(which: str, args: argparse.Namespace) -> dict:
    env = {"TRL_EXPERIMENTAL_SILENCE": "1"}
    if which == "trl" and args.trl_malloc:  # the glibc settings our trainer makes itself (core/allocator.py)
        env.update(MALLOC_MMAP_THRESHOLD_=str(1 << 30), MALLOC_TRIM_THRESHOLD_=str(1 << 30))
    flags = ["--updates", str(args.updates), "--batch", str(args.batch), "--new-tokens", str(args.new_tokens),
             "--precision", args.precision, "--trl-precision", args.trl_precision]
    if args.threads:
        flags += ["--threads", str(args.threads)]
    return run_child(__file__, which, flags, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two processes")
    parser.add_argument("--updates", type=int, default=3, help="PPO updates per process (first dropped)")
    parser.add_argument("--batch", type=int, default=16, help="rollout batch (16 for the quoted work)")
    parser.add_argument("--new-tokens", type=int, default=24, help="sampled tokens (24 for the quoted work)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16", help="ours")
    parser.add_argument("--trl-precision", choices=["fp32", "bf16"], default="fp32", help="TRL's (bf16=True)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    parser.add_argument("--trl-malloc", action="store_true",
                        help="give TRL the glibc malloc settings our trainer sets for itself (freed memory reused); "
                             "writes ppo_phase_trl_malloc.json")
    parser.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch % MINIBATCHES:
        parser.error(f"--batch must be divisible by {MINIBATCHES} minibatches")
    if args.child:
        return child(args)
    samples: dict[str, list[float]] = {"ours": [], "trl": []}
    rollout: list[float] = []
    params: dict[str, dict] = {}
    for r in range(args.rounds):
        for which in ("ours", "trl"):
            out = spawn(which, args)
            samples[which] += out["seconds"][1:]
            if which == "ours":
                rollout += out["rollout_seconds"][1:]
            params[which] = {k: v for k, v in out.items() if k.startswith("trainable")}
            print(f"round {r + 1}: {which:4s} " + " ".join(f"{t:.1f}" for t in out["seconds"]) + " s (first = warm-up)")
    ours, trl = median(samples["ours"]), median(samples["trl"])
    quoted = args.batch == 16 and args.new_tokens == 24
    ratio = trl / ours
    result = {"ppo_phase": {
        "ours_seconds_median": ours, "ours_rollout_seconds_median": median(rollout),
        "ours_update_seconds_median": ours - median(rollout), "trl_seconds_median": trl, "trl_ratio": ratio,
        "ours_seconds": samples["ours"], "trl_seconds": samples["trl"], "trainable": params,
        "work": {"batch": args.batch, "new_tokens": args.new_tokens, "epochs": EPOCHS, "minibatches": MINIBATCHES,
                 "kl": "forward k1 in reward", "model": "smollm2-135m", "trained": "every policy weight",
                 "ours_precision": args.precision, "trl_precision": args.trl_precision, "rounds": args.rounds,
                 "updates_per_process": args.updates},
        "trl_malloc": args.trl_malloc,
        "headline": {"what": f"PPO phase vs TRL 1.12 (batch {args.batch} x {args.new_tokens} tokens, 2 epochs x 2 "
                             f"minibatches; ours {args.precision}, TRL {args.trl_precision}"
                             f"{', TRL with our malloc settings' if args.trl_malloc else ''})",
                     "result": f"{ratio:.2f}x TRL's throughput (TRL {trl:.1f} s / ours {ours:.1f} s per update)",
                     "target": ">= 2x", "met": bool(ratio >= 2.0 and quoted)}}}
    print(f"\nmedian seconds per update: ours {ours:.2f} (rollout {median(rollout):.2f}), TRL {trl:.2f} -> "
          f"TRL/ours = {ratio:.2f}x")
    write_result("ppo_phase_trl_malloc" if args.trl_malloc else "ppo_phase", result)


if __name__ == "__main__":
    main()
