"""The causal-patching page's claims and findings, from its CSVs alone (``activation_patching.csv``,
``patching_per_text.csv``, ``undo.csv``, ``undo_per_text.csv``, ``undo_prompts.csv``, ``trajectory_per_text.csv``).

Why a module: ``analyses/causal_ppo.py`` renders them onto the page and into ``report.json``; the tests check
them. How the intervals are made (the unit of resampling is the text, or for the sampled rewards the prompt):

- **fractions recovered** (and the reward proxy's share) of a patch: percentile bootstrap over texts of the
  ratio of sums 1 - sum KL(patched || donor) / sum KL(receiver || donor) (`rlhf_interp.patching.intervals`).
  The top patch is chosen on the same texts, so its interval leaves out the choosing (the note says so); the
  top-vs-runner-up difference is paired over texts.
- **the first layer at which the residual patch recovers half** (or nine tenths): the layer with a percentile
  bootstrap interval of that layer over texts.
- **undo**: the sampled reward of the edited and unedited tuned model on the same prompts and seed, a paired t
  interval over prompts; the share of the tuned model's reward gain over base that the edit removes,
  (tuned - edited) / (tuned - base), a percentile bootstrap over prompts of that ratio of sums, stated only
  when the gain itself is decided (a share of an undecided gain has no finite interval).
"""

from __future__ import annotations

import pandas as pd

from rlhf_interp.core import stats
from rlhf_interp.core.bootstrap import ratio_of_sums_interval
from rlhf_interp.patching.intervals import (
    first_layer_reaching,
    fraction_difference,
    fraction_interval,
    kl_clean_interval,
    proxy_recovered_interval,
)
from rlhf_interp.report.claims import Claim

SUBLAYERS = ("hook_attn_out", "hook_mlp_out")
LABEL = {"hook_attn_out": "attention output", "hook_mlp_out": "MLP output"}
CHOSEN = "chosen as the largest on the same texts: the interval leaves the choosing out"


def top_sublayers(act: pd.DataFrame, direction: str = "into_base", k: int = 3) -> pd.DataFrame:
    """The ``k`` sublayer-output patches with the largest fraction recovered in one direction."""
    rows = act[(act["direction"] == direction) & act["component"].isin(SUBLAYERS)]
    return rows.nlargest(k, "fraction_recovered")


def _short(row) -> str:
    """``L27 attn`` / ``L23 mlp``: a patch as a verdict names it."""
    return f"L{int(row['layer'])} {'attn' if row['component'] == 'hook_attn_out' else 'mlp'}"


def _key(row) -> tuple[str, int, str]:
    return (row["direction"], int(row["layer"]), row["component"])


def _fmt(iv: stats.Interval, spec: str = ".3f") -> str:
    return f"{iv.value:{spec}} [{iv.low:{spec}}, {iv.high:{spec}}]"


def _prompt_rewards(sampled: pd.DataFrame, model: str, method: str, layer=None) -> pd.Series:
    rows = sampled[(sampled["model"] == model) & (sampled["method"] == method)]
    if layer is not None:
        rows = rows[rows["layer"] == layer]
    return rows.set_index("prompt").sort_index()["reward"]


def undo_choice(undo: pd.DataFrame) -> pd.Series | None:
    """The subtract-the-mean edit that removes the most teacher-forced KL (chosen on the patched texts, not on
    the prompts its sampled reward is measured on)."""
    edits = undo[(undo["model"] == "tuned") & (undo["method"] == "subtract_mean")]
    return edits.loc[edits["kl_removed"].idxmax()] if len(edits) else None


def causal_claims(tables: dict[str, pd.DataFrame], config: dict) -> list[Claim]:
    """The page's claims (see the module docstring for how each interval is made)."""
    act, per_text = tables["activation_patching"], tables["patching_per_text"]
    seed = int(config.get("seed", 0))
    where = "the tuned policy's own sampled continuations" if int(config.get("samples", 0) or 0) else "bare prompts"
    out = [Claim.estimate("kl_base_tuned", "Without a patch, KL(base‖tuned) on {where} is {value} {ci} nats per "
                          "position ({n}).", kl_clean_interval(per_text, seed=seed), fmt=".3g",
                          params={"where": where}, headline=False)]
    top = top_sublayers(act)
    if len(top) >= 1:
        a = top.iloc[0]
        params = {"layer": int(a["layer"]), "part": LABEL[a["component"]]}
        out.append(Claim.estimate(
            "top_patch", "The strongest single patch of tuned into base, layer {layer}'s {part}, recovers {value} "
            "{ci} of KL(base‖tuned) on {where} ({n}).", fraction_interval(per_text, _key(a), seed=seed),
            params={**params, "where": where}, note=CHOSEN))
        out.append(Claim.estimate(
            "top_patch_proxy", "It moves the reward proxy (log-probability of a period) {value} {ci} of the way "
            "from base to tuned ({n}).", proxy_recovered_interval(per_text, _key(a), seed=seed), headline=False,
            note=CHOSEN))
    if len(top) >= 2:
        b = top.iloc[1]
        out.append(Claim.compare(
            "top_vs_runner_up", "Over the runner-up (layer {layer_b}'s {part_b}) it recovers {value} {ci} more; "
            "{verdict}.", fraction_difference(per_text, _key(a), _key(b), seed=seed), _short(a), _short(b), params={"layer_b": int(b["layer"]), "part_b": LABEL[b["component"]]},
            note=CHOSEN))
    back = top_sublayers(act, "into_tuned", 1)
    if len(back):
        r = back.iloc[0]
        out.append(Claim.estimate(
            "top_reverse_patch", "The other way round, base's layer {layer} {part} in tuned removes {value} {ci} "
            "of KL(tuned‖base) ({n}).", fraction_interval(per_text, _key(r), seed=seed), headline=False,
            params={"layer": int(r["layer"]), "part": LABEL[r["component"]]}, note=CHOSEN))
    for share, headline in ((50, True), (90, False)):
        iv = first_layer_reaching(per_text, share / 100, seed=seed)
        if iv is not None:
            out.append(Claim.estimate(
                f"resid_reaches_{share}", "Patching tuned's residual stream (`hook_resid_post`) into base first "
                "recovers {share}% of the KL at layer {value} {ci} ({n}).", iv, fmt=".0f",
                params={"share": share}, headline=headline))
    out += undo_claims(tables, config)
    return out


