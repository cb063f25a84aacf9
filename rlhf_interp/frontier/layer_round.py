"""Which layer buys the most reward at equal KL? One steering vector, every layer's coefficient bisected to each KL
budget on the selection prompts, every chosen point measured on the same report prompts and sampling seed, and the
layers compared prompt by prompt.

Why a module: comparing layers at equal *coefficient* says nothing about cost (the same coefficient is a different
KL at each layer). This reuses the held-out round's machinery (`v3_round.Round`: bisection on the selection split,
`new_methods.measure_point` on the report split, points cached on disk; `heldout`: per-prompt tables, interpolation
to a budget, paired differences) and adds only what a layer comparison needs: a per-layer edit family, each
layer's per-prompt reward at exactly the budget, and the paired tests (the layer chosen on the selection prompts
against every other layer; the last layer against the first; the per-prompt slope of reward on layer).

Tables (the page rebuilds from them): ``per_prompt`` (one row per measured point and report prompt: ``key``,
``prompt_idx``, ``reward``, ``kl_exact``, ``fluency_nll``, ``entropy_mean``; samples of a prompt averaged),
``points`` (one row per measured point, `measure_point`'s columns plus ``layer``, ``strength``, ``cpu_seconds``)
and ``choices`` (one row per layer and budget: ``key``, ``strength``, ``hit``, ``selection_kl``,
``selection_reward``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from rlhf_interp.core.stats import Interval, mean_interval, paired_difference
from rlhf_interp.frontier.heldout import interpolate_at, per_prompt

BASE_KEY = "base"
PER_PROMPT_COLUMNS = ("reward", "kl_exact", "fluency_nll", "entropy_mean")


def layer_family(vector, layer: int, start: float = 1.0):
    """The vector at one layer as an `EditFamily` (strength = coefficient; 0 = unsteered)."""
    from rlhf_interp.edits import Steering
    from rlhf_interp.frontier.budget import EditFamily

    return EditFamily("steering", lambda s: Steering(vector, [layer], s),
                      {"kind": "steering", "layer": int(layer), "setting": f"layer {layer}"}, start=start)


def point_key(layer: int, strength: float) -> str:
    """A point's cache key: its layer and coefficient (a re-selection at another strength is a new point)."""
    return f"layer{int(layer)}_{float(strength):.4g}"


def run_layers(rnd, vector, layers: Sequence[int], *, start: float = 1.0, log=print) -> None:
    """The unsteered point, then per layer: bisect on the selection split (`Round.select`, cached per layer),
    measure each budget's chosen coefficient on the report split (`Round.measure`, cached per point) and record
    the choices. Every step is skipped when its file exists, so a killed run resumes where it stopped."""
    from rlhf_interp.edits import Steering

    base = rnd.setup.base
    rnd.measure(BASE_KEY, {"layer": -1, "strength": 0.0, "setting": "unsteered"}, base)
    for layer in layers:
        chosen = rnd.select(f"layer{layer}", base, [layer_family(vector, layer, start)])
        choices = []
        for c in chosen.to_dict("records"):
            strength = float(c["strength"])
            key = point_key(layer, strength)
            rnd.measure(key, {"layer": int(layer), "strength": strength, "setting": f"layer {layer}",
                              "selected_on": "selection split"}, base, Steering(vector, [int(layer)], strength))
            choices.append({"key": key, "layer": int(layer), "budget": float(c["budget"]), "strength": strength,
                            "hit": bool(c["hit"]), "selection_kl": float(c["selection_kl"]),
                            "selection_reward": float(c["selection_reward"])})
        rnd.save_choices(f"layer{layer}", choices)
        log(f"[layers] layer {layer}: " + ", ".join(f"{c['budget']:g} nats -> coef {c['strength']:.3g} "
                                                    f"({'hit' if c['hit'] else 'miss'})" for c in choices))


