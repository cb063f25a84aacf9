"""The equal-KL frontier page's claims: at each headline budget the method with the most reward and its lead over
the runner-up (with a verdict), the PPO trajectory's non-monotone KL, the freezing and later-layer questions, and
what is not measured yet. Each number is a `Claim` with its 95% interval and n.

Why in ``report``: claims are a report concept (`rlhf_interp.report.claims`), built here from the frontier's
tables (`rlhf_interp.frontier.tables`), so ``analyses/frontier.py`` keeps only its choices and its page.
"""

from __future__ import annotations

import math

import pandas as pd

from rlhf_interp.frontier.plot import is_true

def _row_interval(row: pd.Series):
    from rlhf_interp.core import stats

    n = int(row["n_prompts"]) if pd.notna(row.get("n_prompts")) else 16
    return stats.Interval(float(row["reward_mean"]), float(row["reward_low"]), float(row["reward_high"]),
                          n={"prompts": n})


def frontier_claims(points: pd.DataFrame, table: pd.DataFrame, scan: pd.DataFrame | None, freezing: pd.DataFrame,
                    headline_budgets, tokens: int = 24) -> list:
    """The page's claims: at each headline budget the method with the most reward and its difference from the
    runner-up (with a verdict); the PPO trajectory's non-monotone KL; the freezing and layer questions."""
    from rlhf_interp.core import stats
    from rlhf_interp.report.claims import Claim

    out = []
    base = points[points["kind"] == "base"].iloc[0]
    n_base = int(base["n_sequences"]) if pd.notna(base.get("n_sequences")) else 16
    edit_n = {"prompts": n_base, "samples_per_prompt": 1, "seeds": 1}
    for budget in headline_budgets:
        g = table[(table["budget"] == budget) & table["reward_mean"].notna()]
        if len(g) < 2:
            continue
        ranked = g.sort_values("reward_mean", ascending=False, kind="stable")  # ties: the table's order
        best, second = ranked.iloc[0], ranked.iloc[1]
        tag = f"{budget:g}".replace(".", "_")

        def sel(row):
            k = int(row["selected_from"]) if pd.notna(row.get("selected_from")) else 1
            return (f" (the best of {k} layers, chosen on the same prompts: optimistic)" if k > 1 else "")

        def n_of(row):  # rows of older CSVs carry no counts: the base model's prompts, one sample each
            prompts = row.get("n_prompts")
            samples = row.get("samples_per_prompt")
            return {"prompts": int(prompts) if pd.notna(prompts) else n_base,
                    "samples_per_prompt": int(samples) if pd.notna(samples) else 1, "seeds": 1}

        iv = _row_interval(best)
        out.append(Claim.estimate(
            f"most_reward_at_{tag}_nats", "At {budget} {nats} of KL per sequence the highest point estimate of reward is {method}'s: "
            "{value} {ci} periods per {tokens} tokens{selection}.", iv, n=n_of(best),
            params={"tokens": tokens, "budget": f"{budget:g}", "nats": "nat" if budget == 1 else "nats", "method": best["method"], "selection": sel(best)}))
        diff = stats.summary_difference(best["reward_mean"], best["reward_stderr"], iv.n["prompts"],
                                        second["reward_mean"], second["reward_stderr"], n_of(second)["prompts"],
                                        note="unpaired: per-prompt rows of the edits are not stored")
        out.append(Claim.compare(
            f"top_two_at_{tag}_nats", "Its lead over {second}{selection}: {value} {ci}; {verdict}.", diff,
            best["method"], second["method"], n={"prompts": min(n_of(best)["prompts"], n_of(second)["prompts"]),
                                                 "seeds": 1},
            params={"second": second["method"], "selection": sel(second)}))
    traj = points[(points["kind"] == "fine-tuning") & is_true(points["trajectory"])].sort_values("step")
    if len(traj) >= 2:
        peak = traj.loc[traj["reward_mean"].idxmax()]
        last = traj.iloc[-1]
        if peak.name != last.name:
            diff = stats.summary_difference(peak["reward_mean"], peak["reward_stderr"], 16, last["reward_mean"],
                                            last["reward_stderr"], 16)
            out.append(Claim.compare(
                "trajectory_not_monotone", "The PPO trajectory is not interpolated between checkpoints: step "
                "{peak_step} ({peak_kl} nats) minus step {last_step} ({last_kl} nats, less KL): {value} {ci} "
                "periods; {verdict}.", diff, f"step {int(peak['step'])}", f"step {int(last['step'])}", n=edit_n,
                params={"peak_step": int(peak["step"]), "last_step": int(last["step"]),
                        "peak_kl": f"{peak['kl_exact_mean']:.2f}", "last_kl": f"{last['kl_exact_mean']:.2f}"},
                headline=False))
    if len(freezing) >= 2:
        fr = freezing.dropna(subset=["reward_per_nat"])
        top = fr.loc[fr["reward_per_nat"].idxmax()]
        kl, kl_se = float(top["kl_exact_mean"]), float(top["kl_exact_stderr"])
        gain_se = math.hypot(float(top["reward_stderr"]), float(base["reward_stderr"]))
        ratio = float(top["reward_gain"]) / kl
        se = math.hypot(gain_se / kl, ratio * kl_se / kl)  # delta method
        iv = stats.summary_interval(ratio, se, 16, units={"prompts": 16, "samples_per_prompt": 1, "seeds": 1},
                                    note="one training seed per run: seed-to-seed variation not included")
        out.append(Claim.estimate(
            "freezing_top_per_nat", "Among the short PPO runs ({runs} runs, one seed each) {method} has the highest "
            "reward gain per nat, {value} {ci} (delta-method interval).", iv,
            params={"runs": len(fr), "method": top["method"]}, headline=False))
        out.append(Claim.not_measured(
            "freezing_ranking", "Which number of frozen layers buys the most reward per nat: not yet measured with "
            "enough samples (one training seed per run; the top run's interval is wider than the spread between runs).",
            n={"runs": len(fr), "seeds": 1, "prompts": 16}))
    if scan is not None and len(scan[is_true(scan["hit"])]) >= 2:
        hit = scan[is_true(scan["hit"])].sort_values("layer")
        first, last = hit.iloc[0], hit.iloc[-1]
        diff = stats.summary_difference(last["reward_mean"], last["reward_stderr"], int(last["n_sequences"]),
                                        first["reward_mean"], first["reward_stderr"], int(first["n_sequences"]))
        out.append(Claim.compare(
            "later_layer", "Does a later steering layer buy more reward at equal KL? At {budget} nats the "
            "{vector} vector at layer {late} minus layer {early}: {value} {ci}; {verdict} (the best of the "
            "{layers} scanned layers is not reported: chosen on the same prompts).", diff,
            f"layer {int(last['layer'])}", f"layer {int(first['layer'])}", n=edit_n,
            params={"budget": f"{hit['budget'].iloc[0]:g}", "vector": hit["vector"].iloc[0],
                    "late": int(last["layer"]), "early": int(first["layer"]), "layers": len(hit)}))
    out.append(Claim.not_measured(
        "editing_vs_finetuning", "Whether editing buys more reward per nat than fine-tuning: not yet measured with "
        "enough samples (one sample per prompt, one seed per run, layers chosen on the prompts they are reported on).",
        n=edit_n))
    return out


__all__ = ["frontier_claims"]
