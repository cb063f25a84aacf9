"""Claims of the reward-hacking page (`analyses/reward_hacking.py`, ``reports/reward_hacking``), each with n and a
95% interval, stated as decided or bounded.

Why here: the page tests hacking two ways that still work where the policy's texts leave the reward model's (RM's)
training support — at equal true count (the RM's score of the policy's samples against the base model's, bin by
bin and stratified over the bins: `rlhf_interp.measure.stratified`) and along the count (does the RM's score keep
rising beyond the counts it was trained on) — beside the RM's accuracy, the PPO run's true count, KL(π‖ref) per
token and entropy. One training seed: intervals over phases leave seed-to-seed variation out, and say so.

Inputs are the page's tidy tables: ``heldout`` (base-model texts: true_reward, rm_reward), ``policy`` (the final
policy's samples, same columns), ``samples`` (PPO rollouts: phase, completion, true_reward, rm_reward), ``phases``
(per phase: kl_pi_ref_per_token, entropy, spearman), ``rm_metrics`` and ``support`` (true_count, texts: the counts
of the RM's training texts).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from rlhf_interp.core import stats
from rlhf_interp.measure.stratified import count_bins, slope_difference, slope_interval, stratified_difference
from rlhf_interp.report.claims import Claim

ONE_SEED = "one training seed: the interval is over phases (or samples), seed-to-seed variation is not included"


def finite_or_not_measured(claims: list[Claim], what: dict[str, str]) -> list[Claim]:
    """Each estimate or comparison without a finite interval (a constant sample, too few units) replaced by a claim
    saying it is not yet measured with enough samples; ``what``: claim id -> what it would have stated."""
    out = []
    for c in claims:
        finite = all(x is not None and np.isfinite(x) for x in (c.value, c.low, c.high))
        if c.kind in ("estimate", "comparison") and not finite:
            c = Claim.not_measured(c.id, what.get(c.id, c.id.replace("_", " ")) + ": not yet measured with enough "
                                   "samples (no finite interval).", n=c.n, headline=c.headline)
        out.append(c)
    return out


def support_top(support: pd.DataFrame, min_share: float) -> int:
    """The largest true count held by at least ``min_share`` of the RM's training texts: the top of its support."""
    share = support.texts / support.texts.sum()
    return int(support.true_count[share >= min_share].max())


def rm_claims(n_pairs: int, rm_metrics: pd.DataFrame, heldout: pd.DataFrame, val_fraction: float = 0.1
              ) -> list[Claim]:
    """The RM's validation accuracy (Wilson over validation pairs) and its Spearman with the truth on fresh base
    texts (bootstrap over texts)."""
    best = rm_metrics[rm_metrics.split == "val"].sort_values("loss").iloc[0]
    n_val = int(round(val_fraction * n_pairs))
    acc = stats.proportion_interval(int(round(best.accuracy * n_val)), n_val, n={"pairs": n_val})
    xy = heldout[["true_reward", "rm_reward"]].to_numpy(dtype=float)
    rho = stats.bootstrap_interval(xy, lambda a: pd.Series(a[:, 0]).corr(pd.Series(a[:, 1]), method="spearman"),
                                   n_boot=1000, n={"texts": len(xy)})
    return finite_or_not_measured([
        Claim.estimate("rm_accuracy", "A Bradley-Terry RM on {pairs} synthetic pairs ranks {value} {ci} of its "
                       "validation pairs right", acc, fmt=".3f", params={"pairs": n_pairs}),
        Claim.estimate("rm_spearman", "and has Spearman {value} {ci} with the true count on fresh base-model texts.",
                       rho)], {"rm_spearman": "The RM's Spearman with the true count on fresh base-model texts"})


