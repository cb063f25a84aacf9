"""One measurement round of the v3 frontier, kept in a work directory point by point so it resumes after a kill:
every point (an edit at a chosen strength, or a checkpoint) measured by `new_methods.measure_point` on the report
split, its per-sequence rows and per-text capability rows saved beside it; edit families' strengths chosen on the
selection split first.

Why in the package: the analyses script holds the study's choices (splits, families, runs) and nothing else; the
storing, the choosing and the assembling into at-budget tables are the same for any set of methods.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from rlhf_interp.core.io import atomic_write_json
from rlhf_interp.frontier.heldout import choose_per_budget


class Points:
    """One JSON row + per-sequence and per-text CSVs per finished point in ``<work>/points`` (resumable), and a
    point's extra samples (`Round.measure_extra`: the same setting sampled again with other seeds) in
    ``<work>/points/extra``."""

    def __init__(self, work: Path):
        self.dir = Path(work) / "points"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra_dir = self.dir / "extra"

    def done(self, key: str) -> bool:
        return (self.dir / f"{key}.json").exists()

    def save(self, key: str, row: dict, seqs: pd.DataFrame, per_text: pd.DataFrame | None) -> None:
        seqs.assign(key=key).to_csv(self.dir / f"{key}__sequences.csv", index=False)
        if per_text is not None:
            per_text.assign(key=key).to_csv(self.dir / f"{key}__texts.csv", index=False)
        atomic_write_json(self.dir / f"{key}.json", {"key": key, **row})  # last: its presence means done

    def rows(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.dir.glob("*.json"))]

    def sequences(self, key: str, extras: bool = True) -> pd.DataFrame:
        """The point's sequences; with ``extras`` also those of its extra seeds (column ``sample_seed``: the
        sampling seed of each row, NaN for the point's own)."""
        own = pd.read_csv(self.dir / f"{key}__sequences.csv")
        more = [pd.read_csv(self._extra(key, seed)) for seed in self.extra_seeds(key)] if extras else []
        return pd.concat([own, *more], ignore_index=True) if more else own

    def _extra(self, key: str, seed: int) -> Path:
        return self.extra_dir / f"{key}__seed{seed}__sequences.csv"

    def extra_seeds(self, key: str) -> list[int]:
        """Sampling seeds of the point's finished extra samples, in order."""
        found = self.extra_dir.glob(f"{key}__seed*.json") if self.extra_dir.exists() else []
        return sorted(int(p.stem.rsplit("__seed", 1)[1]) for p in found)

    def save_extra(self, key: str, seed: int, seqs: pd.DataFrame, row: dict) -> None:
        self.extra_dir.mkdir(parents=True, exist_ok=True)
        seqs.assign(key=key, sample_seed=seed).to_csv(self._extra(key, seed), index=False)
        atomic_write_json(self.extra_dir / f"{key}__seed{seed}.json", {"key": key, "seed": seed, **row})  # last

    def extra_rows(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.extra_dir.glob("*.json"))] if self.extra_dir.exists() \
            else []

    def table(self, suffix: str) -> pd.DataFrame:
        frames = [pd.read_csv(p) for p in sorted(self.dir.glob(f"*__{suffix}.csv"))]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@dataclass
