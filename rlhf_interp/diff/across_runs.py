"""Where each of many runs changed the model: the same residual and weight diff for every run, as tidy rows.

Why one function: a comparison of training methods (PPO vs GRPO vs RLOO vs DPO, or seeds of one method) asks
whether they change the network in different places. That needs every run diffed against the same base on the
same texts with the same statistics, one row per (run, layer), so a reader can take intervals over seeds per
method. Runs are loaded one at a time (only the base and one tuned model are ever in memory).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from rlhf_interp.diff.core import residual_diff
from rlhf_interp.diff.weights import summarize_weight_diff, weight_diff


def where_change_lives(base, runs: Mapping[str, str | Path], texts: Sequence[str], *,
                       hooks: Sequence[str] = ("hook_resid_post",), batch_size: int = 8,
                       progress: bool = False) -> dict[str, pd.DataFrame]:
    """Diff each run's latest checkpoint (or each model directory) against ``base`` on ``texts``.

    Returns ``residual`` (one row per run, layer and hook: ``rel_diff_norm`` = mean over tokens of
    ||tuned - base|| / ||base||, ``cosine_sim``, ``n_tokens``) and ``weights`` (one row per run, layer and
    group -- attention / mlp / norm / embedding -- with the pooled ``rel_diff_norm`` and ``diff_norm``). Both
    carry a ``run`` column holding the mapping's key.
    """
    from tqdm.auto import tqdm

    from rlhf_interp.bridge.loading import load_model, model_device

    residual, weights = [], []
    for label, path in tqdm(list(runs.items()), desc="runs", disable=not progress):
        tuned = load_model(path, device=model_device(base), frozen=True)
        res = residual_diff(base, tuned, texts, hooks=tuple(hooks), batch_size=batch_size)
        residual.append(res.assign(run=label))
        per_layer = summarize_weight_diff(weight_diff(base, tuned), by=("layer", "group"))
        weights.append(per_layer.assign(run=label))
        del tuned
    first = ["run"]
    res_df = pd.concat(residual, ignore_index=True) if residual else pd.DataFrame(columns=first)
    w_df = pd.concat(weights, ignore_index=True) if weights else pd.DataFrame(columns=first)
    return {"residual": res_df[first + [c for c in res_df.columns if c not in first]],
            "weights": w_df[first + [c for c in w_df.columns if c not in first]]}
