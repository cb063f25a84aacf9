"""rlhf_interp: train RLHF policies with PPO on TransformerLens bridges and see what RLHF changed inside."""

__version__ = "0.1.0"

from rlhf_interp.checkpoints import latest_checkpoint, list_checkpoints, read_meta, save_hf_model
from rlhf_interp.diff import (
    DifferenceDirections,
    ModelDiff,
    ModelMismatchError,
    attention_diff,
    attention_diff_view,
    check_compatible,
    diff_models,
    diff_trajectory,
    difference_directions,
    logit_lens_table,
    logit_lens_token_ranks,
    most_changed_heads,
    output_diff,
    policy_samples,
    residual_diff,
    summarize_weight_diff,
    weight_diff,
)
from rlhf_interp.edits import (
    Ablation,
    Combined,
    DirectionAblation,
    EditError,
    NoEdit,
    Steering,
    orthogonalize_weights,
    prompt_length,
)
from rlhf_interp.generation import Generation, generate
from rlhf_interp.kl import (
    AdaptiveKLController,
    entropy,
    js_divergence,
    kl_divergence,
    kl_estimate,
    kl_estimate_reverse,
)
from rlhf_interp.models import (
    EMBEDDED_ALIAS,
    KNOWN_ALIASES,
    TINY_ALIAS,
    ModelLoadError,
    default_device,
    fetch_embedded,
    load_hf_model,
    load_model,
    tokenize,
)
from rlhf_interp.measure import (
    LogitsCache,
    ablation_sweep,
    evaluate_edit,
    kl_shift,
    score_generation,
    sequence_kl,
    steering_sweep,
    sweep,
)
from rlhf_interp.preference_data import PreferencePair, read_preferences, synthesize_pairs, write_preferences
from rlhf_interp.prompts import load_prompts
from rlhf_interp.report import Report
from rlhf_interp.reward_model import (
    RewardModel,
    RewardTrainingConfig,
    bradley_terry_loss,
    load_reward_model,
    train_reward_model,
)
from rlhf_interp.steering import (
    SteeringVector,
    contrastive,
    finetuning_direction,
    mean_difference,
    pca_direction,
)
