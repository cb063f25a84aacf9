"""Edits: steering, ablations and direction removal as context managers over a `TransformerBridge`,
and the steering vectors they use.

- `base`: the Edit protocol (hooks on at ``__enter__``, off at ``__exit__``), `NoEdit`, `Combined`;
- `positions`: which tokens an edit touches, correct with and without the KV cache;
- `steering`: `Steering`; `ablation`: `Ablation` (zero / mean / resample); `direction`:
  `DirectionAblation` and `orthogonalize_weights`; `rank_one`: `RankOneEdit`, a ROME/MEMIT-style
  rank-one weight edit of one MLP's output matrix; `prompting`: `Prompting` / `few_shot`, a prefix before every
  prompt (measured in its own context by `rlhf_interp.measure.context`); `amplify`: `LogitAmplification`,
  logits_tuned + a (logits_tuned - logits_base);
- `vectors`: `SteeringVector` and where vectors come from (mean difference, contrastive, PCA,
  fine-tuning direction).
"""

from rlhf_interp.core.lazy import lazy_exports, names_from

_WHERE = {
    **names_from(".errors", "EditError"),
    **names_from(".positions", "PassInfo", "PositionTracker", "Positions", "check_positions", "prompt_length",
                 "tracker"),
    **names_from(".base", "STEERING_HOOKS", "Combined", "Edit", "NoEdit", "active_edits", "active_edits_key",
                 "edit_columns", "resolve_layers", "short_hook", "steering_hook_name", "suspended", "unit_direction"),
    **names_from(".steering", "Steering"),
    **names_from(".ablation", "ABLATION_KINDS", "Ablation", "ReferenceActivations", "Target", "parse_targets",
                 "reference_activations"),
    **names_from(".direction", "DirectionAblation", "orthogonalize_weights", "project_out"),
    **names_from(".rank_one", "RankOneEdit", "key_statistics", "output_matrix", "rank_one_edit", "target_direction"),
    **names_from(".prompting", "Prompting", "changes_context", "few_shot"),
    **names_from(".amplify", "LogitAmplification"),
    **names_from(".vectors", "SteeringVector", "contrastive", "finetuning_direction", "mean_difference",
                 "paired_differences", "pca_direction", "reduced_activations", "residual_norms"),
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
