"""How good are k1, k2, k3 along a real PPO run? Schulman's table, measured on the policy's own tokens.

    python analyses/kl_estimators.py --study runs/kl_direction     # tables from the study -> reports/kl_estimators/
    python analyses/kl_estimators.py --rebuild                      # the page and its claims, from its CSVs alone

Input: the per-token scores that ``analyses/kl_direction.py`` writes at every evaluation of every run
(``runs/<run>/evals/<updates>/tokens.csv.gz``): for each token the policy generated (and each token of the
reference's own samples), the exact per-token KL in both directions over the vocabulary and both models'
log-probs of the token. Nothing is trained or loaded here. `rlhf_interp.measure.kl_estimator_audit` turns them into
the estimators' values:

- ``pi_ref|policy``: KL(pi || ref) from tokens sampled by the policy, k1 / k2 / k3 (what PPO's per-token
  penalty uses, KL(pi || ref) as in Ziegler et al.);
- ``ref_pi|reference``: KL(ref || pi) from the reference's samples, k1 / k2 / k3;
- ``ref_pi|policy-iw``: KL(ref || pi) from the policy's tokens by importance weighting, k1 / k3.

A KL is named by its argument order (pi_ref = KL(pi || ref), ref_pi = KL(ref || pi)), not "forward" / "reverse",
which the field uses both ways round. The committed CSVs come from the first KL-direction study (2026-11; its run
directory is gone), so the page and its claims (`rlhf_interp.report.kl_estimator_claims`) are rebuilt from them.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlhf_interp.measure.kl_estimator_audit import (
    SETTINGS,
    binned_audit,
    estimates,
    overall_audit,
    sequence_sums,
)
from rlhf_interp.report import Report, read_config, read_table, write_tables
from rlhf_interp.report.kl_estimator_claims import estimator_claims
from rlhf_interp.report.plots import series_style

NAME = "kl_estimators"
LENGTHS = (1, 2, 4, 8, 16, 24, 32, 64)
ESTIMATOR_STYLE = {name: series_style(i) for i, name in enumerate(("k1", "k2", "k3"))}
SETTING_LABEL = {"pi_ref|policy": "KL(π‖ref), tokens from π",
                 "ref_pi|reference": "KL(ref‖π), tokens from ref",
                 "ref_pi|policy-iw": "KL(ref‖π), tokens from π, importance-weighted"}


def load_tokens(study_dir: Path) -> pd.DataFrame:
    """Every evaluation's per-token scores of every finished or unfinished run, with run keys."""
    parts = []
    for path in sorted((study_dir / "runs").glob("*/evals/*/tokens.csv.gz")):
        run = path.parent.parent.parent.name
        task, penalty, seed = run.rsplit("-", 2)
        parts.append(pd.read_csv(path).assign(task=task, penalty=penalty, seed=int(seed.lstrip("s"))))
    if not parts:
        raise FileNotFoundError(f"No runs/*/evals/*/tokens.csv.gz under {study_dir}: run "
                                f"`python analyses/kl_direction.py train --study {study_dir}` first.")
    return pd.concat(parts, ignore_index=True)


def long_estimates(tokens: pd.DataFrame) -> pd.DataFrame:
    keep = ["task", "penalty", "seed", "updates", "row", "pos", "logp", "logp_ref", "kl_pi_ref", "kl_ref_pi"]
    return pd.concat([estimates(tokens.loc[tokens["sampling"] == s, keep], s) for s in ("policy", "reference")],
                     ignore_index=True)


def compute(study_dir: Path, report_dir: Path) -> None:
    tokens = load_tokens(study_dir)
    long = long_estimates(tokens)
    runs = ["task", "penalty", "updates"]
    tables = {
        "binned": binned_audit(long),  # all runs and checkpoints pooled
        "binned_by_checkpoint": binned_audit(long, by=["updates"]),
        "along_runs": overall_audit(long, by=runs),
        "sequence_spread": sequence_sums(long, LENGTHS, by=["penalty"], seq_keys=["task", "seed", "updates", "row"]),
        "sequence_spread_by_run": sequence_sums(long, (max(LENGTHS),), by=runs, seq_keys=["seed", "row"]),
    }
    config = {"study_dir": str(study_dir), "n_tokens": {s: int((tokens["sampling"] == s).sum())
                                                        for s in ("policy", "reference")},
              "checkpoints": sorted(int(u) for u in tokens["updates"].unique()),
              "max_generated_tokens": int(tokens["pos"].max()) + 1}
    write_tables(report_dir, tables, config=config)


# ----------------------------------------------------------------------------------------------
# The page, from the CSVs


def _bin_center(lo: float, label: str) -> float:
    hi = float(label.split(",")[1].strip(" )"))
    if math.isinf(hi):
        return lo * 1.7
    return math.sqrt(max(lo, hi / 10) * hi)


