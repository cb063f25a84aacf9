"""Editing against fine-tuning on one axis: reward reached vs KL paid, for PPO checkpoints and steering edits.

    python analyses/edit_vs_finetune.py --base smollm2-135m --run runs/periods
    python analyses/edit_vs_finetune.py --from-csv       # re-render the page from reports/edit_vs_finetune/points.csv

Every point is measured the same way (`rlhf_interp.measure.evaluate_edit`): sample 24 tokens from the
model (or the edited base model) on the same prompts with the same seed, score the continuations with the
reward, and sum the exact per-token KL(model || base) along each sample (nats per sequence). The points:

- each PPO checkpoint of the run (fine-tuning: the KL penalty kept this small on purpose);
- steering the *base* model with the run's own "fine-tuning direction" (mean tuned - base difference of
  ``hook_resid_post`` per layer, `steering.finetuning_direction`), layer x coefficient;
- optionally a saved steering vector (e.g. the contrastive period vector of analyses/steering_sweep.py).

Writes ``reports/<name>/``: the reward-vs-KL figure, the tidy table, and the settings.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from rlhf_interp import load_model, load_prompts
from rlhf_interp.checkpoints import list_checkpoints, read_meta
from rlhf_interp.measure import evaluate_edit, steering_sweep
from rlhf_interp.report import Report, read_config, read_table, write_tables
from rlhf_interp.report.charts import xy_chart
from rlhf_interp.report.plots import nonneg_symlog, series_style
from rlhf_interp.edits import SteeringVector, finetuning_direction

NAME = "edit_vs_finetune"


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def checkpoint_points(base, run_dir: Path, prompts: list[str], args) -> pd.DataFrame:
    rows = []
    for ckpt in list_checkpoints(run_dir):
        tuned = load_model(ckpt)
        row = evaluate_edit(tuned, None, prompts, args.reward, reference=base, max_new_tokens=args.max_new_tokens,
                            seed=args.seed).iloc[0].to_dict()
        rows.append({"method": "PPO checkpoint", "setting": f"step {read_meta(ckpt).get('step')}", **row})
        del tuned
    return pd.DataFrame(rows)


def steering_points(base, vector: SteeringVector, label: str, prompts: list[str], args) -> pd.DataFrame:
    layers = [layer for layer in args.layers if layer in vector.layers]
    df = steering_sweep(base, vector, layers, args.coefs, prompts, args.reward, max_new_tokens=args.max_new_tokens,
                        seed=args.seed, prompt_kl=False)
    df = df[df["coef"] != 0]
    return df.assign(method=label, setting=[f"L{int(l)} x{c:g}" for l, c in zip(df["layer"], df["coef"])])


METHOD_ORDER = ["base model", "PPO checkpoint", "steer: fine-tuning direction", "steer: contrastive period vector"]
KL_LABEL = "KL(model ‖ base) per 24-token sequence (nats, exact, on the model's own samples)"
REWARD_LABEL = "reward (periods per continuation)"


def _series(points: pd.DataFrame) -> pd.DataFrame:
    """A ``series`` column: one line per steering method and layer, one per PPO run, the base model alone."""
    def name(row) -> str:
        if row["method"].startswith("steer"):
            return f"{row['method']}, layer {int(row['layer'])}"
        return row["method"]
    return points.assign(series=points.apply(name, axis=1))


def figure(points: pd.DataFrame, baseline_reward: float, zoom: tuple[float, float]):
    """Left: every point (symlog axes, limits from the data, so nothing is cut off). Right: the same points in
    the window ``zoom`` = (max KL, max reward) on linear axes, where the PPO checkpoints are."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.6), gridspec_kw={"width_ratios": [1.25, 1]})
    ppo = points[points["method"] == "PPO checkpoint"]
    steer = _series(points[points["method"].str.startswith("steer")])
    steps = ppo["setting"].str.replace("step ", "").astype(int)
    shades = plt.get_cmap("Greys")(0.35 + 0.65 * (steps - steps.min()) / max(1, steps.max() - steps.min()))
    for ax in axes:
        for i, (series, g) in enumerate(steer.groupby("series", sort=False)):
            ax.plot(g["kl_exact_mean"], g["reward_mean"], lw=1, markersize=5, label=series, **series_style(i))
        ax.plot(ppo["kl_exact_mean"], ppo["reward_mean"], color="k", lw=0.8, zorder=3)
        for (_, row), step, shade in zip(ppo.iterrows(), steps, shades):
            ax.plot(row["kl_exact_mean"], row["reward_mean"], marker="*", ms=12, color=shade, markeredgecolor="k",
                    ls="none", zorder=4, label=f"PPO checkpoint, step {step}")
        ax.axhline(baseline_reward, color="grey", ls=":", lw=0.9, label="base model reward")
        ax.set_xlabel(KL_LABEL)
        ax.set_ylabel(REWARD_LABEL)
        ax.grid(alpha=0.3)
    left, right = axes
    nonneg_symlog(left, "x", linthresh=0.1, top=float(points["kl_exact_mean"].max()) * 1.5)
    top = float((points["reward_mean"] + points["reward_stderr"]).max()) * 1.3
    nonneg_symlog(left, "y", linthresh=4, top=top, linscale=2,
                  ticks=[t for t in (0, 1, 2, 3, 4, 10, 20, 50, 100, 200) if t <= top])
    left.set_title("every point (symlog axes: linear below 0.1 nats / 4 periods)", fontsize=10)
    right.set_xlim(0, zoom[0])
    right.set_ylim(0, zoom[1])
    right.set_title(f"zoom: KL 0-{zoom[0]:g} nats, reward 0-{zoom[1]:g} (linear axes)", fontsize=10)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def chart(points: pd.DataFrame, baseline_reward: float):
    """The same points, interactive; rows stay in table order (PPO by step, steering by coefficient). The base
    model (0 nats: off a log axis) is the dotted line."""
    shown = _series(points[points["method"] != "base model"])
    shown = pd.concat([shown[shown["method"] != "PPO checkpoint"], shown[shown["method"] == "PPO checkpoint"]])
    return xy_chart(shown, "kl_exact_mean", "reward_mean", series="series", error="reward_stderr",
                    sort_x=False, hover=["setting", "kl_exact_stderr", "kl_per_token", "entropy_mean", "distinct_2"],
                    xlabel="KL(model ‖ base) per sequence (nats)", ylabel=REWARD_LABEL, log_x=True, log_y=False,
                    hline=(baseline_reward, f"base model: {baseline_reward:.2f} periods at 0 nats"),
                    styles={"PPO checkpoint": {"color": "black", "symbol": "star"}},
                    title="Reward against KL: PPO checkpoints and steering edits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--run", type=Path, default=Path("runs/periods"), help="a PPO run directory")
    parser.add_argument("--vector", type=Path, default=Path("reports/steering_sweep/period_vector.safetensors"),
                        help="an extra saved steering vector to compare (skipped when missing)")
    parser.add_argument("--layers", type=ints, default=ints("14,20,26,29"))
    parser.add_argument("--coefs", type=floats, default=floats("1,2,4,8"))
    parser.add_argument("--n-prompts", type=int, default=32)
    parser.add_argument("--direction-prompts", type=int, default=64, help="texts for the fine-tuning direction")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--reward", default="char_count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=NAME)
    parser.add_argument("--root", type=Path, default=Path("reports"))
    parser.add_argument("--from-csv", "--rebuild", dest="from_csv", action="store_true",
                        help="re-render the page from its points.csv (no model)")
    args = parser.parse_args()
    out = args.root / args.name
    if not args.from_csv:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "from_csv"}
        write_tables(out, {"points": measure_points(args)}, config=config)
    report = render(out)
    report.save()
    print(report.headline)
    print(f"report: {out}/index.html")


