"""A steering sweep through `rlhf_interp.measure` vs the bare forward passes and generations it needs.

    python benchmarks/sweep_efficiency.py [--model smollm2-135m] [--prompts 8] [--layers 10 20] [--coefs 4 8]
                                          [--new-tokens 24] [--reps 3]

The sweep: `measure.steering_sweep` over layers x coefs with one vector. Per setting it samples with the edit
(KV cache), scores the samples with and without the edit (per-sequence k1 / k3 / exact KL, entropy, reward,
distinct-n) and takes the per-position KL on the prompts (the unedited prompt logits are cached once per sweep).

The bare loop: the same passes written by hand on a plain Hugging Face model (sdpa, no bridge) -- a PyTorch
forward hook adding ``coef * v`` to block L's output (= ``blocks.L.hook_resid_post``), Hugging Face ``generate``
with the same seed and arguments, one forward with the hook and one without over the samples, one hooked
forward over the prompts (the unhooked one once), the exact per-token KL and the reward. No TransformerLens,
edit objects, position tracking, content-keyed caches or DataFrames.

Cross-check at every run: both draw the same samples and give the same mean exact KL per sequence, so they
did the same work. ratio = sweep seconds / bare seconds (medians of alternated repetitions after a warm-up);
the target is <= 1.2. Writes ``benchmarks/results/sweep.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import alternate, median, set_threads, write_result


def bare_sweep(plain, tokenizer, vector, layers, coefs, tokens, mask, reward_fn, new_tokens: int, seed: int
               ) -> list[dict]:
    """The passes a steering sweep needs, by hand on a plain Hugging Face model (sdpa, no bridge): one row
    (layer, coef, kl_exact_mean, kl_prompt_mean, reward_mean, texts) per setting."""
    import torch

    from rlhf_interp.core.kl import kl_from_logprobs
    from rlhf_interp.core.masks import continuation_mask
    from rlhf_interp.core.seeding import seeded

    width = tokens.shape[1]
    eos = tokenizer.eos_token_id
    rows = []

    def logprobs(ids, attention):
        return torch.log_softmax(plain(ids, attention_mask=attention).logits.float(), -1)

    with torch.no_grad():
        ref_prompt = logprobs(tokens, mask)
        for layer in layers:
            for coef in coefs:
                def add(module, args, output, c=coef):  # resid_post of the block = the decoder layer's output
                    return (output[0] + c * vector, *output[1:]) if isinstance(output, tuple) else output + c * vector

                handle = plain.model.layers[layer].register_forward_hook(add)
                try:
                    with seeded(seed):
                        out = plain.generate(tokens, attention_mask=mask, max_new_tokens=new_tokens, do_sample=True,
                                             temperature=1.0, top_k=0, eos_token_id=eos, pad_token_id=eos)
                    gen_mask = continuation_mask(out[:, width:], [eos])
                    full_mask = torch.cat([mask, gen_mask], dim=1)
                    logp = logprobs(out, full_mask)[:, width - 1:-1]
                    logp_prompt = logprobs(tokens, mask)
                finally:
                    handle.remove()
                logq = logprobs(out, full_mask)[:, width - 1:-1]
                kl = (kl_from_logprobs(logp, logq) * gen_mask).sum(1)
                texts = [tokenizer.decode(row[m.bool()], skip_special_tokens=True)
                         for row, m in zip(out[:, width:], gen_mask)]
                rows.append({"layer": layer, "coef": coef, "kl_exact_mean": float(kl.mean()),
                             "kl_prompt_mean": float(kl_from_logprobs(logp_prompt, ref_prompt)[mask.bool()].mean()),
                             "reward_mean": float(torch.as_tensor(reward_fn(texts), dtype=torch.float).mean()),
                             "texts": texts})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--layers", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--coefs", type=float, nargs="+", default=[4.0, 8.0])
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    args = parser.parse_args()
    set_threads(args.threads)

    import torch

    from rlhf_interp import load_model, load_prompts
    from rlhf_interp.measure import steering_sweep
    from rlhf_interp.reward.functions import get_reward

    from rlhf_interp.bridge.loading import load_hf_model
    from rlhf_interp.bridge.tokens import tokenize

    model = load_model(args.model, device="cpu")
    plain, _, _ = load_hf_model(args.model, device="cpu")
    plain.set_attn_implementation("sdpa")  # what a plain from_pretrained uses
    plain.generation_config = type(plain.generation_config)()  # no model defaults (top_k=50) in the bare sampling
    layers = [min(layer, model.cfg.n_layers - 1) for layer in args.layers]
    vector = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0)) / model.cfg.d_model ** 0.5
    prompts = load_prompts(limit=args.prompts, seed=2)
    reward = get_reward("char_count")
    tokens, mask = tokenize(model, prompts)  # the sweep's own tokenization (BOS, left padding)
    results: dict[str, object] = {}

    def sweep():
        results["sweep"] = steering_sweep(model, vector, layers, args.coefs, prompts, reward,
                                          max_new_tokens=args.new_tokens, seed=0, keep_sequences=True)

    def bare():
        results["bare"] = bare_sweep(plain, model.tokenizer, vector, layers, args.coefs, tokens, mask, reward,
                                     args.new_tokens, seed=0)

    times = alternate({"sweep": sweep, "bare": bare}, reps=args.reps)
    frame, sequences = results["sweep"]
    bare_rows = results["bare"]
    same_kl = [abs(row["kl_exact_mean"] - float(got)) <= 1e-4 * max(1.0, abs(float(got)))
               for row, got in zip(bare_rows, frame["kl_exact_mean"])]
    same_text = [list(sequences.loc[(sequences["layer"] == row["layer"]) & (sequences["coef"] == row["coef"]),
                                    "continuation"]) == row["texts"] for row in bare_rows]
    if not (all(same_kl) and all(same_text)):
        raise SystemExit(f"the bare loop and the sweep did different work (same samples: {same_text}; same "
                         f"kl_exact_mean: bare {[r['kl_exact_mean'] for r in bare_rows]} vs sweep "
                         f"{list(frame['kl_exact_mean'])})")
    sweep_s, bare_s = median(times["sweep"]), median(times["bare"])
    ratio = sweep_s / bare_s
    settings = len(layers) * len(args.coefs)
    print(f"{settings} settings x {args.prompts} prompts x {args.new_tokens} tokens: sweep {sweep_s:.2f} s, bare "
          f"{bare_s:.2f} s -> {ratio:.2f}x")
    write_result("sweep", {"sweep": {
        "model": args.model, "settings": settings, "layers": layers, "coefs": args.coefs, "prompts": args.prompts,
        "new_tokens": args.new_tokens, "sweep_seconds": times["sweep"], "bare_seconds": times["bare"],
        "sweep_seconds_median": sweep_s, "bare_seconds_median": bare_s, "ratio": ratio,
        "same_kl_exact_mean": all(same_kl), "same_samples": all(same_text),
        "headline": {"what": f"Steering sweep ({settings} settings x {args.prompts} prompts x {args.new_tokens} "
                             f"tokens) vs its bare passes",
                     "result": f"{ratio:.2f}x the bare passes' time", "target": "<= 1.2x",
                     "met": bool(ratio <= 1.2)}}})


if __name__ == "__main__":
    main()