def training_claims(samples: pd.DataFrame, phases: pd.DataFrame, late_from: int, kl_target: float | None
                    ) -> list[Claim]:
    """PPO's true count at phase 1 and late; KL(π‖ref) per token late (against the controller's target) and the
    policy's entropy early vs late, t over phase means (one seed)."""
    first = samples[samples.phase == samples.phase.min()]
    late = samples[samples.phase >= late_from]
    span, n_phases = f"{late_from}-{int(samples.phase.max())}", int(late.phase.nunique())
    per_phase = int(late.groupby("phase").size().min())
    n_late = {"phases": n_phases, "samples_per_phase": per_phase, "seeds": 1}
    out = [Claim.estimate(
        "true_start", "PPO against it raised the true count from {value} {ci} periods per sample (phase {phase})",
        stats.mean_interval(first.true_reward), n={"phases": 1, "samples_per_phase": len(first), "seeds": 1},
        params={"phase": int(first.phase.iloc[0])}),
        Claim.estimate("true_late", "to {value} {ci} (phases {span}; one seed, interval over phase means).",
                       stats.seeds_interval(late.true_reward, late.phase, n=n_late), params={"span": span})]
    tail = phases[phases.phase >= late_from]
    early = phases[phases.phase < min(late_from, phases.phase.min() + len(tail))]  # as many phases, none late
    kl = stats.mean_interval(tail.kl_pi_ref_per_token, n=n_late, note=ONE_SEED)
    where = ("" if kl_target is None else ", below the controller's target of {target}" if kl.high < kl_target
             else ", above the controller's target of {target}" if kl.low > kl_target
             else ", at the controller's target of {target}")
    out.append(Claim.estimate(
        "kl_late", "Its exact KL(π‖ref) over phases {span}: {value} {ci} nats per token" + where + ".", kl,
        fmt=".3f",
        params={"span": span, **({"target": f"{kl_target:g}"} if kl_target is not None else {})}))
    if len(early) < 2:
        return finite_or_not_measured(out, {"kl_late": "KL(π‖ref) per token late"}) + [Claim.not_measured(
            "entropy_change", "Entropy's change from early to late phases: not yet measured with enough samples "
            "(too few phases before the late ones).", n={"phases": len(early), "seeds": 1})]
    ent = replace(stats.welch_difference(tail.entropy, early.entropy, n={"phases": len(tail), "seeds": 1},
                                         note=ONE_SEED), method="welch t over phase means")
    out.append(Claim.compare(
        "entropy_change", "Policy entropy: {early} nats per token over phases {e_span}, {late} over phases {span}, "
        "a change of {value} {ci}; {verdict}.", ent, "late", "early",
        params={"early": f"{early.entropy.mean():.2f}", "late": f"{tail.entropy.mean():.2f}", "span": span,
                "e_span": f"{int(early.phase.min())}-{int(early.phase.max())}"}))
    return finite_or_not_measured(out, {"true_start": "The true count at phase 1", "true_late": "The true count late",
                                        "kl_late": "KL(π‖ref) per token late", "entropy_change": "Entropy's change"})


def equal_count_claims(policy: pd.DataFrame, heldout: pd.DataFrame, top: int, min_n: int, *,
                       prefix: str = "", who: str = "the final policy's samples", headline: bool = True
                       ) -> tuple[list[Claim], pd.DataFrame]:
    """At equal true count: the RM's score of ``policy`` minus of the base texts, stratified over the true-count bins
    both groups fill with at least ``min_n`` texts (and per bin, not in the headline). Also returns the per-bin
    table (bin, n_a, n_b, mean_a, mean_b, diff, low, high, used, weight, verdict)."""
    pooled, table = stratified_difference(policy.rm_reward, count_bins(policy.true_reward, top), heldout.rm_reward,
                                          count_bins(heldout.true_reward, top), min_n=min_n)
    table["verdict"] = [stats.verdict(stats.Interval(r.diff, r.low, r.high), "policy", "base").text if r.used else
                        f"not tested (fewer than {min_n} texts in a group)" for r in table.itertuples()]
    used = table[table.used]
    n = {"bins": int(len(used)), "policy_samples": int(used.n_a.sum()), "base_texts": int(used.n_b.sum())}
    if not len(used):
        return [Claim.not_measured(f"{prefix}equal_count", "The RM's score at equal true count: not yet measured "
                                   "with enough samples (no true-count bin holds enough texts of both groups).",
                                   n=n, headline=headline)], table
    reading = ("the RM pays these samples more than base texts with as many periods: it rewards something besides "
               "the count" if pooled.low > 0 else "the RM pays them less than base texts with as many periods"
               if pooled.high < 0 else "no difference decided")
    out = [Claim.compare(
        f"{prefix}equal_count", "At equal true count, {who} score {value} {ci} RM units above base-model texts "
        "(stratified over true counts {bins}; {n}); {verdict}: {reading}.", replace(pooled, n=n), "policy", "base",
        params={"who": who, "bins": ", ".join(map(str, used.bin)), "reading": reading}, headline=headline)]
    for r in used.itertuples():
        iv = stats.Interval(r.diff, r.low, r.high, method="welch t",
                            n={"policy_samples": int(r.n_a), "base_texts": int(r.n_b)})
        out.append(Claim.compare(
            f"{prefix}bin_{str(r.bin).replace('+', 'plus')}", "True count {bin}: {who} {pm} vs base {bm} RM units, "
            "a difference of {value} {ci}; {verdict}.", iv, "policy", "base", headline=False,
            params={"bin": str(r.bin), "who": who, "pm": f"{r.mean_a:.2f}", "bm": f"{r.mean_b:.2f}"}))
    return out, table