def collect(rnd, n_examples: int = 3) -> dict[str, pd.DataFrame]:
    """The round's finished points as the page's tables: ``per_prompt``, ``points``, ``choices`` and ``examples``
    (each point's first sample of the first ``n_examples`` report prompts)."""
    rows = pd.DataFrame(rnd.points.rows())
    per, examples = [], []
    for key in rows["key"]:
        seqs = rnd.points.sequences(key)
        per.append(per_prompt(seqs, PER_PROMPT_COLUMNS).reset_index().assign(key=key))
        first = seqs.drop_duplicates("prompt_idx").sort_values("prompt_idx").head(n_examples)
        examples.append(first[["prompt_idx", "continuation", "reward", "kl_exact", "fluency_nll"]].assign(key=key))
    columns = ["key", "prompt_idx", *PER_PROMPT_COLUMNS]
    return {"per_prompt": pd.concat(per, ignore_index=True)[columns], "points": rows,
            "choices": pd.DataFrame(rnd.choices()),
            "examples": pd.concat(examples, ignore_index=True)[["key", "prompt_idx", "continuation", "reward",
                                                                 "kl_exact", "fluency_nll"]]}


# ----------------------------------------------------------------------------------------------------------------
# statistics at a budget (pure: the page computes these from the CSVs)


def _table(per_prompt_rows: pd.DataFrame, key: str) -> pd.DataFrame:
    return per_prompt_rows[per_prompt_rows["key"] == key].set_index("prompt_idx")[list(PER_PROMPT_COLUMNS)]


def at_budget(per_prompt_rows: pd.DataFrame, choices: pd.DataFrame, budget: float
              ) -> dict[int, tuple[pd.DataFrame, str]]:
    """Per layer, its per-prompt ``reward`` / ``fluency_nll`` / ``kl_exact`` at ``budget`` nats on the report
    prompts, and how it was obtained: ``"interpolated"`` — the unsteered point (KL 0) and the layer's measured
    points in order of coefficient, mixed per prompt between the two whose mean report KL brackets the budget
    (`heldout.interpolate_at`), so every layer sits at exactly the same KL; ``"measured"`` — no pair brackets it
    (the largest coefficient stayed below the budget on the report prompts), the budget's chosen point as is."""
    out: dict[int, tuple[pd.DataFrame, str]] = {}
    base = _table(per_prompt_rows, BASE_KEY)
    for layer, g in choices.groupby("layer"):
        keys = list(dict.fromkeys(g.sort_values("strength")["key"]))
        tables = [base] + [_table(per_prompt_rows, k) for k in keys]
        mixed = {c: interpolate_at(tables, budget, c) for c in PER_PROMPT_COLUMNS}
        if mixed["reward"] is not None:
            out[int(layer)] = (pd.DataFrame(mixed), "interpolated")
            continue
        own = g[np.isclose(g["budget"], budget)]
        if len(own):
            out[int(layer)] = (_table(per_prompt_rows, str(own["key"].iloc[0])), "measured")
    return out


def chosen_layer(choices: pd.DataFrame, budget: float) -> int | None:
    """The layer with the highest reward on the selection prompts among those whose bisection reached the budget
    (all layers when none did): chosen on prompts it is not reported on."""
    here = choices[np.isclose(choices["budget"], budget)]
    if here.empty:
        return None
    hits = here[here["hit"].astype(bool)]
    pool = hits if len(hits) else here
    return int(pool.loc[pool["selection_reward"].idxmax(), "layer"])


def per_prompt_slope(rewards: dict[int, pd.Series]) -> pd.Series:
    """Per prompt, the least-squares slope of reward on layer index across the layers (prompts every layer has):
    a paired test of "later layers buy more" that uses every layer, not only the two ends."""
    frame = pd.DataFrame(rewards).dropna()
    x = np.asarray(frame.columns, dtype=float)
    xc = x - x.mean()
    return pd.Series(frame.to_numpy() @ xc / float(xc @ xc), index=frame.index)


