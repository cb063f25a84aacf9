"""The KL-direction study's claims, from its CSVs alone (``per_prompt.csv``, ``levels.csv``, ``comparisons.csv``).

Why a module: the page, the index and the README state these sentences; the tests check them on the tiny study.
Every number is a field of a `Claim` with its 95% interval and n (prompts x samples per prompt, seeds):

- the base model's rate of X: Wilson interval over its samples (prompt clustering not included: noted);
- each penalty's X rate, reward and coverage (share of the reference's samples made 10x / 100x less likely) at the
  end of training and at equal KL(pi||ref): t over the seeds' means of per-prompt values (`levels_and_comparisons`);
- each penalty against pi_ref and against none, paired by seed and prompt, with its verdict (decided, or the largest
  difference not ruled out);
- issue 29's question: does the sequence-level KL(ref||pi) keep >= 95% of the reference's samples within 10x
  likelihood where the per-token reward placement keeps fewer?

A penalty or comparison without finished runs is a ``not_measured`` claim naming how many runs finished.
"""

from __future__ import annotations

import math

import pandas as pd

from rlhf_interp.core.stats import Interval, proportion_interval, verdict
from rlhf_interp.measure.kl_study import PENALTIES
from rlhf_interp.report.claims import NOT_MEASURED, Claim

METRIC_WORDS = {"x_rate": ("X's rate", ".1%"), "reward": ("reward (−count of X per continuation)", ".3f"),
                "lost_10x": ("share of the reference's samples made {tenfold}× less likely", ".1%"),
                "lost_100x": ("share of the reference's samples made {hundredfold}× less likely", ".1%"),
                "kept_10x": ("share of the reference's samples kept within {tenfold}× likelihood", ".1%")}
AT_WORDS = {"end": "at the end of training", "equal_kl": "at equal KL(π‖ref) per token = {level:.3g} nats"}
FACTORS = {"tenfold": 10, "hundredfold": 100}
HEADLINE_VS_PI_REF = ("ref_pi_reward", "ref_pi_loss", "ref_pi_seq", "none")


def _n(prompts: int, per_prompt: int, seeds: int | None = None) -> dict[str, int]:
    n = {"prompts": int(prompts), "samples_per_prompt": int(per_prompt)}
    return {**n, "seeds": int(seeds)} if seeds is not None else n


def _words(metric: str) -> tuple[str, str]:
    words, fmt = METRIC_WORDS[metric]
    return words, fmt


def _caveat(n: dict) -> str:
    """What a one-seed interval leaves out, said in the sentence itself (not only in the claim's note)."""
    return "; one seed: over prompts only, seed-to-seed variation not included" if n.get("seeds") == 1 else ""


def _in_units(claim: Claim, iv: Interval, a: str, b: str) -> Claim:
    """The verdict's bound in the claim's own units (percentage points for shares, not a bare fraction)."""
    claim.verdict = verdict(iv, a, b, fmt=claim.fmt if claim.fmt.endswith("%") else ".2g").text
    return claim


def base_claim(per_prompt: pd.DataFrame, description: str) -> Claim:
    """X's rate in the base model's evaluation samples, Wilson interval."""
    base = per_prompt[(per_prompt["penalty"] == "base") & (per_prompt["at"] == "end")]
    k = int(round(float((base["x_rate"] * base["n_samples"]).sum())))
    total = int(base["n_samples"].sum())
    iv = proportion_interval(k, total, n=_n(base["prompt_idx"].nunique(), base["n_samples"].min()))
    return Claim.estimate("base_x_rate", "The base model shows X ({x}) in {value} {ci} of its evaluation samples "
                          "({n}; Wilson).", iv, fmt=".1%", params={"x": description},
                          note="Wilson over samples: the clustering of samples within prompts is not included")


