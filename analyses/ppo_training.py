"""What PPO did to the period task, and what the KL penalty bought: training curves of one or more runs.

    python analyses/ppo_training.py --runs runs/periods runs/periods_kl0 [--name ppo_periods]   # from the runs
    python analyses/ppo_training.py --from-csv [--name ppo_periods]                             # page from its CSVs
    python analyses/ppo_training.py --runs runs/periods --keep "periods=periods, before the KL fixes" --keep periods_kl0
        # re-read runs/periods; keep (and relabel) rows of runs whose directories are gone from the committed CSVs

Reads each run's ``metrics.jsonl``, ``samples.jsonl`` and ``config.yaml`` (no model is loaded) and saves two
tidy tables in ``reports/<name>/``: ``metrics.csv`` (one row per run and phase) and ``samples.csv`` (every
logged sample: run, phase, prompt, completion, reward). The page is rendered from those two files alone:
reward, exact KL(pi||ref) per token, entropy and KL coefficient per phase; start and end of each run (the end
is the mean of the last 10 phases, named in the table); and the diversity of the logged samples, distinct-n
over **token ids** (the shipped SmolLM2 tokenizer), as the mode-collapse measure.
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

from rlhf_interp.core.kl import upgrade_kl_name
from rlhf_interp.measure import distinct_n
from rlhf_interp.measure.behaviour import collapse_onset
from rlhf_interp.report import Report, read_config, read_table, write_tables
from rlhf_interp.report.panels import Line, Panel, to_matplotlib, to_plotly
from rlhf_interp.report.style import cycle

NAME = "ppo_periods"
BATCH = 16  # samples per phase (configs/periods.yaml batch_size; every run here)
END_WINDOW = 10  # phases averaged for the "end" of a run (batch noise: 16 samples per phase)
KL_BUDGET = 0.1  # nats per token: the period task's goal (reward >= 2 at KL <= 0.1/token, configs/periods.yaml)


# ----------------------------------------------------------------------------------------------
# Reading runs (the full path)


def read_jsonl(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: is {path.parent} a run directory written by `rlhf-interp train`?")
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def run_label(run_dir: Path) -> str:
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir / 'config.yaml'} is missing: is {run_dir} a run directory written by "
                                f"`rlhf-interp train`?")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    coef = "adaptive " if config.get("adaptive_kl") else ""
    return (f"{run_dir.name} (KL {coef}coef {config['kl_coef']:g}, {config['kl_estimator']} in "
            f"{config['kl_placement']})")


def load_runs(run_dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy tables: metrics (one row per run x phase) and samples (one row per logged sample)."""
    metrics, samples = [], []
    for run_dir in run_dirs:
        label = run_label(run_dir)
        frame = read_jsonl(run_dir / "metrics.jsonl")  # runs logged before issue 29: kl_forward_* -> kl_pi_ref_*
        metrics.append(frame.rename(columns=upgrade_kl_name).assign(run=label))
        s = read_jsonl(run_dir / "samples.jsonl")
        samples.append(s[["phase", "prompt", "completion", "reward"]].assign(run=label))
    samples = pd.concat(samples, ignore_index=True)
    return pd.concat(metrics, ignore_index=True), samples[["run", "phase", "prompt", "completion", "reward"]]


# ----------------------------------------------------------------------------------------------
# Tables and figures (from the CSVs)


def diversity_table(samples: pd.DataFrame) -> pd.DataFrame:
    """Per run and logged phase: distinct-1/2 over the completions' token ids (pooled over the phase's samples),
    the share of distinct completions, and the mean reward of those samples."""
    from rlhf_interp.bridge import load_tokenizer

    tokenizer = load_tokenizer()
    rows = []
    for (run, phase), group in samples.groupby(["run", "phase"], sort=False):
        texts = group["completion"].fillna("").tolist()
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        rows.append({"run": run, "phase": int(phase), "n_samples": len(texts), "distinct_1": distinct_n(ids, 1),
                     "distinct_2": distinct_n(ids, 2), "unique_completions": len(set(texts)) / len(texts),
                     "reward_mean": group["reward"].mean()})
    return pd.DataFrame(rows)


