"""Rollout sampling through the toolkit vs raw Hugging Face ``generate``, both with the KV cache.

    python benchmarks/rollout_vs_generate.py [--model smollm2-135m] [--batches 8 16 32] [--new-tokens 32] [--reps 3]

"Ours" is `rlhf_interp.generate` on the bridge with a hook active (a zero steering vector, so the hook
machinery and position tracking run but nothing changes); "raw" is a separately loaded plain
``AutoModelForCausalLM.generate`` (no bridge wrapping) on the same left-padded tokens and mask, sampling at temperature 1 with no early stop. Alternated
repetitions; medians; the ratio ours/raw of tokens per second is what to quote.
Writes ``benchmarks/results/rollout.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import write_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    import torch

    from rlhf_interp import Steering, generate, load_model, load_prompts, tokenize
    from rlhf_interp.bridge.loading import load_hf_model

    model = load_model(args.model, device="cpu", dtype=args.dtype)
    plain, _, _ = load_hf_model(args.model, device="cpu", dtype=args.dtype)
    rows = []
    for batch in args.batches:
        prompts = load_prompts(limit=batch, seed=1)
        tokens, mask = tokenize(model, prompts)
        hook = Steering(torch.zeros(model.cfg.d_model), layers=model.cfg.n_layers // 2).on(model)
        generate(model, prompts[:2], max_new_tokens=2)  # warm-up + KV canary outside the timing
        ours, raw = [], []
        for rep in range(args.reps):
            with hook:
                t0 = time.perf_counter()
                generate(model, prompts, max_new_tokens=args.new_tokens, seed=rep, stop_at_eos=False)
                ours.append(time.perf_counter() - t0)
            with torch.inference_mode():
                t0 = time.perf_counter()
                plain.generate(tokens, attention_mask=mask, max_new_tokens=args.new_tokens,
                                              min_new_tokens=args.new_tokens, do_sample=True, temperature=1.0,
                                              top_k=0, pad_token_id=model.tokenizer.pad_token_id)
                raw.append(time.perf_counter() - t0)
        n = batch * args.new_tokens
        row = {"batch": batch, "new_tokens": args.new_tokens, "ours_tok_s": n / statistics.median(ours),
               "raw_tok_s": n / statistics.median(raw)}
        row["ratio"] = row["ours_tok_s"] / row["raw_tok_s"]
        rows.append(row)
        print(f"batch {batch:3d}: ours {row['ours_tok_s']:7.1f} tok/s, raw HF {row['raw_tok_s']:7.1f} tok/s "
              f"-> {100 * row['ratio']:.0f}%")
    write_result("rollout", {"rollout": {"model": args.model, "dtype": args.dtype, "rows": rows,
                                         "min_ratio": min(r["ratio"] for r in rows)}})


if __name__ == "__main__":
    main()