def level_claims(levels: pd.DataFrame, matched_level: float | None) -> list[Claim]:
    """Each penalty's value of each metric at the end and at equal KL (not in the headline)."""
    out = []
    for at in ("end", "equal_kl"):
        for penalty in PENALTIES:
            rows = levels[(levels["at"] == at) & (levels["penalty"] == penalty)]
            where = AT_WORDS[at]
            if rows.empty:
                out.append(Claim.not_measured(f"{at}_{penalty}", f"{penalty} {where.split(' =')[0]}: {NOT_MEASURED} "
                                              "(no finished run reached it).", headline=False))
                continue
            for metric in ("x_rate", "reward", "lost_10x", "lost_100x"):
                r = rows[rows["metric"] == metric].iloc[0]
                words, fmt = _words(metric)
                iv = Interval(r["value"], r["low"], r["high"], method=r["method"],
                              n=_n(r["prompts"], r["per_prompt"], r["seeds"]), note=str(r["note"] or ""))
                if not (math.isfinite(iv.low) and math.isfinite(iv.high)):
                    out.append(Claim.not_measured(f"{at}_{penalty}_{metric}", f"{penalty}'s {words} {where}: "
                                                  f"{NOT_MEASURED} (too few units for an interval).",
                                                  params={**FACTORS, "level": matched_level or 0.0}, headline=False))
                    continue
                out.append(Claim.estimate(f"{at}_{penalty}_{metric}", f"{penalty}'s {words} {where}: {{value}} "
                                          "{ci} ({n}{caveat}).", iv, fmt=fmt, headline=False,
                                          params={**FACTORS, "level": matched_level or 0.0,
                                                  "caveat": _caveat(iv.n)}))
    return out


def comparison_claims(comparisons: pd.DataFrame, matched_level: float | None) -> list[Claim]:
    """Every penalty against pi_ref and against none (and ref_pi_seq against ref_pi_reward on coverage)."""
    out = []
    for _, r in comparisons.iterrows():
        words, fmt = _words(r["metric"])
        fmt = ".1%" if fmt == ".1%" else ".3f"
        iv = Interval(r["difference"], r["low"], r["high"], method=r["method"],
                      n=_n(r["prompts"], r["per_prompt"], r["seeds"]),
                      note=str(r["note"] if isinstance(r["note"], str) else ""))
        cid = f"{r['at']}_{r['metric']}_{r['a']}_vs_{r['b']}"
        where = AT_WORDS[r["at"]]
        headline = r["at"] == "end" and r["metric"] == "x_rate" and r["b"] == "pi_ref" and r["a"] in HEADLINE_VS_PI_REF
        if not (math.isfinite(iv.low) and math.isfinite(iv.high)):
            out.append(Claim.not_measured(cid, f"{r['a']} − {r['b']} in {words} {where}: {NOT_MEASURED} (too few "
                                          "units for an interval).", params={**FACTORS, "level": matched_level or 0.0},
                                          headline=False))
            continue
        text = (f"{r['a']} − {r['b']} in {words} {where}: {{value}} {{ci}} ({{n}}, paired by seed and "
                "prompt{caveat}); {verdict}.")
        out.append(_in_units(Claim.compare(cid, text, iv, r["a"], r["b"], fmt=fmt, headline=bool(headline),
                                           params={**FACTORS, "level": matched_level or 0.0,
                                                   "caveat": _caveat(iv.n)}), iv, r["a"], r["b"]))
    return out


