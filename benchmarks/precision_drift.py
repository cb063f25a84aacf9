"""How far bf16 moves the log-probs PPO uses: exact KL(fp32 || bf16) per token on a rollout-sized batch.

    python benchmarks/precision_drift.py [--model smollm2-135m] [--batch 16] [--new-tokens 24]

16 left-padded prompts, 24 sampled tokens each (fp32 sampling, seed 0). On every position that predicts a
generated token, the next-token distribution at temperature T (logits / T, as `kl.sampling_logprobs`) from an
fp32 pass is compared with two bf16 passes (`bridge.precision.autocast`): ``scoring`` -- bf16 with the
unembedding in fp32, what PPO's policy, reference and update passes use -- and ``pure`` -- bf16 logits too
(~11% faster per learn step, but the logits' rounding is divided by T). The bf16 option is kept only while the
scoring drift stays below 1e-3 nats per token (also asserted by tests/test_precision.py). Writes
``benchmarks/results/precision_drift.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import set_threads, write_result

TEMPERATURES = (1.0, 0.7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    set_threads(args.threads)

    import torch

    from rlhf_interp import generate, load_model, load_prompts
    from rlhf_interp.bridge.precision import autocast, log_prob_drift

    model = load_model(args.model, device="cpu")
    gen = generate(model, load_prompts(limit=args.batch, seed=3), max_new_tokens=args.new_tokens, seed=0,
                   stop_at_eos=False)
    predicting = torch.zeros_like(gen.attention_mask)
    predicting[:, gen.prompt_len - 1:-1] = gen.generated_mask[:, gen.prompt_len:]
    with torch.no_grad():
        fp32 = model(gen.tokens, attention_mask=gen.attention_mask)
        with autocast(model, "bf16", fp32_logits=True):
            scoring = model(gen.tokens, attention_mask=gen.attention_mask)
        with autocast(model, "bf16"):
            pure = model(gen.tokens, attention_mask=gen.attention_mask)
    rows = []
    for temperature in TEMPERATURES:
        for name, logits in (("scoring", scoring), ("pure", pure)):
            drift = log_prob_drift(fp32 / temperature, logits.float() / temperature, predicting)
            rows.append({"pass": name, "temperature": temperature, **drift})
            print(f"T={temperature}: {name:8s} KL(fp32||bf16) {drift['kl_per_token']:.2e} nats/token "
                  f"(max {drift['max_kl']:.2e}) over {drift['positions']} positions")
    worst = max(r["kl_per_token"] for r in rows if r["pass"] == "scoring")
    write_result("precision_drift", {"precision_drift": {
        "model": args.model, "batch": args.batch, "new_tokens": args.new_tokens, "rows": rows,
        "headline": {"what": f"bf16 vs fp32 log-probs on a {args.batch} x {args.new_tokens} rollout (PPO's bf16 "
                             f"passes: fp32 unembedding), T = {'/'.join(map(str, TEMPERATURES))}",
                     "result": f"{worst:.1e} nats/token at worst (bf16 logits too: "
                               + ", ".join(f"{r['kl_per_token']:.1e} at T={r['temperature']}"
                                           for r in rows if r["pass"] == "pure") + ")",
                     "target": "< 1e-3", "met": bool(worst < 1e-3), "timed": False}}})


if __name__ == "__main__":
    main()
