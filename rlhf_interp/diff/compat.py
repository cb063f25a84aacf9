"""Refuse to diff two models that cannot be compared token for token, before any forward pass.

Why: a diff of activations is only meaningful when both models read the same token ids into the
same residual-stream basis shape. Different tokenizers silently misalign every position; different
shapes fail deep inside a matmul with an unhelpful message.
"""

from __future__ import annotations

from rlhf_interp.bridge.tokens import tokenizer_differences

# Config fields that must agree for activations, patterns and weights to line up.
SHAPE_FIELDS: tuple[str, ...] = (
    "architecture", "n_layers", "d_model", "n_heads", "n_key_value_heads", "d_head", "d_mlp", "d_vocab",
    "normalization_type",
)


class ModelMismatchError(ValueError):
    """Two models differ in architecture or tokenizer; the message lists every difference."""


def check_compatible(base, tuned) -> None:
    """Raise `ModelMismatchError` naming each config field or tokenizer property that differs."""
    problems: list[str] = []
    for name in SHAPE_FIELDS:
        a, b = getattr(base.cfg, name, None), getattr(tuned.cfg, name, None)
        if a != b:
            problems.append(f"{name}: base {a!r} vs tuned {b!r}")
    problems += tokenizer_differences(base.tokenizer, tuned.tokenizer)
    if problems:
        raise ModelMismatchError(
            "Cannot diff these models: they differ in architecture or tokenizer:\n  - "
            + "\n  - ".join(problems)
            + "\nFix: diff a tuned model against the base model it was trained from (same architecture "
              "and tokenizer), e.g. --base smollm2-135m --tuned runs/<run>/checkpoint-NNNNNN."
        )
