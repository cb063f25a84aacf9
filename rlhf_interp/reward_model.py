"""Deprecated path: the reward model lives in `rlhf_interp.reward` (``from rlhf_interp.reward import
RewardModel, load_reward_model, train_reward_model``). These names keep working for one release, with a warning."""

from rlhf_interp.core.lazy import lazy_exports, names_from

_WHERE = {
    **names_from("rlhf_interp.reward.model", "DEFAULT_HOOK", "HEAD_FILE", "METRICS_FILE", "MODEL_SUBDIR",
                 "RewardModel", "RewardModelReward", "bradley_terry_loss", "load_reward_model", "preference_accuracy",
                 "resolve_model_dir"),
    **names_from("rlhf_interp.reward.prefix", "PrefixCache"),
    **names_from("rlhf_interp.reward.training", "TRAINABLE_LAYERS_BY_DEFAULT", "RewardTrainingConfig",
                 "frozen_layer_count", "set_trainable", "train_reward_model"),
    **names_from("rlhf_interp.core.masks", "gather_last", "last_token_index"),
    **names_from("rlhf_interp.bridge.hf", "run_decoder_tail"),
    **names_from("rlhf_interp.bridge.heads", "ValueHead"),
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE, deprecated="rlhf_interp.reward")
