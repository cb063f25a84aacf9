"""Editing vs fine-tuning, v2: one equal-KL frontier for every way of changing the model.

    python analyses/frontier.py --base smollm2-135m --trajectory runs/periods \\
        --run runs/periods_lora --run runs/periods_freeze0 --run runs/periods_freeze20
    python analyses/frontier.py --render-only        # redraw reports/edit_vs_finetune/ from its CSVs

Every method is measured the same way, on the same held-out prompts, with the same reward, generation
length and sampling seed: sample continuations from the changed model (or the base model with an edit
on), score them, and sum the exact per-token KL(changed || base) along each sample (nats per
sequence; `rlhf_interp.measure.evaluate_edit`). Standard errors are over prompts.

- **steering** the base model along three vectors (`Steering`): the contrastive direction and the PCA
  direction of pairs of (best, worst) base-model samples under the reward, and the fine-tuning direction
  (mean tuned - base activation of the PPO run's last checkpoint); strength = the added vector's norm as a
  fraction of the layer's mean residual norm;
- **rank-one edit** of one MLP's output matrix (`rlhf_interp.frontier.RankOneEdit`, ROME-style: key = the
  prompts' mean MLP hidden activation, value pushed along the direction that raises the reward's target
  tokens; strength = the size of that push);
- **direction ablation** and **weight orthogonalisation** of the contrastive direction (base model) and
  of the fine-tuning direction (PPO model): all-or-nothing edits, placed at their measured KL;
- **fine-tuning**: every checkpoint of a PPO trajectory, and the last checkpoint of each further run
  (LoRA, first N layers frozen), placed at their measured KL;
- **best-of-n** sampling from the base model (KL measured, and analytic log n - (n-1)/n);
- the **base model** (KL 0).

Equal KL: each edit family's strength is searched until its KL is within 5% of each budget
(`rlhf_interp.frontier.equal_kl`). Gao et al. (2022)'s forms are fitted to best-of-n and to the PPO
trajectory. Collateral: per-token KL on unrelated prompts (code, arithmetic, facts, other languages) and
the tokens whose probability moved most. The KL-budgeted edit search (`rlhf_interp.frontier.edit_search`,
Optuna TPE, two objectives) gives the Pareto front of steering over layer x strength x positions.

Compute is split into resumable parts (``--parts``, ``--resume``): each part's tables are kept in
``--work-dir`` and the report is assembled from them.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlhf_interp.core.stats import FIT_R2_MIN
from rlhf_interp.frontier.plot import frontier_figure, is_true, series_label

REPORT_DIR = Path("reports/edit_vs_finetune")
PARTS = ("base", "best_of_n", "steering", "layer_scan", "rank_one", "ablation", "finetune", "search")
TITLE = "Editing vs fine-tuning: reward bought per nat of KL, every method on one axis"
SAMPLES_NOTE = ("Intervals are 95% t intervals over the 16 held-out prompts (one sample each for edits and PPO "
                "checkpoints; best-of-n from a pool per prompt); differences between methods are unpaired (the "
                "per-prompt rows of the edits were not stored), so conservative. Each edit family's layer is chosen "
                "on the prompts it is reported on, and each PPO run is one training seed: re-measuring with held-out "
                "selection, more prompts and seeds is issue 31.")


# ==============================================================================================
# Compute


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


@dataclass
class Context:
    """What every part shares: the base model, prompts, reward, settings and the lazily built pieces."""

    args: argparse.Namespace
    base: Any
    prompts: list[str]
    direction_prompts: list[str]
    work: Path
    notes: list[dict[str, str]] = field(default_factory=list)
    _vectors: dict[str, Any] | None = None
    _tuned: Any = None
    _resid: dict[int, float] | None = None
    _cache: Any = None

    def note(self, part: str, text: str) -> None:
        print(f"[{part}] {text}")
        self.notes.append({"part": part, "note": text})

    @property
    def measure_kwargs(self) -> dict[str, Any]:
        return {"max_new_tokens": self.args.max_new_tokens, "seed": self.args.seed}

    @property
    def collateral_cache(self):
        from rlhf_interp.measure import LogitsCache

        if self._cache is None:
            self._cache = LogitsCache(max_entries=2)
        return self._cache

    def resid_norms(self) -> dict[int, float]:
        """Mean residual norm (hook_resid_post) per layer on the direction prompts."""
        from rlhf_interp.edits import residual_norms

        if self._resid is None:
            df = residual_norms(self.base, self.direction_prompts)
            self._resid = {int(r.layer): float(r.resid_norm) for r in df.itertuples()}
        return self._resid

    def tuned(self):
        """The last checkpoint of the trajectory run (None without one)."""
        from rlhf_interp.bridge import load_model
        from rlhf_interp.frontier import read_run

        if self._tuned is None and self.args.trajectory is not None and self.args.trajectory.exists():
            run = read_run(self.args.trajectory)
            self._tuned = load_model(run.checkpoints[max(run.checkpoints)], device=self.base.cfg.device)
        return self._tuned

    def vectors(self) -> dict[str, Any]:
        """Steering vectors by name, scaled per layer to the residual norm (coefficient 1 = a push as large
        as the residual stream). Built once and saved in the work dir."""
        from rlhf_interp.edits import SteeringVector, contrastive, finetuning_direction, pca_direction
        from rlhf_interp.frontier import reward_pairs, scale_to_residual

        if self._vectors is not None:
            return self._vectors
        folder = self.work / "vectors"
        names = ["contrastive", "PCA"] + (["fine-tuning direction"] if self.tuned() is not None else [])
        files = {n: folder / f"{n.replace(' ', '_').replace('-', '_')}.safetensors" for n in names}
        if all(f.exists() for f in files.values()):
            raw = {n: SteeringVector.load(f) for n, f in files.items()}
        else:
            pairs = reward_pairs(self.base, self.direction_prompts, self.args.reward,
                                 samples_per_prompt=self.args.pair_samples, **self.measure_kwargs)
            self.note("vectors", f"{len(pairs)} (best, worst) sample pairs from {len(self.direction_prompts)} "
                                 f"direction prompts x {self.args.pair_samples} samples")
            raw = {"contrastive": contrastive(self.base, pairs, reduce="mean"),
                   "PCA": pca_direction(self.base, pairs, reduce="mean")}
            if self.tuned() is not None:
                raw["fine-tuning direction"] = finetuning_direction(self.base, self.tuned(), self.direction_prompts)
            for n, vec in raw.items():
                vec.save(files[n])
        self._vectors = {}
        for n, vec in raw.items():
            scaled, dropped = scale_to_residual(self.base, vec, self.direction_prompts)
            if dropped:
                self.note("vectors", f"the {n} vector is zero at layer(s) {dropped} (the models do not differ "
                                     f"there): not used at those layers")
            if scaled.layers:
                self._vectors[n] = scaled
        return self._vectors


def with_collateral(ctx: Context, points: pd.DataFrame, make: Callable[[pd.Series], Any]) -> pd.DataFrame:
    """Add collateral KL columns to each point of an edit family on the base model (``make(row)`` rebuilds
    the point's edit)."""
    from rlhf_interp.frontier import collateral_kl

    extra = [collateral_kl(ctx.base, make(row), cache=ctx.collateral_cache) for _, row in points.iterrows()]
    return pd.concat([points.reset_index(drop=True), pd.DataFrame(extra)], axis=1)


def moved_for(ctx: Context, edit, labels: dict[str, Any], model=None, reference=None) -> pd.DataFrame:
    from rlhf_interp.frontier import top_moved_tokens

    df = top_moved_tokens(model if model is not None else ctx.base, edit, reference=reference, k=ctx.args.top_k,
                          cache=ctx.collateral_cache)
    return df.assign(**labels)


def nearest_budget(points: pd.DataFrame, budget: float) -> pd.Series:
    return points.loc[(points["budget"] - budget).abs().idxmin()]


def part_base(ctx: Context) -> dict[str, pd.DataFrame]:
    from rlhf_interp.measure import evaluate_edit

    row = evaluate_edit(ctx.base, None, ctx.prompts, ctx.args.reward, **ctx.measure_kwargs)
    return {"points": row.assign(method="base model", kind="base", setting="no change")}


def part_best_of_n(ctx: Context) -> dict[str, pd.DataFrame]:
    from rlhf_interp.frontier import evaluate_best_of_n

    summary, per_prompt, _ = evaluate_best_of_n(ctx.base, ctx.prompts, ctx.args.reward, ctx.args.best_of_n,
                                                pool_size=ctx.args.pool_size, batch_size=ctx.args.sample_batch,
                                                **ctx.measure_kwargs)
    points = summary.rename(columns={"kl_mean": "kl_exact_mean", "kl_stderr": "kl_exact_stderr"}).assign(
        method="best-of-n", kind="best-of-n", setting=[f"n={n}" for n in summary["n"]])
    return {"points": points, "bon_prompts": per_prompt}


def steering_families(ctx: Context, names: list[str], layers: list[int]):
    from rlhf_interp.edits import Steering
    from rlhf_interp.frontier import EditFamily

    for name in names:
        vec = ctx.vectors().get(name)
        if vec is None:
            continue
        for layer in [layer for layer in layers if layer in vec.layers]:
            yield EditFamily(f"steer: {name}", lambda s, v=vec, layer=layer: Steering(v, [layer], s),
                             {"kind": "steering", "vector": name, "layer": layer, "setting": f"layer {layer}"},
                             start=ctx.args.steer_start)


def run_families(ctx: Context, families, budgets: list[float], part: str, *, collateral: bool = True,
                 warm_start: bool = False) -> dict[str, pd.DataFrame]:
    """equal_kl for each family (+ collateral per point, moved tokens at the collateral budget)."""
    from rlhf_interp.frontier import equal_kl

    points, evals, moved = [], [], []
    previous: float | None = None
    for family in families:
        if warm_start and previous is not None:
            family.start = previous
        start = time.perf_counter()
        pts, ev = equal_kl(ctx.base, family, ctx.prompts, ctx.args.reward, budgets, rel_tol=ctx.args.rel_tol,
                           **ctx.measure_kwargs)
        hit = pts[pts["hit"]]
        previous = float(hit["strength"].iloc[0]) if len(hit) else previous
        if collateral:
            pts = with_collateral(ctx, pts, lambda row, f=family: f.make(float(row["strength"])))
            row = nearest_budget(pts, ctx.args.collateral_budget)
            moved.append(moved_for(ctx, family.make(float(row["strength"])),
                                   {"method": family.method, "setting": family.columns.get("setting", ""),
                                    "budget": float(row["budget"]), "kl_exact_mean": float(row["kl_exact_mean"])}))
        points.append(pts)
        evals.append(ev)
        reached = ", ".join(f"{b:g}:{'ok' if h else 'miss'}" for b, h in zip(pts["budget"], pts["hit"]))
        print(f"[{part}] {family.method} {family.columns.get('setting', '')}: {len(ev)} evaluations, "
              f"{time.perf_counter() - start:.0f} s; budgets {reached}")
    if not points:
        ctx.note(part, "no usable edit family (every vector is zero at the requested layers)")
        return {}
    out = {"points": pd.concat(points, ignore_index=True),
           "evaluations": pd.concat(evals, ignore_index=True).assign(part=part)}
    if moved:
        out["moved_tokens"] = pd.concat(moved, ignore_index=True)
    return out


def part_steering(ctx: Context) -> dict[str, pd.DataFrame]:
    return run_families(ctx, list(steering_families(ctx, list(ctx.vectors()), ctx.args.layers)), ctx.args.budgets,
                        "steering")


def part_layer_scan(ctx: Context) -> dict[str, pd.DataFrame]:
    from rlhf_interp.edits import resolve_layers

    layers = resolve_layers(ctx.base, ctx.args.scan_layers if ctx.args.scan_layers != ["all"] else "all")
    out = run_families(ctx, list(steering_families(ctx, [ctx.args.scan_vector], layers)), [ctx.args.scan_budget],
                       "layer_scan", collateral=False, warm_start=True)
    return {"layer_scan": out["points"], "evaluations": out["evaluations"]} if out else {}


def part_rank_one(ctx: Context) -> dict[str, pd.DataFrame]:
    from rlhf_interp.frontier import EditFamily, rank_one_edit, target_tokens_for_reward
    from rlhf_interp.reward import get_reward

    targets = target_tokens_for_reward(ctx.base.tokenizer, get_reward(ctx.args.reward))
    ctx.note("rank_one", f"target class: {len(targets)} tokens the reward scores above the empty string, e.g. "
                         f"{[ctx.base.tokenizer.decode([t]) for t in targets[:6]]}")
    norms = ctx.resid_norms()
    families = []
    for layer in ctx.args.rank_one_layers:
        edit = rank_one_edit(ctx.base, layer, ctx.prompts, strength=1.0, target_tokens=targets,
                             covariance_texts=ctx.direction_prompts)
        families.append(EditFamily("rank-one edit", edit.with_strength,
                                   {"kind": "rank-one", "layer": layer, "setting": f"layer {layer}"},
                                   start=ctx.args.steer_start * norms[layer]))
    return run_families(ctx, families, ctx.args.budgets, "rank_one")


def part_ablation(ctx: Context) -> dict[str, pd.DataFrame]:
    """Direction ablation (hooks) and weight orthogonalisation (a new model) of one layer's direction, removed
    everywhere; KL always against the base model."""
    from rlhf_interp.edits import DirectionAblation, orthogonalize_weights
    from rlhf_interp.frontier import collateral_kl
    from rlhf_interp.measure import evaluate_edit

    layer = ctx.args.ablation_layer if ctx.args.ablation_layer >= 0 else int(ctx.base.cfg.n_layers) * 2 // 3
    cases = [("contrastive", ctx.base, "base model")]
    if ctx.tuned() is not None:
        cases.append(("fine-tuning direction", ctx.tuned(), "PPO last checkpoint"))
    else:
        ctx.note("ablation", "no --trajectory run: the fine-tuning direction cannot be ablated from a PPO model")
    rows, moved = [], []
    for name, model, on in cases:
        if name not in ctx.vectors() or layer not in ctx.vectors()[name].layers:
            ctx.note("ablation", f"no usable {name} direction at layer {layer}: its ablation is skipped")
            continue
        direction = ctx.vectors()[name][layer]
        for method in ("direction ablation", "weight orthogonalisation"):
            if method == "direction ablation":
                target, make = model, (lambda: DirectionAblation(direction, "all"))
            else:
                target, make = orthogonalize_weights(model, direction), (lambda: None)
            row = evaluate_edit(target, make(), ctx.prompts, ctx.args.reward, reference=ctx.base,
                                **ctx.measure_kwargs).iloc[0].to_dict()
            row.update(collateral_kl(target, make(), reference=ctx.base, cache=ctx.collateral_cache))
            labels = {"method": method, "kind": "ablation", "vector": name, "layer": layer,
                      "setting": f"{name} (layer {layer}) removed from the {on}"}
            rows.append({**labels, **row})
            moved.append(moved_for(ctx, make(), {"method": method, "setting": labels["setting"],
                                                 "kl_exact_mean": row["kl_exact_mean"]},
                                   model=target, reference=ctx.base))
            del target
    return {"points": pd.DataFrame(rows), "moved_tokens": pd.concat(moved, ignore_index=True)} if rows else {}


def part_finetune(ctx: Context) -> dict[str, pd.DataFrame]:
    """PPO checkpoints at their measured KL: every checkpoint of --trajectory, the last one of each --run.
    Absent run directories are noted (the page says so) and skipped."""
    from rlhf_interp.frontier import checkpoint_points, collateral_kl, read_run, top_moved_tokens

    frames, moved = [], []
    runs = ([(ctx.args.trajectory, "all", True)] if ctx.args.trajectory else []) + \
           [(path, "last", False) for path in ctx.args.run]
    if not runs:
        ctx.note("finetune", "no PPO run directories were given (--trajectory, --run): no fine-tuning points")
    for path, steps, is_trajectory in runs:
        try:
            run = read_run(path)
        except FileNotFoundError as err:
            ctx.note("finetune", f"{err} Skipped." if path.exists() else f"run directory {path} is absent: skipped")
            continue
        last_step = max(run.checkpoints)

        def on_model(tuned, row, last_step=last_step):
            if row["step"] == last_step:
                moved.append(top_moved_tokens(tuned, None, reference=ctx.base, k=ctx.args.top_k,
                                              cache=ctx.collateral_cache)
                             .assign(method=row["method"], setting=f"step {row['step']}",
                                     kl_exact_mean=row["kl_exact_mean"]))
            return collateral_kl(tuned, None, reference=ctx.base, cache=ctx.collateral_cache)

        df = checkpoint_points(ctx.base, run, ctx.prompts, ctx.args.reward, steps=steps, on_model=on_model,
                               **ctx.measure_kwargs)
        frames.append(df.assign(kind="fine-tuning", trajectory=is_trajectory, last=df["step"] == last_step,
                                setting=[f"step {s}" for s in df["step"]]))
    out: dict[str, pd.DataFrame] = {}
    if frames:
        out["points"] = pd.concat(frames, ignore_index=True)
    if moved:
        out["moved_tokens"] = pd.concat(moved, ignore_index=True)
    return out


def part_search(ctx: Context) -> dict[str, pd.DataFrame]:
    from rlhf_interp.edits import resolve_layers
    from rlhf_interp.frontier import edit_search

    vectors = {n: v for n, v in ctx.vectors().items() if n in ("contrastive", "PCA")}
    layers = resolve_layers(ctx.base, ctx.args.search_layers if ctx.args.search_layers != ["all"] else "all")
    result = edit_search(ctx.base, vectors, ctx.prompts, ctx.args.reward, layers=layers,
                         coef_range=tuple(ctx.args.search_coefs), n_trials=ctx.args.search_trials,
                         seed=ctx.args.seed, kl_budget=max(ctx.args.budgets), max_new_tokens=ctx.args.max_new_tokens)
    return {"search_trials": result.trials}


PART_FUNCTIONS: dict[str, Callable[[Context], dict[str, pd.DataFrame]]] = {
    "base": part_base, "best_of_n": part_best_of_n, "steering": part_steering, "layer_scan": part_layer_scan,
    "rank_one": part_rank_one, "ablation": part_ablation, "finetune": part_finetune, "search": part_search,
}


def compute(args: argparse.Namespace) -> None:
    """Run the requested parts (skipping finished ones with --resume), then assemble the report's CSVs."""
    from rlhf_interp.bridge import load_model
    from rlhf_interp.core.io import atomic_write_json
    from rlhf_interp.prompts import load_prompts

    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    parts = PARTS if args.parts == ["all"] else args.parts
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"Unknown part(s) {unknown}; choose from {', '.join(PARTS)} or 'all'.")
    todo = [p for p in parts if not (args.resume and (work / f"{p}.done.json").exists())]
    if todo:
        base = load_model(args.base, frozen=True)
        prompts = load_prompts(args.prompts, limit=args.n_prompts, seed=args.seed)
        others = [p for p in load_prompts(args.prompts, seed=args.seed + 1) if p not in set(prompts)]
        ctx = Context(args, base, prompts, others[:args.direction_prompts], work)
        for part in todo:
            start, cpu_start = time.perf_counter(), time.process_time()
            tables = PART_FUNCTIONS[part](ctx)
            for name, df in tables.items():
                df.to_csv(work / f"{part}__{name}.csv", index=False)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            atomic_write_json(work / f"{part}.done.json", {
                "part": part, "seconds": seconds, "cpu_seconds": cpu, "tables": list(tables),
                "notes": [n for n in ctx.notes if n["part"] in (part, "vectors")]})
            print(f"[{part}] done in {seconds:.0f} s ({cpu:.0f} s CPU)")
    assemble(args, parts)


