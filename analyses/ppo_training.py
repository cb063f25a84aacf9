"""What PPO did to the period task, and what the KL penalty bought: training curves of seed groups of runs.

    python analyses/ppo_training.py --runs runs/frontier_ppo_s0 runs/frontier_ppo_s1 runs/frontier_ppo_s2 \\
        --keep "periods, KL target 0.08" --keep periods_kl0               # from the runs (+ kept rows)
    python analyses/ppo_training.py --group "ppo=runs/a_s0,runs/a_s1" ... # an explicit group (checked the same way)
    python analyses/ppo_training.py --from-csv [--name ppo_periods]     # the page from its CSVs

Runs are grouped automatically: runs whose ``config.yaml`` differ only in the seed (and logging-only settings)
form one group, labelled by their shared directory name (`rlhf_interp.measure.seed_groups`); ``--group`` names
one by hand and is refused unless its runs differ only in the seed. ``--keep RUN[=NEW NAME]`` keeps the rows of
a run whose directory is gone from the report's current CSVs: a group of one seed.

Reads each run's ``metrics.jsonl``, ``samples.jsonl`` and ``config.yaml`` (no model is loaded) and saves three
tidy tables in ``reports/<name>/``: ``metrics.csv`` (one row per run and phase, with its group and seed),
``samples.csv`` (every logged sample) and ``runs.csv`` (one row per run: its group, seed and settings). The page
is rendered from those alone: per group the mean over seeds per phase with a 95% band (t over seeds) and each
seed thin; the headline claims with n = seeds and t intervals over the seeds' end values (the end of a run is
the mean of its last `END_WINDOW` phases); diversity as distinct-n over **token ids** (the shipped SmolLM2
tokenizer), the mode-collapse measure.
"""

from __future__ import annotations

import argparse
import json
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from rlhf_interp.core.kl import upgrade_kl_name  # noqa: E402
from rlhf_interp.measure import distinct_n  # noqa: E402
from rlhf_interp.measure.seed_groups import RunGroup, check_group, group_runs, parse_group, seed_band  # noqa: E402
from rlhf_interp.report import Report, read_config, read_table, write_tables  # noqa: E402
from rlhf_interp.report.panels import Line, Panel, to_matplotlib, to_plotly  # noqa: E402
from rlhf_interp.report.style import cycle  # noqa: E402

from rlhf_interp.report import ppo_claims as pc  # noqa: E402

NAME = "ppo_periods"
BATCH = pc.BATCH
END_WINDOW = pc.END_WINDOW
KL_BUDGET = 0.1  # nats per token: the period task's goal (reward >= 2 at KL <= 0.1/token, configs/periods.yaml)
# Where the kept runs (one seed each, run directories gone) came from: the page states it beside their curves.
KEPT_NOTES = {"periods": "the 50-phase run of `configs/periods.yaml` as it was on 28 November (KL target 0.08), "
                         "the run `diff_ppo` and `causal_ppo` analyse",
              "periods_kl0": "the same task with the KL penalty off (`kl_coef` 0, 30 phases), trained on 24 November, "
                             "before the KL-code fixes of 28 November"}
SETTINGS = ("phases", "batch_size", "kl_coef", "adaptive_kl", "kl_target", "kl_horizon", "kl_estimator",
            "kl_placement", "lr", "freeze_layers")


# ----------------------------------------------------------------------------------------------
# Reading runs (the full path)


