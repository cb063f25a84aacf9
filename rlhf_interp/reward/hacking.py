"""Does a learned reward imitate the true one, and where can a policy exploit it? The measurements the reward-hacking
and iterated-RM studies share (`analyses/reward_hacking.py`, `analyses/iterated_rm.py`), knowing no trainer.

A study here has a *true* reward (a function ``list[str] -> scores``, e.g. ``char_count('.')``) and a reward model
(RM) trained to imitate it from preference pairs. The pieces, each a tidy DataFrame or a number:

- the pairs and the RM, made once and reused from a work directory (`RMRecipe`);
- held-out texts freshly sampled from the base model, scored by both (`heldout_texts`): the yardstick that puts the
  two rewards in comparable units (z-scores of the base model's texts);
- what an appended string is worth to each (`probe_suffixes`) and how often proxy characters occur
  (`proxy_counts`): where an RM pays without the truth; the true counts of its training texts (`support_counts`);
- per phase of a policy's samples, both rewards in held-out units and their rank agreement (`phase_table`,
  `pairwise_accuracy`, `spearman`), and the samples the RM overrates most (`exploits`).
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlhf_interp.bridge.generation import generate
from rlhf_interp.core.io import read_jsonl
from rlhf_interp.core.seeding import mix_seed
from rlhf_interp.reward.functions import RewardFn, score
from rlhf_interp.reward.model import METRICS_FILE, MODEL_SUBDIR, RewardModel
from rlhf_interp.reward.preferences import write_preferences
from rlhf_interp.reward.synthetic import synthesize_pairs
from rlhf_interp.reward.training import RewardTrainingConfig, train_reward_model

# The PPO settings both studies optimise against the RM with, on top of configs/periods.yaml: a weaker,
# slower-adapting KL penalty and a higher lr, which moved the period count fastest in CPU-sized runs.
PPO_OVERRIDES = ["kl_coef=0.05", "kl_horizon=2000", "lr=5e-5"]
PROBE_SUFFIXES = [".", " .", "?", "!", "...", "\n", " and"]
PROXY_CHARS = {"period": ".", "question": "?", "exclamation": "!", "newline": "\n"}


# ----------------------------------------------------------------------------------------------
# Made once, reused from the work directory


@dataclass(frozen=True)
class RMRecipe:
    """How a study makes its RM: synthetic pairs of ``model``'s samples labelled by the true reward, a Bradley-Terry
    RM on them, and fresh held-out texts of the same sampler. Field names are the studies' command-line options
    (`from_namespace`), so both studies make the same RM from the same flags."""

    model: str = "smollm2-135m"
    n_pairs: int = 400
    synth_batch_size: int = 64
    synth_dtype: str | None = "bfloat16"
    label_noise: float = 0.0
    epochs: int = 6
    rm_batch_size: int = 16
    lr: float = 1e-4
    head_lr: float = 1e-3
    freeze_layers: int | None = None
    head: str = "linear"
    seed: int = 0

    @classmethod
    def from_namespace(cls, args: Any, **changes: Any) -> "RMRecipe":
        """The recipe from parsed arguments (attributes named like the fields), with ``changes`` on top."""
        return replace(cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}), **changes)

    def sampler(self):
        from rlhf_interp.bridge.loading import load_model

        return load_model(self.model, dtype=self.synth_dtype)

    def pairs(self, path: Path, reward: RewardFn, max_new_tokens: int, *, reuse: bool,
              progress: bool = True) -> dict[str, Any]:
        """Synthetic pairs at ``path`` (JSONL) and their statistics (``path.info.json``), sampled from the shipped
        prompts. With ``reuse`` and the file present nothing is sampled; the saved statistics return with
        ``reused: True``."""
        from rlhf_interp.prompts import load_prompts

        info_path = path.with_suffix(".info.json")
        if reuse and path.exists():
            return {**(json.loads(info_path.read_text()) if info_path.exists() else {}), "reused": True}
        pairs, stats = synthesize_pairs(self.sampler(), reward, load_prompts(), self.n_pairs,
                                        max_new_tokens=max_new_tokens, batch_size=self.synth_batch_size,
                                        label_noise=self.label_noise, seed=self.seed, progress=progress)
        write_preferences(pairs, path)
        info = {**stats.to_dict(), "dtype": self.synth_dtype, "max_new_tokens": max_new_tokens}
        info_path.write_text(json.dumps(info, indent=2))
        return info

    def train(self, pairs_path: Path, rm_dir: Path, *, reuse: bool, progress: bool = True
              ) -> tuple[pd.DataFrame, float]:
        """Train the RM on ``pairs_path`` into ``rm_dir`` (or reuse a finished one); its per-epoch metrics and the
        wall seconds the whole training took (prefix cache, epochs, saving; kept in ``train_seconds.json``)."""
        timing = rm_dir / "train_seconds.json"
        if reuse and (rm_dir / MODEL_SUBDIR / "meta.json").exists():
            frame = pd.DataFrame([r for _, r in read_jsonl(rm_dir / METRICS_FILE)])
            seconds = json.loads(timing.read_text())["seconds"] if timing.exists() else float(frame.seconds.sum())
            return frame, seconds
        start = time.perf_counter()
        config = RewardTrainingConfig(epochs=self.epochs, batch_size=self.rm_batch_size, lr=self.lr,
                                      head_lr=self.head_lr, freeze_layers=self.freeze_layers, head=self.head,
                                      seed=self.seed)
        _, frame = train_reward_model(pairs_path, self.model, rm_dir, config, progress=progress, overwrite=True)
        seconds = time.perf_counter() - start
        timing.write_text(json.dumps({"seconds": seconds}))
        return frame, seconds

    def heldout(self, rm: RewardModel, reward: RewardFn, n: int, max_new_tokens: int) -> pd.DataFrame:
        """`heldout_texts` of the recipe's sampler on the shipped prompts, seeded apart from the pairs' stream
        (``mix_seed(seed, 1)``: another prompt order and other samples)."""
        from rlhf_interp.prompts import load_prompts

        seed = mix_seed(self.seed, 1)
        return heldout_texts(self.sampler(), rm, reward, load_prompts(seed=seed), n, max_new_tokens=max_new_tokens,
                             batch_size=self.synth_batch_size, seed=seed)


# ----------------------------------------------------------------------------------------------
# The yardstick: fresh base-model texts scored by both rewards


def heldout_texts(sampler, rm: RewardModel, reward: RewardFn, prompts: Sequence[str], n: int, *, max_new_tokens: int,
                  batch_size: int, seed: int) -> pd.DataFrame:
    """``n`` completions of ``sampler`` (prompts taken in turn, ``batch_size`` per call, call i seeded
    ``mix_seed(seed, i)``): columns text, true_reward, rm_reward. Pass another seed than the RM's pairs'."""
    texts: list[str] = []
    call = 0
    while len(texts) < n:
        batch = [prompts[(call * batch_size + i) % len(prompts)] for i in range(batch_size)]
        texts += generate(sampler, batch, max_new_tokens=max_new_tokens, stop_at_eos=False,
                          seed=mix_seed(seed, call)).texts
        call += 1
    texts = texts[:n]
    return pd.DataFrame({"text": texts, "true_reward": score(reward, texts).tolist(),
                         "rm_reward": rm.score(texts).tolist()})


def probe_suffixes(rm: RewardModel, reward: RewardFn, texts: list[str],
                   suffixes: Sequence[str] = PROBE_SUFFIXES) -> pd.DataFrame:
    """What the RM pays for one appended string vs what the true reward pays: mean change over ``texts``.

    Columns: suffix, true_delta, rm_delta (normalised RM units), rm_delta_stderr. A suffix with rm_delta > 0
    but true_delta == 0 is something a policy can buy RM reward with, without the true reward.
    """
    base_true, base_rm = score(reward, texts), rm.score(texts)
    rows = []
    for suffix in suffixes:
        edited = [t + suffix for t in texts]
        d_true, d_rm = score(reward, edited) - base_true, rm.score(edited) - base_rm
        rows.append({"suffix": suffix, "true_delta": float(d_true.mean()), "rm_delta": float(d_rm.mean()),
                     "rm_delta_stderr": float(d_rm.std() / len(texts) ** 0.5)})
    return pd.DataFrame(rows)


def support_counts(pairs: Sequence) -> pd.DataFrame:
    """The RM's training support: how many of its training (and validation) texts hold each true count, from both
    texts of every synthetic pair (their ``chosen_score`` and ``rejected_score``). Columns: true_count, texts."""
    counts = [p.extra[k] for p in pairs for k in ("chosen_score", "rejected_score")]
    s = pd.Series(counts, dtype=float).value_counts().sort_index()
    return pd.DataFrame({"true_count": s.index.astype(int), "texts": s.values.astype(int)})


def proxy_counts(samples: pd.DataFrame, heldout: pd.DataFrame) -> pd.DataFrame:
    """Mean count per sample of each proxy character (`PROXY_CHARS`): the base texts (phase 0) and every phase.

    ``samples``: phase, completion; ``heldout``: text. Columns: phase (0 = held-out base-model texts), feature,
    mean_count.
    """
    rows = []
    frames = [(0, heldout.text)] + [(int(p), g.completion) for p, g in samples.groupby("phase")]
    for phase, texts in frames:
        texts = texts.fillna("")
        for name, char in PROXY_CHARS.items():
            rows.append({"phase": phase, "feature": name, "mean_count": float(texts.str.count(re.escape(char)).mean())})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# A policy's samples under both rewards


def spearman(a: pd.Series, b: pd.Series) -> float:
    return float(a.corr(b, method="spearman"))


def pairwise_accuracy(true: pd.Series, learned: pd.Series) -> float:
    """Share of the sample pairs with different true rewards that ``learned`` orders the same way (a tie in
    ``learned`` counts half): the RM's accuracy on the phase's own samples, as a preference labeller."""
    t, r = true.to_numpy(), learned.to_numpy()
    right = total = 0.0
    for i, j in itertools.combinations(range(len(t)), 2):
        if t[i] == t[j]:
            continue
        total += 1
        d = (r[i] - r[j]) * np.sign(t[i] - t[j])
        right += 1.0 if d > 0 else 0.5 if d == 0 else 0.0
    return right / total if total else float("nan")


def phase_table(samples: pd.DataFrame, metrics: pd.DataFrame, heldout: pd.DataFrame) -> pd.DataFrame:
    """Per phase: mean true and RM reward, both also in held-out base-text standard units, and their Spearman; with
    the run's kl_pi_ref_per_token, entropy and kl_coef (``metrics``: one row per phase, as `RunDir.metrics`)."""
    rows = []
    t_mean, t_std = heldout.true_reward.mean(), heldout.true_reward.std()
    r_mean, r_std = heldout.rm_reward.mean(), heldout.rm_reward.std()
    for phase, group in samples.groupby("phase"):
        rows.append({"phase": int(phase), "true_reward": group.true_reward.mean(), "rm_reward": group.rm_reward.mean(),
                     "true_reward_z": (group.true_reward.mean() - t_mean) / t_std,
                     "rm_reward_z": (group.rm_reward.mean() - r_mean) / r_std,
                     "spearman": spearman(group.true_reward, group.rm_reward)})
    table = pd.DataFrame(rows)
    keep = [c for c in ("phase", "kl_pi_ref_per_token", "entropy", "kl_coef") if c in metrics]
    return table.merge(metrics[keep], on="phase", how="left")


def exploits(samples: pd.DataFrame, heldout: pd.DataFrame, k: int = 12) -> pd.DataFrame:
    """Late-phase samples the RM overrates most relative to their true count (both in held-out z units)."""
    late = samples[samples.phase > samples.phase.max() - max(3, samples.phase.max() // 4)].copy()
    late["rm_z"] = (late.rm_reward - heldout.rm_reward.mean()) / heldout.rm_reward.std()
    late["true_z"] = (late.true_reward - heldout.true_reward.mean()) / heldout.true_reward.std()
    late["overrating"] = late.rm_z - late.true_z
    return late.sort_values("overrating", ascending=False).head(k)[
        ["phase", "completion", "true_reward", "rm_reward", "overrating"]]
