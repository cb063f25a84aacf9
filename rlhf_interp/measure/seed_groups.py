"""Training runs that differ only in their seed, read as one group: which runs belong together, their curves as
the mean over seeds with a 95% band, and each seed's "end" value for an interval over seeds.

Why: one PPO run is one draw. Its phase-to-phase scatter says nothing about how a second seed would end, so a
claim about the method rests on the seeds: the unit is the run, the interval is Student's t over the seeds'
values (df = seeds - 1; `rlhf_interp.core.stats.mean_interval`). Grouping by the recorded ``config.yaml`` (minus
the seed and the settings that only change what is logged) rather than by directory names keeps a run of another
setting from being averaged in by accident; an explicit group is checked the same way.

- `group_runs(dirs)`: runs grouped by their config minus `SEED_FREE` keys, in the order given, each group
  labelled by the shared directory name (``frontier_ppo_s0``, ``frontier_ppo_s1`` -> ``frontier_ppo``);
- `parse_group("label=dir,dir")` and `check_group(...)`: an explicit group, refused unless the configs differ
  only in the seed (the differing settings named);
- `seed_band(frame, ...)`: per group and phase, the mean over seeds with its t interval and the number of seeds;
- `seed_ends(frame, ...)`: per group and seed, the mean of the last ``window`` phases of each column (the unit
  for an interval over seeds), and `over_seeds(values)` that interval.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import yaml

from rlhf_interp.core import stats

# Settings that change what is logged or where, not what is trained: runs differing only in these (and the seed)
# are repeats of one setting.
SEED_FREE = ("seed", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints", "tensorboard",
             "wandb_project", "device")
_SEED_SUFFIX = re.compile(r"(?:[_-](?:s|seed)?|seed)\d+$")  # _s0, _seed1, -2, seed3


@dataclass
class RunGroup:
    """Runs of one setting: their directories, seeds (in the same order) and the config they share (no seed)."""

    label: str
    runs: list[Path]
    seeds: list[int]
    config: dict[str, Any] = field(default_factory=dict)


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """A run directory's recorded ``config.yaml`` (as `rlhf-interp train` wrote it)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {run_dir} a run directory written by `rlhf-interp train`?")
    return yaml.safe_load(path.read_text()) or {}


def setting_of(config: dict[str, Any]) -> dict[str, Any]:
    """The config without its seed and logging-only keys: what two repeats of one setting share."""
    return {k: v for k, v in config.items() if k not in SEED_FREE}


def _key(config: dict[str, Any]) -> str:
    return json.dumps(setting_of(config), sort_keys=True, default=str)


def group_label(run_dirs: Sequence[Path]) -> str:
    """The name the runs share once a trailing seed suffix (``_s0``, ``-seed1``, ``_2``) is dropped; else their
    common prefix; else the first name with ``+`` (the runs have nothing in their names in common)."""
    names = [Path(d).name for d in run_dirs]
    if len(names) == 1:
        return names[0]
    stems = {_SEED_SUFFIX.sub("", n) or n for n in names}
    if len(stems) == 1:
        return stems.pop()
    prefix = re.sub(r"[_\-\s]+$", "", _common_prefix(names))
    return prefix or f"{names[0]}+"


def _common_prefix(names: list[str]) -> str:
    out = names[0]
    for n in names[1:]:
        while not n.startswith(out):
            out = out[:-1]
    return out


def _differences(configs: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for c in configs for k in setting_of(c)})
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]


def check_group(label: str, run_dirs: Sequence[Path]) -> RunGroup:
    """An explicit group: refused (ValueError naming the settings) unless its runs differ only in the seed, and
    unless every seed is different (two runs of one seed are not two draws)."""
    run_dirs = [Path(d) for d in run_dirs]
    configs = [read_run_config(d) for d in run_dirs]
    diff = _differences(configs)
    if diff:
        raise ValueError(f"group {label!r}: its runs differ in {', '.join(diff)}, not only in the seed")
    seeds = [int(c.get("seed", 0)) for c in configs]
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"group {label!r}: seeds {seeds} repeat; each run of a group needs its own seed")
    return RunGroup(label, run_dirs, seeds, setting_of(configs[0]))