def beyond_support_claims(policy: pd.DataFrame, heldout: pd.DataFrame, top: int) -> list[Claim]:
    """Along the count: the RM's slope (RM units per period) on base texts within its training support (counts up to
    ``top``) against its slope on the policy's samples from ``top`` on; the difference decides whether it flattens."""
    inside = heldout[heldout.true_reward <= top]
    beyond = policy[policy.true_reward >= top]
    s_in = slope_interval(inside.true_reward, inside.rm_reward, n={"base_texts": len(inside)})
    s_out = slope_interval(beyond.true_reward, beyond.rm_reward, n={"policy_samples": len(beyond)})
    if not (np.isfinite(s_in.low) and np.isfinite(s_out.low)):
        return [Claim.not_measured("beyond_support", "Whether the RM's score keeps rising beyond the counts it was "
                                   "trained on: not yet measured with enough samples (too few policy samples with "
                                   "{top} or more periods).", params={"top": top},
                                   n={"policy_samples": len(beyond)})]
    diff = slope_difference(beyond.true_reward, beyond.rm_reward, inside.true_reward, inside.rm_reward,
                            n={"policy_samples": len(beyond), "base_texts": len(inside)})
    return [Claim.estimate("slope_inside", "Along the count, the RM pays {value} {ci} units per period on base texts "
                           "within its training support (up to {top} periods)", s_in, params={"top": top}),
            Claim.estimate("slope_beyond", "and {value} {ci} on the final policy's samples with {top} or more periods",
                           s_out, params={"top": top}),
            Claim.compare("slope_change", "(beyond minus inside: {value} {ci}; {verdict}).", diff, "beyond",
                          "inside")]


def legacy_claims(samples: pd.DataFrame, heldout: pd.DataFrame, phases: pd.DataFrame, late_from: int
                  ) -> list[Claim]:
    """The page's first test (the RM's score rising faster than the true count, in held-out std units: blind where
    the RM saturates beyond its support), the proxy characters' rates and the within-phase Spearman; no headline."""
    m_t, s_t = heldout.true_reward.mean(), heldout.true_reward.std(ddof=1)
    m_r, s_r = heldout.rm_reward.mean(), heldout.rm_reward.std(ddof=1)
    z = samples.assign(gap=(samples.rm_reward - m_r) / s_r - (samples.true_reward - m_t) / s_t)
    g_first, late = z[z.phase == z.phase.min()].gap, z[z.phase >= late_from]
    per_phase = late.groupby("phase").gap.mean()
    n_late = {"phases": int(late.phase.nunique()), "samples_per_phase": int(late.groupby("phase").size().min()),
              "seeds": 1}
    diff = stats.summary_difference(per_phase.mean(), per_phase.std(ddof=1) / np.sqrt(len(per_phase)),
                                    len(per_phase), g_first.mean(), g_first.std(ddof=1) / np.sqrt(len(g_first)),
                                    len(g_first), units=n_late)
    out = [Claim.compare(
        "rise_test", "The first test (the RM's score rising faster than the true count, in held-out std units; blind "
        "where the RM saturates beyond its support): the RM's rise minus the truth's is {value} {ci}; {verdict}.",
        diff, "RM rise", "true rise", headline=False)]
    texts = samples[samples.phase >= late_from].completion.astype(str)
    for feature, mark in (("exclamation", "!"), ("question", "?")):
        k_late = int(texts.str.contains(mark, regex=False).sum())
        k_base = int(heldout.text.astype(str).str.contains(mark, regex=False).sum())
        d = stats.proportion_difference(k_late, len(texts), k_base, len(heldout),
                                        n={"samples": len(texts), "texts": len(heldout)})
        out.append(Claim.compare(
            f"{feature}_rate", "`{mark}` {moved}: share of texts containing one, base {base} → late policy {late}, "
            "a change of {value} {ci}; {verdict}.", d, "late", "base", fmt=".3f", headline=False,
            params={"mark": mark, "moved": "fell" if d.value < 0 else "rose", "base": f"{k_base / len(heldout):.3f}",
                    "late": f"{k_late / len(texts):.3f}"}))
    sp = phases[phases.phase >= late_from].spearman
    out.append(Claim.estimate(
        "policy_spearman", "Within-phase Spearman of RM and true count on the policy's samples, phases {span}: {value} "
        "{ci} (per phase {lo} to {hi}).", stats.mean_interval(sp, n=n_late),
        params={"span": f"{late_from}-{int(phases.phase.max())}", "lo": f"{sp.min():.2f}", "hi": f"{sp.max():.2f}"},
        headline=False) if sp.notna().sum() >= 2 else Claim.not_measured(
        "policy_spearman", "Within-phase Spearman of RM and true count on the policy's samples: not yet measured "
        "with enough samples (constant within phases).", n=n_late, headline=False))
    return finite_or_not_measured(out, {"rise_test": "The first test (the RM's score rising faster than the true "
                                                     "count)"})
