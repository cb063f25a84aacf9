"""Deprecated path: reward functions live in `rlhf_interp.reward` (``from rlhf_interp.reward import
get_reward, score``). These names keep working for one release, with a warning."""

from rlhf_interp.core.lazy import lazy_exports, names_from

_WHERE = names_from("rlhf_interp.reward.functions", "BUILTIN_REWARDS", "RewardFn", "char_count", "get_reward",
                    "response_length", "reward_name", "score", "sentiment")
__getattr__, __dir__ = lazy_exports(__name__, _WHERE, deprecated="rlhf_interp.reward")