def group_runs(run_dirs: Sequence[Path]) -> list[RunGroup]:
    """Runs grouped by their config minus the seed (and logging-only settings), groups in order of first
    appearance, each labelled by `group_label`. A run alone in its setting is a group of one seed."""
    by_key: dict[str, list[Path]] = {}
    for d in run_dirs:
        by_key.setdefault(_key(read_run_config(Path(d))), []).append(Path(d))
    groups = [check_group(group_label(dirs), dirs) for dirs in by_key.values()]
    labels = [g.label for g in groups]
    for g in groups:  # two settings whose directories share a stem: tell them apart by the first directory
        if labels.count(g.label) > 1:
            g.label = g.runs[0].name
    return groups


def parse_group(spec: str) -> tuple[str, list[Path]]:
    """``LABEL=DIR,DIR,...`` (the script's ``--group``) -> (label, directories)."""
    label, sep, dirs = spec.partition("=")
    paths = [Path(d.strip()) for d in dirs.split(",") if d.strip()]
    if not sep or not label.strip() or not paths:
        raise ValueError(f"--group {spec!r}: write LABEL=DIR,DIR,... (e.g. ppo=runs/ppo_s0,runs/ppo_s1)")
    return label.strip(), paths


# ----------------------------------------------------------------------------------------------
# Curves and end values over seeds


def over_seeds(values: Sequence[float], *, n: dict[str, Any] | None = None, note: str = "") -> stats.Interval:
    """The mean of per-seed values with a t interval over the seeds (infinite with one seed: no interval)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    iv = stats.mean_interval(vals, n=dict(n or {"seeds": len(vals)}), note=note)
    return stats.Interval(iv.value, iv.low, iv.high, iv.level, "t over seeds", iv.n, iv.note)


def seed_band(frame: pd.DataFrame, column: str, *, group: str = "group", seed: str = "seed", x: str = "phase"
              ) -> pd.DataFrame:
    """Per group and ``x``: the mean of ``column`` over the seeds that logged it, the 95% t interval over those
    seeds (``low``/``high``; NaN with fewer than two) and their count ``seeds``. A seed's rows at one ``x`` are
    averaged first, so each seed counts once."""
    per_seed = frame.groupby([group, x, seed], sort=False, dropna=False)[column].mean().reset_index()
    rows = []
    for (g, xv), part in per_seed.groupby([group, x], sort=False):
        vals = part[column].dropna().to_numpy(dtype=float)
        if len(vals) == 0:
            continue
        iv = over_seeds(vals) if len(vals) >= 2 else None
        rows.append({group: g, x: xv, "mean": float(vals.mean()), "low": iv.low if iv else math.nan,
                     "high": iv.high if iv else math.nan, "seeds": len(vals)})
    out = pd.DataFrame(rows, columns=[group, x, "mean", "low", "high", "seeds"])
    order = out[group].map({g: i for i, g in enumerate(dict.fromkeys(frame[group]))})
    return out.assign(_order=order).sort_values(["_order", x], kind="stable").drop(columns="_order").reset_index(
        drop=True)


def seed_ends(frame: pd.DataFrame, columns: Sequence[str], window: int, *, group: str = "group", seed: str = "seed",
              x: str = "phase") -> pd.DataFrame:
    """Per group and seed: each column's value at the first ``x`` (``<column>_start``) and its mean over the
    seed's last ``window`` rows by ``x`` (``<column>_end``), with the end span (``end_from``, ``end_to``) and the
    number of rows (``rows``). One row per seed: the units of an interval over seeds."""
    rows = []
    for (g, s), part in frame.groupby([group, seed], sort=False, dropna=False):
        part = part.sort_values(x)
        last = part.tail(window)
        row = {group: g, seed: s, "rows": len(part), "end_from": last[x].min(), "end_to": last[x].max()}
        for c in columns:
            row[f"{c}_start"] = float(part[c].iloc[0])
            row[f"{c}_end"] = float(last[c].mean())
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["SEED_FREE", "RunGroup", "check_group", "group_label", "group_runs", "over_seeds", "parse_group",
           "read_run_config", "seed_band", "seed_ends", "setting_of"]
