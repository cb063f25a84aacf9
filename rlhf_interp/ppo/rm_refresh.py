"""Iterated online RLHF (Bai et al. 2022): every ``rm_refresh_every`` phases, label fresh pairs of the policy's
own samples and fine-tune the learned reward model on them, so it keeps up with what the policy writes.

Why: an RM trained once on base-model text is asked about text that drifts away from it as the policy
learns; where it errs there, PPO finds the error (`reports/reward_hacking/`). Refreshing it on the current
policy's samples closes those gaps as they open, at a cost in labels and compute that the metrics record.

When: before phase ``p + 1`` whenever ``p`` phases are done and ``p`` is a multiple of ``rm_refresh_every``
(never after the last phase). A refresh samples ``rm_refresh_pairs`` pairs (two completions of one prompt,
`synthesize_pairs`: ties dropped, ``rm_refresh_label_noise`` swaps labels) from the policy, labels them with
``rm_refresh_source`` (a reward function, `get_reward`; or any callable set as ``trainer.rm_refresh.source``),
mixes in ``rm_refresh_replay`` earlier pairs, fine-tunes the RM ``rm_refresh_epochs`` epochs with its own
training options (`rlhf_interp.reward.refresh`), and saves the new version. Metrics of every phase carry
``rm_version``, the version that scored its samples.

Layout, beside the checkpoints::

    RUN/reward_models/rm-v000/      # the RM the run started from (trainable tensors; base = its full directory)
    RUN/reward_models/rm-v001/ ...  # one per refresh: tensors, meta.json (phase, pairs, accuracies), metrics.jsonl
    RUN/reward_models/pairs.jsonl   # every pair the RM was trained on: its original data (phase 0), then each
                                    # refresh's, tagged with "version" and "phase" (the first phase it scored)

Resume: the checkpoint's `TrainerState` holds the RM version; `RMRefresher.load_state_dict` puts exactly that version back onto
the RM, deletes later versions and trims ``pairs.jsonl`` like the logs, so the resumed run repeats any
refresh after the checkpoint bit for bit (each refresh is seeded by ``(seed, phase)``).
"""

from __future__ import annotations

import random
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Protocol

from rlhf_interp.core.io import append_jsonl, read_jsonl, trim_jsonl, write_jsonl
from rlhf_interp.core.seeding import mix_seed
from rlhf_interp.reward.functions import RewardFn, get_reward
from rlhf_interp.reward.model import RewardModelReward
from rlhf_interp.reward.preferences import PreferencePair, read_preferences
from rlhf_interp.reward.refresh import (
    finetune_reward_model,
    load_version,
    pair_accuracy,
    rm_frozen_layers,
    save_version,
)
from rlhf_interp.reward.synthetic import synthesize_pairs



class RefreshingTrainer(Protocol):
    """What a refresh reads of the run (`PPOTrainer` is one): its config, reward, policy, prompts, place and phase."""

    config: Any
    run_dir: Path
    reward: Any
    policy: Any
    prompts: list[str]
    phase: int
    dist: Any

VERSIONS_DIR = "reward_models"
PAIRS_FILE = "pairs.jsonl"
_SEED_TAG = 20  # keeps the refresh's samples apart from the phase's own (seeded by (seed, phase))
_MAX_SAMPLING_BATCH = 64  # sequences per sampling call


def version_dir(run_dir: str | Path, version: int) -> Path:
    return Path(run_dir) / VERSIONS_DIR / f"rm-v{version:03d}"


def list_versions(run_dir: str | Path) -> list[int]:
    """The RM versions saved in a run directory, oldest first."""
    root = Path(run_dir) / VERSIONS_DIR
    return sorted(int(p.name[4:]) for p in root.glob("rm-v[0-9][0-9][0-9]*") if p.is_dir() and p.name[4:].isdigit())


