"""A PPO phase of this toolkit vs one update of TRL 1.12's PPO, on identical work, alternated in one run.

    pip install -e ".[bench]"       # TRL 1.12.0 (the last release with PPO), never a main dependency
    python benchmarks/trl_ppo_phase.py --rounds 3 --updates 3

Identical work: SmolLM2-135M-Instruct as policy and frozen reference, the same prompts, batch 16 x 24 new
tokens sampled at temperature 1, 2 PPO epochs x 2 minibatches, every layer trained, forward k1 KL in the
reward, reward = number of '.' in the continuation (a model-free counter in both). TRL trains its usual
full-size critic (SmolLM2 as AutoModelForSequenceClassification); ours puts a value head on the policy's
final residual stream. Each side runs in its own subprocess (memory does not leak across), the two
alternate ``--rounds`` times, and the first update/phase of each process is dropped as warm-up.
Absolute times drift on a shared machine; the ratio of medians measured in the same run is what holds.
Writes ``benchmarks/results/ppo_phase.json`` with ``{"ppo_phase": {"trl_ratio": ...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _bench_common import machine_info, write_result  # noqa: E402

BATCH, NEW_TOKENS, EPOCHS, MINIBATCHES, KL_COEF, LR = 16, 24, 2, 2, 0.05, 1e-5


def run_ours(updates: int) -> list[float]:
    from rlhf_interp.ppo import PPOConfig, PPOTrainer

    config = PPOConfig.load(None, [
        "model=smollm2-135m", "reward=char_count", "reward_kwargs={char: '.'}", f"phases={updates}",
        f"batch_size={BATCH}", f"max_new_tokens={NEW_TOKENS}", f"ppo_epochs={EPOCHS}",
        f"minibatch_size={BATCH // MINIBATCHES}", "freeze_layers=0", "kl_estimator=k1", "kl_placement=reward",
        "kl_direction=forward", f"kl_coef={KL_COEF}", "adaptive_kl=false", f"lr={LR}", "checkpoint_every=0",
        "sample_every=0", "stop_at_eos=false"])
    with tempfile.TemporaryDirectory() as out:
        history = PPOTrainer(config, out, progress=False).train()
    return [m["seconds"] for m in history]


def run_trl(updates: int) -> list[float]:
    import torch
    from datasets import Dataset
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                              TrainerCallback)
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from rlhf_interp.models import embedded_model_dir, fetch_embedded
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

    prompts = load_prompts(limit=BATCH * (updates + 1), seed=0)
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
        args = PPOConfig(output_dir=out, use_cpu=True, per_device_train_batch_size=BATCH,  # TRL: the rollout batch, split into num_mini_batches
                         gradient_accumulation_steps=1, num_mini_batches=MINIBATCHES, num_ppo_epochs=EPOCHS,
                         total_episodes=BATCH * updates, response_length=NEW_TOKENS, temperature=1.0,
                         kl_coef=KL_COEF, kl_estimator="k1", learning_rate=LR, local_rollout_forward_batch_size=BATCH,
                         num_sample_generations=0, report_to=[], save_strategy="no", logging_steps=1000,
                         stop_token=None, missing_eos_penalty=None, seed=0)
        trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref,
                             reward_model=PeriodCounter(width), train_dataset=dataset, value_model=value,
                             callbacks=[Timer()])
        trainer.callback_handler.callbacks[-1].last = time.perf_counter()
        trainer.train()
    return times


def child(which: str, updates: int) -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    times = run_ours(updates) if which == "ours" else run_trl(updates)
    print("RESULT " + json.dumps(times))


def spawn(which: str, updates: int) -> list[float]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, __file__, "--child", which, "--updates", str(updates)],
                          capture_output=True, text=True, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{which} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two processes")
    parser.add_argument("--updates", type=int, default=3, help="PPO updates per process (first dropped)")
    parser.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.updates)
    samples: dict[str, list[float]] = {"ours": [], "trl": []}
    for r in range(args.rounds):
        for which in ("ours", "trl"):
            times = spawn(which, args.updates)
            samples[which] += times[1:]
            print(f"round {r + 1}: {which:4s} " + " ".join(f"{t:.1f}" for t in times) + " s (first = warm-up)")
    ours, trl = statistics.median(samples["ours"]), statistics.median(samples["trl"])
    result = {"ppo_phase": {"ours_seconds_median": ours, "trl_seconds_median": trl, "trl_ratio": trl / ours,
                            "ours_seconds": samples["ours"], "trl_seconds": samples["trl"],
                            "work": dict(batch=BATCH, new_tokens=NEW_TOKENS, epochs=EPOCHS, minibatches=MINIBATCHES,
                                         kl="forward k1 in reward", model="smollm2-135m", trained="every layer")}}
    print(f"\nmedian seconds per update: ours {ours:.2f}, TRL {trl:.2f} -> TRL/ours = {trl / ours:.2f}x")
    write_result("ppo_phase", result)


if __name__ == "__main__":
    main()
