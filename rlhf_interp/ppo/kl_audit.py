"""Audit the KL options on a policy small enough to enumerate: is each surrogate's gradient the
gradient of the KL it names?

A tabular policy over sequences (``vocab ** horizon`` of them, one logit row per prefix) in float64.
The *true* gradient comes from autograd through the enumerated objective; the *surrogate* gradient comes
from the very functions the trainer calls (`kl.kl_loss_terms`, `kl.kl_reward_terms`,
`losses.penalised_advantages`, `losses.policy_loss`) on sampled or enumerated sequences:

- its expectation (every sequence weighted by its probability under pi_old) shows the bias;
- a Monte-Carlo mean over ``n_samples`` sequences shows that the variance is workable.

Targets, both scaled by ``1 / horizon`` because PPO averages over tokens:

- ``placement='loss'``: ``sum_x pi_old(x) sum_t D(s_t)``, the per-token KL at the rollout's states, the
  states held fixed; checked on-policy and off-policy (theta != theta_old, as in later PPO epochs);
- ``placement='reward'``: ``sum_x pi(x) sum_t D(s_t)``, the states moving with the policy (pi_ref: the
  sequence-level KL(pi||ref)); checked on-policy with GAE lambda 1 (the conditions of the proof), and under
  the shipped defaults by `conditions_table` (lambda 0.95, a critic, later epochs);
- ``placement='sequence'``: ``sum_x ref(x) sum_t KL(ref||pi)(s_t)`` = the sequence-level KL(ref||pi), on
  sequences sampled from the reference (the bank); checked on-policy and off-policy.

`kl_audit_tables.variance_table` measures every accepted option's Monte-Carlo error at logit distances 1, 2 and 3, `bank_table`
the sequence option's by bank size, `targets_table` how far the per-token KL(ref||pi) targets point from the
sequence-level one.

Rebuild docs/kl.md's tables: ``python -m rlhf_interp.ppo.kl_audit_tables --docs docs`` (a few minutes on one core):
docs/kl_gradients.csv, kl_summary.csv, kl_drift.csv, kl_conditions.csv, kl_variance.csv, kl_sequence_bank.csv,
kl_targets.csv.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from rlhf_interp.core.kl import (bounded_ratio, kl_from_logprobs, kl_loss_terms, kl_reward_terms, kl_sequence_terms,
                            masked_mean, penalty_kl)
from rlhf_interp.ppo import losses
from rlhf_interp.ppo.kl_penalty import kl_options


@dataclass
class TabularProblem:
    """Policy (old and current), reference and a state-value baseline, one row per prefix."""

    vocab: int
    horizon: int
    theta_old: Tensor  # [n_states, vocab] logits of the rollout's policy
    theta: Tensor  # [n_states, vocab] logits where the gradient is taken
    ref: Tensor  # [n_states, vocab]
    baseline: Tensor  # [n_states] any function of the state: must not bias anything

    @property
    def on_policy(self) -> bool:
        return bool(torch.equal(self.theta, self.theta_old))


def make_problem(vocab: int, horizon: int, *, seed: int = 0, distance: float = 1.0, off_policy: float = 0.0
                 ) -> TabularProblem:
    """Random reference logits; the policy ``distance`` away; theta a further ``off_policy`` away."""
    g = torch.Generator().manual_seed(seed)
    n_states = sum(vocab ** t for t in range(horizon))
    ref = torch.randn(n_states, vocab, generator=g, dtype=torch.float64)
    theta_old = ref + distance * torch.randn(n_states, vocab, generator=g, dtype=torch.float64)
    theta = theta_old + off_policy * torch.randn(n_states, vocab, generator=g, dtype=torch.float64)
    baseline = torch.randn(n_states, generator=g, dtype=torch.float64)
    return TabularProblem(vocab, horizon, theta_old, theta, ref, baseline)


def all_sequences(vocab: int, horizon: int) -> Tensor:
    """Every sequence, ``[vocab ** horizon, horizon]``."""
    return torch.cartesian_prod(*[torch.arange(vocab)] * horizon).reshape(-1, horizon)


def state_index(tokens: Tensor, vocab: int) -> Tensor:
    """Row of the logit table for the prefix before each token: prefixes of length t start at sum_{j<t} V^j."""
    n, horizon = tokens.shape
    index = torch.zeros(n, horizon, dtype=torch.long)
    offset, code = 0, torch.zeros(n, dtype=torch.long)
    for t in range(horizon):
        index[:, t] = offset + code
        offset += vocab ** t
        code = code * vocab + tokens[:, t]
    return index


def sequence_logprob(theta: Tensor, tokens: Tensor, states: Tensor) -> Tensor:
    return torch.log_softmax(theta, -1)[states].gather(-1, tokens[..., None]).squeeze(-1).sum(-1)


def _per_state_kl(problem: TabularProblem, theta: Tensor, direction: str) -> Tensor:
    logp, logq = torch.log_softmax(theta, -1), torch.log_softmax(problem.ref, -1)
    return kl_from_logprobs(logp, logq) if direction == "pi_ref" else kl_from_logprobs(logq, logp)


def true_gradient(problem: TabularProblem, direction: str, placement: str) -> Tensor:
    """Gradient at ``problem.theta`` of the target named by (direction, placement), over the token mean."""
    seqs = all_sequences(problem.vocab, problem.horizon)
    states = state_index(seqs, problem.vocab)
    theta = problem.theta.clone().requires_grad_(True)
    # loss: the rollout's states, fixed; sequence: the reference's states; reward: the policy's own, moving with it
    states_from = {"loss": problem.theta_old, "sequence": problem.ref}.get(placement, theta)
    weight = sequence_logprob(states_from, seqs, states).exp()
    per_token = _per_state_kl(problem, theta, direction)[states]  # [n_seq, horizon]
    target = (weight * per_token.sum(-1)).sum() / problem.horizon
    return torch.autograd.grad(target, theta)[0]


def exact_critic(problem: TabularProblem, direction: str, estimator: str) -> Tensor:
    """V^{pi_old}(s) of the KL reward stream r_t = -value_t (kl_coef 1), by enumeration: a perfect critic."""
    seqs = all_sequences(problem.vocab, problem.horizon)
    states = state_index(seqs, problem.vocab)
    old_all = torch.log_softmax(problem.theta_old, -1)[states]
    ref_all = torch.log_softmax(problem.ref, -1)[states]
    pick = seqs[..., None]
    logp, logref = old_all.gather(-1, pick).squeeze(-1), ref_all.gather(-1, pick).squeeze(-1)
    value = penalty_kl(logp, logref, direction=direction, estimator=estimator, logits_policy=old_all,
                       logits_ref=ref_all)
    to_go = -value.flip(-1).cumsum(-1).flip(-1)  # sum_{t' >= t} r_t'
    p = sequence_logprob(problem.theta_old, seqs, states).exp()[:, None].expand_as(to_go)
    num = torch.zeros(problem.theta.shape[0], dtype=torch.float64).index_add_(0, states.flatten(), (p * to_go).flatten())
    den = torch.zeros_like(num).index_add_(0, states.flatten(), p.flatten())
    return num / den.clamp_min(1e-300)


def surrogate_gradient(problem: TabularProblem, direction: str, estimator: str, placement: str, tokens: Tensor,
                       weights: Tensor | None = None, *, naive: bool = False, lam: float = 1.0,
                       baseline: Tensor | None = None, local_in_loss: bool = False) -> Tensor:
    """Gradient of the trainer's KL objective on ``tokens`` (sampled from pi_old; from ref for ``sequence``), at
    ``problem.theta``.

    ``weights`` (one per sequence, summing to 1) turns the sample mean into an exact expectation when
    ``tokens`` are all sequences. ``naive=True`` gives what the trainer did before these surrogates (the
    per-token value estimate differentiated as a loss, or put in the reward alone), for the audit table.
    Reward placement only: ``lam`` (GAE lambda), ``baseline`` (the critic, one value per state; default the
    problem's arbitrary one), ``local_in_loss`` (the variant that moves each token's own score term out of the
    advantage into an exact KL loss term at the rollout's states; `conditions_table`). Advantages are always
    computed at theta_old, as PPO does; off-policy the clipped surrogate (clip 0.2) carries them.
    """
    n, horizon = tokens.shape
    states = state_index(tokens, problem.vocab)
    theta = problem.theta.clone().requires_grad_(True)
    logp_all = torch.log_softmax(theta, -1)[states]
    ref_all = torch.log_softmax(problem.ref, -1)[states]
    old_all = torch.log_softmax(problem.theta_old, -1)[states]
    pick = tokens[..., None]
    logp, logref, logp_old = (x.gather(-1, pick).squeeze(-1) for x in (logp_all, ref_all, old_all))
    mask = torch.ones(n, horizon, dtype=torch.float64)
    weighted = mask if weights is None else weights[:, None].expand(n, horizon)
    if placement == "sequence":
        if direction != "ref_pi":
            raise ValueError("The sequence placement is KL(ref||pi) of sequences.")
        terms = kl_sequence_terms(logp, logref, estimator=estimator, logp_all=logp_all, ref_logp_all=ref_all)
        objective = masked_mean(terms, weighted)
    elif placement == "loss":
        if naive:
            terms = penalty_kl(logp, logref, direction=direction, estimator=estimator, logits_policy=logp_all,
                               logits_ref=ref_all)
        else:
            terms = kl_loss_terms(logp, logp_old, logref, direction=direction, estimator=estimator,
                                  logp_all=logp_all, ref_logp_all=ref_all)
        objective = masked_mean(terms, weighted)
    else:
        with torch.no_grad():  # the rollout's terms: at theta_old
            if naive:
                value = penalty_kl(logp_old, logref, direction=direction, estimator=estimator, logits_policy=old_all,
                                   logits_ref=ref_all)
                score = value
            else:
                value, score = kl_reward_terms(logp_old, logref, direction=direction, estimator=estimator,
                                               logp_all=old_all, ref_logp_all=ref_all)
            if local_in_loss:
                score = torch.zeros_like(value)  # the own-token term leaves the advantage ...
            critic = problem.baseline if baseline is None else baseline
            advantages, _ = losses.penalised_advantages(torch.zeros(n, dtype=torch.float64), value, score,
                                                        critic[states], mask, kl_coef=1.0, gamma=1.0, lam=lam)
        # PPO minimises -A * ratio: with the KL as a cost, -A has the KL's gradient.
        objective, _, _ = losses.policy_loss(logp, logp_old.detach(), advantages, weighted, clip_range=0.2)
        if local_in_loss:  # ... and comes back as the exact per-token KL at the rollout's states, at the current theta
            local = kl_loss_terms(logp, logp_old, logref, direction=direction, estimator="exact", logp_all=logp_all,
                                  ref_logp_all=ref_all)
            objective = objective + masked_mean(local, weighted)
    return torch.autograd.grad(objective, theta)[0]


def sampling_distribution(problem: TabularProblem, placement: str) -> Tensor:
    """Logits the checked tokens are sampled from: the reference for the sequence placement, else pi_old."""
    return problem.ref if placement == "sequence" else problem.theta_old


def compare(estimate: Tensor, truth: Tensor) -> dict[str, float]:
    """Cosine and relative norm error ``|estimate - truth| / |truth|``."""
    cosine = torch.nn.functional.cosine_similarity(estimate.flatten(), truth.flatten(), dim=0).item()
    return {"cosine": cosine, "rel_error": ((estimate - truth).norm() / truth.norm()).item()}


def check(problem: TabularProblem, direction: str, estimator: str, placement: str, *, n_samples: int,
          seed: int = 0, naive: bool = False) -> dict[str, float]:
    """Bias (exact expectation) and Monte-Carlo agreement of one option with the true gradient."""
    if placement == "reward" and not problem.on_policy:
        raise ValueError("The reward placement's proof is on-policy (GAE lambda 1, the first minibatch); "
                         "`conditions_table` measures it elsewhere.")
    truth = true_gradient(problem, direction, placement)
    seqs = all_sequences(problem.vocab, problem.horizon)
    probs = sequence_logprob(sampling_distribution(problem, placement), seqs, state_index(seqs, problem.vocab)).exp()
    expected = surrogate_gradient(problem, direction, estimator, placement, seqs, probs, naive=naive)
    g = torch.Generator().manual_seed(seed)
    sample = seqs[torch.multinomial(probs, n_samples, replacement=True, generator=g)]
    mc = surrogate_gradient(problem, direction, estimator, placement, sample, naive=naive)
    exp_cmp, mc_cmp = compare(expected, truth), compare(mc, truth)
    return {"expected_cosine": exp_cmp["cosine"], "expected_rel_error": exp_cmp["rel_error"],
            "mc_cosine": mc_cmp["cosine"], "mc_rel_error": mc_cmp["rel_error"], "n_samples": n_samples}


# The problems the tests and docs/kl.md use: one step, and three steps of a 3-token vocabulary.
PROBLEMS = {"one_step": dict(vocab=6, horizon=1), "multi_step": dict(vocab=3, horizon=3)}
N_SAMPLES = 100_000
OFF_POLICY = 0.3


def importance_weighted_k1(logprob: Tensor, logprob_old: Tensor, logprob_ref: Tensor, direction: str) -> Tensor:
    """The refused k1 loss term, for the audit only: pi_ref ``rho log(pi/ref)``, ref_pi ``w_old log(ref/pi)``.
    Its expected gradient is right; its per-token minimum is not at pi = ref."""
    if direction == "pi_ref":
        return bounded_ratio(logprob - logprob_old) * (logprob - logprob_ref)
    return bounded_ratio(logprob_ref - logprob_old).detach() * (logprob_ref - logprob)


def repeated_steps(direction: str, estimator: str, *, seed: int = 0, vocab: int = 200, n_samples: int = 16,
                   steps: int = 40, lr: float = 0.5) -> dict[str, float]:
    """Many SGD steps on the KL loss term of *one* small batch, as PPO's epochs do, over a vocabulary much
    larger than the batch (as in a language model): the exact KL before and after, in ``direction``.

    ``estimator`` 'k1' uses `importance_weighted_k1` (refused), anything else `kl.kl_loss_terms`.
    """
    problem = make_problem(vocab, 1, seed=seed)
    g = torch.Generator().manual_seed(seed)
    old, ref = torch.log_softmax(problem.theta_old, -1)[0], torch.log_softmax(problem.ref, -1)[0]
    tokens = torch.multinomial(old.exp(), n_samples, replacement=True, generator=g)
    theta = problem.theta_old.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([theta], lr=lr)

    @torch.no_grad()
    def exact() -> float:
        logp = torch.log_softmax(theta, -1)[0]
        return float(kl_from_logprobs(logp, ref) if direction == "pi_ref" else kl_from_logprobs(ref, logp))

    before = exact()
    for _ in range(steps):
        logp = torch.log_softmax(theta, -1)[0][tokens]
        terms = importance_weighted_k1(logp, old[tokens], ref[tokens], direction) if estimator == "k1" else \
            kl_loss_terms(logp, old[tokens], ref[tokens], direction=direction, estimator=estimator)
        optimizer.zero_grad()
        terms.mean().backward()
        optimizer.step()
    return {"kl_before": before, "kl_after": exact()}


def drift_table(seeds: int = 3) -> pd.DataFrame:
    """`repeated_steps` for k1 (refused) and k3 in both directions: why k1 is refused in the loss."""
    return pd.DataFrame([{"direction": d, "estimator": e, "seed": seed, **repeated_steps(d, e, seed=seed)}
                         for d in ("pi_ref", "ref_pi") for e in ("k1", "k3") for seed in range(seeds)])


def _check_or_nan(problem: TabularProblem, direction: str, estimator: str, placement: str, n_samples: int,
                  seed: int, *, naive: bool) -> dict[str, float]:
    """`check`, or NaNs where the naive form does not exist (ref_pi k2 never had one; the sequence placement is new)."""
    try:
        return check(problem, direction, estimator, placement, n_samples=n_samples, seed=seed, naive=naive)
    except ValueError:
        nan = float("nan")
        return {"expected_cosine": nan, "expected_rel_error": nan, "mc_cosine": nan, "mc_rel_error": nan,
                "n_samples": n_samples}


_NAN = {"expected_cosine": float("nan"), "expected_rel_error": float("nan")}


def audit_table(n_samples: int = N_SAMPLES, seed: int = 0) -> pd.DataFrame:
    """One row per (problem, theta, direction, estimator, placement): accepted options with the trainer's
    surrogate, refused ones with the naive form they would have had (why they are refused)."""
    rows = []
    for name, shape in PROBLEMS.items():
        for at, off in (("on_policy", 0.0), ("off_policy", OFF_POLICY)):
            problem = make_problem(**shape, seed=seed, off_policy=off)
            for direction, estimator, placement, accepted in kl_options():
                if placement == "reward" and off:
                    continue
                result = _check_or_nan(problem, direction, estimator, placement, n_samples, seed, naive=not accepted)
                naive = _check_or_nan(problem, direction, estimator, placement, n_samples, seed, naive=True) \
                    if accepted and placement != "sequence" else result if not accepted else _NAN
                rows.append({"problem": name, "theta": at, "direction": direction, "estimator": estimator,
                             "placement": placement, "accepted": accepted, **result,
                             "naive_expected_cosine": naive["expected_cosine"],
                             "naive_expected_rel_error": naive["expected_rel_error"]})
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per option (docs/kl.md): worst bias and Monte-Carlo agreement over the problems and thetas
    it was checked on, and what the naive form's expected gradient did on the multi-step problem."""
    rows = []
    for (direction, estimator, placement), df in table.groupby(["direction", "estimator", "placement"], sort=False):
        naive = df[(df.problem == "multi_step") & (df.theta == "on_policy")].iloc[0]
        rows.append({"direction": direction, "estimator": estimator, "placement": placement,
                     "accepted": bool(df.accepted.iloc[0]), "checks": len(df),
                     "max_bias_rel_error": df.expected_rel_error.max(), "min_mc_cosine": df.mc_cosine.min(),
                     "max_mc_rel_error": df.mc_rel_error.max(),
                     "naive_cosine": naive.naive_expected_cosine, "naive_rel_error": naive.naive_expected_rel_error})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------------
# Where the proofs do not hold exactly: the shipped defaults, variance far from the reference, bank size.
