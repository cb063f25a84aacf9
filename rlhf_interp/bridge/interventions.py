"""Which interventions (edits) are acting on a model right now, and a switch that pauses them all.

Why here and not in `rlhf_interp.edits`: code below the edits (the KV-cache canary in `generation`, the
reference pass of an ablation) must be able to run "the plain model" while edits are entered, without
knowing what an edit is. An intervention is any object with a boolean ``_suspended`` attribute that
its hooks honour (they pass activations through while it is true).
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterator

_ACTIVE: "weakref.WeakKeyDictionary[Any, list[Any]]" = weakref.WeakKeyDictionary()


def activate(model, intervention: Any) -> Callable[[], None]:
    """Record ``intervention`` as acting on ``model``; returns the function that removes the record."""
    _ACTIVE.setdefault(model, []).append(intervention)
    return lambda: _ACTIVE[model].remove(intervention)


def active(model) -> list[Any]:
    """The interventions currently acting on ``model`` (outermost first)."""
    return list(_ACTIVE.get(model, []))


@contextmanager
def suspended(model) -> Iterator[None]:
    """Run ``model`` as if no intervention were active (hooks stay attached but pass activations through)."""
    items = active(model)
    before = [i._suspended for i in items]
    for i in items:
        i._suspended = True
    try:
        yield
    finally:
        for i, state in zip(items, before):
            i._suspended = state
