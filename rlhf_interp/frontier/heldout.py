"""Held-out, paired comparison at equal KL: choose each edit family's setting on one split of prompts, report it on
another, and compare methods prompt by prompt at each KL budget.

Why a module: the v2 frontier chose each family's layer on the prompts it reported (optimistic) and compared
methods without pairing (wide intervals). Here every method is sampled on the same report prompts with the same
sampling seed (common random numbers), so a difference between two methods is a mean of per-prompt differences;
and a method that only has points at its own KLs (a training trajectory) is interpolated to a budget per prompt,
per seed, then averaged over seeds.

The tables this works on are per-sequence rows (``prompt_idx``, ``reward``, ``kl_exact``, ``key``) as
`rlhf_interp.frontier.new_methods.measure_point` writes them.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from rlhf_interp.core.stats import mean_interval


def choose_per_budget(candidates: pd.DataFrame, budgets: Sequence[float]) -> pd.DataFrame:
    """Per budget, among the candidates (selection-split rows with ``budget``, ``hit``, ``reward_mean``,
    ``kl_exact_mean``) that reached it, the one with the highest selection reward; when none reached it, the one
    closest in log KL among every setting tried (for any budget; KL 0 only when nothing else was tried), marked
    ``hit = False``. One row per budget, with ``selected_from`` (how many reached it)."""
    rows = []
    for budget in budgets:
        at = candidates[np.isclose(candidates["budget"], budget)]
        if at.empty:
            continue
        hits = at[at["hit"].astype(bool)]
        if len(hits):
            best = hits.loc[hits["reward_mean"].idxmax()]
        else:  # the closest setting tried for any budget (a bisection that ended at no change says nothing)
            tried = candidates[candidates["kl_exact_mean"] > 0]
            tried = tried if len(tried) else candidates
            gap = (np.log(tried["kl_exact_mean"].clip(lower=1e-9)) - math.log(budget)).abs()
            best = tried.loc[gap.idxmin()]
        rows.append({**best.to_dict(), "budget": float(budget), "hit": bool(len(hits)), "selected_from": len(hits),
                     "selection_kl": float(best["kl_exact_mean"]), "selection_reward": float(best["reward_mean"])})
    return pd.DataFrame(rows)


def per_prompt(sequences: pd.DataFrame, columns: Sequence[str] = ("reward", "kl_exact")) -> pd.DataFrame:
    """Per-prompt means of one point's sequences (samples of a prompt averaged first)."""
    return sequences.groupby("prompt_idx")[list(columns)].mean()


def bracket(kls: Sequence[float], budget: float) -> tuple[int, int, float] | None:
    """``(i, i + 1, w)`` for the first two consecutive points (in training order) whose mean KLs bracket
    ``budget``: the budget's value is ``(1 - w) * x_i + w * x_(i+1)``, linear in mean KL. None when no pair
    brackets it (the trajectory never reached the budget)."""
    for i, (ka, kb) in enumerate(zip(kls, kls[1:])):
        if min(ka, kb) <= budget <= max(ka, kb) and ka != kb:
            return i, i + 1, (budget - ka) / (kb - ka)
    return None


def interpolate_at(points: Sequence[pd.DataFrame], budget: float, column: str = "reward") -> pd.Series | None:
    """Per-unit ``column`` of a trajectory at ``budget`` nats: `bracket` over the points' mean ``kl_exact`` (each
    point a `per_prompt` table, in training order), the two bracketing points mixed per unit with its weight."""
    found = bracket([float(p["kl_exact"].mean()) for p in points], budget)
    if found is None:
        return None
    i, j, w = found
    return (1 - w) * points[i][column] + w * points[j][column]


def seed_average(series: Sequence[pd.Series | None]) -> tuple[pd.Series | None, int]:
    """Mean over seeds of per-prompt series (seeds that did not reach the budget are left out): (mean, seeds)."""
    usable = [s for s in series if s is not None]
    if not usable:
        return None, 0
    return pd.concat(usable, axis=1).mean(axis=1), len(usable)


def paired_difference(a: pd.Series, b: pd.Series) -> dict[str, float]:
    """Mean per-prompt difference ``a - b`` over the prompts both have, with its 95% t interval and n."""
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1).dropna()
    iv = mean_interval((both["a"] - both["b"]).to_numpy())
    return {"difference": iv.value, "low": iv.low, "high": iv.high, "n_prompts": len(both)}


def level(series: pd.Series) -> dict[str, float]:
    """Mean over prompts with its 95% t interval and n."""
    iv = mean_interval(series.dropna().to_numpy())
    return {"reward_mean": iv.value, "reward_low": iv.low, "reward_high": iv.high, "n_prompts": int(series.notna().sum())}


def top_two(at_budget: dict[str, pd.Series]) -> dict[str, object] | None:
    """The two methods with the highest mean reward among ``{method: per-prompt reward}`` and their paired
    difference (None with fewer than two methods)."""
    ranked = sorted(at_budget, key=lambda m: float(at_budget[m].mean()), reverse=True)
    if len(ranked) < 2:
        return None
    first, second = ranked[:2]
    return {"first": first, "second": second, **paired_difference(at_budget[first], at_budget[second])}


__all__ = ["bracket", "choose_per_budget", "interpolate_at", "level", "paired_difference", "per_prompt", "seed_average",
           "top_two"]