def summary_table(metrics: pd.DataFrame, window: int = END_WINDOW) -> pd.DataFrame:
    """Per run: phase 1, the mean of the last ``window`` phases (named in ``end_phases``), and seconds per phase."""
    rows = []
    for run, g in metrics.groupby("run", sort=False):
        g = g.sort_values("phase")
        last = g.tail(window)
        rows.append({"run": run, "phases": int(g["phase"].max()),
                     "end_phases": f"{int(last['phase'].min())}-{int(last['phase'].max())}",
                     "reward_start": g["reward_mean"].iloc[0], "reward_end": last["reward_mean"].mean(),
                     "reward_max": g["reward_mean"].max(),
                     "kl_per_token_end": last["kl_pi_ref_per_token"].mean(),
                     "entropy_start": g["entropy"].iloc[0], "entropy_end": last["entropy"].mean(),
                     "seconds_per_phase_median": g["seconds"].median(), "seconds_per_phase_min": g["seconds"].min(),
                     "seconds_per_phase_max": g["seconds"].max()})
    return pd.DataFrame(rows)


def curve_panels(metrics: pd.DataFrame, diversity: pd.DataFrame) -> list[Panel]:
    """The training curves as a 2 x 3 grid (one spec for the PNG and the interactive chart): reward of the
    penalised runs, reward of the KL-0 run on its own axis (its ~60 periods would flatten the main result to a
    line near zero), KL per token (log axis, dashed budget), entropy, the KL coefficient, and distinct-2 of the
    logged samples (points only: a run logged at two phases is two points, not a line)."""
    runs = list(dict.fromkeys(metrics["run"]))
    style = {run: cycle(i) for i, run in enumerate(runs)}
    free = [r for r in runs if "coef 0," in r]

    def lines(column, which, rolling=False, positive=False):
        out = []
        for run in which:
            g = metrics[metrics["run"] == run].sort_values("phase")
            g = g[g[column] > 0] if positive else g
            st = style[run]
            out.append(Line(_short(run), g["phase"].tolist(), g[column].tolist(), st["color"], st["marker"],
                            st["symbol"], width=0.8 if rolling else 1.5, size=2.5, alpha=0.45 if rolling else 1.0,
                            legend=not rolling))
            if rolling:
                out.append(Line(f"{_short(run)}: rolling mean (5 phases)", g["phase"].tolist(),
                                g[column].rolling(5, min_periods=1).mean().tolist(), st["color"], mode="lines",
                                width=2.6))
        return out

    kl = _kl_column(metrics)
    reward_label = "mean reward (periods per 24-token sample)"
    panels = [Panel("Reward, penalised runs", "PPO phase", reward_label,
                    lines(reward := "reward_mean", [r for r in runs if r not in free], rolling=True), ylim=(0, None)),
              Panel("Reward, KL coefficient 0 (its own axis)", "PPO phase", reward_label,
                    lines(reward, free, rolling=True), ylim=(0, None)),
              Panel("Exact KL(π‖ref) per token (log axis)", "PPO phase", "nats per token", lines(kl, runs, positive=True),
                    log_y=True, hlines=[(KL_BUDGET, f"budget {KL_BUDGET} nats/token")]),
              Panel("Policy entropy per token", "PPO phase", "nats per token", lines("entropy", runs), ylim=(0, None)),
              Panel("KL coefficient β", "PPO phase", "β", lines("kl_coef", runs), ylim=(0, None))]
    div = []
    for run, g in diversity.groupby("run", sort=False):
        st = style.get(run, cycle(len(style)))
        div.append(Line(_short(run), g["phase"].tolist(), g["distinct_2"].tolist(), st["color"], st["marker"],
                        st["symbol"], mode="markers" if len(g) <= 2 else "lines+markers", size=6))
    panels.append(Panel("distinct-2 (points: logged phases)", "PPO phase",
                        "distinct-2 over token ids (0-1)", div, ylim=(0, 1.05)))
    return panels


# ----------------------------------------------------------------------------------------------
# The page


def _run_sentence(row: pd.Series) -> str:
    return (f"reward {row.reward_start:.2f} → {row.reward_end:.2f} periods per sample (mean of phases "
            f"{row.end_phases}) at exact KL(π‖ref) {row.kl_per_token_end:.3f} nats/token, entropy "
            f"{row.entropy_start:.2f} → {row.entropy_end:.2f}")


