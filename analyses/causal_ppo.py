"""Where does PPO fine-tuning live, causally? Patch tuned into base (and back) per layer and component, along
the run's checkpoints, optionally swap weights layer by layer, and try to undo RLHF with one direction.

    python analyses/causal_ppo.py --base smollm2-135m --tuned runs/frontier_ppo_s0   # compute + write reports/causal_ppo/
    python analyses/causal_ppo.py --from-csv                                       # redraw the page from its CSVs alone

Texts: the tuned policy's own samples (prompt + ``--samples`` sampled tokens), where its behaviour differs
from the base. Every statistic counts the real, non-pad, non-BOS positions of these texts
(`rlhf_interp.patching.scores` states the conventions); each text's sums are kept (``patching_per_text.csv``)
so that every fraction gets a 95% interval over texts (`rlhf_interp.patching.intervals`). The compute path
(`compute`) runs in resumable parts kept in ``--work-dir`` (a killed run resumes at the first unfinished part;
each part's CPU seconds land in ``config.json``) and returns tidy tables; they are saved as CSVs and the page
and its claims (`rlhf_interp.report.causal_claims`) are drawn from the CSVs alone (`render(report_dir)`, no model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd
import torch

from rlhf_interp import load_model, load_prompts
from rlhf_interp.checkpoints import list_checkpoints
from rlhf_interp.diff import check_compatible, checkpoint_step, policy_samples
from rlhf_interp.core.hashing import text_digest
from rlhf_interp.core.io import atomic_write_json
from rlhf_interp.patching import (
    DIRECTIONS,
    activation_patching,
    attribution_layers,
    fraction_intervals,
    patching_trajectory,
    residual_attribution,
    rewarded_token_ids,
    summarize,
    undo_rlhf,
    weight_patching,
)
from rlhf_interp.patching.figures import figure_attribution, figure_patching, figure_trajectory, figure_weights
from rlhf_interp.report import Report, read_config, read_table, write_tables
from rlhf_interp.report.causal_claims import SUBLAYERS, causal_claims, findings

NAME = "causal_ppo"
TABLES = ("activation_patching", "patching_per_text", "residual_attribution", "weight_patching", "trajectory",
          "trajectory_per_text", "trajectory_attribution", "undo", "undo_per_text", "undo_prompts", "texts")
REQUIRED = ("activation_patching", "patching_per_text", "residual_attribution", "undo", "texts")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="smollm2-135m")
    p.add_argument("--tuned", help="a PPO run dir (its latest checkpoint; all of them for the trajectory) or one "
                                   "checkpoint / HF dir")
    p.add_argument("--from-csv", action="store_true", help="re-render <root>/<name>/ from its CSVs (no model)")
    p.add_argument("--n-prompts", type=int, default=64, help="prompts whose sampled continuations are patched on")
    p.add_argument("--samples", type=int, default=32, help="sampled tokens per prompt (0: patch on prompts only)")
    p.add_argument("--components", default="hook_attn_out,hook_mlp_out,hook_resid_post",
                   help="hook points patched into base, every layer (add hook_resid_mid to split attn from mlp "
                        "in the additive attribution)")
    p.add_argument("--reverse-components", default="",
                   help="hook points patched into tuned (default none: the study patches into base only, to fit "
                        "its CPU budget; e.g. hook_attn_out,hook_mlp_out)")
    p.add_argument("--reward-substring", default=".", help="reward proxy: next token contains this (periods task)")
    p.add_argument("--reward", default="char_count", help="sampled reward for the undo table (rlhf_interp reward)")
    p.add_argument("--trajectory-texts", type=int, default=8, help="texts per checkpoint in the trajectory")
    p.add_argument("--max-checkpoints", type=int, default=6, help="evenly spaced checkpoints (always the last)")
    p.add_argument("--weights", action="store_true", help="also swap weights layer by layer (not in the study: "
                                                          "its cost equals the activation patching's)")
    p.add_argument("--undo-layers", default="auto", help="comma-separated layers for the fine-tuning direction, or "
                                                         "'auto': the 2 layers with the largest attribution")
    p.add_argument("--undo-pcs", default="1", help="numbers of principal directions ablated (ablate_pcs<k>)")
    p.add_argument("--undo-prompts", type=int, default=64, help="prompts sampled for the undo table's reward")
    p.add_argument("--undo-tokens", type=int, default=24, help="sampled tokens per prompt in the undo table")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--text-chunk", type=int, default=16, help="texts per resumable part of the activation patching")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, default=Path("runs/causal_ppo_work"),
                   help="finished parts are kept in WORK_DIR/<settings key>/ and not redone")
    p.add_argument("--name", default=NAME, help="report name: <root>/<name>/")
    p.add_argument("--root", default="reports", help="reports root: the report goes to ROOT/<name>/")
    args = p.parse_args(argv)
    if not args.from_csv and not args.tuned:
        p.error("pass --tuned RUN_OR_CKPT_DIR (or --from-csv to redraw an existing report)")
    return args


def evenly_spaced(items: list, k: int) -> list:
    if len(items) <= k:
        return items
    return [items[i] for i in sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


# ----------------------------------------------------------------------------------------------
# Compute: models -> tables, in resumable parts


# Settings that change the texts and the activation patching (the work directory's key); the undo and
# trajectory parts carry their own settings in their names, so changing those redoes only them.
RESULT_ARGS = ("base", "tuned", "n_prompts", "samples", "components", "reverse_components", "reward_substring",
               "batch_size", "text_chunk", "seed")
UNDO_ARGS = ("reward", "undo_layers", "undo_pcs", "undo_prompts", "undo_tokens")


class Parts:
    """Finished parts of one run, kept as CSVs in a work directory keyed on every setting that changes a result:
    a killed run resumes at the first unfinished part, and each part's CPU seconds are kept beside it."""

    def __init__(self, args: argparse.Namespace):
        key = text_digest([f"{k}={getattr(args, k)}" for k in RESULT_ARGS])[:12]
        self.dir = Path(args.work_dir) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.dir / "settings.json", {k: str(getattr(args, k)) for k in RESULT_ARGS})
        self.used: list[str] = []

    def get(self, name: str, make) -> dict[str, pd.DataFrame]:
        done = self.dir / f"{name}.done.json"
        if name not in self.used:
            self.used.append(name)
        if done.exists():
            tables = json.loads(done.read_text())["tables"]
            return {t: pd.read_csv(self.dir / f"{name}__{t}.csv", keep_default_na=False, na_values=[""])
                    for t in tables}
        wall, cpu = time.time(), time.process_time()
        tables = make()
        for t, df in tables.items():
            df.to_csv(self.dir / f"{name}__{t}.csv", index=False)
        seconds = {"wall": round(time.time() - wall, 1), "cpu": round(time.process_time() - cpu, 1)}
        atomic_write_json(done, {"tables": list(tables), "seconds": seconds})
        print(f"[causal_ppo] {name}: {seconds}", file=sys.stderr, flush=True)
        return self.get(name, lambda: tables)

    def seconds(self) -> dict[str, dict[str, float]]:
        """Each part of this run (not other settings' parts in the same directory): its wall and CPU seconds."""
        return {name: json.loads((self.dir / f"{name}.done.json").read_text())["seconds"] for name in self.used}


