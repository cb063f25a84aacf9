"""How far does an edit move the model's output distribution? KL shift, reward, entropy, diversity.

Fine-tuning with a KL penalty keeps ``KL(pi || ref)`` in check; this package puts the same number on
edits so the two can be compared: how much KL does a steering vector or an ablation spend for the
reward it buys?

- `token_shift`: `kl_shift`, per token, on fixed text (teacher-forced); reference logits cached by content;
- `sequences`: per sequence, on the edited model's own samples (k1, k3, exact), reward, diversity;
- `sweeps`: many settings, one tidy row each.

Column conventions: ``kl_pi_ref`` = KL(edited || reference), ``kl_ref_pi`` = KL(reference || edited),
in nats. All KL and entropy arithmetic is `rlhf_interp.core.kl`'s.
"""

from rlhf_interp.core.lazy import lazy_exports, names_from

_WHERE = {
    **names_from(".token_shift", "LogitsCache", "forward_logits", "kl_shift", "per_token_frame"),
    **names_from(".sequences", "distinct_n", "evaluate_edit", "sample", "score_generation", "sequence_kl",
                 "summarize_sequences"),
    **names_from(".sweeps", "ablation_sweep", "all_heads", "steering_settings", "steering_sweep", "sweep"),
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
