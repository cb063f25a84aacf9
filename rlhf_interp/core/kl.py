"""Pure math on logits and log-probs: the sampled distribution's log-probs, exact KL and JS, Schulman's
k1/k2/k3 estimators, entropy, the KL terms PPO optimises, and the adaptive KL controller of Ziegler et
al. (2019).

Everything here is a function of tensors (torch only), so it can be checked against a float64
reference in a test and reused by the trainer, the model diff and the edit measurements alike.

Notation: ``P`` and ``Q`` are distributions over the vocabulary given as logits along the last dim.
``KL(P || Q) = sum_x P(x) (log P(x) - log Q(x))``.
A KL is named by its argument order, never "forward"/"reverse" (the field uses both words both ways):
``pi_ref`` is ``KL(pi || ref)`` (Ziegler et al., InstructGPT; mode-seeking), ``ref_pi`` is ``KL(ref || pi)``
(mass-covering); `legacy_direction` maps and explains the old words. Which PPO surrogate estimates the gradient of which KL, and
why, is derived in ``docs/kl.md`` and checked against enumerated float64 gradients in
``tests/test_kl_gradients.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from rlhf_interp.core.finite import min_is_finite

Estimator = Literal["k1", "k2", "k3"]
ESTIMATORS: tuple[str, ...] = ("exact", "k1", "k2", "k3")
DIRECTIONS: tuple[str, ...] = ("pi_ref", "ref_pi")
# The words this toolkit used before issue 29, and what they meant here. They are refused in a new config (the field
# uses them both ways round); recorded configs and metric logs of old run directories are mapped (`upgrade_kl_name`).
LEGACY_DIRECTIONS: dict[str, str] = {"forward": "pi_ref", "reverse": "ref_pi"}

# Log-ratios (pi/pi_old, ref/pi) are clamped to [-20, 20] before exp: exp(20) ~ 4.9e8 is finite in fp32
# and bf16, and a ratio that far from 1 is already clipped by PPO (clip_range ~ 0.2) or is an importance
# weight so extreme that one token would swamp a batch. Inside the bound nothing changes.
LOG_RATIO_BOUND = 20.0


def bounded_ratio(log_ratio: Tensor) -> Tensor:
    """``exp(log_ratio)`` with the log-ratio clamped to ``[-LOG_RATIO_BOUND, LOG_RATIO_BOUND]``."""
    return torch.exp(log_ratio.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND))


def sampling_logprobs(logits: Float[Tensor, "... vocab"], temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None) -> Float[Tensor, "... vocab"]:
    """Log-probs (fp32) of the distribution that ``bridge.generate`` samples from with these settings.

    Why one function: the importance ratio, the reference's log-probs, the KL and the entropy are only
    about the sampled text if they use the distribution that was sampled. TransformerLens divides the
    logits by the temperature, then keeps the top-k logits (ties kept) or the smallest prefix of the
    sorted probabilities reaching ``top_p``, and renormalises; so do we (removed tokens get -inf).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for a sampling distribution, got {temperature}.")
    scaled = logits.float() / temperature
    if top_k is not None:
        top_k = min(int(top_k), scaled.shape[-1])
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    elif top_p is not None:
        sorted_logits, sorted_idx = torch.sort(scaled, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative > top_p
        remove[..., 1:] = remove[..., :-1].clone()  # keep the token that crosses top_p
        remove[..., 0] = False
        scaled = scaled.masked_fill(remove.scatter(-1, sorted_idx, remove), float("-inf"))
    return torch.log_softmax(scaled, dim=-1)


def kl_from_logprobs(logp: Float[Tensor, "... vocab"], logq: Float[Tensor, "... vocab"]) -> Float[Tensor, "..."]:
    """Exact KL(P || Q) from normalised log-probabilities (0 * log 0 counts as 0)."""
    p = logp.exp()
    log_ratio = torch.where(p > 0, logp - logq, torch.zeros_like(logp))  # where, then multiply: no NaN grads
    return (p * log_ratio).sum(dim=-1)


def kl_both_ways_and_entropy(logp: Float[Tensor, "... vocab"], logq: Float[Tensor, "... vocab"]
                             ) -> tuple[Float[Tensor, "..."], Float[Tensor, "..."], Float[Tensor, "..."]]:
    """KL(P || Q), KL(Q || P) and H(P) from normalised log-probs, in one sweep over the vocabulary.

    Why: a rollout logs all three for every generated token, over [batch, gen, vocab] tensors (49152 wide for
    SmolLM2); computed one by one they read and write that width about twice as often (`torch.where` guards
    against 0 * -inf in each). Same values as
    `kl_from_logprobs` (both ways) and `entropy_from_logprobs`; where a token has probability 0 on either side
    (top-k / top-p), those functions' 0 * log 0 = 0 handling runs instead. No gradient use intended.
    """
    if not (min_is_finite(logp) and min_is_finite(logq)):  # log-probs are <= 0: only NaN or -inf can hide here
        return kl_from_logprobs(logp, logq), kl_from_logprobs(logq, logp), entropy_from_logprobs(logp)
    p, q = logp.exp(), logq.exp()
    diff = logp - logq
    return (p * diff).sum(-1), -(q * diff).sum(-1), -(p * logp).sum(-1)


def kl_divergence(logits_p: Float[Tensor, "... vocab"], logits_q: Float[Tensor, "... vocab"]
                  ) -> Float[Tensor, "..."]:
    """Exact KL(P || Q) along the last dim, one value per position."""
    return kl_from_logprobs(torch.log_softmax(logits_p, dim=-1), torch.log_softmax(logits_q, dim=-1))


def js_divergence(logits_p: Float[Tensor, "... vocab"], logits_q: Float[Tensor, "... vocab"]
                  ) -> Float[Tensor, "..."]:
    """Jensen-Shannon divergence (natural log, so at most log 2) along the last dim."""
    logp = torch.log_softmax(logits_p, dim=-1)
    logq = torch.log_softmax(logits_q, dim=-1)
    # log(p/m) and log(q/m) written through d = log q - log p, so identical inputs give exactly 0.
    d = logq - logp
    log2 = torch.log(torch.tensor(2.0, dtype=d.dtype, device=d.device))
    log_p_over_m = log2 - torch.logaddexp(torch.zeros_like(d), d)  # softplus, exact past its threshold of 20
    log_q_over_m = d + log_p_over_m
    return 0.5 * (logp.exp() * log_p_over_m).sum(-1) + 0.5 * (logq.exp() * log_q_over_m).sum(-1)


def js_divergence_probs(p: Float[Tensor, "... n"], q: Float[Tensor, "... n"], eps: float = 1e-12
                        ) -> Float[Tensor, "..."]:
    """JS divergence between probability vectors (e.g. attention patterns) along the last dim."""
    m = 0.5 * (p + q)
    kl_pm = (p * (torch.log(p + eps) - torch.log(m + eps))).sum(-1)
    kl_qm = (q * (torch.log(q + eps) - torch.log(m + eps))).sum(-1)
    return 0.5 * (kl_pm + kl_qm)


def entropy(logits: Float[Tensor, "... vocab"]) -> Float[Tensor, "..."]:
    """Shannon entropy (nats) of softmax(logits) along the last dim."""
    return entropy_from_logprobs(torch.log_softmax(logits, dim=-1))


def entropy_from_logprobs(logp: Float[Tensor, "... vocab"]) -> Float[Tensor, "..."]:
    """Shannon entropy (nats) from normalised log-probabilities (when they are already at hand)."""
    p = logp.exp()
    return -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(dim=-1)


def kl_estimate(logprob_p: Float[Tensor, "..."], logprob_q: Float[Tensor, "..."],
                estimator: Estimator = "k1") -> Float[Tensor, "..."]:
    """Per-sample estimate of KL(P || Q) for samples x ~ P, given log P(x) and log Q(x).

    With ``log r = log Q(x) - log P(x)`` (Schulman, "Approximating KL divergence", 2020):
    - k1 = -log r: unbiased, high variance, can be negative per sample;
    - k2 = (log r)^2 / 2: biased (low bias near P = Q), always >= 0;
    - k3 = (r - 1) - log r: unbiased and always >= 0, low variance (r with its log clamped to
      ``LOG_RATIO_BOUND``, so it stays finite).
    """
    log_ratio = logprob_q - logprob_p
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.pow(2)
    if estimator == "k3":
        return torch.expm1(log_ratio.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)) - log_ratio
    raise ValueError(f"Unknown KL estimator {estimator!r}; use one of 'k1', 'k2', 'k3'.")


