"""The held-out round's work directory -> the report's CSVs: every point, every sequence, every capability text,
and per budget each method's per-prompt reward (a chosen edit's own sequences; a trajectory interpolated per prompt
between its checkpoints, per seed, then averaged over seeds; best-of-n interpolated between pool sizes), with the
paired differences a reader asks for (the top two, and each method against steering and against PPO).

Why in the package: the page script renders these tables; the rules that turn points into at-budget values are the
study's statistics and belong with `rlhf_interp.frontier.heldout`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from rlhf_interp.core.io import atomic_write_json
from rlhf_interp.core.stats import mean_interval
from rlhf_interp.frontier.heldout import (bracket, interpolate_at, level, paired_difference, per_prompt, seed_average,
                                          top_two)
from rlhf_interp.frontier.v3_round import Points

EDIT_PARTS = {"steering": "steering", "rank_one": "rank-one edit", "prompting": "prompting",
              "amplification": "logit amplification"}
PPO, BON = "PPO (3 seeds)", "best-of-n"


def _trajectory_series(points: Points, rows: pd.DataFrame, texts: pd.DataFrame, base_texts: pd.DataFrame,
                       budget: float) -> tuple[pd.Series | None, int, pd.Series | None]:
    """PPO at ``budget``: per seed the base model (KL 0) then every checkpoint; per-prompt reward and per-text NLL
    mixed with the same bracketing weight; averaged over the seeds that reached the budget."""
    base_pp = per_prompt(points.sequences("base"))
    rewards, nlls = [], []
    for _, g in rows.sort_values("step").groupby("seed"):
        tables = [base_pp] + [per_prompt(points.sequences(k)) for k in g["key"]]
        found = bracket([float(t["kl_exact"].mean()) for t in tables], budget)
        if found is None:
            rewards.append(None)
            continue
        i, j, w = found
        rewards.append((1 - w) * tables[i]["reward"] + w * tables[j]["reward"])
        keys = ["base"] + list(g["key"])
        nll = [base_texts if k == "base" else texts[texts["key"] == k].set_index("text_idx")["nll_mean"]
               for k in keys]
        nlls.append((1 - w) * nll[i] + w * nll[j])
    reward, seeds = seed_average(rewards)
    nll = pd.concat(nlls, axis=1).mean(axis=1) if nlls else None
    return reward, seeds, nll


def _best_of_n_series(table: pd.DataFrame, budget: float) -> pd.Series | None:
    tables = [g.set_index("prompt_idx").rename(columns={"kl": "kl_exact"}) for _, g in table.groupby("n", sort=True)]
    return interpolate_at(tables, budget)


def at_budgets(work: Path, budgets: Sequence[float]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``(at_budget, comparisons, series)``: one row per (budget, method) with its reward interval, n, seeds, KL on
    the report split and capability change; the paired differences; and the per-prompt series themselves."""
    points = Points(work)
    rows = pd.DataFrame(points.rows())
    texts = points.table("texts")
    base_texts = texts[texts["key"] == "base"].set_index("text_idx")["nll_mean"]
    choices = {}
    for part in EDIT_PARTS:
        path = work / f"choices_{part}.json"
        if path.exists():
            choices[part] = json.loads(path.read_text())
    bon = pd.read_csv(work / "best_of_n_per_prompt.csv") if (work / "best_of_n_per_prompt.csv").exists() else None
    samples = int(rows["samples_per_prompt"].max())
    out, series, samples_at = [], {}, {}
    for budget in budgets:
        at: dict[str, pd.Series] = {}
        samples_of: dict[str, int] = {}  # per method: samples per prompt behind its per-prompt means
        for part, method in EDIT_PARTS.items():
            for c in choices.get(part, []):
                if float(c["budget"]) != float(budget) or not points.done(c["key"]):
                    continue  # another budget, or a choice whose point is still being measured
                row = rows[rows["key"] == c["key"]].iloc[0]
                vector = row.get("vector")
                setting = f"{vector}, {row['setting']}" if isinstance(vector, str) else row["setting"]
                entry = {"budget": budget, "method": method, "setting": setting, "key": c["key"],
                         "hit": bool(c["hit"]), "selection_kl": c["selection_kl"], "seeds": 1,
                         "samples_per_prompt": samples, "kl_report": row["kl_exact_mean"],
                         "kl_report_low": row["kl_exact_low"], "kl_report_high": row["kl_exact_high"],
                         "capability_delta": row.get("capability_nll_delta_mean"),
                         "capability_delta_low": row.get("capability_nll_delta_low"),
                         "capability_delta_high": row.get("capability_nll_delta_high"),
                         "how": "strength chosen on the selection split, reported on the report split"}
                if c["hit"]:
                    seqs = points.sequences(c["key"])  # its own samples and its extra seeds'
                    pp = per_prompt(seqs)
                    at[method] = pp["reward"]
                    samples_of[method] = int(round(len(seqs) / len(pp)))  # per prompt, behind its per-prompt means
                    extra = seqs["sample_seed"].nunique() if "sample_seed" in seqs else 0  # NaN on its own rows
                    entry.update(level(at[method]), samples_per_prompt=samples_of[method], extra_seeds=int(extra))
                    if entry["extra_seeds"]:  # KL over every sample of the setting, not only the point's own
                        kl = mean_interval(pp["kl_exact"].to_numpy())
                        entry.update(kl_report=kl.value, kl_report_low=kl.low, kl_report_high=kl.high)
                else:
                    entry["how"] = f"budget not reached on the selection split (closest: {c['selection_kl']:.2f} nats)"
                out.append(entry)
        traj = rows[rows["kind"] == "trajectory"]
        if len(traj) and (rows["key"] == "base").any():
            reward, seeds, nll = _trajectory_series(points, traj, texts, base_texts, budget)
            entry = {"budget": budget, "method": PPO, "setting": "checkpoints interpolated per prompt", "seeds": seeds,
                     "samples_per_prompt": samples, "kl_report": budget if reward is not None else None,
                     "how": "per prompt, linear in KL between the two checkpoints that bracket the budget, per seed; "
                            "mean over seeds"}
            if reward is not None:
                at[PPO], samples_of[PPO] = reward, samples
                entry.update(level(reward))
                d = mean_interval((nll - base_texts).dropna().to_numpy())
                entry.update(capability_delta=d.value, capability_delta_low=d.low, capability_delta_high=d.high)
            else:
                entry["how"] = "no seed's trajectory reached this KL"
            out.append(entry)
        if bon is not None:
            reward = _best_of_n_series(bon, budget)
            entry = {"budget": budget, "method": BON, "setting": "pool of 16 base samples per prompt", "seeds": 1,
                     "samples_per_prompt": 16, "kl_report": budget if reward is not None else None,
                     "capability_delta": 0.0, "capability_delta_low": 0.0, "capability_delta_high": 0.0,
                     "how": "expected best of n per prompt, linear in measured KL between two n (the base model: "
                            "capability unchanged)"}
            if reward is not None:
                at[BON], samples_of[BON] = reward, 16
                entry.update(level(reward))
            else:
                entry["how"] = "outside the KL range of n <= 8"
            out.append(entry)
        series[budget] = at
        samples_at[budget] = samples_of
    comparisons = []
    for budget, at in series.items():
        fewest = lambda a, b: min(samples_at[budget][a], samples_at[budget][b])  # noqa: E731 (n of a pair)
        best = top_two(at)
        if best is not None:
            comparisons.append({"budget": budget, "comparison": "top two", "a": best["first"], "b": best["second"],
                                **{k: best[k] for k in ("difference", "low", "high", "n_prompts")},
                                "samples_per_prompt": fewest(best["first"], best["second"])})
        for ref in ("steering", PPO):
            if ref not in at:
                continue
            for method, s in at.items():
                if method != ref:
                    comparisons.append({"budget": budget, "comparison": f"vs {ref}", "a": method, "b": ref,
                                        **paired_difference(s, at[ref]), "samples_per_prompt": fewest(method, ref)})
    columns = ["budget", "comparison", "a", "b", "difference", "low", "high", "n_prompts", "samples_per_prompt"]
    return pd.DataFrame(out), pd.DataFrame(comparisons, columns=columns), series