class Round:
    """What every part of a round shares: the measuring setup (`new_methods.Setup`), the work dir, the budgets."""

    setup: Any
    work: Path
    budgets: Sequence[float]
    notes: list[str] = field(default_factory=list)
    makers: dict[str, tuple] = field(default_factory=dict)  # point key -> (model, edit, reference) that measured it

    def __post_init__(self) -> None:
        self.work = Path(self.work)
        self.points = Points(self.work)

    def measure(self, key: str, labels: dict, model, edit=None, reference=None) -> dict:
        """Measure one point on the report split (skipped when already done); its row."""
        from rlhf_interp.frontier.new_methods import measure_point

        if not self.points.done(key):
            start = time.process_time()
            row, seqs, per_text = measure_point(self.setup, model, edit, reference=reference)
            row = {**labels, **row, "cpu_seconds": time.process_time() - start}
            self.points.save(key, row, seqs, per_text)
            print(f"[{key}] reward {row['reward_mean']:.2f} [{row['reward_low']:.2f}, {row['reward_high']:.2f}]  KL "
                  f"{row['kl_exact_mean']:.2f} [{row['kl_exact_low']:.2f}, {row['kl_exact_high']:.2f}]  capability "
                  f"delta {row.get('capability_nll_delta_mean', float('nan')):+.3f}  fluency "
                  f"{row['fluency_nll_mean']:.2f}  ({row['cpu_seconds']:.0f} s CPU)", flush=True)
        return json.loads((self.points.dir / f"{key}.json").read_text())

    def measure_extra(self, key: str, seed: int, model, edit=None, reference=None) -> None:
        """More samples of a measured point: the same model, edit and report prompts sampled with sampling seed
        ``seed`` (``samples_per_prompt`` per prompt again; capability not re-measured). Skipped when done.
        Another method's extra samples with the same seed share its random numbers, as the point's own do."""
        from rlhf_interp.frontier.new_methods import measure_point

        if seed == self.setup.seed or seed in self.points.extra_seeds(key):
            return
        start = time.process_time()
        row, seqs, _ = measure_point(replace(self.setup, seed=seed), model, edit, reference=reference,
                                     capability=False)
        row["cpu_seconds"] = time.process_time() - start
        self.points.save_extra(key, seed, seqs, row)
        print(f"[{key} seed {seed}] reward {row['reward_mean']:.2f}  KL {row['kl_exact_mean']:.2f}  "
              f"({row['cpu_seconds']:.0f} s CPU)", flush=True)

    def select(self, part: str, model, families, *, reference=None, rel_tol: float = 0.15,
               max_evals_per_budget: int = 4) -> pd.DataFrame:
        """`equal_kl` of every family on the selection split (each prompt repeated ``selection_samples`` times),
        then per budget the family with the highest selection reward among those that reached it
        (`choose_per_budget`). Cached in ``<work>/selection_<part>.csv``."""
        from rlhf_interp.frontier import equal_kl

        path = self.work / f"selection_{part}.csv"
        if path.exists():
            candidates = pd.read_csv(path)
        else:
            if not families:
                raise ValueError(f"{part}: no edit family to choose from (no usable vector or layer).")
            s = self.setup
            repeated = [p for p in s.selection_prompts for _ in range(s.selection_samples)]
            frames = []
            for i, family in enumerate(families):
                start = time.perf_counter()
                pts, _ = equal_kl(model, family, repeated, s.reward, self.budgets, reference=reference, seed=s.seed,
                                  max_new_tokens=s.max_new_tokens, rel_tol=rel_tol,
                                  max_evals_per_budget=max_evals_per_budget)
                frames.append(pts.assign(family=i))
                print(f"[{part} selection] {family.method} {family.columns.get('setting', '')}: "
                      f"{', '.join(f'{b:g}:{k:.2f}/{r:.2f}' for b, k, r in zip(pts.budget, pts.kl_exact_mean, pts.reward_mean))}"
                      f" (budget: KL/reward; {time.perf_counter() - start:.0f} s)", flush=True)
            candidates = pd.concat(frames, ignore_index=True)
            candidates.to_csv(path, index=False)
        return choose_per_budget(candidates, self.budgets)

    def save_choices(self, part: str, choices: list[dict]) -> None:
        """Which measured point stands for which budget."""
        atomic_write_json(self.work / f"choices_{part}.json", choices)

    def choices(self) -> list[dict]:
        return [c for p in sorted(self.work.glob("choices_*.json")) for c in json.loads(p.read_text())]


__all__ = ["Points", "Round"]