def measure_points(args) -> pd.DataFrame:
    base = load_model(args.base)
    prompts = load_prompts(limit=args.n_prompts, seed=args.seed)
    direction_texts = load_prompts(seed=args.seed + 1)[: args.direction_prompts]
    baseline = evaluate_edit(base, None, prompts, args.reward, max_new_tokens=args.max_new_tokens, seed=args.seed)
    parts = [baseline.assign(method="base model", setting="none")]
    parts.append(checkpoint_points(base, args.run, prompts, args))
    tuned = load_model(args.run)
    ft_vector = finetuning_direction(base, tuned, direction_texts, layers=args.layers)
    del tuned
    parts.append(steering_points(base, ft_vector, "steer: fine-tuning direction", prompts, args))
    if args.vector.exists():
        parts.append(steering_points(base, SteeringVector.load(args.vector), "steer: contrastive period vector",
                                     prompts, args))
    points = pd.concat(parts, ignore_index=True)
    columns = ["method", "setting", "layer", "coef", "reward_mean", "reward_stderr", "kl_exact_mean", "kl_exact_stderr",
               "kl_per_token", "entropy_mean", "distinct_2", "n_sequences"]
    return points[[c for c in columns if c in points]]


def render(report_dir: Path) -> Report:
    """The page from ``points.csv`` and ``config.json`` (no model)."""
    report_dir = Path(report_dir)
    config = read_config(report_dir)
    points = read_table(report_dir, "points")
    baseline = points[points["method"] == "base model"]
    ppo = points[points["method"] == "PPO checkpoint"]
    steer = points[points["method"].str.startswith("steer")]
    best_ppo = ppo.loc[ppo["reward_mean"].idxmax()]
    reaching = steer[steer["reward_mean"] >= best_ppo["reward_mean"]]
    base_reward = float(baseline["reward_mean"].iloc[0])
    n_seq = int(points["n_sequences"].iloc[0])
    late = ppo[ppo["setting"] != ppo["setting"].iloc[0]]
    lines = [
        f"Base model: {base_reward:.2f} periods per continuation. The PPO checkpoints after the first reach "
        f"{late['reward_mean'].min():.2f}-{late['reward_mean'].max():.2f} periods for "
        f"{late['kl_exact_mean'].min():.2f}-{late['kl_exact_mean'].max():.2f} nats; the highest mean reward "
        f"({best_ppo['setting']}): {best_ppo['reward_mean']:.2f} ± {best_ppo['reward_stderr']:.2f} periods for "
        f"{best_ppo['kl_exact_mean']:.2f} nats of KL per sequence ({best_ppo['kl_per_token']:.3f} per token). "
        f"± is one standard error over {n_seq} sequences."]
    by_method = {}
    for method, group in steer.groupby("method", sort=False):
        hits = group[group["reward_mean"] >= best_ppo["reward_mean"]]
        if len(hits):
            cheapest = hits.loc[hits["kl_exact_mean"].idxmin()]
            by_method[method] = (f"{method} reaches it: cheapest {cheapest['setting']}, "
                                 f"{cheapest['reward_mean']:.2f} ± {cheapest['reward_stderr']:.2f} periods for "
                                 f"{cheapest['kl_exact_mean']:.2f} nats, "
                                 f"{cheapest['kl_exact_mean'] / max(best_ppo['kl_exact_mean'], 1e-9):.1f}x the "
                                 f"fine-tuned KL")
        else:
            top = group.loc[group["reward_mean"].idxmax()]
            by_method[method] = (f"{method} never reaches it: its most is {top['reward_mean']:.2f} ± "
                                 f"{top['reward_stderr']:.2f} periods ({top['setting']}, {top['kl_exact_mean']:.1f} "
                                 f"nats)")
    lines.append("Steering the base model to that reward: " + "; ".join(by_method.values()) + ".")
    if len(reaching):
        cheapest = reaching.loc[reaching["kl_exact_mean"].idxmin()]
        headline = (f"Steering the base model with the PPO run's own fine-tuning direction (layer "
                    f"{int(cheapest['layer'])}, coefficient {cheapest['coef']:g}) reaches the best PPO checkpoint's "
                    f"reward ({cheapest['reward_mean']:.2f} "
                    f"vs {best_ppo['reward_mean']:.2f} periods) for "
                    f"{cheapest['kl_exact_mean'] / max(best_ppo['kl_exact_mean'], 1e-9):.1f}x its KL "
                    f"({cheapest['kl_exact_mean']:.2f} vs {best_ppo['kl_exact_mean']:.2f} nats per sequence)"
                    if cheapest["method"] == "steer: fine-tuning direction" else
                    f"The cheapest steering edit reaching PPO's best reward ({cheapest['method']}, "
                    f"{cheapest['setting']}) pays {cheapest['kl_exact_mean']:.2f} vs {best_ppo['kl_exact_mean']:.2f} "
                    f"nats per sequence")
    else:
        headline = f"No steering setting reaches the best PPO checkpoint's {best_ppo['reward_mean']:.2f} periods"
    contrast = "steer: contrastive period vector"
    if contrast in by_method and "never" in by_method[contrast]:
        top = steer[steer["method"] == contrast].sort_values("reward_mean").iloc[-1]
        headline += (f"; the contrastive period vector never gets there (at most {top['reward_mean']:.2f} periods, "
                     f"{top['kl_exact_mean']:.1f} nats)")
    headline += "."
    zoom = (max(1, round(float(ppo["kl_exact_mean"].max()) * 2 + 0.5)),
            max(1, round(float(ppo["reward_mean"].max()) * 2 + 0.5)))
    outside = points[(points["kl_exact_mean"] > zoom[0]) | (points["reward_mean"] > zoom[1])]
    report = Report.at(report_dir, "Editing vs fine-tuning: reward reached against KL paid", headline=headline,
                       source=__file__)
    report.text(__doc__.split("\n\n", 2)[2].split("Writes")[0] + f"\nRun: `{config.get('run')}`; steering layers "
                f"{config.get('layers')} x coefficients {config.get('coefs')}; {config.get('n_prompts')} prompts.")
    report.section("Findings", "\n\n".join(lines))
    report.section("Reward against KL from the base model")
    report.figure("reward_vs_kl", figure(points, base_reward, zoom), chart=chart(points, base_reward),
                  chart_height=560, caption=(
        "Reward (periods per continuation) against KL(model ‖ base) per 24-token sequence. Stars: PPO checkpoints, "
        "darker = later step, joined in step order; lines: steering the base model at one layer, coefficient "
        f"rising along the line ({', '.join(f'{c:g}' for c in sorted(steer['coef'].unique()))}); dotted: the base "
        "model's reward. Left: every point (symlog axes: linear below 0.1 nats and below 4 periods). Right: the "
        f"window KL 0-{zoom[0]} nats, reward 0-{zoom[1]} on linear axes; the {len(outside)} points outside it "
        "are on the left panel. Interactive chart: hover a point for its setting, click a legend entry to hide a "
        "series, drag to zoom (double-click resets); the base model is the dotted line."))
    shown = points.assign(layer=points["layer"].map(lambda v: "" if pd.isna(v) else str(int(v))),
                          coef=points["coef"].map(lambda v: "" if pd.isna(v) else f"{v:g}"))
    report.table("points", points, title="Every point (one row per model or edit setting)", preview=shown,
                 caption="`layer` and `coef` are empty for the base model and the PPO checkpoints (no edit).")
    return report


if __name__ == "__main__":
    main()