def compute(args: argparse.Namespace) -> tuple[dict[str, pd.DataFrame], dict]:
    torch.manual_seed(args.seed)
    parts = Parts(args)
    checkpoints = list_checkpoints(args.tuned)
    final = checkpoints[-1] if checkpoints else Path(args.tuned)
    models = {"base": load_model(args.base, device="cpu"), "tuned": load_model(str(final), device="cpu")}
    check_compatible(models["base"], models["tuned"])
    model = models.__getitem__
    ids = rewarded_token_ids(models["base"].tokenizer, args.reward_substring)
    prompts = load_prompts(limit=args.n_prompts, seed=args.seed)
    texts = parts.get("texts", lambda: {"texts": pd.DataFrame({"text": (
        policy_samples(model("tuned"), prompts, max_new_tokens=args.samples, seed=args.seed,
                       batch_size=args.batch_size) if args.samples > 0 else prompts)})})["texts"]["text"].tolist()
    common = {"reward_token_ids": ids, "batch_size": args.batch_size}
    chunks = []
    for i, start in enumerate(range(0, len(texts), args.text_chunk)):
        def patch_chunk(start=start):
            _, per_text = activation_patching(model("base"), model("tuned"), texts[start:start + args.text_chunk],
                                              components=_names(args.components),
                                              reverse_components=_names(args.reverse_components),
                                              directions=DIRECTIONS if _names(args.reverse_components) else
                                              ["into_base"], return_per_text=True, **common)
            return {"per_text": per_text.assign(text=per_text["text"] + start)}
        chunks.append(parts.get(f"activation_{i:03d}", patch_chunk)["per_text"])
    per_text = pd.concat(chunks, ignore_index=True)
    act = summarize(per_text)
    if not (act["kl_clean"] > 0).all():
        raise SystemExit(f"{final} gives the same next-token distributions as {args.base} on these texts (KL 0): "
                         f"nothing to attribute. Is it really a tuned checkpoint of this base model?")
    act = act.merge(fraction_intervals(per_text, seed=args.seed), on=["direction", "layer", "component"])
    tables: dict[str, pd.DataFrame] = {"texts": pd.DataFrame({"text": texts}), "activation_patching": act,
                                       "patching_per_text": per_text, "residual_attribution": residual_attribution(act)}
    if args.weights:
        tables["weight_patching"] = parts.get("weights", lambda: {"table": weight_patching(
            model("base"), model("tuned"), texts, **common)})["table"]
    layers = attribution_layers(act, k=2) if args.undo_layers == "auto" else [int(x) for x in _names(args.undo_layers)]
    undo_prompts = load_prompts(limit=args.undo_prompts, seed=args.seed + 1)

    def undo():
        table, tf, sampled = undo_rlhf(model("base"), model("tuned"), texts, layers, prompts=undo_prompts,
                                       pcs=[int(x) for x in _names(args.undo_pcs)], reward=args.reward,
                                       max_new_tokens=args.undo_tokens, seed=args.seed, return_details=True, **common)
        return {"undo": table, "undo_per_text": tf, "undo_prompts": sampled}

    tables.update(parts.get("undo_" + text_digest([f"{k}={getattr(args, k)}" for k in UNDO_ARGS])[:8], undo))
    chosen = []
    if len(checkpoints) > 1:
        chosen = evenly_spaced([(checkpoint_step(c), c) for c in checkpoints], args.max_checkpoints)
        traj, traj_texts = [], []
        for step, path in chosen:
            got = parts.get(f"trajectory_{step:06d}_{args.trajectory_texts}", lambda step=step, path=path: dict(zip(
                ("trajectory", "per_text"), patching_trajectory(
                    model("base"), args.tuned, texts[: args.trajectory_texts], checkpoints=[(step, path)],
                    components=["hook_resid_post"], directions=["into_base"], return_per_text=True, **common))))
            traj.append(got["trajectory"])
            traj_texts.append(got["per_text"])
        tables["trajectory"] = pd.concat(traj, ignore_index=True)
        tables["trajectory_per_text"] = pd.concat(traj_texts, ignore_index=True)
        tables["trajectory_attribution"] = residual_attribution(tables["trajectory"])
    seconds = parts.seconds()
    config = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "from_csv"},
              "tuned_checkpoint": str(final), "n_checkpoints": len(checkpoints),
              "trajectory_steps": [s for s, _ in chosen], "undo_layers_used": layers, "n_rewarded_tokens": len(ids),
              "n_texts": len(texts), "work_key": parts.dir.name,
              "seconds": round(sum(v["wall"] for v in seconds.values()), 1),
              "cpu_seconds": round(sum(v["cpu"] for v in seconds.values()), 1), "seconds_by_part": seconds}
    return tables, config


