"""KL-budgeted edit search: the cheapest steering edit that does X.

A user has a reward (or a behaviour given as contrastive prompts) and wants the edit that buys the most
of it for the least KL. The space is steering vector x layer x coefficient x positions; each trial is
measured with `evaluate_edit` (reward and the exact per-sequence KL(edited || base) on the edited model's
own samples, same prompts and sampling seed for every trial). Optuna's TPE sampler searches it with two
objectives (maximise reward, minimise KL); the answer is the Pareto front. With ``kl_budget`` trials
above the budget are infeasible (Optuna's constraint mechanism), so the front lies within the budget.

Reproducible: the sampler is seeded and every trial samples with the same seed, so the same call
gives the same trials (on the same machine and library versions).

Where the vector comes from when only a reward is given (`reward_pairs`): sample a few continuations per
prompt from the base model, pair each prompt's best- and worst-scored text, and take the contrastive
(mean paired difference) or PCA direction of those pairs: a direction "towards more reward".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pandas as pd

from rlhf_interp.bridge import generate
from rlhf_interp.core.seeding import mix_seed
from rlhf_interp.edits import Steering, SteeringVector, resolve_layers
from rlhf_interp.measure import evaluate_edit
from rlhf_interp.reward import get_reward, score

POSITIONS = ("all", "prompt", "generated")


def reward_pairs(model, prompts: Sequence[str], reward: str | Callable, *, samples_per_prompt: int = 4,
                 max_new_tokens: int = 24, seed: int = 0) -> list[tuple[str, str]]:
    """``(best, worst)`` prompt + continuation texts per prompt, from base-model samples scored by ``reward``;
    prompts whose samples all score the same are skipped."""
    if samples_per_prompt < 2:
        raise ValueError(f"samples_per_prompt must be >= 2 to form a pair, got {samples_per_prompt}.")
    reward_fn = get_reward(reward) if not callable(reward) else reward
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    gen = generate(model, repeated, max_new_tokens=max_new_tokens, seed=mix_seed(seed, 1))
    values = score(reward_fn, gen.texts).tolist()
    pairs = []
    for i, prompt in enumerate(prompts):
        block = list(range(i * samples_per_prompt, (i + 1) * samples_per_prompt))
        best = max(block, key=lambda j: (values[j], -j))
        worst = min(block, key=lambda j: (values[j], j))
        if values[best] > values[worst]:
            pairs.append((prompt + gen.texts[best], prompt + gen.texts[worst]))
    if not pairs:
        raise ValueError("Every prompt's samples scored the same under this reward, so no contrastive pair could be "
                         "formed; use more samples per prompt, more prompts, or give pairs explicitly.")
    return pairs


def scale_to_residual(model, vector: SteeringVector, texts: Sequence[str]) -> tuple[SteeringVector, list[int]]:
    """The vector rescaled per layer to the layer's mean residual norm on ``texts`` (`residual_norms`), so a
    coefficient means the same at every layer: 1 = a push as large as the residual stream itself.
    Returns it and the layers dropped because the vector is zero (or not finite) there."""
    from rlhf_interp.edits import residual_norms

    usable = {layer: v for layer, v in vector.vectors.items() if float(v.norm()) > 0 and bool(v.isfinite().all())}
    dropped = sorted(set(vector.vectors) - set(usable))
    if not usable:
        return SteeringVector({}, vector.hook, vector.source, vector.model, dict(vector.meta)), dropped
    norms = residual_norms(model, list(texts), sorted(usable), hook=vector.hook)
    scale = {int(r.layer): float(r.resid_norm) for r in norms.itertuples()}
    scaled = {layer: v / v.norm() * scale[layer] for layer, v in usable.items()}
    return SteeringVector(scaled, vector.hook, vector.source, vector.model,
                          {**vector.meta, "scaled_to": "resid_norm"}), dropped


@dataclass
class SearchResult:
    """``trials``: one row per trial (params, reward, KL, feasible, pareto); ``pareto``: the front, by KL."""

    trials: pd.DataFrame
    pareto: pd.DataFrame
    study: Any

    def cheapest(self, min_reward: float) -> pd.Series | None:
        """The feasible trial with the least KL whose reward is at least ``min_reward`` (None: none reaches it)."""
        ok = self.trials[self.trials["feasible"] & (self.trials["reward_mean"] >= min_reward)]
        return None if ok.empty else ok.sort_values(["kl_mean", "number"]).iloc[0]


def edit_search(model, vectors: dict[str, SteeringVector] | SteeringVector, prompts: Sequence[str],
                reward: str | Callable, *, layers: Sequence[int] | str = "all",
                coef_range: tuple[float, float] = (0.25, 16.0), positions: Sequence[str] = POSITIONS,
                n_trials: int = 30, seed: int = 0, n_startup_trials: int | None = None, kl_budget: float | None = None,
                max_new_tokens: int = 24, reference=None) -> SearchResult:
    """Multi-objective TPE search over vector x layer x coefficient (log-uniform in ``coef_range``) x positions.

    ``vectors``: one `SteeringVector` or several by name (the name becomes a categorical parameter).
    Layers must exist in every vector. Returns a `SearchResult`; columns of ``trials``: number, vector,
    layer, coef, positions, reward_mean, reward_stderr, kl_mean, kl_stderr, kl_per_token, seconds,
    feasible, pareto.
    """
    import optuna

    trial_constraints = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna >= 5
    vectors = {"vector": vectors} if isinstance(vectors, SteeringVector) else dict(vectors)
    if not vectors:
        raise ValueError("edit_search needs at least one steering vector.")
    layer_list = resolve_layers(model, layers)
    for name, vec in vectors.items():
        missing = [layer for layer in layer_list if layer not in vec.layers]
        if missing:
            raise ValueError(f"Steering vector {name!r} has no entry for layer(s) {missing} (it has {vec.layers}); "
                             f"build it at every searched layer or search fewer layers.")
    bad = [p for p in positions if p not in POSITIONS]
    if bad or not positions:
        raise ValueError(f"positions must be a non-empty subset of {POSITIONS}, got {list(positions)}.")
    lo, hi = float(coef_range[0]), float(coef_range[1])
    if not 0 < lo < hi:
        raise ValueError(f"coef_range must be (low, high) with 0 < low < high (searched on a log scale), got {coef_range}.")
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}.")

    def objective(trial) -> tuple[float, float]:
        name = trial.suggest_categorical("vector", list(vectors)) if len(vectors) > 1 else next(iter(vectors))
        layer = trial.suggest_categorical("layer", layer_list)
        coef = trial.suggest_float("coef", lo, hi, log=True)
        pos = trial.suggest_categorical("positions", list(positions)) if len(positions) > 1 else positions[0]
        start = time.perf_counter()
        summary = evaluate_edit(model, Steering(vectors[name], [layer], coef, positions=pos), prompts, reward,
                                reference=reference, max_new_tokens=max_new_tokens, seed=seed).iloc[0]
        reward_mean, kl_mean = float(summary["reward_mean"]), float(summary["kl_exact_mean"])
        trial.set_user_attr("row", {"vector": name, "layer": layer, "coef": coef, "positions": pos,
                                    "reward_mean": reward_mean, "reward_stderr": float(summary["reward_stderr"]),
                                    "kl_mean": kl_mean, "kl_stderr": float(summary["kl_exact_stderr"]),
                                    "kl_per_token": float(summary["kl_per_token"]),
                                    "seconds": time.perf_counter() - start})
        excess = kl_mean - kl_budget if kl_budget is not None else 0.0
        trial.set_user_attr("constraint", [excess])
        if trial_constraints:
            trial.set_constraint("kl_over_budget", excess)
        return reward_mean, kl_mean

    startup = n_startup_trials if n_startup_trials is not None else max(1, min(10, n_trials // 3))
    # Optuna 5 reads constraints from the trial (set above); 4.x takes them from the sampler.
    constraints = {} if trial_constraints else {"constraints_func": lambda t: t.user_attrs["constraint"]}
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, **constraints)
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        study.optimize(objective, n_trials=n_trials)
    finally:
        optuna.logging.set_verbosity(previous)
    front = {t.number for t in study.best_trials}
    rows = [{"number": t.number, **t.user_attrs["row"],
             "feasible": bool(t.user_attrs["constraint"][0] <= 0), "pareto": t.number in front}
            for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    trials = pd.DataFrame(rows)
    pareto = trials[trials["pareto"]].sort_values(["kl_mean", "number"]).reset_index(drop=True)
    return SearchResult(trials, pareto, study)


__all__ = ["POSITIONS", "SearchResult", "edit_search", "reward_pairs", "scale_to_residual"]