def kl_estimate_importance_weighted(logprob_p: Float[Tensor, "..."], logprob_q: Float[Tensor, "..."],
                                    estimator: Estimator = "k1") -> Float[Tensor, "..."]:
    """Per-sample estimate of KL(Q || P) -- the arguments swapped -- from samples x ~ P, by importance weighting.

    ``KL(Q||P) = E_P[w (log Q - log P)]`` with ``w = Q(x)/P(x)``. k1 is that weighted log-ratio;
    k3 uses the non-negative form ``E_P[w log w - w + 1]`` (its expectation is the same, since
    ``E_P[w] = 1``). k2 has no clean importance-weighted form and is refused. The weights make these
    noisy when P and Q differ a lot (docs/kl.md, the variance table): prefer ``exact`` when you can.
    """
    log_w = (logprob_q - logprob_p).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    w = log_w.exp()
    if estimator == "k1":
        return w * log_w
    if estimator == "k3":
        return w * log_w - w + 1.0
    raise ValueError(
        f"KL estimator {estimator!r} has no importance-weighted form for KL(ref||pi) from the policy's samples; "
        f"use 'k1', 'k3' or 'exact'."
    )


# ----------------------------------------------------------------------------------------------
# Direction names. The old words are refused with both conventions explained; old logs are mapped.