def assemble(args: argparse.Namespace, parts) -> None:
    """Concatenate the parts' tables into the report directory (points, evaluations, ...)."""
    from rlhf_interp.report import write_tables

    work = args.work_dir
    tables: dict[str, list[pd.DataFrame]] = {}
    timings, notes = [], []
    for part in PARTS:
        done = work / f"{part}.done.json"
        if not done.exists():
            if part in parts:
                notes.append({"part": part, "note": "not computed"})
            continue
        info = json.loads(done.read_text())
        timings.append({"part": part, "seconds": info["seconds"], "cpu_seconds": info.get("cpu_seconds", np.nan)})
        notes.extend(info.get("notes", []))
        for name in info["tables"]:
            tables.setdefault(name, []).append(pd.read_csv(work / f"{part}__{name}.csv"))
    merged = {name: pd.concat(frames, ignore_index=True) for name, frames in tables.items()}
    if "points" not in merged or not (merged["points"]["kind"] == "base").any():
        raise SystemExit("The base part has not been computed: run with --parts base (or all).")
    merged["points"] = tidy_points(merged["points"])
    merged["timings"] = pd.DataFrame(timings)
    merged["notes"] = pd.DataFrame(notes, columns=["part", "note"]).drop_duplicates()
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["wall_seconds_total"] = float(sum(t["seconds"] for t in timings))
    config["cpu_seconds_total"] = float(np.nansum([t["cpu_seconds"] for t in timings]))
    write_tables(args.out, merged, config=config)