def undo_claims(tables: dict[str, pd.DataFrame], config: dict) -> list[Claim]:
    """The undo table's claims: the tuned model's reward gain, and what subtracting the mean difference removes."""
    undo, sampled = tables["undo"], tables.get("undo_prompts")
    out: list[Claim] = []
    chosen = undo_choice(undo)
    seed = int(config.get("seed", 0))
    if chosen is not None and "undo_per_text" in tables:
        tf = tables["undo_per_text"]
        unedited = tf[(tf["patch"] >= 0) & (tf["direction"] == "into_tuned") & (tf["component"] == "none")]
        edited = tf[(tf["component"] == "subtract_mean") & (tf["layer"] == int(chosen["layer"]))]
        iv = ratio_of_sums_interval(edited.sort_values("text")["kl_base_sum"],
                                    unedited.sort_values("text")["kl_base_sum"], offset=1.0, scale=-1.0, seed=seed,
                                    n={"texts": len(edited), "positions": int(edited["n_tokens"].sum())})
        iv = stats.Interval(iv.value, iv.low, iv.high, iv.level, "percentile bootstrap over texts, ratio of sums", iv.n)
        out.append(Claim.estimate(
            "undo_kl_removed", "Subtracting layer {layer}'s mean tuned-minus-base difference removes {value} {ci} "
            "of the tuned model's teacher-forced KL to base on the patched texts ({n}).", iv,
            params={"layer": int(chosen["layer"])}, headline=False,
            note="layer chosen as the largest of the subtract_mean rows on the same texts"))
    if sampled is None or sampled.empty or chosen is None:
        return out
    tuned, base = _prompt_rewards(sampled, "tuned", "none"), _prompt_rewards(sampled, "base", "none")
    edited = _prompt_rewards(sampled, "tuned", "subtract_mean", int(chosen["layer"]))
    n = {"prompts": len(tuned), "samples_per_prompt": 1, "seeds": 1}
    tokens = int(config.get("undo_tokens", 24))
    gain = stats.paired_difference(tuned.to_numpy(), base.to_numpy(), n=n)
    out.append(Claim.compare(
        "tuned_vs_base_reward", "The tuned model's sampled reward minus the base model's ({tokens} tokens per "
        "prompt, same prompts and seed): {value} {ci} periods; {verdict}.", gain, "tuned", "base", n=n,
        params={"tokens": tokens}, headline=False))
    change = stats.paired_difference(edited.to_numpy(), tuned.to_numpy(), n=n)
    out.append(Claim.compare(
        "undo_reward", "Subtracting layer {layer}'s mean difference changes the tuned model's sampled reward by "
        "{value} {ci} periods per continuation; {verdict}.", change, "undone", "tuned", n=n,
        params={"layer": int(chosen["layer"])}))
    if gain.excludes_zero() and gain.value > 0:
        share = ratio_of_sums_interval((tuned - edited).to_numpy(), (tuned - base).to_numpy(), seed=seed, n=n)
        out.append(Claim.estimate(
            "undo_gain_removed", "That removes {value} {ci} of the tuned model's reward gain over base.", share))
    else:
        out.append(Claim.not_measured(
            "undo_gain_removed", "The share of the reward gain it removes: not yet measured with enough samples "
            "(the gain itself is undecided).", n=n))
    return out


def findings(tables: dict[str, pd.DataFrame], config: dict) -> list[str]:
    """The page's findings beyond the claims, each with its 95% interval over texts (bootstrap; the interval
    columns of ``activation_patching.csv``)."""
    act = tables["activation_patching"]
    lines = []
    for direction, words in (("into_base", "tuned's sublayer output into base; fraction of KL(base||tuned) "
                                           "recovered"),
                             ("into_tuned", "base's sublayer output into tuned; fraction of KL(tuned||base) removed")):
        top = top_sublayers(act, direction)
        if len(top):
            lines.append(f"Top {len(top)} single patches ({words}; 95% bootstrap interval over texts): " + ", ".join(
                f"L{int(r.layer)} {LABEL[r.component]} {r.fraction_recovered:.3f} [{r.fraction_low:.3f}, "
                f"{r.fraction_high:.3f}]" for r in top.itertuples()) + ".")
    if "trajectory_per_text" in tables:
        tp = tables["trajectory_per_text"]
        parts = []
        for step, group in tp.groupby("step"):
            parts.append(f"step {int(step)}: {_fmt(kl_clean_interval(group, seed=int(config.get('seed', 0))), '.3g')}")
        lines.append(f"Along the run, KL(base||tuned) per position on the first {tp['text'].nunique()} texts "
                     "(95% bootstrap interval over texts): " + "; ".join(parts) + ".")
    return lines
