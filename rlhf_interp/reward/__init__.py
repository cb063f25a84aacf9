"""Rewards: functions ``list[str] -> Tensor``, preference pairs, and the Bradley-Terry reward model.

Data flows one way inside: `functions` (builtin and user rewards) -> `preferences` (read, validate,
write, split pairs) -> `synthetic` (pairs labelled by a reward function) -> `model` (the RM: backbone +
scalar head, scoring, loading) -> `prefix` (frozen-prefix cache) -> `training` (Bradley-Terry training) ->
`refresh` (versions of a fine-tuned RM, for iterated online RLHF) -> `hacking` (a learned RM against the true
reward: held-out texts, probes, proxy counts, per-phase tables; how the studies make their RM).
The RM's head is `rlhf_interp.bridge.heads.ValueHead`; nothing here knows the PPO trainer.
"""

from rlhf_interp.core.lazy import lazy_exports, names_from

_WHERE = {
    **names_from(".functions", "BUILTIN_REWARDS", "RewardFn", "char_count", "get_reward", "response_length",
                 "reward_name", "score", "sentiment"),
    **names_from(".preferences", "MAX_REPORTED_ERRORS", "REQUIRED_FIELDS", "PreferenceDataError", "PreferencePair",
                 "parse_preference_line", "read_preferences", "split_pairs", "write_preferences"),
    **names_from(".synthetic", "SynthStats", "label_pair", "synthesize_pairs"),
    **names_from(".model", "DEFAULT_HOOK", "HEAD_FILE", "METRICS_FILE", "MODEL_SUBDIR", "RewardModel",
                 "RewardModelReward", "bradley_terry_loss", "load_reward_model", "preference_accuracy",
                 "resolve_model_dir"),
    **names_from(".prefix", "PrefixCache", "Scorer"),
    **names_from(".training", "TRAINABLE_LAYERS_BY_DEFAULT", "FitResult", "RewardTrainingConfig", "fit_reward_model",
                 "frozen_layer_count", "set_trainable", "train_reward_model"),
    **names_from(".refresh", "finetune_reward_model", "load_version", "open_version", "pair_accuracy",
                 "read_version_meta", "save_version"),
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