def legacy_direction_message(value: str, field: str = "kl_direction") -> str:
    """Why ``forward`` / ``reverse`` are refused, and the value to write instead."""
    new = LEGACY_DIRECTIONS[value]
    return (f"{field} {value!r} is ambiguous and no longer accepted: the field uses the word both ways round. In "
            f"RL-library usage (this toolkit before issue 29, Ziegler et al.'s 'KL penalty') 'forward' meant "
            f"KL(pi||ref) and 'reverse' KL(ref||pi); in variational-inference usage (the optimised distribution "
            f"first, e.g. TRL's and OpenRLHF's KL-gradient notes, 'A Comedy of Estimators') KL(pi||ref) is the "
            f"*reverse* KL. Name the argument order instead: 'pi_ref' = KL(pi||ref) (mode-seeking), 'ref_pi' = "
            f"KL(ref||pi) (mass-covering). What {value!r} meant here: {field}: {new}.")


def check_direction(direction: str) -> str:
    """``direction`` if it is ``pi_ref`` or ``ref_pi``; ValueError otherwise (the old words with `legacy_direction_message`)."""
    if direction in DIRECTIONS:
        return direction
    if direction in LEGACY_DIRECTIONS:
        raise ValueError(legacy_direction_message(direction))
    raise ValueError(f"Unknown KL direction {direction!r}; use 'pi_ref' (KL(pi||ref)) or 'ref_pi' (KL(ref||pi)).")


def upgrade_kl_name(name: str) -> str:
    """A metric or column name as logged before issue 29 -> today's (``kl_forward_per_token`` -> ``kl_pi_ref_per_token``,
    ``kl_reverse_k3_per_token`` -> ``kl_ref_pi_k3_per_token``); other names unchanged. For reading old run directories."""
    for old, new in LEGACY_DIRECTIONS.items():
        if name.startswith(f"kl_{old}"):
            return f"kl_{new}" + name[len(f"kl_{old}"):]
    return name


def upgrade_kl_record(record: dict) -> dict:
    """One logged record (a metrics.jsonl line, a recorded config) with old KL names and values mapped."""
    out = {upgrade_kl_name(k) if isinstance(k, str) else k: v for k, v in record.items()}
    if out.get("kl_direction") in LEGACY_DIRECTIONS:
        out["kl_direction"] = LEGACY_DIRECTIONS[out["kl_direction"]]
    return out


# ----------------------------------------------------------------------------------------------
# The per-token terms the KL penalty options are built from. Which option uses which, and the only place that
# chooses: `rlhf_interp.ppo.kl_penalty.KLPenalty`. Derivations: docs/kl.md.

def penalty_kl(logprob_policy: Tensor, logprob_ref: Tensor, *, direction: str = "pi_ref",
               estimator: str = "k1", logits_policy: Tensor | None = None,
               logits_ref: Tensor | None = None) -> Tensor:
    """The per-token *value* of the KL for tokens sampled from the policy (what is logged, and what the
    reward placement credits earlier tokens with). Not a surrogate to differentiate: see `kl_loss_terms`
    and `kl_reward_terms` for what PPO optimises.

    ``direction='pi_ref'`` is KL(pi || ref), ``'ref_pi'`` is KL(ref || pi). ``estimator='exact'``
    sums over the vocabulary and needs both logits (or log-probs: pass the sampled distribution's);
    k1/k2/k3 need only the sampled tokens' log-probs.
    """
    check_direction(direction)
    if estimator == "exact":
        if logits_policy is None or logits_ref is None:
            raise ValueError("The exact KL needs the full logits of both policy and reference.")
        if direction == "pi_ref":
            return kl_divergence(logits_policy, logits_ref)
        return kl_divergence(logits_ref, logits_policy)
    if estimator not in ESTIMATORS:
        raise ValueError(f"Unknown KL estimator {estimator!r}; use one of {ESTIMATORS}.")
    if direction == "pi_ref":
        return kl_estimate(logprob_policy, logprob_ref, estimator)  # type: ignore[arg-type]
    return kl_estimate_importance_weighted(logprob_policy, logprob_ref, estimator)  # type: ignore[arg-type]


