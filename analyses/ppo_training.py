"""What PPO did to the period task, and what the KL penalty bought: training curves of one or more runs.

    python analyses/ppo_training.py --runs runs/periods runs/periods_kl0 [--name ppo_periods]

Reads each run's ``metrics.jsonl``, ``samples.jsonl`` and ``config.yaml`` (no model is loaded), and writes
``reports/<name>/``: reward, exact KL(pi||ref) per token and entropy per phase for every run; a start/end
table; the diversity of the samples (distinct-1/2 over words) as a mode-collapse measure; and samples from
the first and last logged phase of each run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import yaml

from rlhf_interp.measure import distinct_n
from rlhf_interp.report import Report

CURVES = [("reward_mean", "mean reward (periods per sample)"), ("kl_forward_per_token", "exact KL(pi || ref) per token"),
          ("entropy", "policy entropy per token (nats)"), ("kl_coef", "KL coefficient")]


def read_jsonl(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: is {path.parent} a run directory written by `rlhf-interp train`?")
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def run_label(run_dir: Path) -> str:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    coef = "adaptive " if config.get("adaptive_kl") else ""
    return (f"{run_dir.name} (KL {coef}coef {config['kl_coef']:g}, {config['kl_estimator']} in "
            f"{config['kl_placement']})")


def load_runs(run_dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy tables: metrics (one row per run x phase) and sample diversity (one row per run x logged phase)."""
    metrics, diversity = [], []
    for run_dir in run_dirs:
        label = run_label(run_dir)
        m = read_jsonl(run_dir / "metrics.jsonl").assign(run=label)
        metrics.append(m)
        samples = read_jsonl(run_dir / "samples.jsonl")
        for phase, group in samples.groupby("phase"):
            words = [c.split() for c in group["completion"]]
            diversity.append({"run": label, "phase": phase, "distinct_1": distinct_n(words, 1),
                              "distinct_2": distinct_n(words, 2), "reward_mean": group["reward"].mean(),
                              "unique_completions": group["completion"].nunique() / len(group)})
    return pd.concat(metrics, ignore_index=True), pd.DataFrame(diversity)


def curves_figure(metrics: pd.DataFrame):
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.4))
    for ax, (column, title) in zip(axes, CURVES):
        for run, group in metrics.groupby("run", sort=False):
            ax.plot(group["phase"], group[column], label=run, lw=1.4)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("phase")
    axes[1].axhline(0.1, color="grey", ls="--", lw=0.8)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def summary_table(metrics: pd.DataFrame, window: int = 5) -> pd.DataFrame:
    """Start (first phase) and end (mean of the last ``window`` phases, to smooth batch noise) per run."""
    rows = []
    for run, g in metrics.groupby("run", sort=False):
        last = g.tail(window)
        rows.append({"run": run, "phases": int(g["phase"].max()),
                     "reward_start": g["reward_mean"].iloc[0], f"reward_end_mean{window}": last["reward_mean"].mean(),
                     "reward_max": g["reward_mean"].max(),
                     "kl_per_token_end": last["kl_forward_per_token"].mean(),
                     "entropy_start": g["entropy"].iloc[0], "entropy_end": last["entropy"].mean(),
                     "seconds_per_phase_median": g["seconds"].median()})
    return pd.DataFrame(rows)


def sample_table(run_dirs: list[Path], n: int = 6) -> pd.DataFrame:
    rows = []
    for run_dir in run_dirs:
        samples = read_jsonl(run_dir / "samples.jsonl")
        for phase in (samples["phase"].min(), samples["phase"].max()):
            for _, s in samples[samples["phase"] == phase].head(n).iterrows():
                rows.append({"run": run_dir.name, "phase": phase, "prompt": s["prompt"],
                             "completion": s["completion"].replace("\n", " / "), "reward": s["reward"]})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, default=[Path("runs/periods"), Path("runs/periods_kl0")])
    parser.add_argument("--name", default="ppo_periods")
    parser.add_argument("--root", type=Path, default=Path("reports"))
    args = parser.parse_args()

    metrics, diversity = load_runs(args.runs)
    summary = summary_table(metrics)
    report = Report(args.name, "PPO on the period task: reward, KL and collapse", root=args.root,
                    config={"runs": [str(r) for r in args.runs]})
    report.text(
        "Each run is `rlhf-interp train` on the embedded SmolLM2-135M-Instruct (see each run's `config.yaml`). "
        "Reward = number of '.' in the 24-token continuation. KL is the exact KL(pi || ref) summed over the "
        "vocabulary, averaged over generated tokens. The dashed line is the 0.1 nats/token budget.")
    report.figure("curves", curves_figure(metrics), title="Training curves")
    report.table("summary", summary, title="Start and end of each run")
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for run, g in diversity.groupby("run", sort=False):
        ax.plot(g["phase"], g["distinct_2"], marker="o", label=run)
    ax.set_xlabel("phase"), ax.set_ylabel("distinct-2 of sampled words"), ax.legend(fontsize=7)
    report.figure("diversity", fig, title="Sample diversity (mode collapse shows as a fall)")
    report.table("diversity", diversity, title="Diversity of logged samples")
    report.table("samples", sample_table(args.runs), title="Samples, first and last logged phase", max_rows=60)
    report.table("metrics", metrics, title="All metrics (one row per run and phase)", max_rows=0)
    out = report.save()
    print(summary.to_string(index=False))
    print(f"report: {out}/index.html")


if __name__ == "__main__":
    main()