POINT_COLUMNS = ["method", "kind", "setting", "vector", "layer", "strength", "budget", "hit", "n", "step", "run",
                 "trajectory", "last", "freeze_layers", "lora_r", "wall_seconds", "reward_mean", "reward_stderr",
                 "kl_exact_mean", "kl_exact_stderr", "kl_analytic", "kl_per_token", "entropy_mean", "distinct_2",
                 "collateral_kl_mean", "collateral_kl_stderr", "collateral_kl_max", "n_sequences"]


def tidy_points(points: pd.DataFrame) -> pd.DataFrame:
    """One row per point, the documented columns, plus reward_gain (over the base model; best-of-n: over its own
    n = 1 estimate from the same samples) and reward_per_nat (gain / KL)."""
    points = points.copy()
    for col in POINT_COLUMNS:
        if col not in points:
            points[col] = np.nan
    for col in ("trajectory", "last"):
        points[col] = points[col].fillna(False).astype(bool)
    base_reward = float(points.loc[points["kind"] == "base", "reward_mean"].iloc[0])
    points.loc[points["kind"] == "base", ["kl_exact_mean", "kl_exact_stderr"]] = 0.0
    points["reward_gain"] = points["reward_mean"] - base_reward
    bon = points["kind"] == "best-of-n"
    if (bon & (points["n"] == 1)).any():  # best-of-n gains are over its own n = 1: the same samples, no offset noise
        points.loc[bon, "reward_gain"] = points.loc[bon, "reward_mean"] - float(
            points.loc[bon & (points["n"] == 1), "reward_mean"].iloc[0])
    points["reward_per_nat"] = points["reward_gain"] / points["kl_exact_mean"].where(points["kl_exact_mean"] > 0)
    return points[POINT_COLUMNS + ["reward_gain", "reward_per_nat"]]


