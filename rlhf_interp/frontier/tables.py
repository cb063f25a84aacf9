"""The equal-KL frontier's tables, from a tidy points table (one row per model or edit setting): the documented
point columns, reward at each KL budget per method with its interval, one line per method family (its best
setting at each budget), the Gao et al. fits, the freezing study's rows.

Why in the package: ``analyses/frontier.py`` (the study) and any other page comparing methods at equal KL need
the same budget arithmetic (interpolating best-of-n in sqrt(KL), never a training trajectory), and the script keeps
only its choices and its page.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from rlhf_interp.frontier.plot import is_true

POINT_COLUMNS = ["method", "kind", "setting", "vector", "layer", "strength", "budget", "hit", "n", "step", "run",
                 "trajectory", "last", "freeze_layers", "lora_r", "wall_seconds", "reward_mean", "reward_stderr",
                 "kl_exact_mean", "kl_exact_stderr", "kl_analytic", "kl_per_token", "entropy_mean", "distinct_2",
                 "collateral_kl_mean", "collateral_kl_stderr", "collateral_kl_max", "n_sequences",
                 # frontier v3 (the held-out round): intervals, capability and fluency, counts, held-out selection
                 "reward_low", "reward_high", "kl_exact_low", "kl_exact_high", "capability_nll_mean",
                 "capability_nll_low", "capability_nll_high", "capability_nll_delta_mean", "capability_nll_delta_low",
                 "capability_nll_delta_high", "capability_top1_mean", "fluency_nll_mean", "fluency_nll_low",
                 "fluency_nll_high", "n_prompts", "samples_per_prompt", "split", "selection_kl", "capability_n_texts",
                 "capability_tokens"]


def tidy_points(points: pd.DataFrame) -> pd.DataFrame:
    """One row per point, the documented columns, plus reward_gain (over the base model; best-of-n: over its own
    n = 1 estimate from the same samples) and reward_per_nat (gain / KL)."""
    points = points.copy()
    for col in POINT_COLUMNS:
        if col not in points:
            points[col] = np.nan
    for col in ("trajectory", "last"):
        points[col] = points[col].fillna(False).astype(bool)
    base_reward = float(points.loc[points["kind"] == "base", "reward_mean"].iloc[0])
    points.loc[points["kind"] == "base", ["kl_exact_mean", "kl_exact_stderr"]] = 0.0
    points["reward_gain"] = points["reward_mean"] - base_reward
    bon = points["kind"] == "best-of-n"
    if (bon & (points["n"] == 1)).any():  # best-of-n gains are over its own n = 1: the same samples, no offset noise
        points.loc[bon, "reward_gain"] = points.loc[bon, "reward_mean"] - float(
            points.loc[bon & (points["n"] == 1), "reward_mean"].iloc[0])
    points["reward_per_nat"] = points["reward_gain"] / points["kl_exact_mean"].where(points["kl_exact_mean"] > 0)
    return points[POINT_COLUMNS + ["reward_gain", "reward_per_nat"]]


def interpolate_at(points: pd.DataFrame, budget: float) -> dict[str, Any] | None:
    """Reward gain at ``budget`` between the two measured points around it (linear in d = sqrt(KL), Gao's axis;
    a KL-0 point anchors the low end); None outside the measured range (no extrapolation). Only for a curve whose
    KL rises with its parameter (best-of-n's n), never for a training trajectory."""
    pts = points[points["kl_exact_mean"] >= 0].sort_values("kl_exact_mean")
    d = np.sqrt(pts["kl_exact_mean"].to_numpy())
    target = math.sqrt(budget)
    below, above = np.where(d <= target)[0], np.where(d >= target)[0]
    if not len(below) or not len(above):
        return None
    i, j = below[-1], above[0]
    t = 0.0 if i == j else (target - d[i]) / (d[j] - d[i])
    g, s = pts["reward_gain"].to_numpy(), pts["reward_stderr"].to_numpy()
    return {"reward_gain": (1 - t) * g[i] + t * g[j], "reward_stderr": (1 - t) * s[i] + t * s[j],
            "from": f"{pts['setting'].iloc[i]} .. {pts['setting'].iloc[j]}", "i": pts.index[i], "j": pts.index[j],
            "t": t}


def bon_at_budget(points: pd.DataFrame, bon_prompts: pd.DataFrame | None, budget: float):
    """Best-of-n's measured reward at ``budget`` with its interval over prompts: each prompt's best-of-n reward
    interpolated in sqrt(KL) between the two n whose mean KL brackets the budget (KL rises with n), then a t
    interval over the prompts. None outside the measured range."""
    from rlhf_interp.core import stats

    bon = points[points["kind"] == "best-of-n"]
    got = interpolate_at(bon, budget) if len(bon) else None
    if got is None:
        return None, got
    n_i, n_j = bon.loc[got["i"], "n"], bon.loc[got["j"], "n"]
    if bon_prompts is None or not len(bon_prompts):
        mean = float(bon.loc[got["i"], "reward_mean"] * (1 - got["t"]) + bon.loc[got["j"], "reward_mean"] * got["t"])
        return stats.summary_interval(mean, got["reward_stderr"], 16), got
    a = bon_prompts[bon_prompts["n"] == n_i].set_index("prompt_idx")["reward"]
    b = bon_prompts[bon_prompts["n"] == n_j].set_index("prompt_idx")["reward"]
    per_prompt = (1 - got["t"]) * a + got["t"] * b.reindex(a.index)
    pool = int(bon_prompts["pool_size"].max())
    return stats.mean_interval(per_prompt.to_numpy(), n={"prompts": len(per_prompt), "samples_per_prompt": pool,
                                                         "seeds": 1}), got


def _se(iv) -> float:
    """The standard error behind a t interval (half-width / t quantile)."""
    from scipy import stats as sps

    n = int(iv.n.get("prompts", 2))
    return float(iv.half_width / sps.t.ppf(0.5 + iv.level / 2, max(1, n - 1)))


def budget_table(points: pd.DataFrame, budgets: list[float], bon_prompts: pd.DataFrame | None = None
                 ) -> pd.DataFrame:
    """Reward at each budget per method, each with its 95% interval over prompts: edit families at their bisected
    strength (the best of their layers, chosen on the same prompts it is reported on: marked as a selection),
    best-of-n interpolated between its measured n. The PPO trajectory is not interpolated: its KL is not monotone
    in the training step, so no point between two checkpoints was measured."""
    from rlhf_interp.core import stats

    rows = []
    base = points[points["kind"] == "base"].iloc[0]
    base_reward = float(base["reward_mean"])
    traj = points[(points["kind"] == "fine-tuning") & is_true(points["trajectory"])]
    for budget in budgets:
        fam = points[points["kind"].isin(["steering", "rank-one"]) & (points["budget"] == budget)]
        for method, g in fam.groupby("method", sort=False):
            hit = g[is_true(g["hit"])]
            if hit.empty:
                rows.append({"budget": budget, "method": method, "how": "budget not reached at any layer"})
                continue
            best = hit.loc[hit["reward_mean"].idxmax()]
            n = int(best["n_sequences"]) if pd.notna(best.get("n_sequences")) else 16
            iv = stats.summary_interval(best["reward_mean"], best["reward_stderr"], n)
            rows.append({"budget": budget, "method": method, "reward_mean": best["reward_mean"],
                         "reward_low": iv.low, "reward_high": iv.high, "reward_stderr": best["reward_stderr"],
                         "kl_exact_mean": best["kl_exact_mean"], "n_prompts": n, "samples_per_prompt": 1,
                         "selected_from": len(hit),
                         "how": f"bisected; best of {len(hit)} layer(s), chosen on the same {n} prompts it is "
                                f"reported on (selection not held out: optimistic)", "setting": best["setting"]})
        iv, got = bon_at_budget(points, bon_prompts, budget)
        rows.append({"budget": budget, "method": "best-of-n", **({
            "reward_mean": iv.value, "reward_low": iv.low, "reward_high": iv.high,
            "reward_stderr": _se(iv), "kl_exact_mean": budget,
            "n_prompts": iv.n.get("prompts"), "samples_per_prompt": iv.n.get("samples_per_prompt"), "selected_from": 1,
            "how": "measured reward per prompt interpolated in sqrt(KL) between two n", "setting": got["from"]}
            if iv is not None else {"how": "outside the measured KL range"})})
        rows.extend(_held_out_rows(points, budget))
        if len(traj):
            rows.append({"budget": budget, "method": f"{traj['method'].iloc[0]} (trajectory)",
                         "how": "not interpolated: the checkpoints' KL is not monotone in the training step"})
    df = pd.DataFrame(rows, columns=["budget", "method", "reward_mean", "reward_low", "reward_high", "reward_stderr",
                                     "kl_exact_mean", "n_prompts", "samples_per_prompt", "selected_from", "how",
                                     "setting"])
    df.insert(3, "reward_gain", df["reward_mean"] - base_reward)
    df["reward_per_nat"] = df["reward_gain"] / df["budget"]
    return df


def _held_out_rows(points: pd.DataFrame, budget: float) -> list[dict[str, Any]]:
    """Prompting and logit amplification at ``budget``: the strength was chosen on the selection prompts and the
    row measured on the report prompts, so its interval is the stored one (t over prompts), taken as it is. A
    budget the family cannot reach keeps no reward: the row says how close its lightest setting came."""
    rows = []
    fam = points[points["kind"].isin(["prompting", "amplification"]) & (points["budget"] == budget)]
    for _, r in fam.iterrows():
        what = "prefix" if r["kind"] == "prompting" else "strength"
        if not bool(is_true(pd.Series([r["hit"]])).iloc[0]):
            rows.append({"budget": budget, "method": r["method"], "kl_exact_mean": r["kl_exact_mean"],
                         "setting": r["setting"],
                         "how": f"budget not reached; nearest {what} at {r['kl_exact_mean']:.1f} nats"})
            continue
        rows.append({"budget": budget, "method": r["method"], "reward_mean": r["reward_mean"],
                     "reward_low": r["reward_low"], "reward_high": r["reward_high"],
                     "reward_stderr": r["reward_stderr"], "kl_exact_mean": r["kl_exact_mean"],
                     "n_prompts": r["n_prompts"], "samples_per_prompt": r["samples_per_prompt"], "selected_from": 1,
                     "how": f"held out: {what} chosen on the selection prompts, reported on the report prompts",
                     "setting": r["setting"]})
    return rows


def fits_table(points: pd.DataFrame) -> pd.DataFrame:
    """Gao et al. fits. Best-of-n gains are over its own n = 1 estimate (same samples, less noise); PPO gains are
    over the base model's row (same prompts and seed). ``offset``: the reward at KL 0 the gain is added to."""
    from rlhf_interp.frontier import fit_gao

    rows = []
    bon = points[points["kind"] == "best-of-n"]
    if len(bon):
        offset = float(bon.loc[bon["n"] == 1, "reward_mean"].iloc[0]) if (bon["n"] == 1).any() \
            else float(points.loc[points["kind"] == "base", "reward_mean"].iloc[0])
        gain = bon["reward_mean"] - offset
        for name, kl in (("best-of-n (measured KL)", bon["kl_exact_mean"]), ("best-of-n (analytic KL)", bon["kl_analytic"])):
            rows.append({"method": name, "offset": offset, "kl_min": kl[kl > 0].min(), "kl_max": kl.max(),
                         **fit_gao(kl, gain, "bon", bon["reward_stderr"])})
    traj = points[(points["kind"] == "fine-tuning") & is_true(points["trajectory"])]
    if len(traj):
        offset = float(points.loc[points["kind"] == "base", "reward_mean"].iloc[0])
        kl = traj["kl_exact_mean"]
        rows.append({"method": f"{traj['method'].iloc[0]} (trajectory)", "offset": offset,
                     "kl_min": kl[kl > 0].min(), "kl_max": kl.max(), **fit_gao(traj["kl_exact_mean"], traj["reward_mean"] - offset, "rl", traj["reward_stderr"])})
    out = pd.DataFrame(rows)
    if len(out):  # the one criterion for drawing a fit (rlhf_interp.core.stats.FIT_R2_MIN)
        out["drawn"] = [stats_fit_is_drawn(r) for r in out["r2"]]
    return out


def stats_fit_is_drawn(r2: float) -> bool:
    """The one criterion for drawing a fit (`rlhf_interp.core.stats.fit_is_drawn`)."""
    from rlhf_interp.core.stats import fit_is_drawn

    return fit_is_drawn(r2)


def freezing_table(points: pd.DataFrame) -> pd.DataFrame:
    """The last checkpoint of each further PPO run (--run: same length, different freezing or LoRA); the
    trajectory's last checkpoint only when there is no other run (its length differs, so it is not comparable)."""
    ft = points[(points["kind"] == "fine-tuning") & is_true(points["last"])]
    if (~is_true(ft["trajectory"])).any():
        ft = ft[~is_true(ft["trajectory"])]
    cols = ["method", "freeze_layers", "lora_r", "step", "wall_seconds", "reward_mean", "reward_stderr",
            "kl_exact_mean", "kl_exact_stderr", "reward_gain", "reward_per_nat", "collateral_kl_mean"]
    return ft[cols].sort_values(["lora_r", "freeze_layers"]).reset_index(drop=True)


def family_lines(table: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """One row per (method family, budget) for the answer chart: the `budget_table` rows that have a reward,
    each with its family (`rlhf_interp.core.style.family`) and its interval. The best setting of an edit family
    at a budget is the one `budget_table` chose (on the prompts it is reported on: ``held_out`` False)."""
    from rlhf_interp.core.style import family

    rows = table[table["reward_mean"].notna()].copy()
    rows["family"] = [family(m) for m in rows["method"]]
    rows["held_out"] = False
    return rows[["family", "method", "budget", "kl_exact_mean", "reward_mean", "reward_low", "reward_high",
                 "n_prompts", "selected_from", "setting", "held_out"]].reset_index(drop=True)


__all__ = ["POINT_COLUMNS", "bon_at_budget", "budget_table", "family_lines", "fits_table", "freezing_table",
           "interpolate_at", "tidy_points"]