class RMRefresher:
    """The refresh schedule and state of one run: which RM version scores, and when the next one is made."""

    def __init__(self, trainer: RefreshingTrainer):
        cfg = trainer.config
        dist = getattr(trainer, "dist", None)
        if dist is not None and dist.active:  # every rank would sample, fine-tune and write the versions
            raise ValueError(f"rm_refresh_every runs in one process only for now; this run has {dist.world_size} "
                             f"processes. Train with one process (no --processes / accelerate launch), or set "
                             f"rm_refresh_every=null.")
        if not isinstance(trainer.reward, RewardModelReward):  # a config error (ValueError), like the others
            raise ValueError(f"Config field 'rm_refresh_every' = {cfg.rm_refresh_every} refreshes a learned reward "  # noqa: TRY004
                             f"model, but the reward is {cfg.reward!r}: set reward=reward_model:PATH (train one with "
                             f"`rlhf-interp reward-model train`), or rm_refresh_every=null.")
        self.trainer = trainer
        self.rm = trainer.reward.model
        if self.rm.path is None:
            raise ValueError("rm_refresh_every needs a saved reward model (one with a directory), the base of every "
                             "version: save it first, or give reward=reward_model:PATH.")
        self.source: RewardFn = get_reward(cfg.rm_refresh_source, **cfg.rm_refresh_source_kwargs)
        self.n_frozen = rm_frozen_layers(self.rm)
        self.version = 0
        self.refreshed_at = 0  # phases done when the current version was made (0: the starting RM)

    @property
    def root(self) -> Path:
        return self.trainer.run_dir / VERSIONS_DIR

    # ------------------------------------------------------------------ the hook
    def before_phase(self) -> dict[str, Any]:
        """Refresh if one is due, then the metrics of the coming phase: ``rm_version`` (what scores it),
        ``rm_refresh_seconds`` (0 when none), and the refresh's figures when there was one."""
        self._ensure_started()
        done, every = self.trainer.phase, self.trainer.config.rm_refresh_every
        info: dict[str, Any] = {}
        if done > 0 and done % every == 0 and self.refreshed_at < done:
            info = self.refresh()
        return {"rm_version": self.version, "rm_refresh_seconds": info.pop("seconds", 0.0), **info}

    def _ensure_started(self) -> None:
        """Version 0 and the RM's original pairs, written once at the start (after the run claimed its directory)."""
        if version_dir(self.trainer.run_dir, 0).exists():
            return
        original = self._original_pairs()
        save_version(self.rm, version_dir(self.trainer.run_dir, 0), version=0, base=self.rm.path,
                     n_frozen=self.n_frozen, meta={"phase": 0, "original_pairs": len(original)})
        write_jsonl(self.root / PAIRS_FILE, ({**p.to_json(), "version": 0, "phase": 0} for p in original))

    def _original_pairs(self) -> list[PreferencePair]:
        source = self.rm.meta.get("data", {}).get("source")
        if source and Path(source).is_file():
            return read_preferences(source)
        if self.trainer.config.rm_refresh_replay != 0:
            warnings.warn(f"The reward model's training data ({source!r}, from its meta.json) is not found: refreshes "
                          f"replay only pairs labelled during this run.", stacklevel=3)
        return []

    def refresh(self) -> dict[str, Any]:
        """Label fresh pairs of the policy's samples, fine-tune the RM on them (+ replay), save the next version."""
        trainer, cfg = self.trainer, self.trainer.config
        start = time.perf_counter()
        done = trainer.phase
        seed = mix_seed(cfg.seed, done, _SEED_TAG)
        trainer.policy.eval()
        batch = max(2, min(_MAX_SAMPLING_BATCH, 2 * cfg.rm_refresh_pairs))
        try:
            fresh, stats = synthesize_pairs(trainer.policy, self.source, trainer.prompts, cfg.rm_refresh_pairs,
                                            max_new_tokens=cfg.max_new_tokens, batch_size=batch - batch % 2,
                                            temperature=cfg.temperature, stop_at_eos=cfg.stop_at_eos,
                                            label_noise=cfg.rm_refresh_label_noise, seed=seed, progress=False)
        except RuntimeError as err:
            if "tied scores" not in str(err):  # synthesize_pairs: every sampled pair tied, nothing to label
                raise
            warnings.warn(f"RM refresh before phase {done + 1} skipped: {err} The RM stays at version "
                          f"{self.version}.", stacklevel=2)
            self.refreshed_at = done
            return {"rm_refresh_pairs": 0, "seconds": time.perf_counter() - start}
        earlier = self._pairs()
        k = len(earlier) if cfg.rm_refresh_replay is None else min(cfg.rm_refresh_replay, len(earlier))
        replay = random.Random(seed).sample(earlier, k)
        accuracy_before = pair_accuracy(self.rm, fresh)
        fit = finetune_reward_model(self.rm, fresh + replay, epochs=cfg.rm_refresh_epochs, seed=seed,
                                    n_frozen=self.n_frozen)
        accuracy_after = pair_accuracy(self.rm, fresh)
        version = self.version + 1
        figures = {"rm_refresh_pairs": len(fresh), "rm_refresh_ties": stats.ties, "rm_refresh_replay": len(replay),
                   "rm_refresh_accuracy_before": accuracy_before, "rm_refresh_accuracy_after": accuracy_after,
                   "rm_refresh_best_epoch": fit.best_epoch}
        save_version(self.rm, version_dir(trainer.run_dir, version), version=version, base=self.rm.path,
                     n_frozen=self.n_frozen, meta={"phase": done + 1, "seed": seed, **figures},
                     metrics=fit.frame.to_dict("records"))
        for pair in fresh:  # after the version: a kill in between is trimmed on resume (phase > checkpoint)
            append_jsonl(self.root / PAIRS_FILE, {**pair.to_json(), "version": version, "phase": done + 1})
        self.version, self.refreshed_at = version, done
        return {**figures, "seconds": time.perf_counter() - start}

    def _pairs(self) -> list[PreferencePair]:
        path = self.root / PAIRS_FILE
        if not path.exists():
            return []
        own = ("prompt", "chosen", "rejected", "version", "phase")
        return [PreferencePair(r["prompt"], r["chosen"], r["rejected"], {k: v for k, v in r.items() if k not in own})
                for _, r in read_jsonl(path)]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, int]:
        return {"version": self.version, "refreshed_at": self.refreshed_at}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Back to ``state`` (the trainer's phase already restored): that version's weights on the RM, later
        versions deleted, pairs of later phases trimmed."""
        run_dir, phase = self.trainer.run_dir, self.trainer.phase
        self.version, self.refreshed_at = int(state["version"]), int(state["refreshed_at"])
        for later in [v for v in list_versions(run_dir) if v > self.version]:
            shutil.rmtree(version_dir(run_dir, later))
        trim_jsonl(self.root / PAIRS_FILE, lambda record: record["phase"] <= phase)
        if version_dir(run_dir, self.version).exists():
            load_version(self.rm, version_dir(run_dir, self.version))
        elif self.version:
            raise FileNotFoundError(f"The checkpoint was scored by reward-model version {self.version}, but "
                                    f"{version_dir(run_dir, self.version)} is missing: the run cannot continue "
                                    f"with the RM it had. Start it again with --overwrite.")


def from_trainer(trainer: RefreshingTrainer) -> RMRefresher | None:
    """The run's refresher, or None when ``rm_refresh_every`` is not set (the RM stays frozen)."""
    return RMRefresher(trainer) if trainer.config.rm_refresh_every else None