def coverage_question(levels: pd.DataFrame, comparisons: pd.DataFrame, finished: int, planned: int,
                      threshold: float = 0.95, cid: str = "seq_keeps_reference_samples", lead: str = "",
                      headline: bool = True, extra: dict | None = None) -> Claim:
    """Issue 29: does ref_pi_seq keep >= ``threshold`` of the reference's samples within 10x likelihood where
    ref_pi_reward keeps fewer? Both levels with intervals, their paired difference and its verdict. ``cid`` and
    ``lead`` (words before the sentence, with ``{placeholders}`` filled from ``extra``, e.g. a pilot's coefficient)
    for a second study's claim."""
    end = levels[(levels["at"] == "end") & (levels["metric"] == "kept_10x")].set_index("penalty")
    key = comparisons[(comparisons["at"] == "end") & (comparisons["metric"] == "kept_10x")
                      & (comparisons["a"] == "ref_pi_seq") & (comparisons["b"] == "ref_pi_reward")]
    if key.empty or not {"ref_pi_seq", "ref_pi_reward"} <= set(end.index) or not (
            math.isfinite(key["low"].iloc[0]) and math.isfinite(key["high"].iloc[0])):
        return Claim.not_measured(
            cid, lead + "Whether the sequence-level KL(ref‖π) (ref_pi_seq) keeps at least {threshold:.0%} of the reference's "
            f"samples within {{tenfold}}× likelihood where the per-token reward placement (ref_pi_reward) keeps "
            f"fewer: {NOT_MEASURED} ({{finished}} of {{planned}} runs finished).",
            params={"threshold": threshold, "tenfold": 10, "finished": finished, "planned": planned, **(extra or {})},
            headline=headline)
    s, w, r = end.loc["ref_pi_seq"], end.loc["ref_pi_reward"], key.iloc[0]
    if s["low"] >= threshold:
        met = "its whole interval is at or above the mark"
    elif s["high"] < threshold:
        met = "its whole interval is below the mark"
    else:
        met = "its interval straddles the mark (not decided)"
    iv = Interval(r["difference"], r["low"], r["high"], method=r["method"],
                  n=_n(r["prompts"], s["per_prompt"], r["seeds"]), note=str(r["note"] if isinstance(r["note"], str)
                                                                         else ""))
    return _in_units(Claim.compare(
        cid, lead + "At the end of training the sequence-level KL(ref‖π) (ref_pi_seq) keeps {seq:.1%} [{seq_low:.1%}, "
        "{seq_high:.1%}] of the reference's samples within {tenfold}× likelihood (against a mark of "
        "{threshold:.0%}: {met}) and the per-token reward placement (ref_pi_reward) {rew:.1%} [{rew_low:.1%}, "
        "{rew_high:.1%}]; ref_pi_seq − ref_pi_reward {value} {ci} ({n}, paired by seed and prompt{caveat}): "
        "{verdict}.",
        iv, "ref_pi_seq", "ref_pi_reward", fmt=".1%",
        params={"seq": float(s["value"]), "seq_low": float(s["low"]), "seq_high": float(s["high"]),
                "rew": float(w["value"]), "rew_low": float(w["low"]), "rew_high": float(w["high"]),
                "tenfold": 10, "threshold": threshold, "met": met, "caveat": _caveat(iv.n), **(extra or {})},
        headline=headline), iv,
        "ref_pi_seq", "ref_pi_reward")


def study_claims(per_prompt: pd.DataFrame, levels: pd.DataFrame, comparisons: pd.DataFrame, config: dict,
                 finished: int, planned: int, matched_level: float | None) -> list[Claim]:
    """Every claim of the page, headline first: X's base rate, issue 29's question, X's rate against pi_ref."""
    if comparisons.empty:  # a CSV never written (no finished run) has no columns either
        comparisons = pd.DataFrame(columns=["at", "metric", "a", "b", "difference", "low", "high"])
    if levels.empty:
        levels = pd.DataFrame(columns=["at", "penalty", "metric", "value", "low", "high"])
    claims = [base_claim(per_prompt, config["base"]["description"]),
              coverage_question(levels, comparisons, finished, planned)]
    if finished == 0:
        claims.append(Claim.not_measured(
            "penalties_compared", "X's rate, reward and coverage under each penalty against pi_ref and none, at the "
            f"end of training and at equal KL(π‖ref): {NOT_MEASURED} ({{finished}} of {{planned}} runs finished).",
            params={"finished": finished, "planned": planned}))
        return claims
    comps = comparison_claims(comparisons[~((comparisons["a"] == "ref_pi_seq") & (comparisons["b"] == "ref_pi_reward"))],
                              matched_level)
    return claims + [c for c in comps if c.headline] + level_claims(levels, matched_level) + \
        [c for c in comps if not c.headline]


def _seed_words(seeds: int) -> str:
    return "one seed" if int(seeds) == 1 else f"{int(seeds)} seeds"


