"""Undo RLHF with one direction: edit the tuned model along the fine-tuning direction and see what is left.

The fine-tuning direction at a layer is the mean of (tuned - base) of ``hook_resid_post`` over the real
non-BOS tokens of some texts; its principal components come from the same streamed pass
(`rlhf_interp.diff.difference_directions`). The edits are the toolkit's own (`rlhf_interp.edits`):

- ``ablate_mean``: `DirectionAblation` of the unit mean direction at every layer (no component reads or
  writes it; Arditi et al. 2024 style, the "un-alignment" of Lee et al. 2024); ``ablate_mean_local``: the
  same at that one layer only (its input and what it writes), later layers may write the direction again;
- ``ablate_pcs<k>``: the same for the top ``k`` principal directions of the difference (orthonormal, so
  projecting them out one after another removes their span);
- ``subtract_mean``: `Steering` by minus the mean difference at that layer's ``hook_resid_post`` (real
  non-BOS positions, where the mean was measured);
- ``add_mean`` (on the base model): the reverse, plus the mean difference: how much of RLHF one vector adds.

For each edited model: teacher-forced on ``texts`` (positions and KLs as in `rlhf_interp.patching.scores`),
KL(edited || base), KL(edited || tuned) and the reward proxy; and, with ``max_new_tokens > 0``, the sampled
reward and KL(edited || base) of the edited model's own continuations (`rlhf_interp.measure.evaluate_edit`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import pandas as pd

from rlhf_interp.diff import DifferenceDirections, difference_directions
from rlhf_interp.edits import (
    Combined,
    DirectionAblation,
    Edit,
    NoEdit,
    Steering,
    SteeringVector,
)
from rlhf_interp.measure import evaluate_edit
from rlhf_interp.patching.activation import residual_attribution
from rlhf_interp.patching.scores import Patch, run_patches

HOOK = "hook_resid_post"
NOT_BOS = slice(1, None)  # real positions >= 1: where the mean difference was measured


def undo_settings(directions: DifferenceDirections, layers: Iterable[int], pcs: Sequence[int] = (1, 3)
                  ) -> list[tuple[str, str, int | None, Edit]]:
    """``(model, method, layer, edit)`` for every undo edit (unbound; ``model`` says which model takes it)."""
    out: list[tuple[str, str, int | None, Edit]] = [("tuned", "none", None, NoEdit()), ("base", "none", None, NoEdit())]
    mean = SteeringVector.from_diff(directions, HOOK, "mean")
    for layer in layers:
        if float(mean[layer].norm()) == 0.0:
            raise ValueError(f"The tuned model's {HOOK} at layer {layer} equals the base model's on these texts: there "
                             f"is no fine-tuning direction there to ablate or subtract. Pick a layer where they differ "
                             f"(see the residual attribution).")
        out.append(("tuned", "ablate_mean", layer, DirectionAblation(mean[layer], "all")))
        out.append(("tuned", "ablate_mean_local", layer, DirectionAblation(mean[layer], [layer])))
        for k in pcs:
            if k > directions.components.shape[2]:
                raise ValueError(f"Asked to ablate the top {k} principal directions, but only "
                                 f"{directions.components.shape[2]} were computed (n_components).")
            ablations = [DirectionAblation(directions.vector(layer, HOOK, i), "all") for i in range(k)]
            out.append(("tuned", f"ablate_pcs{k}", layer, Combined(*ablations)))
        out.append(("tuned", "subtract_mean", layer, Steering(mean, [layer], -1.0, positions=NOT_BOS, hook="resid_post")))
        out.append(("base", "add_mean", layer, Steering(mean, [layer], 1.0, positions=NOT_BOS, hook="resid_post")))
    return out


def undo_rlhf(base, tuned, texts: Sequence[str], layers: Iterable[int], *, prompts: Sequence[str] = (),
              pcs: Sequence[int] = (1, 3), directions: DifferenceDirections | None = None,
              reward: str | Callable = "char_count", reward_token_ids: Sequence[int] | None = None,
              max_new_tokens: int = 24, seed: int = 0, batch_size: int = 8, return_details: bool = False
              ) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One row per (model, method, layer); columns:

    - ``kl_tf_base`` / ``kl_tf_tuned``: mean teacher-forced KL(edited || base) / KL(edited || tuned) per token;
    - ``kl_removed`` = 1 - kl_tf_base / KL(tuned || base): the share of KL(tuned||base) the edit removes
      (1 = back to base; negative = further from base than the tuned model);
    - ``reward_proxy`` and ``proxy_gain_kept`` = (proxy - proxy_base) / (proxy_tuned - proxy_base);
    - with ``max_new_tokens > 0`` and ``prompts``: ``reward_mean``, ``reward_stderr``, ``kl_sample_per_token``
      (exact KL(edited || base) per generated token on the edited model's own samples), ``reward_gain_kept`` =
      (reward - reward_base) / (reward_tuned - reward_base), ``reward_gain_removed`` = 1 - reward_gain_kept;
    - ``n_tokens`` (teacher-forced positions).

    ``directions``: precomputed difference directions (else computed on ``texts``, with max(pcs) components).
    With ``return_details``: ``(table, per_text, per_prompt)``, the teacher-forced per-text sums of
    `run_patches` (``component`` = method) and one row per (model, method, layer, prompt) of the sampled
    continuations (``reward``, ``kl_exact`` per sequence, ``n_new_tokens``): every setting samples the same
    prompts with the same seed, so differences between settings are paired per prompt.
    """
    layers = list(layers)
    if directions is None:
        directions = difference_directions(base, tuned, texts, direction_hooks=(HOOK,),
                                           n_components=max(pcs, default=1), batch_size=batch_size)
    settings = undo_settings(directions, layers, pcs)
    models = {"base": base, "tuned": tuned}
    for name, _, _, edit in settings:
        edit.on(models[name])
    patches = [Patch("into_tuned" if name == "tuned" else "into_base", -1 if layer is None else layer, method,
                     lambda batch, e=edit: e) for name, method, layer, edit in settings]
    tf, per_text = run_patches(base, tuned, texts, patches, reward_token_ids=reward_token_ids,
                               batch_size=batch_size, desc="undo RLHF", return_per_text=True)
    kl_tuned_base = float(tf["kl_patched_base"].iloc[0])  # the unedited tuned model's row
    proxy_base, proxy_tuned = float(tf["reward_proxy"].iloc[1]), float(tf["reward_proxy"].iloc[0])
    rows, per_prompt = [], []
    for (name, method, layer, edit), (_, r) in zip(settings, tf.iterrows()):
        row = {"model": name, "method": method, "layer": layer, "kl_tf_base": r["kl_patched_base"],
               "kl_tf_tuned": r["kl_patched_tuned"],
               "kl_removed": 1.0 - r["kl_patched_base"] / kl_tuned_base if kl_tuned_base > 0 else float("nan"),
               "reward_proxy": r["reward_proxy"],
               "proxy_gain_kept": (r["reward_proxy"] - proxy_base) / (proxy_tuned - proxy_base)
               if proxy_tuned != proxy_base else float("nan"),
               "n_tokens": r["n_tokens"]}
        if max_new_tokens > 0 and prompts:
            summary, seqs = evaluate_edit(models[name], edit, list(prompts), reward, reference=base,
                                          max_new_tokens=max_new_tokens, seed=seed, return_sequences=True)
            sampled = summary.iloc[0]
            per_prompt.append(pd.DataFrame({"model": name, "method": method, "layer": layer,
                                            "prompt": seqs["prompt_idx"], "reward": seqs["reward"],
                                            "kl_exact": seqs["kl_exact"], "n_new_tokens": seqs["n_new_tokens"]}))
            row.update(reward_mean=sampled["reward_mean"], reward_stderr=sampled["reward_stderr"],
                       kl_sample_per_token=sampled["kl_per_token"], entropy_mean=sampled["entropy_mean"],
                       distinct_2=sampled["distinct_2"])
        rows.append(row)
    table = pd.DataFrame(rows)
    table["layer"] = table["layer"].astype("Int64")
    if "reward_mean" in table:
        r_tuned, r_base = table["reward_mean"].iloc[0], table["reward_mean"].iloc[1]
        gain = r_tuned - r_base
        table["reward_gain_kept"] = (table["reward_mean"] - r_base) / gain if gain != 0 else float("nan")
        table["reward_gain_removed"] = 1.0 - table["reward_gain_kept"]
    if not return_details:
        return table
    prompts_table = (pd.concat(per_prompt, ignore_index=True) if per_prompt else
                     pd.DataFrame(columns=["model", "method", "layer", "prompt", "reward", "kl_exact", "n_new_tokens"]))
    prompts_table["layer"] = prompts_table["layer"].astype("Int64")
    return table, per_text, prompts_table


def attribution_layers(table: pd.DataFrame, k: int = 2) -> list[int]:
    """The ``k`` layers the attribution points to: largest additive increments (`residual_attribution`, into
    base; embedding and unembedding left out, attention and MLP of one layer summed)."""
    parts = residual_attribution(table[table["direction"] == "into_base"])
    parts = parts[~parts["component"].isin(["embed", "unembed"])]
    per_layer = parts.groupby("layer")["increment"].sum()
    return sorted(int(layer) for layer in per_layer.nlargest(k).index)
