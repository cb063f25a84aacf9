"""PPO with a KL penalty on a TransformerBridge policy."""

from rlhf_interp.ppo.config import PPOConfig
from rlhf_interp.ppo.rollout import Rollout, collect
from rlhf_interp.ppo.trainer import PPOTrainer, TrainingDivergedError
from rlhf_interp.ppo.value_head import ValueHead, forward_with_values, values_from_hook

__all__ = ["PPOConfig", "PPOTrainer", "Rollout", "TrainingDivergedError", "ValueHead", "collect",
           "forward_with_values", "values_from_hook"]
