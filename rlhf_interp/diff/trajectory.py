"""The same diff for every checkpoint of a run, so one sees when and where the change appears."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from tqdm.auto import tqdm

from rlhf_interp.bridge.loading import load_model, model_device
from rlhf_interp.bridge.run_dirs import RunDir
from rlhf_interp.diff.core import ModelDiff, diff_models


def diff_trajectory(base, run_dir: str | Path, prompts: Sequence[str], *,
                    checkpoints: Sequence[tuple[int, Path]] | None = None, **diff_kwargs) -> ModelDiff:
    """`diff_models` of every checkpoint against ``base``; every table gains a ``step`` column.

    Loads one checkpoint at a time (same device and dtype as ``base``) and frees it before the next.
    ``checkpoints``: ``(step, path)`` pairs of this run (e.g. every other one of `RunDir.checkpoints`) instead
    of all of them.
    """
    run = RunDir(run_dir)
    steps = [step for step, _ in checkpoints] if checkpoints is not None else run.steps
    dtype = next(base.parameters()).dtype

    def load(path: Path):
        return load_model(str(path), device=model_device(base), dtype=dtype)

    diffs, chosen = [], []
    for ckpt in tqdm(run.for_each_checkpoint(steps, load=load), total=len(steps), desc="checkpoints"):
        diffs.append(diff_models(base, ckpt.model, prompts, **diff_kwargs).with_step(ckpt.step))
        chosen.append((ckpt.step, ckpt.path))
    if not diffs:
        raise ValueError("diff_trajectory: no checkpoint chosen (checkpoints=[]).")
    config = {**diffs[-1].config, "run_dir": str(run_dir), "steps": [s for s, _ in chosen],
              "tuned": [str(p) for _, p in chosen]}
    config.pop("step", None)
    return ModelDiff.concat(diffs, config=config)


def evenly_spaced(items: list, k: int) -> list:
    """``k`` of ``items`` spread evenly, always the first and the last (all of them when there are at most ``k``):
    which checkpoints a trajectory diffs when a run has more than it can afford."""
    if len(items) <= k:
        return items
    picks = {round(i * (len(items) - 1) / (k - 1)) for i in range(k)}
    return [items[i] for i in sorted(picks)]


def trajectory_summary(t: dict[str, pd.DataFrame], watch: list[str], hook: str = "hook_resid_post") -> pd.DataFrame:
    """One row per step of a `diff_trajectory`: the layer where ``hook``'s rel_diff_norm peaks and its size, the mean
    over layers, KL per token both ways, the pooled relative weight change, and each watched token's best and
    last-layer logit-lens rank. ``t``: its tables by name (residual, output_summary, logit_lens_tokens and
    optionally weights_summary, each with a step column), as `ModelDiff.tables` or a report's CSVs give them."""
    residual, output = t["residual"], t["output_summary"]
    weights, lens = t.get("weights_summary"), t["logit_lens_tokens"]
    rows = []
    for step, group in residual[residual["hook"] == hook].groupby("step"):
        peak = group.loc[group["rel_diff_norm"].idxmax()]
        out = output[output["step"] == step].iloc[0]
        row = {"step": step, "peak_layer": int(peak["layer"]), "peak_rel_diff_norm": peak["rel_diff_norm"],
               "mean_rel_diff_norm": group["rel_diff_norm"].mean(), "kl_pi_ref": out["kl_pi_ref"],
               "kl_ref_pi": out["kl_ref_pi"]}
        if weights is not None and not weights.empty:
            w = weights[weights["step"] == step]
            row["weights_rel_diff_norm"] = (w["diff_norm"] ** 2).sum() ** 0.5 / (w["base_norm"] ** 2).sum() ** 0.5
        for token in watch:
            r = lens[(lens["step"] == step) & (lens["token"] == token) & (lens["model"] == "tuned")]
            row[f"best_lens_rank_{token}"] = r["rank"].min()
            row[f"last_layer_lens_rank_{token}"] = r.loc[r["layer"].idxmax(), "rank"]
        rows.append(row)
    return pd.DataFrame(rows)
