"""Peak RSS of a residual diff over 100k tokens against the size of the models it holds.

    python benchmarks/diff_memory.py [--model smollm2-135m] [--tokens 100000] [--seq 128] [--batch-size 8]

Each measurement runs in a fresh subprocess, which reads its own peak resident set size at the end with
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the parent cross-checks with ``RUSAGE_CHILDREN``):

- ``baseline``: import the package and load base and tuned -- what any diff pays before its first token;
- ``diff``: the same, then `rlhf_interp.diff.residual_diff` (every block's resid_pre/mid/post, attn_out,
  mlp_out) over texts of about ``seq`` tokens until ``tokens`` tokens, with the current RSS sampled every
  0.5 s, so the JSON shows whether memory grows with the number of tokens (it should not: the diff streams
  running statistics).

Tuned = the same model with its block weights moved by 1% of their standard deviation (seeded), a stand-in
for a fine-tune: the diff's memory does not depend on what changed. "Model size" = the parameter bytes of the
models the diff holds: base and tuned, each tensor counted once (SmolLM2 ties its embeddings). The target is
peak <= those bytes + 1 GiB. Writes ``benchmarks/results/diff_memory.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import report_to_parent, run_child, set_threads, write_result

GIB = 1024 ** 3


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc; 0 elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _peak_rss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    return resource.getrusage(who).ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # KiB on Linux


def _texts(tokenizer, total_tokens: int, seq: int) -> list[str]:
    """Texts of about ``seq`` tokens (shipped prompts joined in a seeded order) until they hold ``total_tokens``
    tokens (BOS included, as the diff tokenizes them)."""
    import random

    from rlhf_interp.prompts import load_prompts

    pool = load_prompts()
    rng = random.Random(0)
    texts: list[str] = []
    count = 0
    while count < total_tokens:
        parts: list[str] = []
        length = 1  # BOS
        while length < seq:
            parts.append(rng.choice(pool))
            length = 1 + len(tokenizer(" ".join(parts), add_special_tokens=False)["input_ids"])
        texts.append(" ".join(parts))
        count += length
    return texts


def _load_pair(model_name: str):
    import torch

    from rlhf_interp import load_model

    base = load_model(model_name, device="cpu", frozen=True)
    tuned = load_model(model_name, device="cpu", frozen=True)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in tuned.original_model.named_parameters():
            if "layers." in name and param.ndim == 2:
                param.add_(0.01 * param.std() * torch.randn(param.shape, generator=generator))
    return base, tuned


def _param_bytes(bridge) -> int:
    seen = {id(p): p for p in bridge.original_model.parameters()}
    return sum(p.numel() * p.element_size() for p in seen.values())


def child(args: argparse.Namespace) -> None:
    set_threads(args.threads)
    base, tuned = _load_pair(args.model)
    from rlhf_interp.diff import RESID_HOOKS

    cfg = base.cfg  # what one token's residual activations take, both models, at every hook the diff reads
    out = {"model_bytes_each": _param_bytes(base), "models_bytes": _param_bytes(base) + _param_bytes(tuned),
           "rss_after_load": _rss_bytes(),
           "activation_bytes_per_token": 2 * len(RESID_HOOKS) * cfg.n_layers * cfg.d_model * 4}
    if args.child == "diff":
        from rlhf_interp.bridge.tokens import tokenize
        from rlhf_interp.diff import residual_diff

        texts = _texts(base.tokenizer, args.tokens, args.seq)
        real = sum(int(tokenize(base, texts[i:i + 64])[1].sum()) for i in range(0, len(texts), 64))
        samples: list[int] = []
        done = threading.Event()

        def sample_rss() -> None:  # the RSS every half second while the diff runs
            while not done.wait(0.5):
                samples.append(_rss_bytes())

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        table = residual_diff(base, tuned, texts, batch_size=args.batch_size)
        done.set()
        sampler.join()
        out.update({"texts": len(texts), "tokens": real, "rows": len(table), "rss_samples": samples})
    out["peak_rss"] = _peak_rss_bytes()
    report_to_parent(out)


def spawn(which: str, args: argparse.Namespace) -> dict:
    flags = ["--model", args.model, "--tokens", str(args.tokens), "--seq", str(args.seq),
             "--batch-size", str(args.batch_size)] + (["--threads", str(args.threads)] if args.threads else [])
    return run_child(__file__, which, flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--seq", type=int, default=128, help="tokens per text (about)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    parser.add_argument("--child", choices=["baseline", "diff"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    baseline = spawn("baseline", args)
    diff = spawn("diff", args)
    children_peak = _peak_rss_bytes(resource.RUSAGE_CHILDREN)  # the larger of the two children
    models = diff["models_bytes"]
    peak = diff["peak_rss"]
    samples = diff["rss_samples"]
    tenth = max(1, len(samples) // 10)
    growth = (max(samples[-tenth:]) - max(samples[:tenth])) if samples else 0
    print(f"{diff['tokens']} tokens in {diff['texts']} texts: peak RSS {peak / GIB:.2f} GiB; models "
          f"{models / GIB:.2f} GiB (base + tuned); baseline (loaded, no diff) {baseline['peak_rss'] / GIB:.2f} GiB; "
          f"RSS growth first->last tenth of the run {growth / 2**20:+.0f} MiB")
    write_result("diff_memory", {"diff_memory": {
        "model": args.model, "tokens": diff["tokens"], "texts": diff["texts"], "seq": args.seq,
        "batch_size": args.batch_size, "peak_rss_bytes": peak, "peak_rss_children_bytes": children_peak,
        "baseline_peak_rss_bytes": baseline["peak_rss"], "models_bytes": models,
        "model_bytes_each": diff["model_bytes_each"], "rss_after_load_bytes": diff["rss_after_load"],
        "rss_growth_bytes_first_to_last_tenth": growth, "rss_samples_bytes": samples,
        "over_models_bytes": peak - models, "activation_bytes_per_token": diff["activation_bytes_per_token"],
        "headline": {"what": f"Residual diff of two {args.model} models over {diff['tokens'] / 1000:.0f}k tokens: "
                             f"peak RSS",
                     "result": f"{peak / GIB:.2f} GiB = models {models / GIB:.2f} GiB + {(peak - models) / GIB:.2f} "
                               f"GiB (loading alone peaks at {baseline['peak_rss'] / GIB:.2f} GiB)",
                     "target": "<= models + 1 GiB", "met": bool(peak <= models + GIB and args.tokens >= 100_000)}}})


if __name__ == "__main__":
    main()