def _kl_column(metrics: pd.DataFrame) -> str:
    """The exact KL(π‖ref) per token column (named by argument order; older CSVs: kl_forward_per_token)."""
    return "kl_pi_ref_per_token" if "kl_pi_ref_per_token" in metrics else "kl_forward_per_token"


def _short(run: str) -> str:
    return run.split(" (")[0]


def _distinct2_draws(texts: list[str], n_boot: int = 2000, seed: int = 0):
    """distinct-2 over token ids of ``texts`` and its bootstrap draws over the completions."""
    import numpy as np

    from rlhf_interp.bridge import load_tokenizer

    tokenizer = load_tokenizer()
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    rng = np.random.default_rng(seed)
    draws = np.array([distinct_n([ids[i] for i in rng.integers(0, len(ids), len(ids))], 2) for _ in range(n_boot)])
    return distinct_n(ids, 2), draws


def ppo_claims(metrics: pd.DataFrame, samples: pd.DataFrame, window: int = END_WINDOW) -> list:
    """The page's claims: the current run's reward and KL at the end (t intervals over the last ``window`` phases:
    one seed, so seed-to-seed variation is not in them), batch noise, the superseded run compared with it, and the
    unpenalised run's collapse (distinct-2 with bootstrap intervals over the logged completions)."""
    import numpy as np

    from rlhf_interp.core import stats
    from rlhf_interp.report.claims import Claim

    kl = _kl_column(metrics)
    runs = list(dict.fromkeys(metrics["run"]))
    penalised = [r for r in runs if "coef 0," not in r]
    current = [r for r in penalised if "before" not in r] or penalised
    main = current[-1]
    out = []

    def tail(run):
        g = metrics[metrics["run"] == run].sort_values("phase")
        return g, g.tail(window)

    def end_n(g):
        return {"phases": len(g), "samples_per_phase": BATCH, "seeds": 1}

    g, last = tail(main)
    span = f"{int(last['phase'].min())}-{int(last['phase'].max())}"
    note = "phase means treated as independent; one training seed, so seed-to-seed variation is not included"
    first = g.iloc[0]
    out.append(Claim.estimate(
        "reward_start", "`{run}` (the re-run with the corrected KL code) starts at {value} {ci} periods per sample "
        "(phase {phase}).", stats.summary_interval(first["reward_mean"], first["reward_std"] / np.sqrt(BATCH), BATCH),
        n={"phases": 1, "samples_per_phase": BATCH, "seeds": 1},
        params={"run": _short(main), "phase": int(first["phase"])}))
    out.append(Claim.estimate(
        "reward_end", "It ends at {value} {ci} (mean of phases {span}; one seed, the interval is over phases)",
        stats.mean_interval(last["reward_mean"]), n=end_n(last), params={"span": span}, note=note))
    out.append(Claim.estimate(
        "kl_end", "at exact KL(π‖ref) {value} {ci} nats/token.", stats.mean_interval(last[kl]), fmt=".3f",
        n=end_n(last), note=note))
    out.append(Claim.estimate(
        "batch_noise", "Batch noise: a phase's mean reward has a standard error of {value} {ci} periods over its "
        "samples", stats.mean_interval(last["reward_std"] / np.sqrt(BATCH)), n=end_n(last), headline=False))
    out.append(Claim.estimate(
        "phase_to_phase_sd", "and varies from phase to phase with a standard deviation of {value} {ci} (phases "
        "{span}).", stats.sd_interval(last["reward_mean"]), n=end_n(last), params={"span": span}, headline=False))
    for other in penalised:
        if other == main:
            continue
        _, olast = tail(other)
        diff = stats.summary_difference(olast["reward_mean"].mean(), olast["reward_mean"].std(ddof=1) / np.sqrt(len(olast)),
                                        len(olast), last["reward_mean"].mean(),
                                        last["reward_mean"].std(ddof=1) / np.sqrt(len(last)), len(last),
                                        units=end_n(last))
        out.append(Claim.compare(
            "superseded_vs_current", "The run before the fixes (`{other}`) minus this one, mean reward of phases "
            "{span}: {value} {ci}; {verdict}.", diff, "before the fixes", "re-run", params={"other": _short(other),
                                                                                            "span": span}))
    for free in [r for r in runs if "coef 0," in r]:
        fg, flast = tail(free)
        fspan = f"{int(flast['phase'].min())}-{int(flast['phase'].max())}"
        out.append(Claim.estimate(
            "kl0_reward", "With KL coefficient {zero} (`{run}`): {value} {ci} periods per sample (phases {span})",
            stats.mean_interval(flast["reward_mean"]), fmt=".1f", n=end_n(flast), note=note,
            params={"run": _short(free), "span": fspan, "zero": 0}))
        out.append(Claim.estimate(
            "kl0_kl", "at KL {value} {ci} nats/token.", stats.mean_interval(flast[kl]), n=end_n(flast), note=note))
        s = samples[samples["run"] == free]
        p0, p1 = int(s["phase"].min()), int(s["phase"].max())
        t0 = s[s["phase"] == p0]["completion"].fillna("").tolist()
        t1 = s[s["phase"] == p1]["completion"].fillna("").tolist()
        d0, draws0 = _distinct2_draws(t0, seed=0)
        d1, draws1 = _distinct2_draws(t1, seed=1)
        lo, hi = np.quantile(draws1 - draws0, [0.025, 0.975])
        diff = stats.Interval(d1 - d0, float(lo), float(hi), method="percentile bootstrap over completions",
                              n={"samples_per_phase": min(len(t0), len(t1)), "seeds": 1})
        out.append(Claim.compare(
            "kl0_collapse", "Its samples collapse: `distinct-2` over token ids goes from {d0} at phase {p0} to {d1} at "
            "phase {p1}, a change of {value} {ci} (bootstrap over the {k} logged completions of each phase); {verdict}.",
            diff, f"phase {p1}", f"phase {p0}",
            params={"d0": f"{d0:.2f}", "d1": f"{d1:.2f}", "p0": p0, "p1": p1, "k": min(len(t0), len(t1))}))
    return out


