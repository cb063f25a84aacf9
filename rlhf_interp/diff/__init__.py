"""Model diffing: where and when did fine-tuning change the model?

Modules (one job each): `compat` (refuse incomparable models), `stream` (run both models on the same
batches), `metrics` (pure per-token math), `accumulators` (fixed-size running statistics), `lens`
(logit lens of a direction), `weights` (parameter diff), `attention_view` (circuitsvis view),
`core` (`diff_models` and one-analysis helpers), `trajectory` (every checkpoint of a run, read through
`rlhf_interp.bridge.RunDir`; evenly spaced picks, a per-step summary), `texts` (policy samples as diff inputs),
`demo` (a stand-in tuned run). Names are re-exported lazily (PEP 562).
"""

from rlhf_interp.core.lazy import lazy_exports, names_from

_WHERE = {
    **names_from(".accumulators", "AttentionAccumulator", "DifferenceDirections", "DirectionAccumulator",
                 "OutputAccumulator", "ResidualAccumulator"),
    **names_from(".attention_view", "attention_diff_view", "most_changed_heads"),
    **names_from(".compat", "ModelMismatchError", "check_compatible"),
    **names_from(".core", "ANALYSES", "ModelDiff", "attention_diff", "diff_models", "difference_directions",
                 "output_diff", "residual_diff"),
    **names_from(".lens", "direction_logit_scores", "logit_lens_table", "logit_lens_token_ranks"),
    **names_from(".stream", "RESID_HOOKS"),
    **names_from(".texts", "policy_samples"),
    **names_from(".trajectory", "diff_trajectory"),
    **names_from("rlhf_interp.bridge.run_dirs", "checkpoint_step"),  # its home; analyses/causal_ppo.py imports it here
    **names_from(".weights", "classify_param", "summarize_weight_diff", "weight_diff"),
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
