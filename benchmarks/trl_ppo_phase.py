"""A PPO phase of this toolkit vs one update of TRL 1.12's PPO, on identical work, alternated in one run.

    pip install -e ".[bench]"       # TRL 1.12.0 (the last release with PPO), never a main dependency
    python benchmarks/trl_ppo_phase.py --rounds 3 --updates 3 --precisions fp32 bf16   # the README headline
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
(`rlhf_interp.core.allocator`), to show how much of the gap that alone is.
Every result holds ``{"ppo_phase": {"trl_ratio": ...}}`` (TRL seconds per update / ours per phase: > 1 means
ours is faster) with its 95% interval (bootstrap over updates paired by round and position) and n.

``--precisions fp32 bf16``: the equal-precision comparison the README's headline shows (issue 34). Four sides
alternate in each round (ours fp32, TRL fp32, ours bf16, TRL bf16), TRL always with our malloc settings (both
sides then run with the same allocator settings), and ``ppo_phase.json`` records ``pairs`` (each comparison with
its precisions, ``same_allocator``, ratio, 95% interval and n), ``trl_ratio_fp32`` and ``trl_ratio_bf16`` (equal
precision), and the mixed ours-bf16 / TRL-fp32 figure as a secondary pair. Every run also records ``limits``:
each of our phases against the machine's limits (`_limits.py`: FLOPs at the measured matmul peak of its
precision, the rollout's weight reads at the measured memory bandwidth). Other single-pair runs that are not
``--precisions`` write ``ppo_phase_<ours>_vs_trl_<trl>[_trl_malloc].json`` (e.g. the default pair:
``ppo_phase_bf16_vs_trl_fp32.json``; before issue 34 it wrote ``ppo_phase.json`` and ``ppo_phase_trl_malloc.json``)
so that no run overwrites the headline's file or another pair's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _bench_common import RESULTS, median, ratio_interval, report_to_parent, run_child, set_threads, write_result
from _limits import machine_peaks, matmul_share, memory_bandwidth, param_counts, phase_limits

EPOCHS, MINIBATCHES, KL_COEF, LR = 2, 2, 0.05, 1e-5
DEFAULT_PAIR = ("bf16", "fp32")  # ours, TRL: the first comparison this script made (issue 17), mixed precision
TARGETS = {("fp32", "fp32"): 2.5, ("bf16", "bf16"): 4.0}  # issue 34; any mixed pair: issue 17's 2x
ALLOCATOR = "glibc M_MMAP_THRESHOLD = M_TRIM_THRESHOLD = 1 GiB (rlhf_interp.core.allocator)"


def result_name(precision: str, trl_precision: str, trl_malloc: bool, pairs: bool = False) -> str:
    """The results file of a run: ``ppo_phase`` for the equal-precision run (``--precisions``, the README's
    headline); a single-pair run writes ``ppo_phase_<ours>_vs_trl_<trl>[_trl_malloc]`` so that it never
    overwrites the headline's file or another pair's."""
    if pairs:
        return "ppo_phase"
    return f"ppo_phase_{precision}_vs_trl_{trl_precision}" + ("_trl_malloc" if trl_malloc else "")


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
        counts = param_counts(trainer, config.freeze_layers)
        head = sum(p.numel() for p in trainer.head.parameters())
        history = trainer.train()
        profiled = matmul_share(trainer.run_phase)  # one more phase, profiled: the share of it in matmuls
    return {"seconds": [m["seconds"] for m in history], "rollout_seconds": [m["rollout_seconds"] for m in history],
            "trainable_policy_params": counts["n_trainable"], "trainable_value_params": head, "counts": counts,
            "matmul": profiled}


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


def spawn(which: str, precision: str, args: argparse.Namespace, trl_malloc: bool) -> dict:
    env = {"TRL_EXPERIMENTAL_SILENCE": "1"}
    if which == "trl" and trl_malloc:  # the glibc settings our trainer makes itself (core/allocator.py)
        env.update(MALLOC_MMAP_THRESHOLD_=str(1 << 30), MALLOC_TRIM_THRESHOLD_=str(1 << 30))
    flags = ["--updates", str(args.updates), "--batch", str(args.batch), "--new-tokens", str(args.new_tokens),
             "--precision" if which == "ours" else "--trl-precision", precision]
    if args.threads:
        flags += ["--threads", str(args.threads)]
    return run_child(__file__, which, flags, env)


def comparison(ours: list[float], trl: list[float], ours_precision: str, trl_precision: str, trl_malloc: bool,
               rounds: int) -> dict:
    """One ours-vs-TRL pair of the run: medians, the ratio with its interval and n, and what makes it fair or
    not (equal precision, same allocator settings, alternated in one run)."""
    interval = ratio_interval(ours, trl)
    return {"ours_precision": ours_precision, "trl_precision": trl_precision,
            "equal_precision": ours_precision == trl_precision, "same_allocator": trl_malloc, "alternated": True,
            "ours_seconds_median": median(ours), "trl_seconds_median": median(trl),
            "trl_ratio": median(trl) / median(ours), "trl_ratio_ci95": [interval["low"], interval["high"]],
            "n": {**interval["n"], "processes_per_side": rounds}, "interval": interval,
            "ours_seconds": ours, "trl_seconds": trl}


def summarize(samples: dict[tuple[str, str], list[float]], rollout: dict[str, list[float]], params: dict,
              counts: dict, args: argparse.Namespace, pairs_mode: bool, peaks: dict, bandwidth: dict,
              shares: dict[str, list[float]] | None = None) -> dict:
    """The result body from the run's samples: keyed ``(side, precision)`` seconds per update, our rollout
    seconds per precision, trainable counts, our parameter counts; the machine's peaks and bandwidth; ``shares``:
    per precision, the share of a profiled phase of ours spent in matmuls (one per process).

    Each pair also gets ``matmul_floor``: our median phase x our matmul share (the phase if only its matmuls took
    time) and ``ratio_ceiling`` = TRL's median / that floor, the largest ratio that removing every non-matmul cost
    could reach with the same FLOPs and kernels; ``target_within_ceiling`` says whether the pair's target is."""
    trl_malloc = args.trl_malloc or pairs_mode
    if pairs_mode:
        wanted = [(p, p) for p in args.precisions]
        if set(args.precisions) == {"fp32", "bf16"}:
            wanted.append(DEFAULT_PAIR)  # the mixed figure, secondary
    else:
        wanted = [(args.precision, args.trl_precision)]
    pairs = [comparison(samples[("ours", o)], samples[("trl", t)], o, t, trl_malloc, args.rounds) for o, t in wanted]
    for pair in pairs:
        share = (shares or {}).get(pair["ours_precision"]) or []
        if share:
            floor = median(share) * pair["ours_seconds_median"]
            ceiling = pair["trl_seconds_median"] / floor
            target = TARGETS.get((pair["ours_precision"], pair["trl_precision"]), 2.0)
            pair["matmul_floor"] = {"matmul_share": median(share), "shares": share, "seconds": floor,
                                    "ratio_ceiling": ceiling, "target": target,
                                    "target_within_ceiling": ceiling >= target}
    main_pair = pairs[0]
    quoted = args.batch == 16 and args.new_tokens == 24
    limits = {}
    for precision, times in rollout.items():
        ours = median(samples[("ours", precision)])
        work = {"batch": args.batch, "new_tokens": args.new_tokens, "epochs": EPOCHS, "precision": precision}
        limits[precision] = phase_limits(counts, work, {"phase": ours, "rollout": median(times),
                                                        "update": ours - median(times)}, peaks, bandwidth["gbs"])
    limits_source = {"peaks": peaks, "bandwidth": bandwidth}

    def figure(pair: dict) -> str:
        lo, hi = pair["trl_ratio_ci95"]
        return (f"{pair['trl_ratio']:.2f}x [{lo:.2f}, {hi:.2f}] (TRL {pair['trl_seconds_median']:.1f} s / ours "
                f"{pair['ours_seconds_median']:.1f} s per update; n = {pair['n']['updates_per_side']} updates per "
                f"side, {args.rounds} processes)")

    def met(pair: dict) -> bool:
        target = TARGETS.get((pair["ours_precision"], pair["trl_precision"]), 2.0)
        return bool(pair["trl_ratio"] >= target and quoted)

    body = {
        "ours_seconds_median": main_pair["ours_seconds_median"],
        "ours_rollout_seconds_median": median(rollout[main_pair["ours_precision"]]),
        "ours_update_seconds_median": main_pair["ours_seconds_median"] - median(rollout[main_pair["ours_precision"]]),
        "trl_seconds_median": main_pair["trl_seconds_median"], "trl_ratio": main_pair["trl_ratio"],
        "trl_ratio_ci95": main_pair["trl_ratio_ci95"], "n": main_pair["n"],
        "ours_seconds": main_pair["ours_seconds"], "trl_seconds": main_pair["trl_seconds"], "trainable": params,
        "work": {"batch": args.batch, "new_tokens": args.new_tokens, "epochs": EPOCHS, "minibatches": MINIBATCHES,
                 "kl": "forward k1 in reward", "model": "smollm2-135m", "trained": "every policy weight",
                 "ours_precision": main_pair["ours_precision"], "trl_precision": main_pair["trl_precision"],
                 "rounds": args.rounds, "updates_per_process": args.updates},
        "trl_malloc": trl_malloc, "same_allocator": trl_malloc,
        "allocator": {"ours": ALLOCATOR, "trl": ALLOCATOR if trl_malloc else "glibc defaults"},
        "pairs": pairs, "limits": limits, "limits_source": limits_source,
    }
    for pair in pairs:
        if pair["equal_precision"]:
            body[f"trl_ratio_{pair['ours_precision']}"] = pair["trl_ratio"]
            body[f"trl_ratio_{pair['ours_precision']}_ci95"] = pair["trl_ratio_ci95"]
    work = f"batch {args.batch} x {args.new_tokens} tokens, 2 epochs x 2 minibatches"
    if pairs_mode:
        equal = [p for p in pairs if p["equal_precision"]]
        body["headline"] = {
            "what": f"PPO phase vs TRL 1.12 at equal precision ({work}; same allocator settings, alternated)",
            "result": "; ".join(f"{p['ours_precision']}: {figure(p)}" for p in equal),
            "target": ", ".join(f"{p['ours_precision']} >= {TARGETS.get((p['ours_precision'],) * 2, 2.0):g}x"
                                for p in equal),
            "met": all(met(p) for p in equal)}
    else:
        body["headline"] = {
            "what": f"PPO phase vs TRL 1.12 ({work}; ours {args.precision}, TRL {args.trl_precision}"
                    f"{', TRL with our malloc settings' if trl_malloc else ''})",
            "result": figure(main_pair), "target": f">= {TARGETS.get(wanted[0], 2.0):g}x", "met": met(main_pair)}
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two processes")
    parser.add_argument("--updates", type=int, default=3, help="PPO updates per process (first dropped)")
    parser.add_argument("--batch", type=int, default=16, help="rollout batch (16 for the quoted work)")
    parser.add_argument("--new-tokens", type=int, default=24, help="sampled tokens (24 for the quoted work)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16", help="ours")
    parser.add_argument("--trl-precision", choices=["fp32", "bf16"], default="fp32", help="TRL's (bf16=True)")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=None,
                        help="equal-precision pairs, alternated in one run with TRL given our malloc settings "
                             "(overrides --precision/--trl-precision; writes ppo_phase.json, the README headline)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    parser.add_argument("--trl-malloc", action="store_true",
                        help="give TRL the glibc malloc settings our trainer sets for itself (freed memory reused); "
                             "the results file ends in _trl_malloc")
    parser.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch % MINIBATCHES:
        parser.error(f"--batch must be divisible by {MINIBATCHES} minibatches")
    if args.child:
        return child(args)
    pairs_mode = bool(args.precisions)
    trl_malloc = args.trl_malloc or pairs_mode
    set_threads(args.threads)  # the limits are measured at the children's threads
    peaks, bandwidth = machine_peaks(RESULTS), memory_bandwidth()
    sides = ([(w, p) for p in dict.fromkeys(args.precisions) for w in ("ours", "trl")] if pairs_mode
             else [("ours", args.precision), ("trl", args.trl_precision)])
    samples: dict[tuple[str, str], list[float]] = {side: [] for side in sides}
    rollout: dict[str, list[float]] = {p: [] for w, p in sides if w == "ours"}
    shares: dict[str, list[float]] = {p: [] for w, p in sides if w == "ours"}
    params: dict[str, dict] = {}
    counts: dict = {}
    for r in range(args.rounds):
        for which, precision in sides:
            out = spawn(which, precision, args, trl_malloc)
            samples[(which, precision)] += out["seconds"][1:]
            if which == "ours":
                rollout[precision] += out["rollout_seconds"][1:]
                if "matmul" in out:
                    shares[precision].append(out["matmul"]["matmul_share"])
                counts = out["counts"]
            params[which] = {k: v for k, v in out.items() if k.startswith("trainable")}
            print(f"round {r + 1}: {which:4s} {precision} " + " ".join(f"{t:.1f}" for t in out["seconds"])
                  + " s (first = warm-up)")
    body = summarize(samples, rollout, params, counts, args, pairs_mode, peaks, bandwidth, shares)
    print()
    for pair in body["pairs"]:
        lo, hi = pair["trl_ratio_ci95"]
        print(f"ours {pair['ours_precision']} vs TRL {pair['trl_precision']}: median seconds per update ours "
              f"{pair['ours_seconds_median']:.2f}, TRL {pair['trl_seconds_median']:.2f} -> TRL/ours = "
              f"{pair['trl_ratio']:.2f}x [{lo:.2f}, {hi:.2f}] (n = {pair['n']['updates_per_side']} per side)")
        if "matmul_floor" in pair:
            f = pair["matmul_floor"]
            print(f"  matmuls are {100 * f['matmul_share']:.0f}% of our phase: {f['seconds']:.2f} s if nothing else "
                  f"took time -> at most {f['ratio_ceiling']:.2f}x TRL with these FLOPs and kernels "
                  f"(target {f['target']:g}x)")
    for precision, lim in body["limits"].items():
        rollout_part, update_part = lim["rollout"]["fraction_of_limit"], lim["update"]["fraction_of_limit"]
        print(f"ours {precision}: {100 * lim['fraction_of_flop_limit']:.0f}% of the FLOP limit; rollout "
              f"{100 * rollout_part:.0f}%, update {100 * update_part:.0f}% of their limits")
    write_result(result_name(args.precision, args.trl_precision, trl_malloc, pairs_mode), {"ppo_phase": body})


if __name__ == "__main__":
    main()
