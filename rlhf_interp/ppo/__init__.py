"""RLHF with a KL penalty on a TransformerBridge policy: PPO, GRPO, RLOO and DPO (``algorithm``).

- `config`: ``PPOConfig``, one validated flat config per run;
- `kl_penalty`: ``KLPenalty``, the run's KL (direction x estimator x placement x coefficient), built once: which
  options exist, and the only code that branches on them (the rollout's terms, the advantages' coefficient, the loss term);
- `reference_bank`: the reference's own samples per prompt, drawn once, for the sequence-level KL(ref||pi);
- `rollout`: sample, then one forward pass per model -> ``Rollout``;
- `losses`: GAE, the clipped policy and value losses, the KL in the advantages;
- `algorithms`: what differs between PPO, GRPO, RLOO and DPO -- advantages and loss, one module each (docs/algorithms.md);
- `update`: one update over a phase's data (the algorithm's minibatches and loss, one step each);
- `state`: ``TrainerState``, what a checkpoint restores besides the weights;
- `trainer`: ``PPOTrainer``, the loop for every algorithm, logging, checkpoints and resume;
- `rm_refresh`: iterated online RLHF, a learned reward model refreshed on the policy's samples (``rm_refresh_*``);
  `refresh_tables`: frozen vs refreshed runs read back and scored offline, as tidy tables;
- `runs`: ``train_or_resume``, a run brought to its end (resumed if killed, left alone if done) for the studies;
- `kl_audit`: checks every KL option's gradient on an enumerable policy (docs/kl.md's table).

Names are imported on first use (PEP 562), so ``import rlhf_interp.ppo`` stays light.
"""

from rlhf_interp.core.lazy import lazy_exports, names_from

_WHERE = {
    **names_from(".config", "PPOConfig"),
    **names_from(".rollout", "PolicyPass", "Rollout", "collect"),
    **names_from(".trainer", "PPOTrainer"),
    **names_from(".state", "TrainerState"),
    **names_from(".update", "TrainingDivergedError", "ppo_update"),
    **names_from("rlhf_interp.bridge.heads", "ValueHead", "forward_with_values", "values_from_hook"),
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
