"""`TrainerState`: everything besides the weights that the next phase depends on, with ``state_dict`` /
``load_state_dict`` -- the phase count, the optimizer and its learning-rate schedule, the KL controller, the
reward statistics and the reward model's version. Checkpointing (`run_dir`) writes ``state_dict()`` into
``trainer_state.pt`` and resume hands it back to ``load_state_dict``; neither touches the trainer's internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlhf_interp.ppo.losses import RunningStd

NEEDED = ("phase", "optimizer", "scheduler", "kl_controller", "reward_std")  # keys of every state_dict()


@dataclass
class TrainerState:
    phase: int  # whole phases done
    optimizer: torch.optim.Optimizer
    scheduler: Any  # torch LR scheduler over ``optimizer``
    kl_ctl: Any  # `kl.AdaptiveKLController` or `kl.FixedKLController`
    reward_std: RunningStd
    rm_refresh: Any = None  # `rm_refresh.RMRefresher` when the run refreshes its reward model, else None

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors, numbers and dicts: it loads with ``torch.load(weights_only=True)``."""
        return {
            "phase": self.phase,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "kl_controller": self.kl_ctl.state_dict(),
            "reward_std": self.reward_std.state_dict(),
            **({"rm_refresh": self.rm_refresh.state_dict()} if self.rm_refresh is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Back to ``state``: into the optimizer and scheduler built for the same parameters, in place."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.reward_std.load_state_dict(state["reward_std"])
        self.phase = int(state["phase"])  # before the RM: its restore trims what came after this phase
        rm_state = state.get("rm_refresh")
        if self.rm_refresh is not None:
            self.rm_refresh.load_state_dict(rm_state or {"version": 0, "refreshed_at": 0})
        elif rm_state and rm_state.get("version", 0) > 0:
            raise ValueError(f"This run refreshed its reward model (version {rm_state['version']} at the checkpoint), "
                             f"but rm_refresh_every is off now: resume without --set rm_refresh_every=null, so the "
                             f"run continues with the RM it had.")