# ==============================================================================================
# Render (CSVs in, page out; no model)


def interpolate_at(points: pd.DataFrame, budget: float) -> dict[str, Any] | None:
    """Reward gain at ``budget`` between the two measured points around it (linear in d = sqrt(KL), Gao's axis;
    a KL-0 point anchors the low end); None outside the measured range (no extrapolation). Only for a curve whose
    KL rises with its parameter (best-of-n's n), never for a training trajectory."""
    pts = points[points["kl_exact_mean"] >= 0].sort_values("kl_exact_mean")
    d = np.sqrt(pts["kl_exact_mean"].to_numpy())
    target = math.sqrt(budget)
    below, above = np.where(d <= target)[0], np.where(d >= target)[0]
    if not len(below) or not len(above):
        return None
    i, j = below[-1], above[0]
    t = 0.0 if i == j else (target - d[i]) / (d[j] - d[i])
    g, s = pts["reward_gain"].to_numpy(), pts["reward_stderr"].to_numpy()
    return {"reward_gain": (1 - t) * g[i] + t * g[j], "reward_stderr": (1 - t) * s[i] + t * s[j],
            "from": f"{pts['setting'].iloc[i]} .. {pts['setting'].iloc[j]}", "i": pts.index[i], "j": pts.index[j],
            "t": t}


def bon_at_budget(points: pd.DataFrame, bon_prompts: pd.DataFrame | None, budget: float):
    """Best-of-n's measured reward at ``budget`` with its interval over prompts: each prompt's best-of-n reward
    interpolated in sqrt(KL) between the two n whose mean KL brackets the budget (KL rises with n), then a t
    interval over the prompts. None outside the measured range."""
    from rlhf_interp.core import stats

    bon = points[points["kind"] == "best-of-n"]
    got = interpolate_at(bon, budget) if len(bon) else None
    if got is None:
        return None, got
    n_i, n_j = bon.loc[got["i"], "n"], bon.loc[got["j"], "n"]
    if bon_prompts is None or not len(bon_prompts):
        mean = float(bon.loc[got["i"], "reward_mean"] * (1 - got["t"]) + bon.loc[got["j"], "reward_mean"] * got["t"])
        return stats.summary_interval(mean, got["reward_stderr"], 16), got
    a = bon_prompts[bon_prompts["n"] == n_i].set_index("prompt_idx")["reward"]
    b = bon_prompts[bon_prompts["n"] == n_j].set_index("prompt_idx")["reward"]
    per_prompt = (1 - got["t"]) * a + got["t"] * b.reindex(a.index)
    pool = int(bon_prompts["pool_size"].max())
    return stats.mean_interval(per_prompt.to_numpy(), n={"prompts": len(per_prompt), "samples_per_prompt": pool,
                                                         "seeds": 1}), got


def _se(iv) -> float:
    """The standard error behind a t interval (half-width / t quantile)."""
    from scipy import stats as sps

    n = int(iv.n.get("prompts", 2))
    return float(iv.half_width / sps.t.ppf(0.5 + iv.level / 2, max(1, n - 1)))


