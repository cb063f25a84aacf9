"""Rollout sampling through the toolkit vs raw Hugging Face ``generate``, both with the KV cache.

    python benchmarks/rollout_vs_generate.py [--model smollm2-135m] [--batches 8 16 32] [--new-tokens 32]
                                             [--reps 3] [--precision fp32|bf16]

"Ours" is `rlhf_interp.generate` on the bridge with a hook active (a zero steering vector, so the hook
machinery and position tracking run but nothing changes), as a PPO rollout samples (``precision=``: bf16 with
frozen weights cast once): on the bridge's plain twin with the hook mirrored there (`rlhf_interp.bridge.twin`).
"Bridge" is the same call forced through TransformerLens's own sampling loop (``sampler="bridge"``), what the
twin replaced.
"Raw" is a separately loaded plain ``AutoModelForCausalLM.generate`` with its default attention (sdpa), no
bridge wrapping, on the same left-padded tokens and mask, sampling at temperature 1 with no early stop: in fp32
under ``torch.inference_mode``; in bf16 under ``torch.autocast`` and ``torch.no_grad`` (inference_mode would
switch off autocast's weight cache and make raw slower than it can be). Alternated repetitions; medians; the
ratio ours/raw of tokens per second is what to quote. Writes ``benchmarks/results/rollout[_bf16].json``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import alternate, median, set_threads, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    args = parser.parse_args()
    set_threads(args.threads)

    import torch

    from rlhf_interp import Steering, generate, load_model, load_prompts, tokenize
    from rlhf_interp.bridge.loading import load_hf_model

    model = load_model(args.model, device="cpu")
    plain, _, _ = load_hf_model(args.model, device="cpu")
    plain.set_attn_implementation("sdpa")  # what a plain from_pretrained uses
    bf16 = args.precision == "bf16"

    def raw_context() -> contextlib.AbstractContextManager:
        if bf16:
            return _stack(torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16))
        return torch.inference_mode()

    def measure(batch: int) -> dict:
        prompts = load_prompts(limit=batch, seed=1)
        tokens, mask = tokenize(model, prompts)
        hook = Steering(torch.zeros(model.cfg.d_model), layers=model.cfg.n_layers // 2).on(model)
        seeds = itertools.count()

        def ours():
            with hook:
                generate(model, prompts, max_new_tokens=args.new_tokens, seed=next(seeds), stop_at_eos=False,
                         precision=args.precision)

        def through_bridge():  # the same, forced through TransformerLens's own loop (what the twin replaces)
            with hook:
                generate(model, prompts, max_new_tokens=args.new_tokens, seed=next(seeds), stop_at_eos=False,
                         precision=args.precision, sampler="bridge")

        def raw():
            with raw_context():
                plain.generate(tokens, attention_mask=mask, max_new_tokens=args.new_tokens,
                               min_new_tokens=args.new_tokens, do_sample=True, temperature=1.0, top_k=0,
                               pad_token_id=model.tokenizer.pad_token_id)

        times = alternate({"ours": ours, "raw": raw, "bridge": through_bridge}, reps=args.reps)  # warm-up: canaries
        n = batch * args.new_tokens
        row = {"batch": batch, "new_tokens": args.new_tokens, "ours_tok_s": n / median(times["ours"]),
               "raw_tok_s": n / median(times["raw"]), "bridge_tok_s": n / median(times["bridge"]),
               "ours_seconds": times["ours"], "raw_seconds": times["raw"], "bridge_seconds": times["bridge"]}
        row["ratio"] = row["ours_tok_s"] / row["raw_tok_s"]
        row["bridge_ratio"] = row["bridge_tok_s"] / row["raw_tok_s"]
        print(f"batch {batch:3d}: ours {row['ours_tok_s']:7.1f} tok/s, raw HF {row['raw_tok_s']:7.1f} tok/s "
              f"-> {100 * row['ratio']:.0f}% (through the bridge: {100 * row['bridge_ratio']:.0f}%)")
        return row

    rows = [measure(batch) for batch in args.batches]
    few, few_mask = tokenize(model, ["Hello", "The cat sat"])
    top = type(plain).__name__  # the twin is of the same class: one call of it per forward pass
    hook = Steering(torch.zeros(model.cfg.d_model), layers=model.cfg.n_layers // 2).on(model)

    def ours_few(sampler: str):
        with hook:
            generate(model, ["Hello", "The cat sat"], max_new_tokens=3, seed=0, stop_at_eos=False, sampler=sampler)

    calls = {"ours": module_calls_per_step(lambda: ours_few("auto"), top),
             "bridge": module_calls_per_step(lambda: ours_few("bridge"), "TransformerBridge"),
             "raw": module_calls_per_step(lambda: plain.generate(
                 few, attention_mask=few_mask, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                 pad_token_id=model.tokenizer.pad_token_id), top)}
    print(f"module calls per decoding step: ours {calls['ours']:.0f}, through the bridge {calls['bridge']:.0f}, "
          f"raw {calls['raw']:.0f}")
    worst = min(r["ratio"] for r in rows)
    batches = "/".join(str(b) for b in args.batches)
    write_result("rollout_bf16" if bf16 else "rollout", {"rollout": {
        "model": args.model, "precision": args.precision, "raw_attn_implementation": "sdpa", "rows": rows,
        "module_calls_per_step": calls,
        "min_bridge_ratio": min(r["bridge_ratio"] for r in rows),
        "min_ratio": worst,
        "headline": {"what": f"Rollout sampling with a hook on vs raw HF generate ({args.precision}, batch {batches} "
                             f"x {args.new_tokens} tokens, KV cache)",
                     "result": f"{100 * worst:.0f}% of raw tokens/s at the worst batch (through the bridge: "
                               f"{100 * min(r['bridge_ratio'] for r in rows):.0f}%)",
                     "target": ">= 95%", "met": bool(worst >= 0.95)}}})


def module_calls_per_step(run, top: str) -> float:
    """nn.Module calls per forward pass while ``run`` generates (Python overhead per decoding step); a pass is a
    call of the module class named ``top``. A global hook, so that no model's own hook points look hooked."""
    import collections

    import torch

    counts: collections.Counter = collections.Counter()
    def count(module, args) -> None:
        counts[type(module).__name__] += 1

    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    return sum(counts.values()) / max(counts.get(top, 1), 1)


def _stack(*contexts) -> contextlib.ExitStack:
    """The contexts entered now, left together when the returned stack's ``with`` block ends."""
    stack = contextlib.ExitStack()
    for context in contexts:
        stack.enter_context(context)
    return stack


if __name__ == "__main__":
    main()