def render(report_dir: Path) -> Report:
    """The page, from ``metrics.csv`` and ``samples.csv`` (and ``config.json``) in ``report_dir``."""
    report_dir = Path(report_dir)
    config = read_config(report_dir)
    metrics = read_table(report_dir, "metrics")
    samples = read_table(report_dir, "samples", keep_default_na=False)
    samples["reward"] = samples["reward"].astype(float)
    summary = summary_table(metrics)
    diversity = diversity_table(samples)

    claims = ppo_claims(metrics, samples)
    report = Report.at(report_dir, "PPO on the period task: reward, KL and collapse", source=__file__,
                       claims=claims)
    report.text(
        "Each run is `rlhf-interp train` on the embedded SmolLM2-135M-Instruct (runs: "
        + ", ".join(f"`{r}`" for r in config.get("runs", [])) + "; labels give each run's KL coefficient, "
        "estimator and placement). Reward = number of `.` in the 24-token continuation, 16 samples per phase. "
        "KL is the exact KL(π ‖ ref) summed over the vocabulary, averaged over generated tokens.")
    report.section("Training curves")
    panels = curve_panels(metrics, diversity)
    logged = diversity.groupby("run")["phase"].apply(lambda p: ", ".join(map(str, sorted(p))))
    report.figure(
        "curves", to_matplotlib(panels), chart=to_plotly(panels), chart_height=760,
        caption=("Six panels. Top row: mean reward per phase (thin; thick: rolling mean of 5 phases) of the "
                 "penalised runs, and of the KL-0 run on its own axis (it reaches ~60 periods and would flatten the "
                 f"others); exact KL(π ‖ ref) per token on a log axis (dashed: the {KL_BUDGET} nats/token budget; "
                 "phases with KL 0 are not drawn on it). Bottom row: policy entropy, the KL coefficient, and distinct-2 "
                 "of the logged samples, drawn as points only at the phases that were logged ("
                 + "; ".join(f"{_short(r)}: {p}" for r, p in logged.items()) + ")."))
    report.table("summary", summary, title="Start and end of each run",
                 caption=(f"`reward_end`, `kl_per_token_end`, `entropy_end`: means over the last {END_WINDOW} phases "
                          "(`end_phases`); `_start`: phase 1. Seconds per phase on a shared 2-core CPU (median, "
                          "fastest, slowest)."))
    report.section("Sample diversity",
                   "Mode collapse shows as a fall of distinct-2: the share of distinct token-id bigrams among all "
                   "bigrams of a phase's logged completions (pooled; token ids from the shipped SmolLM2 tokenizer, "
                   "so a run of `...` counts as the repeated token it is).")
    sizes = sorted(set(diversity["n_samples"]))
    logged = diversity.groupby("run")["phase"].nunique()
    if logged.max() <= 2:
        report.text(f"`samples.csv` holds {'/'.join(map(str, sizes))} completions per run at its first and last logged "
                    "phase only (the runs' full `samples.jsonl` logs were not kept), so this is a before/after "
                    "comparison; re-running `--runs` on the run directories gives every logged phase.")
    report.figure("diversity", to_matplotlib(panels[-1:], cols=1, panel_size=(6.5, 4)),
                  chart=to_plotly(panels[-1:], cols=1, height_per_row=380),
                  caption=(f"distinct-2 over token ids of the logged completions per run and phase "
                           f"({'/'.join(map(str, sizes))} samples per point; `diversity.csv` has distinct-1 and the "
                           f"share of distinct completions too). A run logged at two phases is two points: nothing "
                           f"is known between them."))
    report.table("diversity", diversity, title="Diversity of logged samples")
    report.section("Samples")
    firsts_lasts = samples[samples.groupby("run")["phase"].transform(lambda p: p.isin([p.min(), p.max()]))]
    preview = (firsts_lasts.groupby(["run", "phase"], sort=False).head(6)
               .assign(run=lambda d: d["run"].str.split(" (", regex=False).str[0],
                       completion=lambda d: d["completion"].str.replace("\n", " ⏎ ", regex=False)))
    report.table("samples", samples, title="Samples, first and last logged phase", preview=preview,
                 caption="Up to 6 completions per run at its first and last logged phase (⏎ = newline).")
    report.table("metrics", metrics, title="Every logged metric", show=0,
                 caption="One row per run and phase: everything `rlhf-interp train` logs (reward, KL both ways, "
                         "losses, clip fraction, learning rate, seconds ...).")
    return report