def kl_score_coefficient(logprob_policy: Tensor, logprob_ref: Tensor, direction: str) -> Tensor:
    """``c(a)`` with ``E_{a~pi}[c(a) grad log pi(a)] = grad KL_direction(pi(.|s), ref(.|s))`` at a fixed state.

    pi_ref: ``grad KL(pi||ref) = E_pi[grad log pi (log pi - log ref)]`` (plus ``E_pi[grad log pi] = 0``),
    so ``c = log pi - log ref``. ref_pi: ``grad KL(ref||pi) = -E_ref[grad log pi] = E_pi[(1 - ref/pi) grad
    log pi]``, so ``c = 1 - ref/pi``. This is what a sampled token's own advantage must carry.
    """
    if check_direction(direction) == "pi_ref":
        return logprob_policy - logprob_ref
    return 1.0 - bounded_ratio(logprob_ref - logprob_policy)


def kl_reward_terms(logprob_policy: Tensor, logprob_ref: Tensor, *, direction: str, estimator: str,
                    logp_all: Tensor | None = None, ref_logp_all: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(value, score)`` per sampled token, for the KL placed in the reward.

    Target: the KL summed over the policy's own states, which move with the policy -- for pi_ref that is
    the sequence-level KL(pi||ref); for ref_pi the per-token KL(ref||pi) on the policy's states (not the
    sequence-level KL(ref||pi): see `kl_sequence_terms`). Its gradient has two parts (docs/kl.md): earlier
    tokens are credited with the KL of the states they lead to (the *value*: any unbiased per-token estimate,
    exact, k1 or k3), and each token's own log-prob gradient must be weighted by `kl_score_coefficient` (the
    *score*). The trainer puts ``-beta * value`` into the per-token reward (Ziegler et al. eq. 1) and adds
    ``-beta * (score - value)`` to the token's own advantage only. For pi_ref k1 the score equals the value:
    the textbook penalty, unchanged.
    """
    value = penalty_kl(logprob_policy, logprob_ref, direction=direction, estimator=estimator,
                       logits_policy=logp_all, logits_ref=ref_logp_all)
    return value, kl_score_coefficient(logprob_policy, logprob_ref, direction)


def kl_loss_terms(logprob: Tensor, logprob_old: Tensor, logprob_ref: Tensor, *, direction: str, estimator: str,
                  logp_all: Tensor | None = None, ref_logp_all: Tensor | None = None) -> Tensor:
    """Per-token KL term for the KL placed in the loss, for tokens sampled from pi_old (the rollout's policy).

    Target: the per-token KL at the rollout's states, the states held fixed (they are data). ``logprob`` is
    the current policy's (with grad), ``logprob_old`` the rollout's. Every form below has an expected
    gradient equal to that target's gradient at the *current* parameters, so later PPO epochs stay right:

    - exact: the KL summed over the vocabulary (needs ``logp_all``, ``ref_logp_all``);
    - pi_ref k3: ``rho * k3``, ``rho = pi/pi_old``: an importance-weighted estimate of KL(pi||ref) that is
      unbiased at every theta, so its gradient ``rho (log pi - log ref) grad log pi`` is unbiased (the k3
      estimator *unweighted* has the gradient of KL(ref||pi) instead: Tang & Munos 2025);
    - pi_ref k2: ``stopgrad(rho) * k2``: k2's value is biased but its gradient ``rho (log pi - log ref) grad
      log pi`` is the importance-weighted score-function gradient of KL(pi||ref) (on-policy this is the
      identity grad k2 = k1 grad log pi, noted in the RL-for-LLM KL-estimator literature, e.g. Tang & Munos
      2025 -- not in Schulman's 2020 note, which is about estimating the value);
    - ref_pi k3: ``(ref/pi_old) * k3(ref -> pi)``, the estimator of KL(ref||pi) from ref's samples,
      importance-weighted from pi_old with a weight that does not depend on theta; gradient
      ``rho (1 - ref/pi) grad log pi``.

    Each per-token term is smallest at pi(a) = ref(a), so the several steps PPO takes on one batch converge
    (why k1 is refused here: `rlhf_interp.ppo.kl_penalty`). At theta = theta_old each value equals `penalty_kl`'s.
    """
    check_direction(direction)
    if estimator == "exact":
        if logp_all is None or ref_logp_all is None:
            raise ValueError("The exact KL needs the full log-probs of both policy and reference.")
        return kl_from_logprobs(logp_all, ref_logp_all) if direction == "pi_ref" \
            else kl_from_logprobs(ref_logp_all, logp_all)
    if estimator not in ("k2", "k3") or (direction == "ref_pi" and estimator == "k2"):
        raise ValueError(f"No loss term for KL {direction} with estimator {estimator!r} (docs/kl.md says why).")
    rho = bounded_ratio(logprob - logprob_old)
    w_old = bounded_ratio(logprob_ref - logprob_old).detach()  # ref / pi_old: a constant
    log_ratio = logprob - logprob_ref  # log pi - log ref
    if direction == "pi_ref" and estimator == "k2":
        return rho.detach() * 0.5 * log_ratio.pow(2)
    if direction == "pi_ref":  # k3
        return w_old - rho + rho * log_ratio  # = rho * (ref/pi - 1 - log(ref/pi)), written without ref/pi
    return rho - w_old - w_old * log_ratio  # ref_pi k3 = (ref/pi_old) * (pi/ref - 1 - log(pi/ref))


def kl_sequence_terms(logprob: Tensor, logprob_ref: Tensor, *, estimator: str, logp_all: Tensor | None = None,
                      ref_logp_all: Tensor | None = None) -> Tensor:
    """Per-token term of the **sequence-level KL(ref||pi)**, for tokens x sampled from the *reference* (a bank
    drawn once per prompt; `rlhf_interp.ppo.reference_bank`).

    ``KL_seq(ref||pi) = E_{x~ref}[sum_t log ref(x_t|x_<t) - log pi(x_t|x_<t)]`` and the states x_<t come from
    the reference, so they do not move with theta: ``grad KL_seq(ref||pi) = -E_{x~ref}[sum_t grad log pi(x_t|x_<t)]``,
    no importance weight (docs/kl.md). Summed over a sampled sequence, each form below is an unbiased estimate
    of KL_seq(ref||pi) whose gradient is an unbiased estimate of that gradient, at every theta (epochs and
    minibatches alike):

    - k1: ``log ref - log pi``; gradient ``-grad log pi`` (the negative log-likelihood of the reference's text);
    - k3: ``pi/ref - 1 - log(pi/ref)`` (>= 0); gradient ``(pi/ref - 1) grad log pi``, whose expectation under ref
      adds ``sum_a pi grad log pi = 0``;
    - exact: ``KL(ref(.|s_t) || pi(.|s_t))`` over the vocabulary at the reference's states (the chain rule: its
      sum over t has the same expectation), gradient ``-sum_a ref(a|s_t) grad log pi(a|s_t)``: no sampled-token noise.
    """
    if estimator == "exact":
        if logp_all is None or ref_logp_all is None:
            raise ValueError("The exact KL needs the full log-probs of both policy and reference.")
        return kl_from_logprobs(ref_logp_all, logp_all)
    log_ratio = logprob - logprob_ref  # log pi - log ref
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return torch.expm1(log_ratio.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)) - log_ratio
    raise ValueError(f"No sequence-level term for estimator {estimator!r}: use 'exact', 'k1' or 'k3' (docs/kl.md).")


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean over positions where mask is 1 (whole tensor, or along ``dim``)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp_min(1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def mean_and_stderr(samples: Tensor) -> tuple[float, float]:
    """Sample mean and its standard error (for reporting sequence-level KL estimates)."""
    samples = samples.double().flatten()
    n = samples.numel()
    std = samples.std(unbiased=True).item() if n > 1 else float("nan")
    return samples.mean().item(), std / math.sqrt(n) if n > 1 else float("nan")


@dataclass
class AdaptiveKLController:
    """Ziegler et al. (2019) eq. 2: ``beta <- beta * (1 + K_beta * e)``, with the proportional error
    ``e = clip((KL - target) / target, -0.2, 0.2)`` and ``K_beta = n_steps / horizon``."""

    coef: float
    target: float
    horizon: float

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max((current_kl - self.target) / self.target, -0.2), 0.2)
        self.coef *= 1.0 + error * n_steps / self.horizon
        return self.coef

    def state_dict(self) -> dict[str, float]:
        return {"coef": self.coef, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.coef, self.target, self.horizon = state["coef"], state["target"], state["horizon"]


@dataclass
class FixedKLController:
    coef: float

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.coef

    def state_dict(self) -> dict[str, float]:
        return {"coef": self.coef}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.coef = state["coef"]
