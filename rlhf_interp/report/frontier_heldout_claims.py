"""The frontier page's claims from the held-out, paired round (``v3_at_budget.csv``, ``v3_comparisons.csv``,
``v3_points.csv``): at each headline budget the top two methods and their paired difference, where every method
sits against steering and against PPO, which budgets a method cannot reach, and what each change costs in
capability.

Why separate from `rlhf_interp.report.frontier_claims` (the v2 round's): these differences are paired over the
same report prompts and sampling seed, so their intervals come from per-prompt differences, not from two
standard errors; and every strength was chosen on other prompts.
"""

from __future__ import annotations

import re

import pandas as pd

from rlhf_interp.core.stats import Interval, mean_interval
from rlhf_interp.report.claims import Claim


def _n(row: pd.Series, prompts_key: str = "n_prompts") -> dict[str, int]:
    return {"prompts": int(row[prompts_key]), "samples_per_prompt": int(row.get("samples_per_prompt", 1)),
            "seeds": int(row.get("seeds", 1))}


def _pair_samples(comparison, default: int) -> int:
    """Samples per prompt behind a paired difference: the fewer of its two methods' (recorded since the top two
    got extra samples), else the round's."""
    value = comparison.get("samples_per_prompt") if hasattr(comparison, "get") else None
    return int(value) if value is not None and pd.notna(value) else int(default)


def _id(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def _tag(budget: float) -> str:
    return f"{budget:g}".replace(".", "_")


def _nats(budget: float) -> str:
    return "nat" if budget == 1 else "nats"


def heldout_claims(at: pd.DataFrame, comparisons: pd.DataFrame, points: pd.DataFrame, budgets,
                   samples: int, tokens: int = 24) -> list[Claim]:
    out: list[Claim] = []
    for budget in budgets:
        here = at[at["budget"] == budget]
        reached = here[here["reward_mean"].notna()]
        params = {"budget": f"{budget:g}", "nats": _nats(budget), "tokens": tokens}
        top = comparisons[(comparisons["budget"] == budget) & (comparisons["comparison"] == "top two")]
        if len(top):
            c = top.iloc[0]
            first = reached[reached["method"] == c["a"]].iloc[0]
            seeds = int(max(reached.loc[reached["method"].isin([c["a"], c["b"]]), "seeds"]))
            n = {"prompts": int(c["n_prompts"]), "samples_per_prompt": _pair_samples(c, samples), "seeds": seeds}
            diff = Interval(float(c["difference"]), float(c["low"]), float(c["high"]), n=n)
            out.append(Claim.compare(
                f"v3_top_two_at_{_tag(budget)}_nats",
                "At {budget} {nats} per sequence the most reward is {first}'s ({first_setting}; {first_kl} nats on "
                "the report prompts): {first_value} [{first_low}, {first_high}] periods per {tokens} tokens; its "
                "paired lead over {second} ({second_setting}; {second_kl} nats): {value} {ci}; {verdict}.", diff,
                c["a"], c["b"],
                params={**params, "first": c["a"], "second": c["b"], "first_value": float(first["reward_mean"]),
                        "first_low": float(first["reward_low"]), "first_high": float(first["reward_high"]),
                        "first_kl": f"{float(first['kl_report']):.2f}", "first_setting": str(first["setting"]),
                        "second_setting": str(reached[reached["method"] == c["b"]].iloc[0]["setting"]),
                        "second_kl": f"{float(reached[reached['method'] == c['b']].iloc[0]['kl_report']):.2f}"}))
        for row in here.itertuples():
            if pd.isna(row.reward_mean):
                out.append(Claim.fact(
                    _id(f"v3_{row.method}_misses_{_tag(budget)}_nats"),
                    "{method} does not reach {budget} {nats}: {how}.",
                    params={**params, "method": row.method, "how": row.how}, n={"prompts": 0}, headline=False))
        for ref in ("steering", "PPO (3 seeds)"):
            rows = comparisons[(comparisons["budget"] == budget) & (comparisons["comparison"] == f"vs {ref}")]
            for c in rows.itertuples():
                seeds = int(max(reached.loc[reached["method"].isin([c.a, c.b]), "seeds"]))
                n = {"prompts": int(c.n_prompts), "samples_per_prompt": _pair_samples(c._asdict(), samples),
                     "seeds": seeds}
                diff = Interval(float(c.difference), float(c.low), float(c.high), n=n)
                out.append(Claim.compare(
                    _id(f"v3_{c.a}_vs_{ref}_at_{_tag(budget)}_nats"),
                    "At {budget} {nats}, {a} minus {b}: {value} {ci} periods; {verdict}.", diff, c.a, c.b,
                    params={**params, "a": c.a, "b": c.b}, headline=False))
        for row in reached.itertuples():
            if pd.notna(getattr(row, "capability_delta", None)) and row.method != "best-of-n":
                iv = Interval(float(row.capability_delta), float(row.capability_delta_low),
                              float(row.capability_delta_high), n={"texts": int(_texts(points))})
                out.append(Claim.estimate(
                    _id(f"v3_{row.method}_capability_at_{_tag(budget)}_nats"),
                    "At {budget} {nats} ({kl} on the report prompts), {method} changes the next-token NLL of "
                    "held-out text by {value} {ci} nats per token (paired over texts).", iv, fmt=".3f",
                    params={**params, "method": row.method, "kl": f"{float(row.kl_report):.2f}"}, headline=False))
    algos = points[points["kind"] == "algorithm"]
    for method, g in algos.groupby("method"):
        if len(g) > 1:  # several seeds: the interval is over seeds
            iv = mean_interval(g["capability_nll_delta_mean"].to_numpy(), n={"seeds": len(g), "texts": _texts(points)})
            how = "interval over seeds"
        else:  # one seed: the interval is over texts (seed-to-seed variation not included)
            r = g.iloc[0]
            iv = Interval(float(r["capability_nll_delta_mean"]), float(r["capability_nll_delta_low"]),
                          float(r["capability_nll_delta_high"]), n={"seeds": 1, "texts": _texts(points)})
            how = "one seed; interval over texts"
        out.append(Claim.estimate(
            _id(f"v3_{method}_capability"), "{method} (the algorithms study's last checkpoint) changes the NLL of "
            "held-out text by {value} {ci} nats per token ({how}) at {kl} nats of KL per sequence.", iv,
            fmt=".3f", params={"method": method, "how": how, "kl": f"{float(g['kl_exact_mean'].mean()):.2f}"},
            headline=False))
    return out


def _texts(points: pd.DataFrame) -> int:
    return int(points["capability_n_texts"].dropna().iloc[0]) if "capability_n_texts" in points else 0


__all__ = ["heldout_claims"]
