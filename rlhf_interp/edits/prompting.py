"""Prompting as an edit: a system prompt, an instruction or few-shot examples put before every prompt.

Why it belongs beside steering: a prefix changes the model's distribution over continuations of the
user's prompt, and that change has a KL like any other edit's. Prompting is the strongest baseline a
representation edit meets (AxBench, 2025: prompting beats steering), so the equal-KL frontier needs it.

What is measured (`rlhf_interp.measure.context`): the continuation y is sampled given ``prefix + prompt``;
its reward is of y alone; its KL is of the same y tokens scored under the prompted context against the
bare context, ``sum_t KL(p(. | prefix, x, y<t) || p(. | x, y<t))`` — the KL of the prompted policy from
the base model *as a policy on the user's prompt x*. The continuation's columns shift by the prefix's
length; the measure package aligns them, once, for every caller.

A prompting edit changes the context, not the model: it adds no hook, so entering it directly would
silently measure nothing. ``with Prompting(...)`` is therefore refused; the measure package reads its
`apply` instead. Its strength for a KL-budget search is an index into a library of prefixes or the number
of few-shot examples (`few_shot`); `rlhf_interp.frontier.new_methods.prompting_family` makes the family.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Hashable, Sequence

from rlhf_interp.edits.base import Edit
from rlhf_interp.edits.errors import EditError


class Prompting(Edit):
    """Put ``prefix`` before every prompt (the text is joined as is: end it with a newline or a space).

    ``label``: a short name for tables (default: the prefix's first words). ``strength``: the knob that made
    it (shots, library index), recorded in `describe`. The empty prefix is the unchanged model (KL 0).
    """

    name = "prompting"
    changes_context = True  # read by rlhf_interp.measure.context

    def __init__(self, prefix: str, *, label: str | None = None, strength: float | None = None, model=None):
        if not isinstance(prefix, str):
            raise EditError(f"A prompting prefix must be a string, got {type(prefix).__name__}.")
        self.prefix = prefix
        self.label = label if label is not None else (" ".join(prefix.split()[:6]) or "(empty prefix)")
        self.strength = strength
        super().__init__(model)

    def apply(self, prompt: str) -> str:
        """The prompt as the prompted model sees it."""
        return self.prefix + prompt

    def apply_all(self, prompts: Sequence[str]) -> list[str]:
        return [self.apply(p) for p in prompts]

    def _validate(self, model) -> None:
        n_ctx = int(getattr(model.cfg, "n_ctx", 0) or 0)
        n_prefix = len(model.tokenizer(self.prefix, add_special_tokens=False)["input_ids"]) if self.prefix else 0
        if n_ctx and n_prefix >= n_ctx:
            raise EditError(f"The prefix is {n_prefix} tokens, as long as the model's whole context ({n_ctx}).")

    def __enter__(self) -> "Prompting":
        raise EditError("A prompting edit changes the prompt, not the model, so `with` would measure nothing. Measure "
                        "it with rlhf_interp.measure (evaluate_edit, sample, score_generation and "
                        "rlhf_interp.measure.capability handle it), or sample from edit.apply(prompt) yourself.")

    def _hook_fns(self) -> list[tuple[str, Callable]]:
        return []

    def cache_key(self) -> Hashable:
        return ("prompting", hashlib.sha256(self.prefix.encode()).hexdigest())

    def describe(self) -> dict[str, Any]:
        return {"edit": self.name, "setting": self.label, "strength": self.strength}

    def __repr__(self) -> str:
        return f"Prompting({self.prefix[:40]!r}{'...' if len(self.prefix) > 40 else ''})"


def few_shot(examples: Sequence[str], shots: int, *, instruction: str = "", separator: str = "\n\n",
             label: str | None = None) -> Prompting:
    """``instruction`` then the first ``shots`` examples, each followed by ``separator``; shots = 0 with no
    instruction is the empty prefix. Strength = shots: more examples, a stronger (and costlier) push."""
    if not isinstance(shots, int) or isinstance(shots, bool) or not 0 <= shots <= len(examples):
        raise EditError(f"shots must be a whole number from 0 to {len(examples)} (the examples given), got {shots!r}.")
    parts = ([instruction] if instruction else []) + list(examples[:shots])
    prefix = "".join(part + separator for part in parts)
    return Prompting(prefix, label=label or f"{shots}-shot" + (" + instruction" if instruction else ""),
                     strength=float(shots))


def changes_context(edit: Edit | None) -> bool:
    """Whether ``edit`` acts through the prompt (a `Prompting`), so it must be measured in its own context."""
    return bool(getattr(edit, "changes_context", False))


__all__ = ["Prompting", "changes_context", "few_shot"]