def budget_table(points: pd.DataFrame, budgets: list[float], bon_prompts: pd.DataFrame | None = None
                 ) -> pd.DataFrame:
    """Reward at each budget per method, each with its 95% interval over prompts: edit families at their bisected
    strength (the best of their layers, chosen on the same prompts it is reported on: marked as a selection),
    best-of-n interpolated between its measured n. The PPO trajectory is not interpolated: its KL is not monotone
    in the training step, so no point between two checkpoints was measured."""
    from rlhf_interp.core import stats

    rows = []
    base = points[points["kind"] == "base"].iloc[0]
    base_reward = float(base["reward_mean"])
    traj = points[(points["kind"] == "fine-tuning") & is_true(points["trajectory"])]
    for budget in budgets:
        fam = points[points["kind"].isin(["steering", "rank-one"]) & (points["budget"] == budget)]
        for method, g in fam.groupby("method", sort=False):
            hit = g[is_true(g["hit"])]
            if hit.empty:
                rows.append({"budget": budget, "method": method, "how": "budget not reached at any layer"})
                continue
            best = hit.loc[hit["reward_mean"].idxmax()]
            n = int(best["n_sequences"]) if pd.notna(best.get("n_sequences")) else 16
            iv = stats.summary_interval(best["reward_mean"], best["reward_stderr"], n)
            rows.append({"budget": budget, "method": method, "reward_mean": best["reward_mean"],
                         "reward_low": iv.low, "reward_high": iv.high, "reward_stderr": best["reward_stderr"],
                         "kl_exact_mean": best["kl_exact_mean"], "n_prompts": n, "samples_per_prompt": 1,
                         "selected_from": len(hit),
                         "how": f"bisected; best of {len(hit)} layer(s), chosen on the same {n} prompts it is "
                                f"reported on (selection not held out: optimistic)", "setting": best["setting"]})
        iv, got = bon_at_budget(points, bon_prompts, budget)
        rows.append({"budget": budget, "method": "best-of-n", **({
            "reward_mean": iv.value, "reward_low": iv.low, "reward_high": iv.high,
            "reward_stderr": _se(iv), "kl_exact_mean": budget,
            "n_prompts": iv.n.get("prompts"), "samples_per_prompt": iv.n.get("samples_per_prompt"), "selected_from": 1,
            "how": "measured reward per prompt interpolated in sqrt(KL) between two n", "setting": got["from"]}
            if iv is not None else {"how": "outside the measured KL range"})})
        if len(traj):
            rows.append({"budget": budget, "method": f"{traj['method'].iloc[0]} (trajectory)",
                         "how": "not interpolated: the checkpoints' KL is not monotone in the training step"})
    df = pd.DataFrame(rows, columns=["budget", "method", "reward_mean", "reward_low", "reward_high", "reward_stderr",
                                     "kl_exact_mean", "n_prompts", "samples_per_prompt", "selected_from", "how",
                                     "setting"])
    df.insert(3, "reward_gain", df["reward_mean"] - base_reward)
    df["reward_per_nat"] = df["reward_gain"] / df["budget"]
    return df


def fits_table(points: pd.DataFrame) -> pd.DataFrame:
    """Gao et al. fits. Best-of-n gains are over its own n = 1 estimate (same samples, less noise); PPO gains are
    over the base model's row (same prompts and seed). ``offset``: the reward at KL 0 the gain is added to."""
    from rlhf_interp.frontier import fit_gao

    rows = []
    bon = points[points["kind"] == "best-of-n"]
    if len(bon):
        offset = float(bon.loc[bon["n"] == 1, "reward_mean"].iloc[0]) if (bon["n"] == 1).any() \
            else float(points.loc[points["kind"] == "base", "reward_mean"].iloc[0])
        gain = bon["reward_mean"] - offset
        for name, kl in (("best-of-n (measured KL)", bon["kl_exact_mean"]), ("best-of-n (analytic KL)", bon["kl_analytic"])):
            rows.append({"method": name, "offset": offset, "kl_min": kl[kl > 0].min(), "kl_max": kl.max(),
                         **fit_gao(kl, gain, "bon", bon["reward_stderr"])})
    traj = points[(points["kind"] == "fine-tuning") & is_true(points["trajectory"])]
    if len(traj):
        offset = float(points.loc[points["kind"] == "base", "reward_mean"].iloc[0])
        kl = traj["kl_exact_mean"]
        rows.append({"method": f"{traj['method'].iloc[0]} (trajectory)", "offset": offset,
                     "kl_min": kl[kl > 0].min(), "kl_max": kl.max(), **fit_gao(traj["kl_exact_mean"], traj["reward_mean"] - offset, "rl", traj["reward_stderr"])})
    out = pd.DataFrame(rows)
    if len(out):  # the one criterion for drawing a fit (rlhf_interp.core.stats.FIT_R2_MIN)
        out["drawn"] = [stats_fit_is_drawn(r) for r in out["r2"]]
    return out


def stats_fit_is_drawn(r2: float) -> bool:
    from rlhf_interp.core.stats import fit_is_drawn

    return fit_is_drawn(r2)


def layer_scan_figure(scan: pd.DataFrame, reward_label: str):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    scan = scan.sort_values("layer")
    hit = scan[is_true(scan["hit"])]
    axes[0].errorbar(hit["layer"], hit["reward_mean"], yerr=hit["reward_stderr"], marker="o", capsize=2)
    axes[0].set_xlabel("layer steered")
    axes[0].set_ylabel(f"{reward_label} at {scan['budget'].iloc[0]:g} nats")
    axes[1].plot(scan["layer"], scan["strength"], marker="o")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("layer steered")
    axes[1].set_ylabel("strength that spends the budget\n(push / residual norm)")
    for ax in axes:
        ax.grid(True, alpha=0.2)
    fig.tight_layout()
    return fig