# ----------------------------------------------------------------------------------------------
# The page: CSVs in (no model)


def read_tables(report_dir: Path) -> dict[str, pd.DataFrame]:
    """The measured tables of a report directory (those the run produced)."""
    tables = {name: read_table(report_dir, name, keep_default_na=False, na_values=[""])
              for name in TABLES if (report_dir / f"{name}.csv").exists() or name in REQUIRED}
    for name in ("undo", "undo_prompts"):
        if name in tables:
            tables[name]["layer"] = tables[name]["layer"].astype("Int64")  # empty for the unedited rows
    return tables


def cost_text(config: dict) -> str:
    """The run's CPU time as the page states it (from ``config.json``; summed over resumed parts)."""
    cpu = config.get("cpu_seconds")
    if cpu is None:
        return ""
    parts = config.get("seconds_by_part", {})
    act = sum(v["cpu"] for k, v in parts.items() if k.startswith("activation"))
    return (f"**Cost:** {cpu / 60:.1f} CPU minutes (one thread; activation patching {act / 60:.1f}, undo "
            f"{sum(v['cpu'] for k, v in parts.items() if k.startswith('undo')) / 60:.1f}, trajectory "
            f"{sum(v['cpu'] for k, v in parts.items() if k.startswith('trajectory')) / 60:.1f}; `config.json` has "
            "every part).")


