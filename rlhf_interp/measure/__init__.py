"""How far does an edit or a trained model move the output distribution? KL shift, reward, entropy, diversity,
coverage of the reference, and the KL-direction study's measurements.

Fine-tuning with a KL penalty keeps ``KL(pi || ref)`` in check; this package puts the same number on
edits so the two can be compared: how much KL does a steering vector or an ablation spend for the
reward it buys? And for a trained policy: which of the reference's behaviours did the penalty keep?

- `token_shift`: `kl_shift`, per token, on fixed text (teacher-forced); reference logits cached by content;
- `sequences`: per sequence, on the edited model's own samples (k1, k3, exact), reward, diversity;
- `sweeps`: many settings, one tidy row each;
- `token_scores`: teacher-forced per-token log-probs, entropy and exact KL both ways of fixed continuations;
- `behaviour`: the rate of a regex-defined behaviour X, a reward for its absence, token-id distinct-n, collapse onset;
- `coverage`: the reference's own samples scored under a policy (lost modes, sequence-level KL(ref || pi));
- `context`, `capability`: a prompting prefix measured in the user's frame; capability NLL on held-out text, fluency;
- `kl_estimator_audit`: k1/k2/k3 against the exact per-token KL, binned by the true KL, and per-sequence sums;
- `matched_runs`: training runs read at a common KL (or reward) level;
- `seed_groups`: runs differing only in their seed as one group; curves and end values over seeds (t bands);
- `stratified`: two groups compared at equal values of a count (bins, per-bin means, a stratified difference,
  slopes), each with its 95% interval;
- `kl_study`, `kl_study_runs`, `kl_study_tables`: the KL-direction study (settings and run names, the base step,
  evaluations and training a run with a trainer handed in, per-prompt tables with intervals and paired comparisons).

Column conventions: ``kl_pi_ref`` = KL(edited || reference), ``kl_ref_pi`` = KL(reference || edited),
in nats. All KL and entropy arithmetic is `rlhf_interp.core.kl`'s.
"""

from rlhf_interp.core.lazy import lazy_exports, names_from

_WHERE = {
    **names_from(".token_shift", "LogitsCache", "forward_logits", "kl_shift", "per_token_frame"),
    **names_from(".sequences", "distinct_n", "evaluate_edit", "sample", "score_generation", "sequence_kl",
                 "summarize_sequences"),
    **names_from(".sweeps", "ablation_sweep", "all_heads", "steering_settings", "steering_sweep", "sweep"),
    **names_from(".token_scores", "TokenScores", "forward_of", "score_tokens"),
    **names_from(".behaviour", "Behaviour", "CANDIDATES", "behaviour_rates", "chunked_distinct", "collapse_onset",
                 "pattern_count", "token_distinct"),
    **names_from(".coverage", "ReferenceSamples", "coverage_summary", "draw_reference_samples", "measure_coverage"),
    **names_from(".kl_estimator_audit", "binned_audit", "estimates", "overall_audit", "sequence_sums"),
    **names_from(".matched_runs", "at_level", "common_level", "matched", "seed_spread"),
    **names_from(".seed_groups", "RunGroup", "check_group", "group_runs", "over_seeds", "parse_group", "seed_band",
                 "seed_ends"),
    **names_from(".stratified", "bin_labels", "binned_means", "count_bins", "slope_difference", "slope_interval",
                 "stratified_difference"),
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
