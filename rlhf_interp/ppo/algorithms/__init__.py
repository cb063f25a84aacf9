"""Training algorithms behind one interface (`base.Algorithm`: advantages + loss), chosen by ``algorithm`` in the
config. Adding one: a module here with an `Algorithm` subclass, its line below, its name in `PPOConfig.algorithm`'s
``Literal``, and its tests (docs/algorithms.md)."""

from __future__ import annotations

from rlhf_interp.ppo.algorithms.base import Algorithm, Minibatch, UpdateContext
from rlhf_interp.ppo.algorithms.dpo import DPO
from rlhf_interp.ppo.algorithms.grpo import GRPO
from rlhf_interp.ppo.algorithms.ppo import PPO
from rlhf_interp.ppo.algorithms.rloo import RLOO

ALGORITHMS: dict[str, type[Algorithm]] = {"ppo": PPO, "grpo": GRPO, "rloo": RLOO, "dpo": DPO}


def get_algorithm(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]()
    except KeyError:
        raise ValueError(f"Unknown algorithm {name!r}; use one of {sorted(ALGORITHMS)}.") from None


__all__ = ["ALGORITHMS", "Algorithm", "Minibatch", "UpdateContext", "get_algorithm"]
