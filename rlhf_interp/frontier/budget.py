"""Equal-KL comparison: turn an edit family's one knob until it spends a given KL budget.

Why: "steering buys more reward than PPO" means nothing unless both paid the same KL. An edit family
(a steering vector at a layer, a rank-one edit at a layer ...) is a map from a strength ``s >= 0``
(``s = 0`` is the unedited model) to an edit. For each budget ``B`` (nats per sequence, the exact
per-token KL(edited || base) summed over the edited model's own samples, as `evaluate_edit` measures
it) we search ``s`` with ``|KL(s) - B| <= rel_tol * B``.

The search brackets the budget and interpolates in log-log space: near ``s = 0`` the KL grows like
``s^2``, so ``log KL`` is close to linear in ``log s`` and one or two interpolations usually land
inside the tolerance. Every evaluation is kept and reused for the next budget. The same sampling seed
is used at every strength, so ``KL(s)`` is a deterministic function; it can still jump where a sample
flips, which is why the search gives up after ``max_evals`` (or when the KL stops growing with the
strength: some budgets are out of a family's reach) and reports the closest point with ``hit = False``
rather than pretending.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd

from rlhf_interp.edits import Edit
from rlhf_interp.measure import evaluate_edit

KL_COLUMN = "kl_exact_mean"


@dataclass
class EditFamily:
    """Edits indexed by one strength: ``make(s)`` -> an (unbound) edit; ``s = 0`` is no edit.

    ``columns``: what identifies the family in tables (method, layer, vector ...). ``start``: the first
    strength to try (a guess of the right scale saves evaluations).
    """

    method: str
    make: Callable[[float], Edit]
    columns: dict[str, Any] = field(default_factory=dict)
    start: float = 1.0
    max_strength: float = 1e6


def _bracket(memo: dict[float, float], budget: float) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """The largest strength below the budget and the smallest one above it, as (s, kl)."""
    above = [(s, kl) for s, kl in memo.items() if kl > budget]
    hi = min(above) if above else None
    below = [(s, kl) for s, kl in memo.items() if kl < budget and (hi is None or s < hi[0])]
    lo = max(below) if below else None
    return lo, hi


def next_strength(memo: dict[float, float], budget: float, start: float) -> float | None:
    """Where to evaluate next to reach ``budget`` (None: the bracket has collapsed, give up)."""
    lo, hi = _bracket(memo, budget)
    if hi is None:
        if lo is None:
            return start
        ordered = sorted(memo.items())
        if len(ordered) >= 3 and ordered[-1][1] < 1.02 * ordered[-2][1]:
            return None  # KL has stopped growing with strength: the budget is out of this family's reach
        s, kl = lo
        grow = math.sqrt(budget / kl) if kl > 0 else 4.0  # KL ~ s^2 near 0
        return s * min(max(grow * 1.05, 1.5), 8.0)
    if lo is None or lo[1] <= 0:
        s, kl = hi
        floor = lo[0] if lo is not None else 0.0
        guess = s * min(max(math.sqrt(budget / kl), 1 / 8), 1 / 1.5)
        return guess if guess > floor else (floor + s) / 2
    (s_lo, k_lo), (s_hi, k_hi) = lo, hi
    if s_hi / s_lo < 1 + 1e-4:
        return None
    t = (math.log(budget) - math.log(k_lo)) / (math.log(k_hi) - math.log(k_lo))
    t = min(max(t, 0.05), 0.95)
    return math.exp(math.log(s_lo) + t * (math.log(s_hi) - math.log(s_lo)))


def find_strength(kl_at: Callable[[float], float], budget: float, *, memo: dict[float, float] | None = None,
                  start: float = 1.0, rel_tol: float = 0.05, max_evals: int = 8, max_strength: float = 1e6
                  ) -> tuple[float, float, bool]:
    """Strength whose KL is within ``rel_tol`` of ``budget``: ``(s, kl, hit)``; ``memo`` (s -> KL) is
    read and extended, so consecutive budgets share evaluations. Without a hit, the closest point."""
    if budget <= 0:
        raise ValueError(f"KL budgets must be > 0 nats, got {budget}.")
    memo = memo if memo is not None else {}

    def closest() -> tuple[float, float]:
        return min(memo.items(), key=lambda item: (abs(item[1] - budget), item[0]))

    evals = 0
    while True:
        if memo and abs(closest()[1] - budget) <= rel_tol * budget:
            return (*closest(), True)
        s = next_strength(memo, budget, start)
        if evals >= max_evals or s is None or s > max_strength or s in memo:
            break
        memo[s] = float(kl_at(s))
        evals += 1
    if not memo:
        raise RuntimeError(f"find_strength could not evaluate any strength (start={start}, max_strength="
                           f"{max_strength}).")
    s_best, kl_best = closest()
    return s_best, kl_best, abs(kl_best - budget) <= rel_tol * budget


def equal_kl(model, family: EditFamily, prompts: Sequence[str], reward: str | Callable, budgets: Sequence[float], *,
             reference=None, max_new_tokens: int = 24, seed: int = 0, rel_tol: float = 0.05,
             max_evals_per_budget: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reward at each KL budget for one edit family: ``(points, evaluations)``.

    ``points``: one row per budget: the family's columns, method, budget, strength, hit (within
    ``rel_tol``), and `evaluate_edit`'s columns at that strength (reward_mean/_stderr, kl_exact_mean/
    _stderr, ...). ``evaluations``: every strength tried (same columns, no budget).
    ``reference``: the model KL is measured against (None: ``model`` without the edit).
    """
    rows: dict[float, dict[str, Any]] = {}

    def kl_at(strength: float) -> float:
        summary = evaluate_edit(model, family.make(strength), prompts, reward, reference=reference,
                                max_new_tokens=max_new_tokens, seed=seed)
        rows[strength] = {**family.columns, "method": family.method, "strength": strength,
                          **summary.iloc[0].to_dict()}
        return rows[strength][KL_COLUMN]

    memo: dict[float, float] = {}
    points = []
    for budget in sorted(float(b) for b in budgets):
        s, _, hit = find_strength(kl_at, budget, memo=memo, start=family.start, rel_tol=rel_tol,
                                  max_evals=max_evals_per_budget, max_strength=family.max_strength)
        points.append({**rows[s], "budget": budget, "hit": hit})
    evaluations = pd.DataFrame([rows[s] for s in sorted(rows)])
    return pd.DataFrame(points), evaluations


__all__ = ["EditFamily", "KL_COLUMN", "equal_kl", "find_strength", "next_strength"]
