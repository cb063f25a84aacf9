"""Measurements for the KL-direction study (to move into ``rlhf_interp.measure`` once it settles):

- `behaviour`: the rate of a regex-defined behaviour X, a reward for its absence, token-id distinct-n,
  mode-collapse onset;
- `scoring`: teacher-forced per-token log-probs, entropy and exact KL both ways of fixed continuations;
- `coverage`: the reference's own samples scored under a policy (lost modes, sequence-level KL(ref || pi));
- `estimators`: k1/k2/k3 against the exact per-token KL, binned by the true KL, and per-sequence sums.
"""
