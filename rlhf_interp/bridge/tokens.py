"""Tokenization, one convention for the whole toolkit: BOS prepended, left-padded, with a mask.

Why left padding: in a batch the last column is then every row's newest token, which is what
generation continues from; the mask tells the model (and `rlhf_interp.core.masks`) which columns are real.
"""

from __future__ import annotations

import hashlib
import json

import torch

from rlhf_interp.core.masks import pad_rows


def tokenize(bridge, texts: list[str] | str, *, device: torch.device | str | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded token ids with BOS prepended, and the attention mask: ``(tokens, mask)`` each [batch, pos]."""
    if isinstance(texts, str):
        texts = [texts]
    if not texts:
        raise ValueError("tokenize needs at least one text.")
    tokenizer = bridge.tokenizer
    rows = [torch.tensor([tokenizer.bos_token_id] + tokenizer(t, add_special_tokens=False)["input_ids"],
                         dtype=torch.long) for t in texts]
    tokens, mask = pad_rows(rows, side="left", value=tokenizer.pad_token_id)
    device = device if device is not None else bridge.cfg.device
    return tokens.to(device), mask.to(device)


def check_context(bridge, texts: list[str], max_new_tokens: int = 0, *, what: str = "prompt") -> None:
    """Refuse texts that do not fit the model's context (``cfg.n_ctx``) with ``max_new_tokens`` more.

    Why refuse rather than run: rotary models run past their trained length without an error and give
    silently meaningless logits; truncating would change the prompt behind the user's back.
    """
    n_ctx = int(getattr(bridge.cfg, "n_ctx", 0) or 0)
    if not n_ctx or not texts:
        return
    lengths = [1 + len(ids) for ids in bridge.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    if lengths[longest] + max_new_tokens > n_ctx:
        text = texts[longest]
        raise ValueError(f"{what.capitalize()} {longest} ({text[:40]!r}{'...' if len(text) > 40 else ''}) is "
                         f"{lengths[longest]} tokens with BOS; with {max_new_tokens} new tokens that exceeds the "
                         f"model's context of {n_ctx}. Shorten or drop it, or lower max_new_tokens.")


def tokenizer_fingerprint(tokenizer) -> dict[str, object]:
    """What two tokenizers must share for token ids to mean the same text: the vocabulary (size and a hash of
    every token -> id pair) and the BOS and pad ids."""
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()[:16]
    return {"vocab size": len(vocab), "vocab hash": digest, "bos_token_id": tokenizer.bos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def tokenizer_differences(a, b, names: tuple[str, str] = ("base", "tuned")) -> list[str]:
    """``"tokenizer vocab hash: base '…' vs tuned '…'"`` for every fingerprint entry that differs ([] = same)."""
    fa, fb = tokenizer_fingerprint(a), tokenizer_fingerprint(b)
    return [f"tokenizer {key}: {names[0]} {fa[key]!r} vs {names[1]} {fb[key]!r}" for key in fa if fa[key] != fb[key]]


def pair_problems(model, reference, names: tuple[str, str] = ("model", "reference")) -> list[str]:
    """Why ``reference`` cannot be compared with ``model`` token for token ([] = it can): the output size
    (``cfg.d_vocab``) and every `tokenizer_fingerprint` entry (vocabulary content, BOS and pad ids). The one check
    for every model pair the toolkit compares: the trainer's ref_model, measure's --reference, diff's base/tuned."""
    problems = []
    a, b = int(model.cfg.d_vocab), int(reference.cfg.d_vocab)
    if a != b:
        problems.append(f"d_vocab: {names[0]} {a} vs {names[1]} {b}")
    return problems + tokenizer_differences(model.tokenizer, reference.tokenizer, names=names)