def read_jsonl(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: is {path.parent} a run directory written by `rlhf-interp train`?")
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def group_name(group: RunGroup) -> str:
    """``LABEL (KL adaptive coef 1, target 0.2, exact in loss)``: the group's label and its KL setting."""
    c = group.config
    coef = f"adaptive coef {c['kl_coef']:g}, target {c['kl_target']:g}" if c.get("adaptive_kl") else \
        f"coef {c['kl_coef']:g}"
    return f"{group.label} (KL {coef}, {c['kl_estimator']} in {c['kl_placement']})"


def load_groups(groups: list[RunGroup]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tidy tables: metrics (one row per run x phase), samples (one row per logged sample), runs (one per run)."""
    metrics, samples, runs = [], [], []
    for group in groups:
        name = group_name(group)
        for run_dir, seed in zip(group.runs, group.seeds):
            ids = {"group": name, "seed": seed, "run": run_dir.name}
            frame = read_jsonl(run_dir / "metrics.jsonl")  # runs logged before issue 29: kl_forward_* -> kl_pi_ref_*
            metrics.append(frame.rename(columns=upgrade_kl_name).assign(**ids))
            s = read_jsonl(run_dir / "samples.jsonl")
            samples.append(s[["phase", "prompt", "completion", "reward"]].assign(**ids))
            runs.append({**ids, "source": str(run_dir), **{k: group.config.get(k) for k in SETTINGS}})
    front = ["group", "seed", "run"]
    metrics = pd.concat(metrics, ignore_index=True)
    metrics = metrics[front + [c for c in metrics if c not in front]]
    samples = pd.concat(samples, ignore_index=True)[front + ["phase", "prompt", "completion", "reward"]]
    return metrics, samples, pd.DataFrame(runs)


def kept_rows(report_dir: Path, spec: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Rows of one run from the report's current CSVs: ``RUN`` (its name) or ``RUN=NEW NAME``. A kept run is a
    group of one seed (its seed left blank: the directory and its config are gone)."""
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
        rows["group"], rows["seed"] = rows["run"], np.nan
        front = ["group", "seed", "run"]
        tables.append(rows[front + [c for c in rows if c not in front]])
    metrics = tables[0]
    run = {"group": metrics["run"].iloc[0], "seed": np.nan, "run": metrics["run"].iloc[0],
           "source": "kept from the previous CSVs (run directory gone; one seed)",
           "phases": int(metrics["phase"].max())}
    return metrics, tables[1], pd.DataFrame([run])


# ----------------------------------------------------------------------------------------------
# Tables and figures (from the CSVs)


@lru_cache(maxsize=1)
def _tokenizer():
    from rlhf_interp.bridge import load_tokenizer

    return load_tokenizer()


def token_ids(text: str) -> list[int]:
    """The completion's token ids under the shipped SmolLM2 tokenizer (no special tokens)."""
    return _tokenizer()(text, add_special_tokens=False)["input_ids"]


def diversity_table(samples: pd.DataFrame) -> pd.DataFrame:
    """Per run and logged phase: distinct-1/2 over the completions' token ids (pooled over the phase's samples),
    the share of distinct completions, and the mean reward of those samples."""
    if "group" not in samples:
        samples = samples.assign(group=samples["run"], seed=np.nan)
    rows = []
    for (group, seed, run, phase), g in samples.groupby(["group", "seed", "run", "phase"], sort=False, dropna=False):
        texts = g["completion"].fillna("").tolist()
        ids = [token_ids(t) for t in texts]
        rows.append({"group": group, "seed": seed, "run": run, "phase": int(phase), "n_samples": len(texts),
                     "distinct_1": distinct_n(ids, 1), "distinct_2": distinct_n(ids, 2),
                     "unique_completions": len(set(texts)) / len(texts), "reward_mean": g["reward"].mean()})
    return pd.DataFrame(rows)


def _label(group: str, seeds: int) -> str:
    return f"{pc.short(group)}: mean of {seeds} seeds" if seeds > 1 else f"{pc.short(group)} (one seed)"


def curve_panels(metrics: pd.DataFrame, diversity: pd.DataFrame) -> list[Panel]:
    """The training curves as a 2 x 3 grid (one spec for the PNG and the interactive chart). A group of several
    seeds: the mean over seeds per phase with its 95% t band, each seed thin; a group of one seed: its phases
    thin with a rolling mean of 5. Panels: reward of the penalised groups, of the KL-0 group on its own axis (its
    ~60 periods would flatten the rest), KL per token (log axis, dashed budget), entropy, the KL coefficient, and
    distinct-2 of the logged samples (a group logged at two phases is two points, not a line)."""
    groups = list(dict.fromkeys(metrics["group"]))
    style = {g: cycle(i) for i, g in enumerate(groups)}
    seeds = metrics.groupby("group", sort=False)["run"].nunique()
    free = [g for g in groups if pc.is_free(g)]

    def lines(frame, column, which, positive=False, markers_only=False):
        out = []
        for group in which:
            g = frame[frame["group"] == group].sort_values("phase")
            g = g[g[column] > 0] if positive else g
            if g.empty:
                continue
            st, label = style[group], _label(group, int(seeds[group]))
            mode = "markers" if markers_only and g["phase"].nunique() <= 2 else "lines+markers"
            if seeds[group] > 1:
                for run, r in g.groupby("run", sort=False):
                    out.append(Line(f"{pc.short(group)} {run}", r["phase"].tolist(), r[column].tolist(), st["color"],
                                    mode="lines", width=0.7, alpha=0.45, legend=False))
                band = seed_band(g, column)
                out.append(Line(label, band["phase"].tolist(), band["mean"].tolist(), st["color"], st["marker"],
                                st["symbol"], mode=mode, width=2.4, size=3, band=(band["low"].tolist(),
                                                                                 band["high"].tolist())))
            elif markers_only:
                out.append(Line(label, g["phase"].tolist(), g[column].tolist(), st["color"], st["marker"],
                                st["symbol"], mode=mode, size=6))
            else:
                out.append(Line(label, g["phase"].tolist(), g[column].tolist(), st["color"], st["marker"],
                                st["symbol"], width=0.8, size=2.5, alpha=0.45, legend=False))
                out.append(Line(f"{label}: rolling mean (5 phases)", g["phase"].tolist(),
                                g[column].rolling(5, min_periods=1).mean().tolist(), st["color"], mode="lines",
                                width=2.4))
        return out

    kl = pc.kl_column(metrics)
    reward_label = "mean reward (periods per 24-token sample)"
    penalised = [g for g in groups if g not in free]
    return [Panel("Reward, penalised runs", "PPO phase", reward_label, lines(metrics, "reward_mean", penalised),
                  ylim=(0, None)),
            Panel("Reward, KL coefficient 0 (its own axis)", "PPO phase", reward_label,
                  lines(metrics, "reward_mean", free), ylim=(0, None)),
            Panel("Exact KL(π‖ref) per token (log axis)", "PPO phase", "nats per token",
                  lines(metrics, kl, groups, positive=True), log_y=True,
                  hlines=[(KL_BUDGET, f"budget {KL_BUDGET} nats/token")]),
            Panel("Policy entropy per token", "PPO phase", "nats per token", lines(metrics, "entropy", groups),
                  ylim=(0, None)),
            Panel("KL coefficient β", "PPO phase", "β", lines(metrics, "kl_coef", groups), ylim=(0, None)),
            Panel("distinct-2 (points: logged phases)", "PPO phase", "distinct-2 over token ids (0-1)",
                  lines(diversity, "distinct_2", groups, markers_only=True), ylim=(0, 1.05))]


# ----------------------------------------------------------------------------------------------
# The page


def render(report_dir: Path) -> Report:
    """The page, from ``metrics.csv``, ``samples.csv`` and ``runs.csv`` (and ``config.json``) in ``report_dir``."""
    report_dir = Path(report_dir)
    config = read_config(report_dir)
    metrics = read_table(report_dir, "metrics")
    samples = read_table(report_dir, "samples", keep_default_na=False)
    samples["reward"] = samples["reward"].astype(float)
    samples["seed"] = pd.to_numeric(samples["seed"], errors="coerce")
    runs = read_table(report_dir, "runs")
    diversity = diversity_table(samples)
    ends = pc.run_ends(metrics, diversity)
    summary = pc.group_summary(ends)

    claims = pc.ppo_claims(metrics, samples, runs, diversity, tokenize=token_ids)
    report = Report.at(report_dir, "PPO on the period task: reward, KL and collapse", source=__file__,
                       claims=claims)
    seeds = ends.groupby("group", sort=False)["run"].nunique()
    report.text(
        "Each run is `rlhf-interp train` on the embedded SmolLM2-135M-Instruct; runs that differ only in their "
        "seed form a group (" + "; ".join(
            f"`{pc.short(g)}`: " + (", ".join(f"`{r}`" for r in runs[runs["group"] == g]["source"])
                                    if n > 1 else "one seed") for g, n in seeds.items())
        + "; `runs.csv` has each run's settings). Reward = number of `.` in the 24-token continuation, "
        f"{BATCH} samples per phase. KL is the exact KL(π ‖ ref) summed over the vocabulary, averaged over "
        "generated tokens. Claims about a group of several seeds take the seed as the unit: each seed's end (the "
        f"mean of its last {END_WINDOW} phases) is one value and the interval is Student's t over the seeds; a "
        "group of one seed is one draw, and its interval (over phases) leaves seed-to-seed variation out.")
    kept = [f"`{pc.short(g)}`: {note}" for g in runs["group"].unique() for key, note in KEPT_NOTES.items()
            if pc.short(g).split(",")[0] == key and runs[runs["group"] == g]["seed"].isna().all()]
    report.text(
        "The groups were not run under one protocol (" + pc.conditions_text(runs, metrics) + ")"
        + (". Kept runs: " + "; ".join(kept) if kept else "") + ". Each run's learning rate decays over its own "
        "number of phases, so the page sets the groups side by side and states no test between them.")
    report.section("Training curves")
    panels = curve_panels(metrics, diversity)
    logged = diversity.groupby("group", sort=False)["phase"].apply(lambda p: ", ".join(map(str, sorted(set(p)))))
    report.figure(
        "curves", to_matplotlib(panels), chart=to_plotly(panels), chart_height=760,
        caption=("Six panels. A group of several seeds: its mean over seeds per phase (thick) with the 95% band "
                 "(t over seeds, df = seeds - 1) and each seed thin; a group of one seed: its phases thin and a "
                 "rolling mean of 5 phases thick. Top row: reward of the penalised runs, and of the KL-0 run on its "
                 "own axis (it reaches ~60 periods and would flatten the others); exact KL(π ‖ ref) per token on a "
                 f"log axis (dashed: the {KL_BUDGET} nats/token budget; phases with KL 0 are not drawn on it). Bottom "
                 "row: policy entropy, the KL coefficient, and distinct-2 of the logged samples, drawn only at the "
                 "phases that were logged (" + "; ".join(f"{pc.short(g)}: {p}" for g, p in logged.items()) + ")."))
    report.table("summary", summary.assign(group=summary["group"].map(pc.short)), title="Start and end of each group",
                 caption=(f"Per group and quantity: the mean over its seeds of each seed's phase 1 (`start`) and of "
                          f"the mean of its last {END_WINDOW} phases (`end`, phases `end_phases`; for distinct-2 the "
                          "logged phases in that window); `end_low`/`end_high`: the 95% t interval over the seeds "
                          "(blank for one seed). `kl`: exact KL(π‖ref) per token."))
    report.table("per_run", ends, title="Start and end of each run", show=0,
                 caption="One row per run (seed): the values the intervals over seeds are made of, the best phase's "
                         "reward, and seconds per phase on a shared 2-core CPU (median).")
    report.section("Sample diversity",
                   "Mode collapse shows as a fall of distinct-2: the share of distinct token-id bigrams among all "
                   "bigrams of a phase's logged completions (pooled; token ids from the shipped SmolLM2 tokenizer, "
                   "so a run of `...` counts as the repeated token it is).")
    sizes = sorted(set(diversity["n_samples"]))
    report.figure("diversity", to_matplotlib(panels[-1:], cols=1, panel_size=(6.5, 4)),
                  chart=to_plotly(panels[-1:], cols=1, height_per_row=380),
                  caption=(f"distinct-2 over token ids of the logged completions per group and phase "
                           f"({'/'.join(map(str, sizes))} samples per run and point; several seeds: mean with the "
                           f"95% band over seeds, each seed thin; `diversity.csv` has distinct-1 and the share of "
                           f"distinct completions too). A run logged at two phases is two points: nothing is known "
                           f"between them."))
    report.table("diversity", diversity, title="Diversity of logged samples", show=0)
    report.section("Samples")
    firsts_lasts = samples[samples.groupby("run")["phase"].transform(lambda p: p.isin([p.min(), p.max()]))]
    preview = (firsts_lasts.groupby(["run", "phase"], sort=False).head(3)
               .assign(group=lambda d: d["group"].map(pc.short),
                       completion=lambda d: d["completion"].str.replace("\n", " ⏎ ", regex=False))
               .drop(columns="seed"))
    report.table("samples", samples, title="Samples, first and last logged phase", preview=preview,
                 caption="Up to 3 completions per run at its first and last logged phase (⏎ = newline).")
    report.table("runs", runs, title="The runs and their settings", show=0,
                 caption=f"One row per run: group, seed, where it came from, and its settings. Kept rows: "
                         f"{', '.join(config.get('kept_from_previous_csvs', [])) or 'none'}.")
    report.table("metrics", metrics, title="Every logged metric", show=0,
                 caption="One row per run and phase: everything `rlhf-interp train` logs (reward, KL both ways, "
                         "losses, clip fraction, learning rate, seconds ...).")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", type=Path, default=[],
                        help="run directories; those differing only in the seed form one group")
    parser.add_argument("--group", action="append", default=[], metavar="LABEL=DIR,DIR,...",
                        help="an explicit group of runs differing only in the seed; repeatable")
    parser.add_argument("--name", default=NAME)
    parser.add_argument("--root", type=Path, default=Path("reports"))
    parser.add_argument("--from-csv", action="store_true", help="re-render the page from the CSVs in reports/<name>/")
    parser.add_argument("--keep", action="append", default=[], metavar="RUN[=NEW NAME]",
                        help="keep run RUN's rows from the report's existing CSVs (its run directory is gone), "
                             "optionally renamed; a group of one seed; repeatable")
    args = parser.parse_args()
    out = args.root / args.name
    if not args.from_csv:
        if not args.runs and not args.group:
            parser.error("name the runs (--runs DIR ... or --group LABEL=DIR,...), or re-render with --from-csv")
        try:
            kept = [kept_rows(out, spec) for spec in args.keep]  # read before the tables are rewritten
            groups = [check_group(*parse_group(spec)) for spec in args.group]
            groups += group_runs(args.runs) if args.runs else []
            metrics, samples, runs = load_groups(groups)
        except (FileNotFoundError, ValueError) as err:
            parser.error(str(err))
        tables = [pd.concat([t] + [k[i] for k in kept], ignore_index=True) for i, t in
                  enumerate((metrics, samples, runs))]
        write_tables(out, dict(zip(("metrics", "samples", "runs"), tables)),
                     config={"groups": {g.label: [str(r) for r in g.runs] for g in groups},
                             "kept_from_previous_csvs": args.keep, "end_window": END_WINDOW})
    report = render(out)
    report.save()
    print(report.headline)
    print(f"report: {out}/index.html")


if __name__ == "__main__":
    main()
