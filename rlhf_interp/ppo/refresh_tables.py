"""Iterated online RLHF, as tables: PPO runs against a frozen RM and against the same RM refreshed every N phases
(`rlhf_interp.ppo.rm_refresh`), read back from their run directories and scored offline.

Every table is tidy and carries the run's keys (e.g. ``setting`` and ``seed``) first. Rewards are compared in
*held-out std units*: each RM version's scores centred and scaled by its own scores of fresh base-model texts
(`rlhf_interp.reward.hacking.heldout_texts`), the true reward by theirs; the *gap* is RM minus true.
Used by `analyses/iterated_rm.py`; nothing here trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rlhf_interp.ppo.rm_refresh import list_versions, version_dir
from rlhf_interp.reward.functions import RewardFn
from rlhf_interp.reward.hacking import pairwise_accuracy, probe_suffixes, proxy_counts
from rlhf_interp.reward.model import RewardModel
from rlhf_interp.reward.refresh import load_version, read_version_meta

Run = tuple[dict[str, Any], Path]  # (keys such as {"setting": "refreshed", "seed": 0}, run directory)

END_COLUMNS = ["true_reward", "true_z", "rm_z", "gap", "gap_rm0", "accuracy", "accuracy_rm0", "kl_pi_ref_per_token",
               "entropy"]


def version_table(rm: RewardModel, runs: Sequence[Run], heldout: pd.DataFrame) -> pd.DataFrame:
    """Each RM version of each run against its yardstick: version, phase, heldout_mean / heldout_std (its raw scores
    of the held-out texts), heldout_spearman (with their true reward), and its refresh's figures (pairs, ties,
    accuracy_before/after ...). A run without versions has version 0 only. ``rm`` is version 0 (the frozen RM);
    each version is put on it in turn, so it ends holding the last run's last version."""
    texts = heldout.text.tolist()
    base = rm.score(texts)
    rows = []
    for keys, run_dir in runs:
        versions = list_versions(run_dir)
        for version in versions or [0]:
            meta = read_version_meta(version_dir(run_dir, version)) if versions else {"phase": 0}
            scores = load_version(rm, version_dir(run_dir, version)).score(texts) if version else base
            rows.append({**keys, "version": version, "phase": meta.get("phase", 0),
                         "heldout_mean": float(scores.mean()), "heldout_std": float(scores.std()),
                         "heldout_spearman": float(pd.Series(scores.tolist()).corr(heldout.true_reward,
                                                                                  method="spearman")),
                         **{k.removeprefix("rm_refresh_"): v for k, v in meta.items() if k.startswith("rm_refresh_")}})
    return pd.DataFrame(rows)


def phase_table(samples: pd.DataFrame, metrics: pd.DataFrame, versions: pd.DataFrame, heldout: pd.DataFrame
                ) -> pd.DataFrame:
    """Per run (setting, seed) and phase: rewards (raw, and in held-out std units of the RM version that scored),
    the gaps (rm_z - true_z; gap_rm0 judged by version 0), the scoring RM's and v0's pairwise accuracy on the phase's
    samples, KL, entropy and seconds.

    ``samples``: setting, seed, phase, true_reward, rm_reward (the scoring RM's), rm0_reward; ``metrics``: the runs'
    metrics.jsonl rows with setting and seed; ``versions``: `version_table`; ``heldout``: true_reward, rm_reward (v0).
    """
    t_mean, t_std = heldout.true_reward.mean(), heldout.true_reward.std()
    r0_mean, r0_std = heldout.rm_reward.mean(), heldout.rm_reward.std()
    rows = []
    for (setting, seed, phase), group in samples.groupby(["setting", "seed", "phase"]):
        m = metrics[(metrics.setting == setting) & (metrics.seed == seed) & (metrics.phase == phase)].iloc[0]
        version = int(m.get("rm_version", 0)) if pd.notna(m.get("rm_version", 0)) else 0
        v = versions[(versions.setting == setting) & (versions.seed == seed) & (versions.version == version)].iloc[0]
        # the PPO reward is (raw - mean_v) / std_v of the version's own normalisation; re-centre on held-out texts
        true_z = (group.true_reward.mean() - t_mean) / t_std
        rm_z = (group.rm_reward.mean() - v.heldout_mean) / v.heldout_std
        rm0_z = (group.rm0_reward.mean() - r0_mean) / r0_std
        rows.append({"setting": setting, "seed": int(seed), "phase": int(phase), "rm_version": version,
                     "true_reward": group.true_reward.mean(), "rm_reward": group.rm_reward.mean(),
                     "rm0_reward": group.rm0_reward.mean(), "true_z": true_z, "rm_z": rm_z, "rm0_z": rm0_z,
                     "gap": rm_z - true_z, "gap_rm0": rm0_z - true_z,
                     "accuracy": pairwise_accuracy(group.true_reward, group.rm_reward),
                     "accuracy_rm0": pairwise_accuracy(group.true_reward, group.rm0_reward),
                     "kl_pi_ref_per_token": m.kl_pi_ref_per_token, "entropy": m.entropy, "seconds": m.seconds,
                     "rm_refresh_seconds": float(m.get("rm_refresh_seconds", 0.0) or 0.0)})
    return pd.DataFrame(rows).sort_values(["setting", "seed", "phase"], ignore_index=True)


