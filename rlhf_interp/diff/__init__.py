"""Model diffing: where and when did fine-tuning change the model?

Modules (one job each): `compat` (refuse incomparable models), `stream` (run both models on the same
batches), `metrics` (pure per-token math), `accumulators` (fixed-size running statistics), `lens`
(logit lens of a direction), `weights` (parameter diff), `attention_view` (circuitsvis view),
`core` (`diff_models` and one-analysis helpers), `trajectory` (every checkpoint of a run), `texts`
(policy samples as diff inputs).
"""

from rlhf_interp.diff.accumulators import (
    AttentionAccumulator,
    DifferenceDirections,
    DirectionAccumulator,
    OutputAccumulator,
    ResidualAccumulator,
)
from rlhf_interp.diff.attention_view import attention_diff_view, most_changed_heads
from rlhf_interp.diff.compat import ModelMismatchError, check_compatible
from rlhf_interp.diff.core import (
    ANALYSES,
    ModelDiff,
    attention_diff,
    diff_models,
    difference_directions,
    output_diff,
    residual_diff,
)
from rlhf_interp.diff.lens import direction_logit_scores, logit_lens_table, logit_lens_token_ranks
from rlhf_interp.diff.stream import RESID_HOOKS
from rlhf_interp.diff.texts import policy_samples
from rlhf_interp.diff.trajectory import checkpoint_step, diff_trajectory, trajectory_checkpoints
from rlhf_interp.diff.weights import classify_param, summarize_weight_diff, weight_diff

__all__ = [
    "ANALYSES", "RESID_HOOKS", "AttentionAccumulator", "DifferenceDirections", "DirectionAccumulator", "ModelDiff",
    "ModelMismatchError", "OutputAccumulator", "ResidualAccumulator", "attention_diff", "attention_diff_view",
    "check_compatible", "checkpoint_step", "classify_param", "diff_models", "diff_trajectory",
    "difference_directions", "direction_logit_scores", "logit_lens_table", "logit_lens_token_ranks",
    "most_changed_heads", "output_diff", "policy_samples", "residual_diff", "summarize_weight_diff",
    "trajectory_checkpoints", "weight_diff",
]
