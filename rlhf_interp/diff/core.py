"""Compare a base and a tuned model on the same prompts, in one streaming pass.

`diff_models` runs both models once per batch and feeds every requested accumulator from that pass
(residual metrics, difference directions, attention patterns, next-token distributions), then adds the
weight diff and the logit lens of the difference directions. The one-analysis helpers
(`residual_diff`, `attention_diff`, ...) are the same pass with fewer accumulators.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from rlhf_interp.bridge.loading import model_source
from rlhf_interp.diff.accumulators import (
    AttentionAccumulator,
    DifferenceDirections,
    DirectionAccumulator,
    OutputAccumulator,
    ResidualAccumulator,
)
from rlhf_interp.diff.compat import check_compatible
from rlhf_interp.diff.lens import logit_lens_table, logit_lens_token_ranks
from rlhf_interp.diff.stream import RESID_HOOKS, paired_batches, validate_hooks
from rlhf_interp.diff.weights import summarize_weight_diff, weight_diff

ANALYSES: tuple[str, ...] = ("residual", "directions", "attention", "output", "weights")
PAIRWISE: tuple[str, ...] = ("residual", "directions")  # analyses fed one hook point at a time (`update_pair`)


@dataclass
class ModelDiff:
    """Every diff table (tidy DataFrames; empty when that analysis was not requested).

    - ``residual``: per (layer, hook): ``cosine_sim``, ``rel_diff_norm`` (||tuned-base||/||base||),
      ``norm_ratio`` (||tuned||/||base||), ``diff_norm``, ``base_norm``, ``tuned_norm`` (token means), ``n_tokens``.
    - ``residual_by_position``: the first three per (layer, hook, ``position``) (0 = BOS).
    - ``directions``: per (layer, hook): ``mean_diff_norm``, ``rms_diff_norm``, ``mean_share``,
      ``top_pc_variance_ratio``, ``top_pc_cos_with_mean`` (see `DifferenceDirections.table`).
    - ``components``: per (layer, hook, component): ``explained_variance(_ratio)``, ``cos_with_mean``.
    - ``logit_lens``: top promoted/suppressed tokens of each layer's mean difference (see `logit_lens_table`),
      projected by the base and by the tuned model (``model`` column).
    - ``logit_lens_tokens``: rank of the watched tokens (e.g. ".") per layer (see `logit_lens_token_ranks`).
    - ``weights``: per parameter tensor; ``weights_summary``: per (layer, component) (see `weight_diff`).
    - ``attention``: per (layer, head): ``js_divergence``, ``base_bos_attention``, ``tuned_bos_attention``.
    - ``output_tokens``: per (prompt_index, position): ``kl_pi_ref`` KL(tuned||base), ``kl_ref_pi``, entropies.
    - ``token_shifts``: tokens whose mean next-token probability moved most.
    - ``output_summary``: one row: mean ``kl_pi_ref``, ``kl_ref_pi``, ``n_tokens``.

    Trajectories add a ``step`` column to every table. ``vectors`` holds the difference directions as
    tensors (of the last step for a trajectory); ``config`` says how the diff was made.
    """

    residual: pd.DataFrame = field(default_factory=pd.DataFrame)
    residual_by_position: pd.DataFrame = field(default_factory=pd.DataFrame)
    directions: pd.DataFrame = field(default_factory=pd.DataFrame)
    components: pd.DataFrame = field(default_factory=pd.DataFrame)
    logit_lens: pd.DataFrame = field(default_factory=pd.DataFrame)
    logit_lens_tokens: pd.DataFrame = field(default_factory=pd.DataFrame)
    weights: pd.DataFrame = field(default_factory=pd.DataFrame)
    weights_summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    attention: pd.DataFrame = field(default_factory=pd.DataFrame)
    output_tokens: pd.DataFrame = field(default_factory=pd.DataFrame)
    token_shifts: pd.DataFrame = field(default_factory=pd.DataFrame)
    output_summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    vectors: DifferenceDirections | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The non-empty tables by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), pd.DataFrame) and not getattr(self, f.name).empty}

    def with_step(self, step: int) -> "ModelDiff":
        """A copy whose tables carry a leading ``step`` column."""
        tagged = {name: df.assign(step=step)[["step", *df.columns]] for name, df in self.tables().items()}
        return ModelDiff(**tagged, vectors=self.vectors, config={**self.config, "step": step})

    @staticmethod
    def concat(diffs: Sequence["ModelDiff"], config: dict[str, Any] | None = None) -> "ModelDiff":
        """Stack several (step-tagged) diffs into one; ``vectors`` of the last."""
        names = {name for d in diffs for name in d.tables()}
        tables = {name: pd.concat([d.tables()[name] for d in diffs if name in d.tables()], ignore_index=True)
                  for name in names}
        return ModelDiff(**tables, vectors=diffs[-1].vectors if diffs else None, config=config or {})

    def save(self, out_dir: str | Path) -> list[Path]:
        """Write every table as ``<name>.csv``, the directions as ``directions.pt`` and ``config.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, df in self.tables().items():
            df.to_csv(out / f"{name}.csv", index=False)
            written.append(out / f"{name}.csv")
        if self.vectors is not None:
            written.append(self.vectors.save(out / "directions.pt"))
        (out / "config.json").write_text(json.dumps(self.config, indent=2, default=str))
        return [*written, out / "config.json"]


