"""Refuse to diff two models that cannot be compared token for token, before any forward pass.

Why: a diff of activations is only meaningful when both models read the same token ids into the
same residual-stream basis shape. Different tokenizers silently misalign every position; different
shapes fail deep inside a matmul with an unhelpful message.
"""

from __future__ import annotations

import hashlib
import json

# Config fields that must agree for activations, patterns and weights to line up.
SHAPE_FIELDS: tuple[str, ...] = (
    "architecture", "n_layers", "d_model", "n_heads", "n_key_value_heads", "d_head", "d_mlp", "d_vocab",
    "normalization_type",
)


class ModelMismatchError(ValueError):
    """Two models differ in architecture or tokenizer; the message lists every difference."""


def _tokenizer_fingerprint(tokenizer) -> dict[str, object]:
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()[:16]
    return {"vocab size": len(vocab), "vocab hash": digest, "bos_token_id": tokenizer.bos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def check_compatible(base, tuned) -> None:
    """Raise `ModelMismatchError` naming each config field or tokenizer property that differs."""
    problems: list[str] = []
    for name in SHAPE_FIELDS:
        a, b = getattr(base.cfg, name, None), getattr(tuned.cfg, name, None)
        if a != b:
            problems.append(f"{name}: base {a!r} vs tuned {b!r}")
    fa, fb = _tokenizer_fingerprint(base.tokenizer), _tokenizer_fingerprint(tuned.tokenizer)
    for key in fa:
        if fa[key] != fb[key]:
            problems.append(f"tokenizer {key}: base {fa[key]!r} vs tuned {fb[key]!r}")
    if problems:
        raise ModelMismatchError(
            "Cannot diff these models: they differ in architecture or tokenizer:\n  - "
            + "\n  - ".join(problems)
            + "\nFix: diff a tuned model against the base model it was trained from (same architecture "
              "and tokenizer), e.g. --base smollm2-135m --tuned runs/<run>/checkpoint-NNNNNN."
        )