def pareto_figure(trials: pd.DataFrame, reward_label: str):
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    positive = trials[trials["kl_mean"] > 0]
    sc = ax.scatter(positive["kl_mean"], positive["reward_mean"], c=positive["layer"], cmap="viridis", s=22,
                    alpha=0.8, label="trial (colour: layer)")
    front = trials[is_true(trials["pareto"]) & (trials["kl_mean"] > 0)].sort_values("kl_mean")
    ax.plot(front["kl_mean"], front["reward_mean"], color="red", marker="o", mfc="none", ms=9, lw=1,
            label="Pareto front")
    for _, r in front.iterrows():
        ax.annotate(f"L{int(r['layer'])} {r['positions']} x{r['coef']:.2g}", (r["kl_mean"], r["reward_mean"]),
                    fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    if len(positive):
        ax.set_xlim(positive["kl_mean"].min() / 2, positive["kl_mean"].max() * 2)
    fig.colorbar(sc, ax=ax, label="layer")
    ax.set_xlabel("KL per sequence (nats, log)")
    ax.set_ylabel(reward_label)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    return fig


def freezing_table(points: pd.DataFrame) -> pd.DataFrame:
    """The last checkpoint of each further PPO run (--run: same length, different freezing or LoRA); the
    trajectory's last checkpoint only when there is no other run (its length differs, so it is not comparable)."""
    ft = points[(points["kind"] == "fine-tuning") & is_true(points["last"])]
    if (~is_true(ft["trajectory"])).any():
        ft = ft[~is_true(ft["trajectory"])]
    cols = ["method", "freeze_layers", "lora_r", "step", "wall_seconds", "reward_mean", "reward_stderr",
            "kl_exact_mean", "kl_exact_stderr", "reward_gain", "reward_per_nat", "collateral_kl_mean"]
    return ft[cols].sort_values(["lora_r", "freeze_layers"]).reset_index(drop=True)


def freezing_figure(freezing: pd.DataFrame):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for lora, g in freezing.groupby(freezing["lora_r"].fillna(0) > 0):
        name = "LoRA" if lora else "full weights"
        g = g.sort_values("freeze_layers")
        axes[0].plot(g["freeze_layers"], g["reward_per_nat"], marker="o", label=name)
        axes[1].plot(g["freeze_layers"], g["wall_seconds"] / 60, marker="o", label=name)
    axes[0].set_ylabel("reward gain per nat of KL")
    axes[1].set_ylabel("training wall time (min)")
    for ax in axes:
        ax.set_xlabel("first N layers frozen")
        ax.grid(True, alpha=0.2)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def collateral_figure(points: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    pts = points[points["collateral_kl_mean"].notna() & (points["kl_exact_mean"] > 0)]
    for i, (method, g) in enumerate(pts.groupby("method", sort=False)):
        from rlhf_interp.report.plots import series_style

        style = series_style(i)
        ax.errorbar(g["kl_exact_mean"], g["collateral_kl_mean"], yerr=g["collateral_kl_stderr"], ls="none",
                    marker=style["marker"], color=style["color"], label=method, ms=5, capsize=2)
    ax.set_xscale("log")
    top = float((pts["collateral_kl_mean"] + pts["collateral_kl_stderr"].fillna(0)).max()) if len(pts) else 1.0
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylim(0, max(top, 1e-3) * 2)
    if len(pts):
        ax.set_xlim(float(pts["kl_exact_mean"].min()) / 1.5, float(pts["kl_exact_mean"].max()) * 1.5)
    ax.set_xlabel("KL on the target prompts (nats per sequence, log)")
    ax.set_ylabel("collateral KL on unrelated prompts\n(nats per token)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    return fig


def _row_interval(row: pd.Series):
    from rlhf_interp.core import stats

    n = int(row["n_prompts"]) if pd.notna(row.get("n_prompts")) else 16
    return stats.Interval(float(row["reward_mean"]), float(row["reward_low"]), float(row["reward_high"]),
                          n={"prompts": n})


def frontier_claims(points: pd.DataFrame, table: pd.DataFrame, scan: pd.DataFrame | None, freezing: pd.DataFrame,
                    headline_budgets, tokens: int = 24) -> list:
    """The page's claims: at each headline budget the method with the most reward and its difference from the
    runner-up (with a verdict); the PPO trajectory's non-monotone KL; the freezing and layer questions."""
    from rlhf_interp.core import stats
    from rlhf_interp.report.claims import Claim

    out = []
    base = points[points["kind"] == "base"].iloc[0]
    n_base = int(base["n_sequences"]) if pd.notna(base.get("n_sequences")) else 16
    edit_n = {"prompts": n_base, "samples_per_prompt": 1, "seeds": 1}
    for budget in headline_budgets:
        g = table[(table["budget"] == budget) & table["reward_mean"].notna()]
        if len(g) < 2:
            continue
        ranked = g.sort_values("reward_mean", ascending=False)
        best, second = ranked.iloc[0], ranked.iloc[1]
        tag = f"{budget:g}".replace(".", "_")

        def sel(row):
            k = int(row["selected_from"]) if pd.notna(row.get("selected_from")) else 1
            return (f" (the best of {k} layers, chosen on the same prompts: optimistic)" if k > 1 else "")

        def n_of(row):  # rows of older CSVs carry no counts: the base model's prompts, one sample each
            prompts = row.get("n_prompts")
            samples = row.get("samples_per_prompt")
            return {"prompts": int(prompts) if pd.notna(prompts) else n_base,
                    "samples_per_prompt": int(samples) if pd.notna(samples) else 1, "seeds": 1}

        iv = _row_interval(best)
        out.append(Claim.estimate(
            f"most_reward_at_{tag}_nats", "At {budget} {nats} of KL per sequence the highest point estimate of reward is {method}'s: "
            "{value} {ci} periods per {tokens} tokens{selection}.", iv, n=n_of(best),
            params={"tokens": tokens, "budget": f"{budget:g}", "nats": "nat" if budget == 1 else "nats", "method": best["method"], "selection": sel(best)}))
        diff = stats.summary_difference(best["reward_mean"], best["reward_stderr"], iv.n["prompts"],
                                        second["reward_mean"], second["reward_stderr"], n_of(second)["prompts"],
                                        note="unpaired: per-prompt rows of the edits are not stored")
        out.append(Claim.compare(
            f"top_two_at_{tag}_nats", "Its lead over {second}{selection}: {value} {ci}; {verdict}.", diff,
            best["method"], second["method"], n={"prompts": min(n_of(best)["prompts"], n_of(second)["prompts"]),
                                                 "seeds": 1},
            params={"second": second["method"], "selection": sel(second)}))
    traj = points[(points["kind"] == "fine-tuning") & is_true(points["trajectory"])].sort_values("step")
    if len(traj) >= 2:
        peak = traj.loc[traj["reward_mean"].idxmax()]
        last = traj.iloc[-1]
        if peak.name != last.name:
            diff = stats.summary_difference(peak["reward_mean"], peak["reward_stderr"], 16, last["reward_mean"],
                                            last["reward_stderr"], 16)
            out.append(Claim.compare(
                "trajectory_not_monotone", "The PPO trajectory is not interpolated between checkpoints: step "
                "{peak_step} ({peak_kl} nats) minus step {last_step} ({last_kl} nats, less KL): {value} {ci} "
                "periods; {verdict}.", diff, f"step {int(peak['step'])}", f"step {int(last['step'])}", n=edit_n,
                params={"peak_step": int(peak["step"]), "last_step": int(last["step"]),
                        "peak_kl": f"{peak['kl_exact_mean']:.2f}", "last_kl": f"{last['kl_exact_mean']:.2f}"},
                headline=False))
    if len(freezing) >= 2:
        fr = freezing.dropna(subset=["reward_per_nat"])
        top = fr.loc[fr["reward_per_nat"].idxmax()]
        kl, kl_se = float(top["kl_exact_mean"]), float(top["kl_exact_stderr"])
        gain_se = math.hypot(float(top["reward_stderr"]), float(base["reward_stderr"]))
        ratio = float(top["reward_gain"]) / kl
        se = math.hypot(gain_se / kl, ratio * kl_se / kl)  # delta method
        iv = stats.summary_interval(ratio, se, 16, units={"prompts": 16, "samples_per_prompt": 1, "seeds": 1},
                                    note="one training seed per run: seed-to-seed variation not included")
        out.append(Claim.estimate(
            "freezing_top_per_nat", "Among the short PPO runs ({runs} runs, one seed each) {method} has the highest "
            "reward gain per nat, {value} {ci} (delta-method interval).", iv,
            params={"runs": len(fr), "method": top["method"]}, headline=False))
        out.append(Claim.not_measured(
            "freezing_ranking", "Which number of frozen layers buys the most reward per nat: not yet measured with "
            "enough samples (one training seed per run; the top run's interval is wider than the spread between runs).",
            n={"runs": len(fr), "seeds": 1, "prompts": 16}))
    if scan is not None and len(scan[is_true(scan["hit"])]) >= 2:
        hit = scan[is_true(scan["hit"])].sort_values("layer")
        first, last = hit.iloc[0], hit.iloc[-1]
        diff = stats.summary_difference(last["reward_mean"], last["reward_stderr"], int(last["n_sequences"]),
                                        first["reward_mean"], first["reward_stderr"], int(first["n_sequences"]))
        out.append(Claim.compare(
            "later_layer", "Does a later steering layer buy more reward at equal KL? At {budget} nats the "
            "{vector} vector at layer {late} minus layer {early}: {value} {ci}; {verdict} (the best of the "
            "{layers} scanned layers is not reported: chosen on the same prompts).", diff,
            f"layer {int(last['layer'])}", f"layer {int(first['layer'])}", n=edit_n,
            params={"budget": f"{hit['budget'].iloc[0]:g}", "vector": hit["vector"].iloc[0],
                    "late": int(last["layer"]), "early": int(first["layer"]), "layers": len(hit)}))
    out.append(Claim.not_measured(
        "editing_vs_finetuning", "Whether editing buys more reward per nat than fine-tuning: not yet measured with "
        "enough samples (one sample per prompt, one seed per run, layers chosen on the prompts they are reported on).",
        n=edit_n))
    return out


def optional_table(report_dir: Path, name: str) -> pd.DataFrame | None:
    path = report_dir / f"{name}.csv"
    return pd.read_csv(path) if path.exists() else None


def render(report_dir: Path):
    """The page, from the CSVs in ``report_dir`` alone."""
    from rlhf_interp.report import Report, read_config, read_table
    from rlhf_interp.report.charts import xy_chart

    report_dir = Path(report_dir)
    config = read_config(report_dir)
    points = tidy_points(read_table(report_dir, "points"))  # derived columns recomputed: the CSV is the input
    notes = optional_table(report_dir, "notes")
    scan = optional_table(report_dir, "layer_scan")
    trials = optional_table(report_dir, "search_trials")
    moved = optional_table(report_dir, "moved_tokens")
    timings = optional_table(report_dir, "timings")
    budgets = [float(b) for b in config.get("budgets", sorted(points["budget"].dropna().unique()))]
    reward_label = f"reward ({config.get('reward', 'reward')}) per continuation"
    fits = fits_table(points)
    table = budget_table(points, budgets, optional_table(report_dir, "bon_prompts"))
    freezing = freezing_table(points)
    claims = frontier_claims(points, table, scan, freezing,
                             [b for b in (1.0, 2.0, 4.0) if b in budgets] or budgets[:3],
                             tokens=int(config.get("max_new_tokens", 24)))
    lines = [c.sentence() for c in claims]
    wall_min = config.get("wall_seconds_total", float("nan")) / 60
    cpu_min = config.get("cpu_seconds_total", float("nan")) / 60
    report = Report.at(report_dir, TITLE, source=Path(__file__), claims=claims)
    report.text(__doc__.split("\n\n", 2)[2].split("Compute is split")[0])
    report.section("Answer", "\n\n".join(lines) + "\n\n" + SAMPLES_NOTE)
    missing = notes[notes["part"].isin(["finetune", "ablation"]) | notes["note"].str.contains("not computed")] \
        if notes is not None and len(notes) else None
    if missing is not None and len(missing):
        report.text("**Missing pieces.** " + " ".join(f"{r.part}: {r.note}." for r in missing.itertuples()))
    chart_df = points[points["kind"] != "base"].assign(label=lambda d: d.apply(series_label, axis=1))
    chart = xy_chart(chart_df[chart_df["kl_exact_mean"] > 0], "kl_exact_mean", "reward_mean", series="label",
                     error="reward_stderr", hover=["setting", "strength", "budget", "kl_exact_stderr",
                                                   "collateral_kl_mean"],
                     xlabel="KL per sequence (nats)", ylabel=reward_label, mode="lines+markers", log_x=True)
    report.section("The frontier")
    drawn = fits[fits["drawn"]] if len(fits) else fits
    report.figure("frontier", frontier_figure(points, drawn, reward_label), chart=chart,
                  caption="Reward against KL(changed || base) per sequence, log KL axis; bars are standard errors over "
                          "prompts (both axes). Lines join one edit family's points at the KL budgets "
                          f"{', '.join(f'{b:g}' for b in budgets)} nats (red rings: the search ended outside 5% of the "
                          "budget; dashed: rank-one edits); stars: PPO checkpoints, not joined (their KL is not "
                          "monotone in the training step); diamonds: best-of-n at its measured KL; "
                          "X: ablations; dotted: Gao et al. fits, drawn only where they fit (R² ≥ "
                          f"{FIT_R2_MIN:g}; drawn: {', '.join(fits.loc[fits['drawn'], 'method']) if len(fits) else 'none'}; "
                          f"not drawn: {', '.join(f'{m} (R² {r:.2f})' for m, r in fits.loc[~fits['drawn'], ['method', 'r2']].itertuples(index=False)) if len(fits) else 'none'}) "
                          "from half to twice the KL range they were fitted on. Points at KL 0 (the base model, best-of-1, an unchanged model) sit on the left "
                          "edge: KL 0 cannot be drawn on a log axis.")
    report.table("reward_at_budget", table, caption="Reward at each KL budget per method, measured, with its 95% "
                 "interval over prompts (reward_low, reward_high). Edit families: the best of their layers whose "
                 "strength was bisected to within 5% of the budget, **chosen on the same prompts it is reported on** "
                 "(selected_from: how many layers it is the best of; an optimistic number). Best-of-n: each prompt's "
                 "measured best-of-n reward interpolated linearly in sqrt(KL) between the two n around the budget "
                 "(its KL rises with n), never extrapolated. The PPO trajectory is not interpolated: its KL is not "
                 "monotone in the training step. reward_gain = reward_mean - the base model's reward; reward_per_nat = "
                 "reward_gain / budget.", show=60)
    report.table("fits", fits, caption="Gao et al. (2022) forms fitted by weighted least squares to the reward gain "
                 "over the base model, d = sqrt(KL): best-of-n R = d (alpha - beta d), PPO R = d (alpha - beta log d). "
                 f"drawn: R² ≥ {FIT_R2_MIN:g}, the one criterion for drawing a fit on the figure.")
    report.table("points", points, caption="Every point (one row per model or edit setting).", show=25)
    if scan is not None and len(scan):
        report.section("Does a later layer cost less KL for the same reward?")
        report.figure("layer_scan", layer_scan_figure(scan, reward_label),
                      caption=f"Steering with the {scan['vector'].iloc[0]} vector at every scanned layer, strength "
                              f"bisected to {scan['budget'].iloc[0]:g} nats per sequence: reward reached (left) and the "
                              "strength that spends the budget (right).")
        report.table("layer_scan", scan, show=0)
    if trials is not None and len(trials):
        report.section("KL-budgeted edit search (Pareto front)")
        report.figure("pareto", pareto_figure(trials, reward_label),
                      caption=f"{len(trials)} Optuna TPE trials (seed {config.get('seed')}) over vector x layer x "
                              "strength x positions; red: the Pareto front (max reward, min KL) among trials within "
                              f"{max(budgets):g} nats.")
        report.table("search_trials", trials.sort_values("number"), caption="All trials; pareto marks the front.",
                     show=0)
    report.section("Freezing study")
    if len(freezing):
        report.figure("freezing", freezing_figure(freezing),
                      caption="Last checkpoint of each PPO run: reward gain per nat of KL and training wall time "
                              "against the number of frozen bottom layers.")
        report.table("freezing", freezing, caption="Last checkpoint of each PPO run of the freezing study (the "
                                                   "trajectory's runs are longer and are not in this comparison).")
    else:
        report.text("No PPO runs were given (see the missing pieces above): no freezing study.")
    report.section("Side effects on unrelated prompts")
    if points["collateral_kl_mean"].notna().any():
        report.figure("collateral", collateral_figure(points),
                      caption="Per-token KL(changed || base) teacher-forced on 16 unrelated prompts (code, arithmetic, "
                              "facts, instructions, French), against the KL spent on the target prompts. Best-of-n "
                              "does not change the model's per-token distribution and is not shown.")
    if moved is not None and len(moved):
        top = moved[moved["rank"] <= 5]
        report.table("moved_tokens", moved, caption=f"Tokens whose probability on the unrelated prompts moved most "
                     f"(mean over positions), per method near {config.get('collateral_budget')} nats (PPO: last "
                     "checkpoint; ablations: their only point). Preview: top 5 each way.", preview=top, show=len(top))
    if timings is not None and len(timings):
        report.table("timings", timings, caption=f"Compute per part (seconds): {wall_min:.1f} min wall, {cpu_min:.1f} "
                     "min CPU (all threads of the process) in total.")
    if notes is not None and len(notes):
        report.table("notes", notes, caption="What each part recorded (and what was skipped).")
    return report


# ==============================================================================================


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="smollm2-135m", help="the model every method starts from")
    p.add_argument("--trajectory", type=Path, default=None, help="PPO run directory: every checkpoint is a point")
    p.add_argument("--run", type=Path, action="append", default=[],
                   help="another PPO run directory (LoRA, frozen layers): its last checkpoint (repeatable)")
    p.add_argument("--prompts", default="default")
    p.add_argument("--n-prompts", type=int, default=16, help="held-out prompts every method is measured on")
    p.add_argument("--direction-prompts", type=int, default=64, help="other prompts, for vectors and covariances")
    p.add_argument("--pair-samples", type=int, default=4, help="base samples per direction prompt for reward pairs")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--reward", default="char_count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budgets", type=floats, default=floats("0.5,1,2,4,8"), help="KL budgets, nats per sequence")
    p.add_argument("--rel-tol", type=float, default=0.05, help="budget tolerance (relative)")
    p.add_argument("--layers", type=ints, default=ints("4,12,20,28"), help="steering layers bisected at every budget")
    p.add_argument("--rank-one-layers", type=ints, default=ints("4,12,20,28"))
    p.add_argument("--steer-start", type=float, default=0.1,
                   help="first strength tried (push / residual norm); rank-one: times the residual norm")
    p.add_argument("--scan-layers", type=lambda t: ["all"] if t == "all" else ints(t), default=["all"])
    p.add_argument("--scan-budget", type=float, default=2.0)
    p.add_argument("--scan-vector", default="contrastive")
    p.add_argument("--ablation-layer", type=int, default=-1, help="layer whose direction is ablated (-1: 2/3 depth)")
    p.add_argument("--best-of-n", type=ints, default=ints("1,2,4,8,16,32"))
    p.add_argument("--pool-size", type=int, default=64)
    p.add_argument("--sample-batch", type=int, default=128, help="sequences per generate call for best-of-n")
    p.add_argument("--search-trials", type=int, default=40)
    p.add_argument("--search-layers", type=lambda t: ["all"] if t == "all" else ints(t), default=["all"])
    p.add_argument("--search-coefs", type=floats, default=floats("0.01,1"), help="strength range (push / resid norm)")
    p.add_argument("--collateral-budget", type=float, default=2.0)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--parts", type=lambda t: t.split(","), default=["all"], help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--resume", action="store_true", help="skip parts already finished in --work-dir")
    p.add_argument("--work-dir", type=Path, default=Path("runs/frontier"))
    p.add_argument("--out", type=Path, default=REPORT_DIR)
    p.add_argument("--render-only", action="store_true", help="redraw the page from the CSVs in --out")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if not args.render_only:
        compute(args)
    out = render(args.out).save()
    print(f"report: {out}/index.html")


if __name__ == "__main__":
    main()