def end_table(phases: pd.DataFrame, late: int) -> pd.DataFrame:
    """Per run: the mean of the last ``late`` phases of each of `END_COLUMNS`, plus its total seconds of PPO and of
    refreshing."""
    rows = []
    for (setting, seed), run in phases.groupby(["setting", "seed"]):
        tail = run.sort_values("phase").tail(late)
        rows.append({"setting": setting, "seed": seed, "phases": f"{int(tail.phase.min())}-{int(tail.phase.max())}",
                     **{c: tail[c].mean() for c in END_COLUMNS},
                     "ppo_seconds": run.seconds.sum(), "refresh_seconds": run.rm_refresh_seconds.sum()})
    return pd.DataFrame(rows)


def summary_table(end: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std over seeds of every end quantity, per setting (columns setting, quantity, mean, sd,
    seeds); sd is NaN with one seed."""
    rows = []
    for setting, runs in end.groupby("setting", sort=False):
        for quantity in [*END_COLUMNS, "ppo_seconds", "refresh_seconds"]:
            rows.append({"setting": setting, "quantity": quantity, "mean": runs[quantity].mean(),
                         "sd": runs[quantity].std() if len(runs) > 1 else float("nan"), "seeds": len(runs)})
    return pd.DataFrame(rows)


def version_probes(rm: RewardModel, reward: RewardFn, texts: list[str], runs: Sequence[tuple[str, Path]],
                   suffixes: Sequence[str]) -> pd.DataFrame:
    """What one appended string is worth to version 0 (``rm`` as loaded) and to the last version of each run
    (``runs``: (label, run directory)): columns rm, suffix, true_delta, rm_delta, rm_delta_stderr."""
    frames = [probe_suffixes(rm, reward, texts, suffixes).assign(rm="v0 (frozen)")]
    for label, run_dir in runs:
        last = max(list_versions(run_dir), default=0)
        if last:
            load_version(rm, version_dir(run_dir, last))
            frames.append(probe_suffixes(rm, reward, texts, suffixes).assign(rm=f"v{last} ({label})"))
    return pd.concat(frames, ignore_index=True)[["rm", "suffix", "true_delta", "rm_delta", "rm_delta_stderr"]]


def run_proxy_counts(samples: pd.DataFrame, heldout: pd.DataFrame) -> pd.DataFrame:
    """`proxy_counts` per run: columns setting, seed, phase (0 = the held-out base texts), feature, mean_count."""
    frames = [proxy_counts(run, heldout).assign(setting=setting, seed=seed)
              for (setting, seed), run in samples.groupby(["setting", "seed"])]
    return pd.concat(frames, ignore_index=True)[["setting", "seed", "phase", "feature", "mean_count"]]