def figure_schulman(binned: pd.DataFrame, min_n: int = 20):
    """Relative bias and relative std (/ true KL) against the true per-token KL, per setting and estimator."""
    settings = [s for s in SETTINGS if s in set(binned["setting"])]
    fig, axes = plt.subplots(3, len(settings), figsize=(4.6 * len(settings), 8.6), squeeze=False, sharex=True)
    for c, setting in enumerate(settings):
        g = binned[(binned["setting"] == setting) & (binned["n"] >= min_n)]
        for name, e in g.groupby("estimator"):
            x = [_bin_center(lo, lab) for lo, lab in zip(e["bin_lo"], e["kl_bin"])]
            style = ESTIMATOR_STYLE[name]
            axes[0][c].errorbar(x, e["rel_bias"], yerr=2 * e["bias_stderr"] / e["exact_mean"], label=name,
                                color=style["color"], marker=style["marker"], capsize=2)
            axes[1][c].plot(x, e["rel_std"], label=name, color=style["color"], marker=style["marker"])
            axes[2][c].plot(x, e["corr"], label=name, color=style["color"], marker=style["marker"])
        axes[0][c].axhline(0, color="grey", lw=0.8)
        axes[0][c].set_yscale("symlog", linthresh=0.1)
        axes[1][c].set_yscale("log")
        axes[2][c].set_ylim(-1.05, 1.05)
        axes[0][c].set_title(SETTING_LABEL[setting], fontsize=9)
        axes[2][c].set_xscale("log")
        axes[2][c].set_xlabel("true per-token KL (nats, bin centre)")
        axes[0][c].legend(fontsize=7)
    axes[0][0].set_ylabel("bias / true KL (±2 s.e.)")
    axes[1][0].set_ylabel("std of (estimate − true) / true KL")
    axes[2][0].set_ylabel("correlation with true KL (within bin)")
    fig.tight_layout()
    return fig