def layer_levels(series: dict[int, tuple[pd.DataFrame, str]], base: pd.DataFrame, points: pd.DataFrame,
                 choices: pd.DataFrame, budget: float, n: dict[str, int]) -> pd.DataFrame:
    """One row per layer at ``budget``: reward, fluency (the base model's NLL of the continuations, nats per
    token), entropy and KL with 95% t intervals over prompts, reward's and fluency's paired change from unsteered
    (``base``: its per-prompt table), the chosen coefficient, and the measured point's distinct-2 beside
    unsteered's."""
    unsteered = points[points["key"] == BASE_KEY].iloc[0]
    rows = []
    for layer, (tab, how) in sorted(series.items()):
        own = choices[(choices["layer"] == layer) & np.isclose(choices["budget"], budget)].iloc[0]
        pt = points[points["key"] == own["key"]].iloc[0]
        r, f, k, e = (mean_interval(tab[c].to_numpy(), n=n) for c in ("reward", "fluency_nll", "kl_exact",
                                                                         "entropy_mean"))
        ref = base.reindex(tab.index)
        gain = paired_difference(tab["reward"].to_numpy(), ref["reward"].to_numpy(), n=n)
        dflu = paired_difference(tab["fluency_nll"].to_numpy(), ref["fluency_nll"].to_numpy(), n=n)
        rows.append({"budget": budget, "layer": layer, "how": how, "coef": float(own["strength"]),
                     "hit": bool(own["hit"]), "selection_kl": float(own["selection_kl"]),
                     "selection_reward": float(own["selection_reward"]),
                     "reward_mean": r.value, "reward_low": r.low, "reward_high": r.high,
                     "gain_mean": gain.value, "gain_low": gain.low, "gain_high": gain.high,
                     "kl_report": k.value, "kl_low": k.low, "kl_high": k.high,
                     "fluency_nll_mean": f.value, "fluency_nll_low": f.low, "fluency_nll_high": f.high,
                     "fluency_change": dflu.value, "fluency_change_low": dflu.low, "fluency_change_high": dflu.high,
                     "entropy_mean": e.value, "entropy_low": e.low, "entropy_high": e.high,
                     "entropy_unsteered": float(base["entropy_mean"].mean()), "point_kl": float(pt["kl_exact_mean"]),
                     "distinct_2": float(pt["distinct_2"]),
                     "distinct_2_unsteered": float(unsteered["distinct_2"]), "n_prompts": len(tab)})
    return pd.DataFrame(rows)


def comparisons(series: dict[int, tuple[pd.DataFrame, str]], best: int, budget: float, n: dict[str, int]
                ) -> pd.DataFrame:
    """The paired differences at ``budget``: ``best - L`` for every other layer L (reward), last layer - first
    layer, and the mean per-prompt slope of reward on layer (reward per 10 layers). Rows: ``comparison``, ``a``,
    ``b``, ``difference``, ``low``, ``high``, ``n_prompts``."""
    layers = sorted(series)
    reward = {layer: series[layer][0]["reward"] for layer in layers}

    def row(kind: str, a, b, iv: Interval, size: int) -> dict:
        return {"budget": budget, "comparison": kind, "a": a, "b": b, "difference": iv.value, "low": iv.low,
                "high": iv.high, "n_prompts": size}

    def paired(a: int, b: int) -> dict:
        both = pd.concat([reward[a].rename("a"), reward[b].rename("b")], axis=1).dropna()
        return row("best vs layer" if a == best else "last vs first", a, b,
                   paired_difference(both["a"].to_numpy(), both["b"].to_numpy(), n=n), len(both))

    out = [paired(best, layer) for layer in layers if layer != best]
    if len(layers) >= 2:
        out.append(paired(layers[-1], layers[0]) | {"comparison": "last vs first"})
        slope = per_prompt_slope(reward) * 10
        out.append(row("slope per 10 layers", layers[-1], layers[0], mean_interval(slope.to_numpy(), n=n),
                       len(slope)))
    return pd.DataFrame(out)


def budget_tables(per_prompt_rows: pd.DataFrame, points: pd.DataFrame, choices: pd.DataFrame,
                  budgets: Sequence[float], samples: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(levels, comparisons)`` over the budgets; ``levels.chosen`` marks each budget's layer chosen on the
    selection prompts. Budgets whose chosen layer has no report value are left out."""
    levels, comps = [], []
    base = _table(per_prompt_rows, BASE_KEY)
    for budget in budgets:
        series = at_budget(per_prompt_rows, choices, budget)
        best = chosen_layer(choices, budget)
        if best is None or best not in series:
            continue
        n = {"prompts": len(base), "samples_per_prompt": samples, "seeds": 1}
        lv = layer_levels(series, base, points, choices, budget, n)
        levels.append(lv.assign(chosen=lv["layer"] == best))
        comps.append(comparisons(series, best, budget, n))
    return (pd.concat(levels, ignore_index=True) if levels else pd.DataFrame(),
            pd.concat(comps, ignore_index=True) if comps else pd.DataFrame())


__all__ = ["BASE_KEY", "at_budget", "budget_tables", "chosen_layer", "collect", "comparisons", "layer_family",
           "layer_levels", "per_prompt_slope", "point_key", "run_layers"]
