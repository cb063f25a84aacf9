"""The KL-direction study on the tiny model, through the package (`rlhf_interp.measure.kl_study*`,
`rlhf_interp.report.kl_study_claims`): base step, runs that resume in parts exactly, tables with per-prompt rows,
intervals and paired comparisons, and claims that carry n and a 95% interval (or say what is not yet measured)."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import pandas as pd
import pytest

from rlhf_interp.core.stats import proportion_interval
from rlhf_interp.measure.kl_study import PENALTIES, Study, config_fields, read_base
from rlhf_interp.measure.kl_study_runs import Training, run_base, train_run
from rlhf_interp.measure.kl_study_tables import collect_tables, levels_and_comparisons, prompt_values
from rlhf_interp.report.claims import check_claims
from rlhf_interp.report.kl_study_claims import study_claims


def _training() -> Training:
    from rlhf_interp.ppo import PPOConfig, PPOTrainer

    return Training(PPOTrainer, PPOConfig)


STUDY = replace(Study.tiny(), tasks=("suppress",), seeds=(0, 1), phases=2, eval_every=1, behaviour="capital")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """The tiny study, trained once: base, every run to 2 phases (evaluations at 1 and 2)."""
    d = tmp_path_factory.mktemp("kl_study") / "study"
    run_base(STUDY, d)
    for name in STUDY.run_names():
        train_run(STUDY, d, name, _training(), progress=False)
    return d


def test_base_step_measures_x_on_the_evaluation_samples(study_dir):
    base = read_base(study_dir)
    rates = pd.read_csv(study_dir / "base" / "base_rates.csv").set_index("behaviour")
    assert base["behaviour"] == "capital" and base["base_rate"] == pytest.approx(rates.loc["capital", "rate"])
    values = prompt_values(study_dir / "base" / "evals" / "0000")
    summary = json.loads((study_dir / "base" / "evals" / "0000" / "summary.json").read_text())
    assert len(values) == STUDY.eval_prompts and (values["n_samples"] == STUDY.eval_samples).all()
    assert (values["x_rate"] * values["n_samples"]).sum() / values["n_samples"].sum() == pytest.approx(summary["x_rate"])
    assert (values["kept_10x"] == 1).all() and (values["lost_10x"] == 0).all()  # the reference keeps its own samples
    assert (values["reward"] <= 0).all()


def test_a_run_resumed_in_parts_reproduces_the_uninterrupted_one(study_dir, tmp_path):
    parts = tmp_path / "parts"
    shutil.copytree(study_dir / "base", parts / "base")
    train_run(replace(STUDY, phases=1), parts, "suppress-ref_pi_seq-s0", _training(), progress=False)
    train_run(STUDY, parts, "suppress-ref_pi_seq-s0", _training(), progress=False)
    for log in ("metrics.jsonl", "probes.jsonl"):
        a = pd.read_json(study_dir / "runs" / "suppress-ref_pi_seq-s0" / log, lines=True)
        b = pd.read_json(parts / "runs" / "suppress-ref_pi_seq-s0" / log, lines=True)
        assert list(b["phase"]) == [1, 2]
        for col in ("reward_mean", "kl_pi_ref_per_token") if log == "metrics.jsonl" else ("x_rate", "distinct_2"):
            assert b[col].tolist() == pytest.approx(a[col].tolist(), abs=1e-5), (log, col)


def test_tables_hold_per_prompt_values_intervals_and_paired_comparisons(study_dir):
    tables = collect_tables(STUDY, study_dir)
    evals = tables["evals"]
    assert sorted(evals["updates"].unique()) == [0, 1, 2] and len(evals) == 3 * len(PENALTIES) * len(STUDY.seeds)
    assert (evals.loc[evals["updates"] == 0, "lost_100x"] == 0).all()
    assert (evals.loc[evals["updates"] == STUDY.phases, "kl_pi_ref_per_token"] > 0).any()
    prompts = tables["per_prompt"]
    end = prompts[prompts["at"] == "end"]
    assert len(end) == STUDY.eval_prompts * (1 + len(PENALTIES) * len(STUDY.seeds))
    # equal KL: every run that reached the common level has per-prompt rows between base and end
    eq = prompts[(prompts["at"] == "equal_kl") & (prompts["penalty"] != "base")]
    assert len(eq) and ((eq["updates"] > 0) & (eq["updates"] <= STUDY.phases)).all()
    levels, comps = tables["levels"], tables["comparisons"]
    row = levels[(levels["at"] == "end") & (levels["penalty"] == "none") & (levels["metric"] == "x_rate")].iloc[0]
    per_seed = end[end["penalty"] == "none"].groupby("seed")["x_rate"].mean()
    assert row["value"] == pytest.approx(per_seed.mean()) and row["seeds"] == 2 and row["low"] <= row["value"] <= row["high"]
    c = comps[(comps["at"] == "end") & (comps["metric"] == "lost_10x") & (comps["a"] == "ref_pi_seq")
              & (comps["b"] == "pi_ref")].iloc[0]
    a = end[end["penalty"] == "ref_pi_seq"].set_index(["seed", "prompt_idx"])["lost_10x"]
    b = end[end["penalty"] == "pi_ref"].set_index(["seed", "prompt_idx"])["lost_10x"]
    assert c["difference"] == pytest.approx((a - b).groupby(level="seed").mean().mean())
    pairs = set(zip(comps.loc[comps["at"] == "end", "a"], comps.loc[comps["at"] == "end", "b"]))
    assert {(p, "pi_ref") for p in PENALTIES if p != "pi_ref"} | {(p, "none") for p in PENALTIES[1:-1]} <= pairs
    assert ("ref_pi_seq", "ref_pi_reward") in pairs and ("pi_ref", "none") not in pairs


def test_claims_carry_n_intervals_and_verdicts_and_answer_the_coverage_question(study_dir):
    tables = collect_tables(STUDY, study_dir)
    config = {"base": read_base(study_dir)}
    claims = check_claims(study_claims(tables["per_prompt"], tables["levels"], tables["comparisons"], config,
                                       finished=len(STUDY.run_names()), planned=len(STUDY.run_names()),
                                       matched_level=0.01))
    by_id = {c.id: c for c in claims}
    base = tables["per_prompt"].query("penalty == 'base' and at == 'end'")
    k = round(float((base["x_rate"] * base["n_samples"]).sum()))
    wilson = proportion_interval(k, int(base["n_samples"].sum()))
    assert by_id["base_x_rate"].low == pytest.approx(wilson.low) and by_id["base_x_rate"].n == {
        "prompts": STUDY.eval_prompts, "samples_per_prompt": STUDY.eval_samples}
    q = by_id["seq_keeps_reference_samples"]
    kept = tables["levels"].query("at == 'end' and metric == 'kept_10x'").set_index("penalty")
    assert q.kind == "comparison" and q.params["seq"] == pytest.approx(kept.loc["ref_pi_seq", "value"])
    assert q.params["rew"] == pytest.approx(kept.loc["ref_pi_reward", "value"]) and q.verdict in q.sentence()
    assert q.n["seeds"] == 2 and q.headline
    for at in ("end", "equal_kl"):
        for p in PENALTIES:
            for metric in ("x_rate", "reward", "lost_10x", "lost_100x"):
                assert f"{at}_{p}_{metric}" in by_id
    compared = [c for c in claims if c.kind == "comparison"]
    assert all(c.verdict and ("decided" in c.verdict or "undecided" in c.verdict) for c in compared)
    assert all(c.n.get("seeds") == 2 for c in compared)
    assert [c.id for c in claims if c.headline][:2] == ["base_x_rate", "seq_keeps_reference_samples"]


def test_a_study_without_finished_runs_reports_the_base_and_says_what_is_missing(study_dir, tmp_path):
    fresh = tmp_path / "fresh"
    shutil.copytree(study_dir / "base", fresh / "base")
    tables = collect_tables(STUDY, fresh)
    assert tables["trajectory"].empty and set(tables["per_prompt"]["penalty"]) == {"base"}
    claims = check_claims(study_claims(tables["per_prompt"], tables["levels"], tables["comparisons"],
                                       {"base": read_base(fresh)}, 0, len(STUDY.run_names()), None))
    assert [c.kind for c in claims] == ["estimate", "not_measured", "not_measured"]
    assert "0 of 10 runs finished" in claims[1].sentence()


def test_runs_record_the_moved_reward_path_and_the_old_one_still_resolves():
    from rlhf_interp.measure.behaviour import CANDIDATES
    from rlhf_interp.reward import get_reward

    fields = config_fields(STUDY, "suppress", "ref_pi_seq", 0, CANDIDATES["word_I"])
    assert fields["reward"] == "rlhf_interp.measure.behaviour:pattern_count"
    assert (fields["kl_direction"], fields["kl_placement"]) == ("ref_pi", "sequence")
    old = get_reward("rlhf_interp.probes.behaviour:pattern_count", pattern=r"\bI\b")  # run dirs before issue 27
    assert old(["I think I can", "no"]).tolist() == [2.0, 0.0]
    assert math.isclose(config_fields(STUDY, "suppress", "none", 0, CANDIDATES["word_I"])["kl_coef"], 0.0)


def test_the_estimator_audit_and_its_claims_run_on_the_studys_tokens(study_dir):
    """What analyses/kl_estimators.py computes, through the package: every evaluation's tokens -> k1/k2/k3 audit ->
    claims with n and intervals (the tiny study's 8-token continuations: the sequence claim uses length 8)."""
    from rlhf_interp.measure.kl_estimator_audit import binned_audit, estimates, sequence_sums
    from rlhf_interp.report.kl_estimator_claims import estimator_claims

    parts = []
    for path in sorted((study_dir / "runs").glob("*/evals/*/tokens.csv.gz")):
        task, penalty, seed = path.parent.parent.parent.name.rsplit("-", 2)
        parts.append(pd.read_csv(path).assign(task=task, penalty=penalty, seed=int(seed.lstrip("s"))))
    tokens = pd.concat(parts, ignore_index=True)
    keep = ["task", "penalty", "seed", "updates", "row", "pos", "logp", "logp_ref", "kl_pi_ref", "kl_ref_pi"]
    long = pd.concat([estimates(tokens.loc[tokens["sampling"] == s, keep], s) for s in ("policy", "reference")],
                     ignore_index=True)
    binned = binned_audit(long)
    assert set(binned["setting"]) == {"pi_ref|policy", "ref_pi|reference", "ref_pi|policy-iw"}
    assert (binned.loc[binned["estimator"] != "k1", "share_negative"] == 0).all()
    spread = sequence_sums(long, (1, 2, 4, 8, 24), by=["penalty"], seq_keys=["task", "seed", "updates", "row"])
    by_run = sequence_sums(long, (64,), by=["task", "penalty", "updates"], seq_keys=["seed", "row"])
    claims = check_claims(estimator_claims(binned, spread, by_run))
    seq = next(c for c in claims if c.id == "k3_vs_k1_sequence_spread")
    assert seq.kind == "comparison" and seq.params["length"] == STUDY.max_new_tokens and seq.n["runs"] == len(PENALTIES)


def test_pilot_claims_pair_each_setting_and_count_its_seeds():
    """Pilots pair the two placements within one setting (coefficient, bank, samples per step), word the seed count
    from the data, and leave a setting with the sequence-level penalty alone as an estimate."""
    from rlhf_interp.report.kl_study_claims import pilot_claims

    def level(penalty, value, seeds, per_step):
        return {"at": "end", "penalty": penalty, "metric": "kept_10x", "value": value, "low": value - 0.03,
                "high": value + 0.03, "seeds": seeds, "prompts": 32, "per_prompt": 8, "method": "t over prompts",
                "note": "", "kl_coef": 5.0, "kl_bank_size": 8, "kl_bank_per_step": per_step}

    levels = pd.DataFrame([level("ref_pi_seq", 0.75, 3, 1), level("ref_pi_reward", 0.88, 3, 1),
                           level("ref_pi_seq", 0.86, 1, 4)])
    comparisons = pd.DataFrame([{"at": "end", "metric": "kept_10x", "a": "ref_pi_seq", "b": "ref_pi_reward",
                                 "difference": -0.13, "low": -0.2, "high": -0.06, "method": "t", "prompts": 32,
                                 "seeds": 3, "note": "", "kl_coef": 5.0, "kl_bank_size": 8, "kl_bank_per_step": 1}])
    claims = {c.id: c for c in pilot_claims(levels, comparisons)}
    paired = claims["pilot_kl_coef_5_seq_keeps"]
    assert "3 seeds per placement" in paired.sentence() and "75.0%" in paired.sentence() and paired.headline
    assert "ref_pi_reward" in paired.verdict and "one seed" not in paired.sentence()
    alone = claims["pilot_kl_coef_5_bank_8_per_step_4_ref_pi_seq_kept"]
    assert "one seed" in alone.sentence() and "86.0%" in alone.sentence()


def test_pilot_claims_keep_the_exact_sequence_estimator_apart_from_k1():
    """Two pilots with the same coefficient and bank, one with the exact sequence-level estimator: each pairs its own
    ref_pi_seq with the ref_pi_reward rows of its own study, and the exact one says which estimator it used."""
    from rlhf_interp.report.kl_study_claims import pilot_claims

    def level(penalty, value, estimator):
        return {"at": "end", "penalty": penalty, "metric": "kept_10x", "value": value, "low": value - 0.02,
                "high": value + 0.02, "seeds": 3, "prompts": 32, "per_prompt": 8, "method": "t over seed means",
                "note": "", "kl_coef": 5.0, "kl_bank_size": 4, "kl_bank_per_step": 1, "seq_estimator": estimator}

    def comparison(difference, estimator):
        return {"at": "end", "metric": "kept_10x", "a": "ref_pi_seq", "b": "ref_pi_reward", "difference": difference,
                "low": difference - 0.04, "high": difference + 0.04, "method": "t", "prompts": 32, "seeds": 3,
                "note": "", "kl_coef": 5.0, "kl_bank_size": 4, "kl_bank_per_step": 1, "seq_estimator": estimator}

    levels = pd.DataFrame([level("ref_pi_seq", 0.75, "k1"), level("ref_pi_reward", 0.86, "k1"),
                           level("ref_pi_seq", 0.97, "exact"), level("ref_pi_reward", 0.86, "exact")])
    comparisons = pd.DataFrame([comparison(-0.11, "k1"), comparison(0.11, "exact")])
    claims = {c.id: c for c in pilot_claims(levels, comparisons)}
    k1, exact = claims["pilot_kl_coef_5_seq_keeps"], claims["pilot_kl_coef_5_seq_keeps_exact"]
    assert "75.0%" in k1.sentence() and "exact" not in k1.sentence() and "ref_pi_reward >" in k1.verdict
    assert "97.0%" in exact.sentence() and "exact sequence-level estimator" in exact.sentence()
    assert "at or above the mark" in exact.sentence() and "ref_pi_seq >" in exact.verdict and exact.headline