def render(report_dir: str | Path) -> Report:
    """The page from the CSV tables and ``config.json`` in ``report_dir`` (no model)."""
    report_dir = Path(report_dir)
    if not (report_dir / "activation_patching.csv").exists():
        raise FileNotFoundError(f"{report_dir} has no activation_patching.csv: run the analysis first "
                                f"(python analyses/causal_ppo.py --base smollm2-135m --tuned RUN_DIR).")
    config = read_config(report_dir)
    tables = read_tables(report_dir)
    lines = findings(tables, config)
    swaps = "weight_patching" in tables
    title = ("Where PPO fine-tuning lives, causally: patching, weight swaps, undoing RLHF" if swaps else
             "Where PPO fine-tuning lives, causally: activation patching and undoing RLHF")
    report = Report.at(report_dir, title, source=__file__, claims=causal_claims(tables, config))
    samples = int(config.get("samples", 0) or 0)
    texts = (f"the tuned policy's own samples ({samples} sampled tokens after each prompt)" if samples else
             "the bare prompts alone (`samples: 0`: no sampled continuations, so the positions patched are the "
             "prompts' own, not where the policy's behaviour changed)")
    report.text(
        f"Base `{config.get('base', '?')}` vs tuned `{config.get('tuned_checkpoint', '?')}`, on "
        f"{config.get('n_texts', '?')} texts: {texts}. "
        + ("" if swaps else "Weight swaps (one layer's tuned weights in base) were not run: they cost as much as the "
           "activation patching again and are not part of this study (`--weights` adds them). ")
        + "Every statistic counts each real, non-pad, non-BOS position's next-token distribution once. **Directions:** `into_base` runs the base model with one activation (or one layer's "
        "weights) of the tuned model on the same tokens; `into_tuned` the other way round. **Fraction recovered** = "
        "1 - KL(patched || donor) / KL(receiver || donor), a ratio of means over positions: into base, "
        "1 - KL(patched||tuned) / KL(base||tuned). **Reward proxy** = mean log P(next token contains "
        f"{config.get('reward_substring', '.')!r}); `reward_proxy_recovered` is the patch's share of the gap "
        "between receiver and donor. KL in nats (`rlhf_interp.core.kl.kl_divergence`, exact over the vocabulary). "
        "**Intervals** (95%) are over texts: a percentile bootstrap over texts of the ratio of sums "
        "(`patching_per_text.csv` keeps each text's sums); the sampled rewards of the undo table are paired over "
        "prompts (`undo_prompts.csv`). " + cost_text(config))
    act = tables["activation_patching"]
    report.section("Where the change lives", "Each cell patches one activation of one model into the other at every "
                   "position (the colour bar gives the fraction recovered). The `hook_resid_post` rows (and `hook_resid_mid`, "
                   "when patched) carry every change up to that layer, the sublayer rows only their own output. "
                   f"Patched into base: {config.get('components', '')}; into tuned: "
                   f"{config.get('reverse_components', '') or 'none'}.")
    zero = sorted(int(layer) for layer, g in act.groupby("layer") if (g["fraction_recovered"].fillna(0) == 0).all())
    zero_note = f"; 0 at layers {zero[0]}-{zero[-1]}, where no patch changes anything" if zero else ""
    report.figure("patching_heatmap", figure_patching(act), title="Fraction of the KL recovered, per layer and component",
                  caption=f"Each cell: one patch, `fraction_recovered` of `activation_patching.csv` (1: the patch "
                          "recovers all of the KL to the donor). The colour scale runs over the values' own range "
                          f"(sequential when no value is negative beyond a tenth of the maximum; diverging around 0 otherwise{zero_note}).")
    report.section("Findings", f"On these {config.get('n_texts', '?')} texts, beyond the claims below (a patch chosen "
                   "as the largest on the same texts: its interval leaves the choosing out):\n\n"
                   + "\n".join(f"- {line}" for line in lines))
    report.section("Activation patching", "One patch at a time, at every position. A sublayer-output patch "
                "(`hook_attn_out`, `hook_mlp_out`) imports that component's output as the donor computed it, so "
                "it also carries the effect of earlier changes on it (its *total* effect; these overlap). "
                "`hook_resid_mid` is the residual after attention, patched as `hook_resid_pre` + `hook_attn_out` "
                "(in TransformerLens 4's bridge `hook_resid_mid` is the MLP input only, and replacing it would "
                "leave the skip connection unpatched). The layer-0 `hook_resid_pre` row is the embedding.")
    top_columns = ["direction", "layer", "component", "fraction_recovered", "fraction_low", "fraction_high",
                   "reward_proxy_recovered", "proxy_recovered_low", "proxy_recovered_high", "kl_clean", "n_tokens"]
    report.table("top_patches", act[act["component"].isin(SUBLAYERS)].sort_values("fraction_recovered", ascending=False)
                 .groupby("direction").head(8)[top_columns], title="Strongest sublayer patches per direction",
                 caption="The 8 sublayer-output patches with the largest fraction recovered, per direction; "
                         "`fraction_low` / `fraction_high` and `proxy_recovered_low` / `_high`: 95% percentile "
                         "bootstrap intervals over texts (every column of every patch: `activation_patching.csv`).")
    report.table("activation_patching", act, title="Every patch", show=0)

    parts = tables["residual_attribution"]
    report.section("Additive attribution along the residual stream", "Patching the residual stream just after a "
                "component carries every change up to it; the *increment* of the fraction recovered from just "
                "before the component to just after it is what that component adds given everything earlier. "
                "With the embedding (layer -1) and the final `ln_final` + unembedding step (layer n), the "
                "increments of one direction sum to exactly 1. Negative increments: the component moves the "
                "output away from the donor given the earlier changes.")
    report.figure("residual_attribution", figure_attribution(parts),
                  caption="`increment` of `residual_attribution.csv` per layer (attention left, MLP right).")
    report.table("residual_attribution", parts, title="Increments (share of the KL)",
                 preview=parts.sort_values("increment", ascending=False).groupby("direction").head(6),
                 caption="The 6 largest increments per direction.")

    if "weight_patching" in tables:
        report.section("Weight swaps", "One layer's tuned weights (`attn`: attention + its input norm; `mlp`: MLP + "
                    "its input norm; `block`: both) copied into the base model, restored exactly afterwards. Unlike "
                    "an activation patch, the swapped component runs on the base model's own inputs: where the two "
                    "agree, the change is local to that component's function.")
        report.figure("weight_swaps", figure_weights(tables["weight_patching"], act),
                      title="Weight swap vs activation patch (into base)",
                      caption="Solid: `fraction_recovered` of `weight_patching.csv`; dotted: the sublayer-output "
                              "activation patches of `activation_patching.csv`.")
        report.table("weight_patching", tables["weight_patching"], title="Every swap", show=0)

    if "trajectory" in tables:
        report.section("Along the run", "The same attribution (tuned's `hook_resid_post` into base, layer by layer) "
                    f"for checkpoints {config.get('trajectory_steps', '')}, on the first "
                    f"{config.get('trajectory_texts', '?')} texts. Left: each layer's increment (where the change "
                    "forms); right: the cumulative fraction recovered.")
        report.figure("trajectory_heatmap", figure_trajectory(tables["trajectory_attribution"], tables["trajectory"]),
                      title="Checkpoint x layer",
                      caption="Left: `increment` of `trajectory_attribution.csv` (component `block`); right: "
                              "`fraction_recovered` of `trajectory.csv`.")
        report.table("trajectory_attribution", tables["trajectory_attribution"], show=0)
        report.table("trajectory", tables["trajectory"], show=0)

    undo = tables["undo"]
    report.section("Undo RLHF with one direction", "From the tuned model, at the layers the attribution points to "
                f"({config.get('undo_layers_used', '')}): `ablate_mean` projects the unit mean-difference direction "
                "(tuned - base, `hook_resid_post`) out of every layer's input and outputs (`DirectionAblation`), "
                "`ablate_mean_local` out of that layer's only; "
                "`ablate_pcs<k>` does the same for the top k principal directions of the difference; "
                "`subtract_mean` adds minus the mean difference at that layer (`Steering`, non-BOS positions); "
                "`add_mean` adds it to the *base* model (the other way round; steering the base along the fine-tuning "
                "direction at equal KL is the subject of [edit_vs_finetune](../edit_vs_finetune/README.md)). "
                "`kl_tf_base`: teacher-forced KL(edited || base) per token on the texts; `kl_removed` = 1 - "
                "kl_tf_base / KL(tuned||base); `proxy_gain_kept` and `reward_gain_kept` = (value - base) / "
                "(tuned - base); the sampled columns come from the edited model's own continuations "
                f"({config.get('undo_tokens', '?')} tokens, {config.get('undo_prompts', '?')} prompts, same seed).")
    report.table("undo", undo, title="Undo-RLHF table", show=40)
    if "undo_prompts" in tables:
        report.table("undo_prompts", tables["undo_prompts"], title="Sampled reward per prompt and edit", show=0)
        report.table("undo_per_text", tables["undo_per_text"], title="Teacher-forced sums per text and edit", show=0)
    report.table("patching_per_text", tables["patching_per_text"], title="Per-text sums of every patch", show=0)
    if "trajectory_per_text" in tables:
        report.table("trajectory_per_text", tables["trajectory_per_text"], title="Per-text sums along the run", show=0)
    report.table("texts", tables["texts"], title="Texts patched on", show=3)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.root) / args.name
    if not args.from_csv:
        tables, config = compute(args)
        write_tables(out, tables, config=config)
    render(out).save()
    print("\n".join(f"- {line}" for line in findings(read_tables(out), read_config(out))))
    print(f"report: {out}/README.md and index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