SEQ_ESTIMATOR_WORDS = {"k1": "", "exact": ", the exact sequence-level estimator (the reference's whole next-token "
                                           "distribution at its own states, not only its sampled token)"}


def with_pilot_defaults(table: pd.DataFrame) -> pd.DataFrame:
    """A pilot table with its setting columns filled: pilots written before a column existed ran with its default
    (one bank sample per step, the k1 sequence estimator)."""
    table = table.assign(kl_bank_per_step=table.get("kl_bank_per_step", 1), seq_estimator=table.get("seq_estimator",
                                                                                                    "k1"))
    return table.fillna({"kl_bank_per_step": 1, "seq_estimator": "k1"})


def pilot_claims(levels: pd.DataFrame, comparisons: pd.DataFrame) -> list[Claim]:
    """The stronger-coefficient pilots: per setting (coefficient, bank size, bank samples per step, the sequence-level
    penalty's estimator) with both placements, `coverage_question`'s sentence; a setting with the sequence-level
    penalty alone, its coverage. The paired pilots with the largest coefficient or the exact estimator are headline
    claims; the seed count is read from the data."""
    if levels is None or levels.empty:
        return []
    out = []
    setting = ["kl_coef", "kl_bank_size", "kl_bank_per_step", "seq_estimator"]
    levels = with_pilot_defaults(levels)
    comparisons = (with_pilot_defaults(comparisons) if comparisons is not None and len(comparisons)
                   else pd.DataFrame(columns=setting))
    paired = {k for k, _ in comparisons.groupby(setting)} if len(comparisons) else set()
    top = max((k[0] for k in paired), default=None)
    for (coef, bank, per_step, estimator), g in levels.groupby(setting):
        tag = f"{coef:g}".replace(".", "_")
        seeds = _seed_words(g["seeds"].min())
        if (coef, bank, per_step, estimator) in paired and set(g["penalty"]) >= {"ref_pi_seq", "ref_pi_reward"}:
            c = comparisons[(comparisons["kl_coef"] == coef) & (comparisons["kl_bank_size"] == bank)
                            & (comparisons["kl_bank_per_step"] == per_step) & (comparisons["seq_estimator"] == estimator)]
            bank_words = ("" if per_step == 1 else f", {int(per_step)} of {int(bank)} bank samples per step") + \
                SEQ_ESTIMATOR_WORDS.get(estimator, f", estimator {estimator}")
            out.append(coverage_question(
                g, c, 2, 2, cid=f"pilot_kl_coef_{tag}_seq_keeps" + ("" if per_step == 1 else f"_per_step_{int(per_step)}")
                + ("" if estimator == "k1" else f"_{estimator}"),
                lead="Pilot with kl_coef {beta}{bank_words}, {seeds} per placement: ",
                extra={"beta": f"{coef:g}", "bank_words": bank_words, "seeds": seeds},
                headline=bool(coef == top or estimator != "k1")))
            continue
        for r in g[g["metric"] == "kept_10x"].itertuples():
            iv = Interval(r.value, r.low, r.high, method=r.method, n=_n(r.prompts, r.per_prompt, r.seeds),
                          note=str(r.note if isinstance(r.note, str) else ""))
            out.append(Claim.estimate(
                f"pilot_kl_coef_{tag}_bank_{int(bank)}_per_step_{int(per_step)}_{r.penalty}_kept"
                + ("" if estimator == "k1" else f"_{estimator}"),
                "Pilot with kl_coef {beta}, {per_step} of {bank} reference-bank samples per prompt in each step"
                "{estimator_words}, {seeds}: {penalty} keeps {value} {ci} of the reference's samples within {tenfold}× "
                "likelihood ({n}{caveat}).", iv, fmt=".1%",
                params={"beta": f"{coef:g}", "bank": str(int(bank)), "per_step": str(int(per_step)),
                        "penalty": r.penalty, "tenfold": 10, "caveat": _caveat(iv.n),
                        "estimator_words": SEQ_ESTIMATOR_WORDS.get(estimator, f", estimator {estimator}"),
                        "seeds": _seed_words(r.seeds)}, headline=bool(per_step > 1)))
    return out