def _check_analyses(analyses: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(analyses)
    bad = [a for a in chosen if a not in ANALYSES]
    if bad:
        raise ValueError(f"Unknown analysis {bad}; choose from {', '.join(ANALYSES)}.")
    return chosen


def diff_models(base, tuned, prompts: Sequence[str], *, analyses: Iterable[str] = ANALYSES,
                hooks: Sequence[str] = RESID_HOOKS, direction_hooks: Sequence[str] = ("hook_resid_post",),
                n_components: int = 5, batch_size: int = 8, include_bos: bool = False, max_positions: int = 64,
                per_token: bool = True, top_k: int = 15, watch_tokens: Sequence[str] = ()) -> ModelDiff:
    """Diff ``tuned`` against ``base`` on ``prompts`` (one streaming pass; see `ModelDiff` for the tables).

    ``include_bos=False`` leaves the BOS position out of every statistic: both models see the same
    BOS token with no context, and its huge-norm residual (an attention sink) would dominate means
    and principal components. ``max_positions`` bounds the per-position table. ``watch_tokens``
    (e.g. ``["."]``) get their logit-lens rank at every layer.
    """
    chosen = _check_analyses(analyses)
    hooks, direction_hooks = validate_hooks(hooks), validate_hooks(direction_hooks)
    check_compatible(base, tuned)
    cfg = base.cfg
    accumulators: dict[str, Any] = {}
    if "residual" in chosen:
        accumulators["residual"] = ResidualAccumulator(cfg.n_layers, hooks, max_positions)
    if "directions" in chosen:
        accumulators["directions"] = DirectionAccumulator(cfg.n_layers, cfg.d_model, direction_hooks, n_components)
    if "attention" in chosen:
        accumulators["attention"] = AttentionAccumulator(cfg.n_layers, cfg.n_heads)
    if "output" in chosen:
        accumulators["output"] = OutputAccumulator(cfg.d_vocab, per_token=per_token)
    config = {"base": model_source(base), "tuned": model_source(tuned), "n_prompts": len(prompts),
              "analyses": list(chosen), "hooks": list(hooks), "direction_hooks": list(direction_hooks),
              "n_components": n_components, "batch_size": batch_size, "include_bos": include_bos,
              "max_positions": max_positions, "watch_tokens": list(watch_tokens)}

    if accumulators:
        _run_pass(base, tuned, prompts, accumulators, batch_size=batch_size, include_bos=include_bos)

    result = ModelDiff(config=config)
    if "residual" in accumulators:
        result.residual = accumulators["residual"].result()
        result.residual_by_position = accumulators["residual"].result_by_position()
    if "directions" in accumulators:
        vectors = accumulators["directions"].result()
        result.vectors, result.directions, result.components = vectors, vectors.table(), vectors.components_table()
        lens, ranks = [], []
        for label, bridge in (("base", base), ("tuned", tuned)):
            for h, hook in enumerate(vectors.hooks):
                lens.append(logit_lens_table(bridge, vectors.mean[h], hook=hook, model=label, k=top_k))
                if watch_tokens:
                    ranks.append(logit_lens_token_ranks(bridge, vectors.mean[h], watch_tokens, hook=hook, model=label))
        result.logit_lens = pd.concat(lens, ignore_index=True)
        result.logit_lens_tokens = pd.concat(ranks, ignore_index=True) if ranks else pd.DataFrame()
    if "attention" in accumulators:
        result.attention = accumulators["attention"].result()
    if "output" in accumulators:
        out = accumulators["output"]
        result.output_tokens = out.per_token_table(base.tokenizer) if per_token else pd.DataFrame()
        result.token_shifts = out.token_shifts(base.tokenizer, top_k)
        result.output_summary = pd.DataFrame([out.summary()])
    if "weights" in chosen:
        result.weights = weight_diff(base, tuned)
        result.weights_summary = summarize_weight_diff(result.weights)
    return result


def _run_pass(base, tuned, prompts: Sequence[str], accumulators: dict[str, Any], *, batch_size: int,
              include_bos: bool) -> None:
    """Feed every accumulator from one pass over ``prompts``.

    Residual metrics and directions take each hook point's (base, tuned) pair as the tuned model computes
    it (`paired_batches` with ``on_pair``), so a batch never holds both models' residual activations;
    attention patterns and logits, needed whole, come with the yielded batch.
    """
    listeners: dict[str, list[Any]] = {}  # hook name -> the accumulators that take its pairs
    for key in PAIRWISE:
        for name in accumulators[key].hook_names() if key in accumulators else ():
            listeners.setdefault(name, []).append(accumulators[key])

    def on_pair(batch, name: str, base_act, tuned_act) -> None:
        for acc in listeners[name]:
            acc.update_pair(batch, name, base_act, tuned_act)

    hook_names = [name for acc in accumulators.values() for name in acc.hook_names()]
    whole = [acc for key, acc in accumulators.items() if key not in PAIRWISE]
    for batch in paired_batches(base, tuned, prompts, hook_names, batch_size=batch_size, include_bos=include_bos,
                                need_logits="output" in accumulators, on_pair=on_pair, streamed=listeners):
        for acc in whole:
            acc.update(batch)


# ----------------------------------------------------------------------------------------------
# One analysis at a time


def residual_diff(base, tuned, prompts: Sequence[str], *, by_position: bool = False, **kwargs) -> pd.DataFrame:
    """Residual-stream metrics per (layer, hook) -- or per (layer, hook, position) with ``by_position``."""
    result = diff_models(base, tuned, prompts, analyses=("residual",), **kwargs)
    return result.residual_by_position if by_position else result.residual


def difference_directions(base, tuned, prompts: Sequence[str], **kwargs) -> DifferenceDirections:
    """Mean difference and principal components per layer (``.table()`` for the tidy summary)."""
    return diff_models(base, tuned, prompts, analyses=("directions",), **kwargs).vectors


def attention_diff(base, tuned, prompts: Sequence[str], **kwargs) -> pd.DataFrame:
    """Mean Jensen-Shannon divergence of attention patterns per (layer, head)."""
    return diff_models(base, tuned, prompts, analyses=("attention",), **kwargs).attention


def output_diff(base, tuned, prompts: Sequence[str], **kwargs) -> pd.DataFrame:
    """Per-token KL both ways (kl_pi_ref = KL(tuned||base), kl_ref_pi = KL(base||tuned)) and entropies of the next-token
    distributions."""
    return diff_models(base, tuned, prompts, analyses=("output",), **kwargs).output_tokens