def kept_rows(report_dir: Path, spec: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of one run from the report's current CSVs: ``RUN`` (its directory name) or ``RUN=NEW NAME``."""
    name, _, new_name = spec.partition("=")
    tables = []
    for table in ("metrics", "samples"):
        frame = read_table(report_dir, table)
        rows = frame[(frame["run"] == name) | frame["run"].str.startswith(name + " (")].copy()
        if rows.empty:
            raise ValueError(f"--keep {spec!r}: no run named {name!r} in {report_dir / table}.csv "
                             f"(runs there: {sorted(frame['run'].unique())}).")
        if new_name:
            rows["run"] = rows["run"].str.replace(name, new_name, n=1, regex=False)
        tables.append(rows)
    return tables[0], tables[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, default=[Path("runs/periods"), Path("runs/periods_kl0")])
    parser.add_argument("--name", default=NAME)
    parser.add_argument("--root", type=Path, default=Path("reports"))
    parser.add_argument("--from-csv", action="store_true", help="re-render the page from the CSVs in reports/<name>/")
    parser.add_argument("--keep", action="append", default=[], metavar="RUN[=NEW NAME]",
                        help="keep run RUN's rows from the report's existing CSVs (its run directory is gone), "
                             "optionally renamed; repeatable")
    args = parser.parse_args()
    out = args.root / args.name
    if not args.from_csv:
        try:
            kept = [kept_rows(out, spec) for spec in args.keep]  # read before the tables are rewritten
            metrics, samples = load_runs(args.runs)
        except (FileNotFoundError, ValueError) as err:
            parser.error(str(err))
        metrics = pd.concat([m for m, _ in kept] + [metrics], ignore_index=True)
        samples = pd.concat([s for _, s in kept] + [samples], ignore_index=True)
        write_tables(out, {"metrics": metrics, "samples": samples},
                     config={"runs": [str(r) for r in args.runs], "kept_from_previous_csvs": args.keep})
    report = render(out)
    report.save()
    print(report.headline)
    print(f"report: {out}/index.html")


if __name__ == "__main__":
    main()
