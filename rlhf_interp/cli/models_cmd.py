"""``rlhf-interp models list|fetch|describe``."""

from __future__ import annotations

import argparse
import time

from rlhf_interp.cli.common import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="list, fetch and describe the models this toolkit knows")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    p_list = actions.add_parser("list", help="known aliases, whether each is cached, and its size on disk")
    p_list.set_defaults(func=_list)
    p_fetch = actions.add_parser("fetch", help="fetch and convert an embedded model into the cache")
    p_fetch.add_argument("name", help="an embedded alias, e.g. smollm2-135m")
    p_fetch.add_argument("--force", action="store_true", help="convert again even if cached")
    p_fetch.set_defaults(func=_fetch)
    p_desc = actions.add_parser("describe", help="load a model, print its shape and hook points, and greedily "
                                                 "continue a prompt")
    p_desc.add_argument("name", nargs="?", default="smollm2-135m", help="alias, local directory or HF id")
    p_desc.add_argument("--prompt", default="The capital of France is")
    p_desc.add_argument("--max-new-tokens", type=positive_int, default=20)
    p_desc.set_defaults(func=_describe)


def _list(args: argparse.Namespace) -> int:
    from rlhf_interp.bridge.aliases import (EMBEDDED_MODELS, KNOWN_ALIASES, cache_root, dir_size_bytes, embedded_model_dir,
                                            is_cached)

    print(f"cache: {cache_root()}")
    print(f"{'alias':<14} {'cached':<7} {'size':>9}  description")
    for alias, description in KNOWN_ALIASES.items():
        if alias in EMBEDDED_MODELS:
            cached = "yes" if is_cached(alias) else "no"
            size = f"{dir_size_bytes(embedded_model_dir(alias)) / 1e6:.0f} MB" if cached == "yes" else "-"
        else:
            cached, size = "n/a", "built"
        print(f"{alias:<14} {cached:<7} {size:>9}  {description}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from rlhf_interp.bridge import dir_size_bytes, fetch_embedded

    start = time.perf_counter()
    path = fetch_embedded(args.name, force=args.force)
    print(f"{args.name}: {path} ({dir_size_bytes(path) / 1e6:.0f} MB) in {time.perf_counter() - start:.1f} s")
    return 0


def _describe(args: argparse.Namespace) -> int:
    from rlhf_interp.bridge import load_model

    start = time.perf_counter()
    bridge = load_model(args.name)
    seconds = time.perf_counter() - start
    cfg = bridge.cfg
    n_params = sum(p.numel() for p in bridge.original_model.parameters())
    print(f"model: {args.name} loaded in {seconds:.1f} s on {cfg.device}")
    print(f"layers {cfg.n_layers}, d_model {cfg.d_model}, heads {cfg.n_heads} "
          f"(kv heads {getattr(cfg, 'n_key_value_heads', None) or cfg.n_heads}), d_vocab {cfg.d_vocab}, "
          f"parameters {n_params / 1e6:.1f} M")
    hooks = sorted(bridge.hook_dict)
    block0 = [h for h in hooks if h.startswith("blocks.0.")]
    print(f"hook points: {len(hooks)}; in block 0: {', '.join(block0)}")
    text = bridge.generate(args.prompt, max_new_tokens=args.max_new_tokens, do_sample=False, verbose=False)
    print(f"greedy: {text!r}")
    return 0
