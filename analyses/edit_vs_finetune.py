"""Editing against fine-tuning on one axis: reward reached vs KL paid, for PPO checkpoints and steering edits.

    python analyses/edit_vs_finetune.py --base smollm2-135m --run runs/periods

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
from rlhf_interp.report import Report
from rlhf_interp.steering import SteeringVector, finetuning_direction


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


def figure(points: pd.DataFrame, baseline_reward: float):
    fig, ax = plt.subplots(figsize=(7, 4.6))
    markers = {"PPO checkpoint": "*"}
    for method, group in points.groupby("method", sort=False):
        if method == "PPO checkpoint":
            ax.plot(group["kl_exact_mean"], group["reward_mean"], marker="*", ms=12, lw=1, label=method, color="k")
            for _, r in group.iterrows():
                ax.annotate(r["setting"].replace("step ", ""), (r["kl_exact_mean"], r["reward_mean"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
            continue
        for layer, g in group.groupby("layer"):
            ax.plot(g["kl_exact_mean"], g["reward_mean"], marker=markers.get(method, "o"), lw=0.8,
                    label=f"{method}, layer {int(layer)}")
    ax.axhline(baseline_reward, color="grey", ls=":", lw=0.8)
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlim(left=0)
    ax.set_yscale("symlog", linthresh=4, linscale=2)  # collapsed settings reach dozens of periods; keep 0-4 linear
    ax.set_ylim(bottom=0)
    ax.set_xlabel("KL(model || base) per sequence of 24 tokens (nats, exact, on the model's own samples)")
    ax.set_ylabel("reward (periods per continuation)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--run", type=Path, default=Path("runs/periods"), help="a PPO run directory")
    parser.add_argument("--vector", type=Path, default=Path("reports/steering_sweep/period_vector.safetensors"),
                        help="an extra saved steering vector to compare (skipped when missing)")
    parser.add_argument("--layers", type=ints, default=ints("14,20,26,29"))
    parser.add_argument("--coefs", type=floats, default=floats("1,2,4,8"))
    parser.add_argument("--n-prompts", type=int, default=16)
    parser.add_argument("--direction-prompts", type=int, default=64, help="texts for the fine-tuning direction")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--reward", default="char_count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="edit_vs_finetune")
    parser.add_argument("--rebuild", action="store_true", help="redraw the report from its points.csv (no model)")
    args = parser.parse_args()
    points = pd.read_csv(Path("reports") / args.name / "points.csv") if args.rebuild else measure_points(args)
    write_report(points, args)


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


def write_report(points: pd.DataFrame, args) -> None:
    baseline = points[points["method"] == "base model"]
    ppo = points[points["method"] == "PPO checkpoint"]
    steer = points[points["method"].str.startswith("steer")]
    best_ppo = ppo.loc[ppo["reward_mean"].idxmax()]
    reaching = steer[steer["reward_mean"] >= best_ppo["reward_mean"]]
    base_reward = float(baseline["reward_mean"].iloc[0])
    lines = [
        f"Base model: {base_reward:.2f} periods per continuation. Best PPO checkpoint ({best_ppo['setting']}): "
        f"{best_ppo['reward_mean']:.2f} ± {best_ppo['reward_stderr']:.2f} periods for "
        f"{best_ppo['kl_exact_mean']:.2f} nats of KL per sequence ({best_ppo['kl_per_token']:.3f} per token).",
    ]
    if len(reaching):
        cheapest = reaching.loc[reaching["kl_exact_mean"].idxmin()]
        lines.append(f"The cheapest steering setting that reaches that reward ({cheapest['method']}, "
                     f"{cheapest['setting']}) pays {cheapest['kl_exact_mean']:.1f} nats: "
                     f"{cheapest['kl_exact_mean'] / max(best_ppo['kl_exact_mean'], 1e-9):.1f}x the fine-tuned KL.")
    else:
        best_steer = steer.loc[steer["reward_mean"].idxmax()]
        lines.append(f"No steering setting reaches it: the best ({best_steer['method']}, {best_steer['setting']}) gets "
                     f"{best_steer['reward_mean']:.2f} ± {best_steer['reward_stderr']:.2f} periods for "
                     f"{best_steer['kl_exact_mean']:.1f} nats.")
    report = Report(args.name, "Editing vs fine-tuning: reward reached against KL paid",
                    config={k: str(v) for k, v in vars(args).items()})
    report.text(__doc__.split("\n\n", 2)[2].split("Writes")[0])
    report.text("\n\n".join(lines))
    report.figure("reward_vs_kl", figure(points, base_reward), title="Reward against KL from the base model")
    report.table("points", points, title="Every point (one row per model or edit setting)", max_rows=60)
    out = report.save()
    print("\n".join(lines))
    print(f"report: {out}/index.html")


if __name__ == "__main__":
    main()