def figure_along_runs(along: pd.DataFrame, penalty: str = "none"):
    """Along the runs with ``penalty`` (where the KL grows most): the true KL per token and each estimator's noise
    (std of estimate - exact) at every checkpoint, tokens sampled from the policy, per task."""
    g = along[(along["penalty"] == penalty) & (along["setting"] == "pi_ref|policy")]
    tasks = list(dict.fromkeys(g["task"]))
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(5.0 * max(len(tasks), 1), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        t = g[g["task"] == task]
        for name, e in t.groupby("estimator"):
            style = ESTIMATOR_STYLE[name]
            ax.plot(e["updates"], e["std"], label=f"{name}: std of error", color=style["color"], marker=style["marker"])
        exact = t.groupby("updates")["exact_mean"].first()
        ax.plot(exact.index, exact, color="black", lw=2, label="true KL(π‖ref) per token (mean)")
        ax.set_yscale("log")
        ax.set_xlabel("PPO updates (checkpoint)")
        ax.set_ylabel("nats per token")
        ax.set_title(f"{task}, penalty: {penalty}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_negative(along: pd.DataFrame, seq: pd.DataFrame):
    """Share of negative k1 of KL(π‖ref) (tokens from the policy) per token and per sequence, along each run."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    k1 = along[(along["setting"] == "pi_ref|policy") & (along["estimator"] == "k1")]
    s1 = seq[(seq["setting"] == "pi_ref|policy") & (seq["estimator"] == "k1")]
    for i, ((task, penalty), g) in enumerate(k1.groupby(["task", "penalty"])):
        style = series_style(i)
        axes[0].plot(g["updates"], 100 * g["share_negative"], label=f"{task}, {penalty}", **style)
        h = s1[(s1["task"] == task) & (s1["penalty"] == penalty)]
        axes[1].plot(h["updates"], 100 * h["share_negative_sum"], label=f"{task}, {penalty}", **style)
    axes[0].set_ylabel("tokens with k1 < 0 (%)")
    axes[1].set_ylabel("sequences with sum of k1 < 0 (%)")
    for ax in axes:
        ax.set_xlabel("PPO updates (checkpoint)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_spread(spread: pd.DataFrame):
    """Std over sequences of (sum of estimates - sum of exact KLs) against the number of tokens summed."""
    settings = [s for s in SETTINGS if s in set(spread["setting"])]
    fig, axes = plt.subplots(1, len(settings), figsize=(4.6 * len(settings), 3.6), squeeze=False)
    pooled = spread.groupby(["setting", "estimator", "length"], as_index=False)[["sum_error_std", "n_sequences"]].agg(
        {"sum_error_std": "mean", "n_sequences": "sum"})
    for ax, setting in zip(axes[0], settings):
        g = pooled[pooled["setting"] == setting]
        for name, e in g.groupby("estimator"):
            style = ESTIMATOR_STYLE[name]
            ax.plot(e["length"], e["sum_error_std"], label=name, color=style["color"], marker=style["marker"])
        if not g.empty:
            ref = g[g["estimator"] == "k1"].sort_values("length")
            if len(ref):
                l0, s0 = ref["length"].iloc[0], ref["sum_error_std"].iloc[0]
                ls = np.array(sorted(g["length"].unique()))
                ax.plot(ls, s0 * np.sqrt(ls / l0), color="grey", ls=":", lw=1, label="∝ √length")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens summed (first L generated tokens)")
        ax.set_title(SETTING_LABEL[setting], fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("std of sequence-sum error (nats)")
    fig.tight_layout()
    return fig


def render(report_dir: Path) -> Report:
    config = read_config(report_dir)
    binned, by_ckpt = read_table(report_dir, "binned"), read_table(report_dir, "binned_by_checkpoint")
    along, spread = read_table(report_dir, "along_runs"), read_table(report_dir, "sequence_spread")
    by_run = read_table(report_dir, "sequence_spread_by_run")
    report = Report.at(report_dir, "KL estimators on a real policy: k1, k2, k3 against the exact KL", source=__file__,
                       config=config, claims=estimator_claims(binned, spread, by_run))
    penalties = sorted(set(along["penalty"]))
    report.text(f"""
        Every token below was generated in the PPO runs of the first KL-direction study (penalties
        {', '.join(f'`{p}`' for p in penalties)}, the exact per-token KL in the loss; checkpoints
        {', '.join(str(c) for c in config['checkpoints'])}; {config['n_tokens']['policy']} policy tokens and
        {config['n_tokens']['reference']} reference tokens; its run directory is gone, so this page is rebuilt from
        its CSVs; the re-run study is [kl_direction](../kl_direction/index.html)). At each token the exact per-token KL over the vocabulary
        is known, so each estimator's error is measured token by token: **bias** = mean(estimate − exact), **std** =
        std(estimate − exact) (the sampling noise alone; the spread of the true KL across states is removed),
        **corr** = correlation of estimate and exact within the bin. k1 = −log r, k2 = (log r)²/2,
        k3 = (r − 1) − log r with r = q(x)/p(x), x ~ p (Schulman 2020). Settings name the KL by its argument order:
        `pi_ref` = KL(π‖ref), `ref_pi` = KL(ref‖π).""")
    report.section("Bias and noise against the true KL")
    report.figure("schulman", figure_schulman(binned),
                  caption="All runs and checkpoints pooled; bins with at least 20 tokens. Relative to the true KL of "
                          "the bin (Schulman's 'bias/true' and 'stdev/true').")
    report.table("binned", binned, title="Per estimator and true-KL bin (all checkpoints)", show=0,
                 preview=binned[binned["setting"] == "pi_ref|policy"][
                     ["estimator", "kl_bin", "n", "exact_mean", "bias", "bias_stderr", "std", "rel_std", "corr",
                      "share_negative"]])
    ref_pi = binned[binned["direction"] == "ref_pi"]
    if len(ref_pi):
        report.table("binned_ref_pi", ref_pi,
                     title="KL(ref‖π) from the reference's tokens, and from the policy's by "
                           "importance weights",
                     preview=ref_pi[["setting", "estimator", "kl_bin", "n", "exact_mean", "bias", "bias_stderr", "std",
                                      "corr", "share_negative"]])
    report.table("binned_by_checkpoint", by_ckpt, title="The same, per checkpoint", show=0)
    report.section("Along a run")
    report.figure("along_runs", figure_along_runs(along),
                  caption="Runs without a KL penalty (they move furthest); every token of each checkpoint's evaluation "
                          "samples, both seeds pooled. The estimators' per-token noise next to the true KL it "
                          "estimates.")
    report.section("Negative k1: the 'negative KL' users see")
    report.figure("negative_k1", figure_negative(along, by_run),
                  caption=f"k1 of KL(π‖ref) on the policy's own tokens; per sequence: sum over "
                          f"{config['max_generated_tokens']} generated tokens.")
    report.table("along_runs", along, title="Every setting along every run (all tokens of a checkpoint)", show=0)
    report.section("Sequence sums: the spread grows with length")
    report.figure("sequence_spread", figure_spread(spread),
                  caption="Std over sequences of (sum of the estimator over the first L generated tokens − the sum of "
                          "the exact KLs), averaged over penalties; the dotted line grows as √L from k1's first point.")
    report.table("sequence_spread", spread, title="Per penalty, setting, estimator and length", show=0)
    report.table("sequence_spread_by_run", by_run, title="Whole sequences, per run and checkpoint", show=0)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=Path("runs/kl_direction"))
    parser.add_argument("--report-dir", type=Path, default=Path("reports") / NAME)
    parser.add_argument("--rebuild", "--from-csv", dest="rebuild", action="store_true",
                        help="the page and its claims from the CSVs only (--from-csv: the old name)")
    args = parser.parse_args(argv)
    try:
        if not args.rebuild:
            compute(args.study, args.report_dir)
        out = render(args.report_dir).save()
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {out}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
