"""Running the equal-KL frontier study in resumable parts: the shared context (base model, prompts, reward,
steering vectors scaled to the residual norm, the tuned model), edit families bisected to KL budgets with their
collateral KL and moved tokens, and the part runner that keeps each part's tables in a work directory and
assembles them into the report directory.

Why in the package: this is the machinery of measuring any set of methods at equal KL; ``analyses/frontier.py``
keeps only its choices (which parts, which vectors and layers, which runs) and its page.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

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


def compute(args: argparse.Namespace, parts_all: tuple[str, ...], functions: dict[str, Callable[[Context], dict[str, pd.DataFrame]]],
            tidy: Callable[[pd.DataFrame], pd.DataFrame], write: Callable[..., Any]) -> None:
    """Run the requested parts (skipping finished ones with --resume), then assemble the report's CSVs."""
    from rlhf_interp.bridge import load_model
    from rlhf_interp.core.io import atomic_write_json
    from rlhf_interp.prompts import load_prompts

    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    parts = parts_all if args.parts == ["all"] else args.parts
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"Unknown part(s) {unknown}; choose from {', '.join(parts_all)} or 'all'.")
    todo = [p for p in parts if not (args.resume and (work / f"{p}.done.json").exists())]
    if todo:
        base = load_model(args.base, frozen=True)
        prompts = load_prompts(args.prompts, limit=args.n_prompts, seed=args.seed)
        others = [p for p in load_prompts(args.prompts, seed=args.seed + 1) if p not in set(prompts)]
        ctx = Context(args, base, prompts, others[:args.direction_prompts], work)
        for part in todo:
            start, cpu_start = time.perf_counter(), time.process_time()
            tables = functions[part](ctx)
            for name, df in tables.items():
                df.to_csv(work / f"{part}__{name}.csv", index=False)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            atomic_write_json(work / f"{part}.done.json", {
                "part": part, "seconds": seconds, "cpu_seconds": cpu, "tables": list(tables),
                "notes": [n for n in ctx.notes if n["part"] in (part, "vectors")]})
            print(f"[{part}] done in {seconds:.0f} s ({cpu:.0f} s CPU)")
    assemble(args, parts, parts_all, tidy, write)


def assemble(args: argparse.Namespace, parts, parts_all: tuple[str, ...], tidy: Callable[[pd.DataFrame], pd.DataFrame],
             write: Callable[..., Any]) -> None:
    """Concatenate the parts' tables and hand them to ``write(out, tables, config)`` (the report's
    `write_tables`: the package does not import the report layer)."""

    work = args.work_dir
    tables: dict[str, list[pd.DataFrame]] = {}
    timings, notes = [], []
    for part in parts_all:
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
    merged["points"] = tidy(merged["points"])
    merged["timings"] = pd.DataFrame(timings)
    merged["notes"] = pd.DataFrame(notes, columns=["part", "note"]).drop_duplicates()
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["wall_seconds_total"] = float(sum(t["seconds"] for t in timings))
    config["cpu_seconds_total"] = float(np.nansum([t["cpu_seconds"] for t in timings]))
    write(args.out, merged, config)


__all__ = ["Context", "assemble", "compute", "floats", "ints", "moved_for", "nearest_budget", "run_families",
           "steering_families", "with_collateral"]