def _all_sequences(points: Points, keys: Sequence[str], seed: int) -> pd.DataFrame:
    """Every measured sequence of ``keys``, the extra seeds' too, with the sampling seed of each (``seed``: the
    round's, on a point's own samples)."""
    columns = ["key", "prompt_idx", "reward", "kl_exact", "fluency_nll", "n_new_tokens", "continuation",
               "sample_seed"]
    frames = [points.sequences(key).reindex(columns=columns) for key in keys]
    return pd.concat(frames, ignore_index=True).fillna({"sample_seed": seed}).astype({"sample_seed": int})


def assemble(work: Path, out: Path, *, budgets: Sequence[float], meta: dict) -> None:
    """Write the round's CSVs (``v3_*.csv``) into ``out`` and its settings into ``out/config.json`` (key ``v3``)."""
    from rlhf_interp.measure.capability import SOURCE_NOTE

    work, out = Path(work), Path(out)
    points = Points(work)
    rows = pd.DataFrame(points.rows())
    if rows.empty or not (rows["key"] == "base").any():
        raise SystemExit(f"{work} has no measured base point yet: run the base part first.")
    out.mkdir(parents=True, exist_ok=True)
    at, comparisons, _ = at_budgets(work, budgets)
    choices = [dict(c, part=p.stem.removeprefix("choices_")) for p in sorted(work.glob("choices_*.json"))
               for c in json.loads(p.read_text())]
    selection = [pd.read_csv(p).assign(part=p.stem.removeprefix("selection_")) for p in sorted(work.glob("selection_*.csv"))]
    tables = {"v3_points": rows, "v3_at_budget": at, "v3_comparisons": comparisons,
              "v3_choices": pd.DataFrame(choices), "v3_selection": pd.concat(selection) if selection else None,
              "v3_sequences": _all_sequences(points, sorted(rows["key"]), int(meta.get("seed", 0))),
              "v3_capability": points.table("texts")}
    if (work / "best_of_n_per_prompt.csv").exists():
        tables["v3_best_of_n"] = pd.read_csv(work / "best_of_n_per_prompt.csv")
    for name, df in tables.items():
        if df is not None and (not df.empty or name == "v3_comparisons"):  # comparisons: its header even when empty
            df.to_csv(out / f"{name}.csv", index=False)
    config_path = out / "config.json"  # the round's settings live in the page's config (it rebuilds from it)
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    config["v3"] = {**meta, "budgets": list(budgets), "capability_source": SOURCE_NOTE,
                    "capability_tokens": int(points.table("texts").query("key == 'base'")["n_tokens"].sum()),
                    "cpu_seconds_points": float(rows.get("cpu_seconds", pd.Series(dtype=float)).sum()),
                    "cpu_seconds_extra_samples": float(sum(r.get("cpu_seconds", 0.0) for r in points.extra_rows()))}
    atomic_write_json(config_path, config)
    (out / "v3.json").unlink(missing_ok=True)
    print(f"wrote {len(tables)} v3 tables into {out} ({len(rows)} points)")


__all__ = ["assemble", "at_budgets"]
