"""Pure math on logits and log-probs: the sampled distribution's log-probs, exact KL and JS, Schulman's
k1/k2/k3 estimators, entropy, the KL terms PPO optimises, and the adaptive KL controller of Ziegler et
al. (2019).

Everything here is a function of tensors (torch only), so it can be checked against a float64
reference in a test and reused by the trainer, the model diff and the edit measurements alike.

Notation: ``P`` and ``Q`` are distributions over the vocabulary given as logits along the last dim.
``KL(P || Q) = sum_x P(x) (log P(x) - log Q(x))``.
Here **forward** is ``KL(pi || ref)`` (Ziegler et al., InstructGPT) and **reverse** is ``KL(ref || pi)``;
some RL libraries use the opposite words. Which PPO surrogate estimates the gradient of which KL, and
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
DIRECTIONS: tuple[str, ...] = ("forward", "reverse")
PLACEMENTS: tuple[str, ...] = ("reward", "loss")

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


def kl_estimate_reverse(logprob_p: Float[Tensor, "..."], logprob_q: Float[Tensor, "..."],
                        estimator: Estimator = "k1") -> Float[Tensor, "..."]:
    """Per-sample estimate of the *reverse* KL(Q || P) from samples x ~ P, by importance weighting.

    ``KL(Q||P) = E_P[w (log Q - log P)]`` with ``w = Q(x)/P(x)``. k1 is that weighted log-ratio;
    k3 uses the non-negative form ``E_P[w log w - w + 1]`` (its expectation is the same, since
    ``E_P[w] = 1``). k2 has no clean importance-weighted form and is refused. The weights make these
    noisy when pi and ref differ a lot: prefer ``exact`` for the reverse direction when you can.
    """
    log_w = (logprob_q - logprob_p).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    w = log_w.exp()
    if estimator == "k1":
        return w * log_w
    if estimator == "k3":
        return w * log_w - w + 1.0
    raise ValueError(
        f"KL estimator {estimator!r} has no importance-weighted form for the reverse direction; "
        f"use 'k1', 'k3' or 'exact'."
    )


def penalty_kl(logprob_policy: Tensor, logprob_ref: Tensor, *, direction: str = "forward",
               estimator: str = "k1", logits_policy: Tensor | None = None,
               logits_ref: Tensor | None = None) -> Tensor:
    """The per-token *value* of the KL for tokens sampled from the policy (what is logged, and what the
    reward placement credits earlier tokens with). Not a surrogate to differentiate: see `kl_loss_terms`
    and `kl_reward_terms` for what PPO optimises.

    ``direction='forward'`` is KL(pi || ref), ``'reverse'`` is KL(ref || pi). ``estimator='exact'``
    sums over the vocabulary and needs both logits (or log-probs: pass the sampled distribution's);
    k1/k2/k3 need only the sampled tokens' log-probs.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"Unknown KL direction {direction!r}; use 'forward' (KL(pi||ref)) or 'reverse' (KL(ref||pi)).")
    if estimator == "exact":
        if logits_policy is None or logits_ref is None:
            raise ValueError("The exact KL needs the full logits of both policy and reference.")
        if direction == "forward":
            return kl_divergence(logits_policy, logits_ref)
        return kl_divergence(logits_ref, logits_policy)
    if estimator not in ESTIMATORS:
        raise ValueError(f"Unknown KL estimator {estimator!r}; use one of {ESTIMATORS}.")
    if direction == "forward":
        return kl_estimate(logprob_policy, logprob_ref, estimator)  # type: ignore[arg-type]
    return kl_estimate_reverse(logprob_policy, logprob_ref, estimator)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# The KL options PPO offers: direction x estimator x placement. Derivations: docs/kl.md.

# Refused combinations: why, and the nearest working choice (direction, estimator, placement).
_K1_IN_LOSS = (
    "an importance-weighted k1 has the right expected gradient for one step, but its per-token minimum is not at "
    "pi = ref (forward: rho * log(pi/ref) is smallest at pi(a) = ref(a)/e; reverse: -(ref/pi_old) log(pi/ref) keeps "
    "pushing every sampled token up), so the several steps PPO takes on one batch drift away from the reference "
    "(docs/kl_drift.csv). k3 has the same expected gradient, less variance, and its minimum at pi = ref; "
    "unweighted, k1's expected gradient is zero (forward) or biased (reverse).")
_REFUSED: dict[tuple[str, str, str], tuple[str, tuple[str, str, str]]] = {
    ("forward", "k1", "loss"): (_K1_IN_LOSS, ("forward", "k3", "loss")),
    ("reverse", "k1", "loss"): (_K1_IN_LOSS, ("reverse", "k3", "loss")),
    ("forward", "k2", "reward"): (
        "k2 is a biased estimate of the KL's value (E[k2] != KL), and in the reward its value is what earlier "
        "tokens are credited with, so the gradient would be that of E[sum k2], not of KL(pi||ref) "
        "(k2 stays available as a loss term, where only its gradient matters).", ("forward", "k1", "reward")),
    ("reverse", "k2", "reward"): (
        "k2 has no importance-weighted form for KL(ref||pi), and its value is biased.", ("reverse", "k3", "reward")),
    ("reverse", "k2", "loss"): (
        "k2 has no importance-weighted form for KL(ref||pi): weighting (log pi - log ref)^2 / 2 by ref/pi gives "
        "the gradient of E_ref[(log pi - log ref)^2 / 2], a different divergence, and unweighted its gradient is "
        "that of KL(pi||ref).", ("reverse", "k3", "loss")),
}


def nearest_kl_option(direction: str, estimator: str, placement: str) -> tuple[str, str, str] | None:
    """The working choice `check_kl_option` suggests for a refused combination (None if it is accepted)."""
    refused = _REFUSED.get((direction, estimator, placement))
    return refused[1] if refused else None


def check_kl_option(direction: str, estimator: str, placement: str) -> None:
    """Raise ValueError unless this direction x estimator x placement has a gradient that estimates the
    gradient of the KL it names; the message says why and names the nearest working choice."""
    for name, value, allowed in (("kl_direction", direction, DIRECTIONS), ("kl_estimator", estimator, ESTIMATORS),
                                 ("kl_placement", placement, PLACEMENTS)):
        if value not in allowed:
            raise ValueError(f"Unknown {name} {value!r}; use one of {allowed} (forward = KL(pi||ref), "
                             f"reverse = KL(ref||pi)).")
    refused = _REFUSED.get((direction, estimator, placement))
    if refused:
        reason, (d, e, p) = refused
        raise ValueError(f"kl_direction '{direction}' with kl_estimator '{estimator}' and kl_placement "
                         f"'{placement}' is refused: {reason} Nearest working choice: kl_direction '{d}', "
                         f"kl_estimator '{e}', kl_placement '{p}' (the table is in docs/kl.md).")


def kl_options() -> list[tuple[str, str, str, bool]]:
    """Every ``(direction, estimator, placement, accepted)``."""
    return [(d, e, p, (d, e, p) not in _REFUSED) for d in DIRECTIONS for e in ESTIMATORS for p in PLACEMENTS]


def kl_score_coefficient(logprob_policy: Tensor, logprob_ref: Tensor, direction: str) -> Tensor:
    """``c(a)`` with ``E_{a~pi}[c(a) grad log pi(a)] = grad KL_direction(pi(.|s), ref(.|s))`` at a fixed state.

    forward: ``grad KL(pi||ref) = E_pi[grad log pi (log pi - log ref)]`` (plus ``E_pi[grad log pi] = 0``),
    so ``c = log pi - log ref``. reverse: ``grad KL(ref||pi) = -E_ref[grad log pi] = E_pi[(1 - ref/pi) grad
    log pi]``, so ``c = 1 - ref/pi``. This is what a sampled token's own advantage must carry.
    """
    if direction == "forward":
        return logprob_policy - logprob_ref
    if direction == "reverse":
        return 1.0 - bounded_ratio(logprob_ref - logprob_policy)
    raise ValueError(f"Unknown KL direction {direction!r}; use 'forward' (KL(pi||ref)) or 'reverse' (KL(ref||pi)).")


def kl_reward_terms(logprob_policy: Tensor, logprob_ref: Tensor, *, direction: str, estimator: str,
                    logp_all: Tensor | None = None, ref_logp_all: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(value, score)`` per sampled token, for the KL placed in the reward (``kl_placement='reward'``).

    Target: the KL summed over the policy's own states, which move with the policy -- for forward that is
    the sequence-level KL(pi||ref); for reverse the per-token KL(ref||pi) on the policy's states. Its
    gradient has two parts (docs/kl.md): earlier tokens are credited with the KL of the states they lead
    to (the *value*: any unbiased per-token estimate, exact, k1 or k3), and each token's own log-prob
    gradient must be weighted by `kl_score_coefficient` (the *score*). The trainer puts ``-beta * value``
    into the per-token reward (Ziegler et al. eq. 1) and adds ``-beta * (score - value)`` to the token's own
    advantage only. For forward k1 the score equals the value: the textbook penalty, unchanged.
    """
    check_kl_option(direction, estimator, "reward")
    value = penalty_kl(logprob_policy, logprob_ref, direction=direction, estimator=estimator,
                       logits_policy=logp_all, logits_ref=ref_logp_all)
    return value, kl_score_coefficient(logprob_policy, logprob_ref, direction)


def kl_loss_terms(logprob: Tensor, logprob_old: Tensor, logprob_ref: Tensor, *, direction: str, estimator: str,
                  logp_all: Tensor | None = None, ref_logp_all: Tensor | None = None) -> Tensor:
    """Per-token KL term for ``kl_placement='loss'``, for tokens sampled from pi_old (the rollout's policy).

    Target: the per-token KL at the rollout's states, the states held fixed (they are data). ``logprob`` is
    the current policy's (with grad), ``logprob_old`` the rollout's. Every form below has an expected
    gradient equal to that target's gradient at the *current* parameters, so later PPO epochs stay right:

    - exact: the KL summed over the vocabulary (needs ``logp_all``, ``ref_logp_all``);
    - forward k3: ``rho * k3``, ``rho = pi/pi_old``: an importance-weighted estimate of KL(pi||ref) that is
      unbiased at every theta, so its gradient ``rho (log pi - log ref) grad log pi`` is unbiased (the k3
      estimator *unweighted* has the gradient of KL(ref||pi) instead: Tang & Munos 2025);
    - forward k2: ``stopgrad(rho) * k2``: k2's value is biased but its gradient ``(log pi - log ref) grad log pi``
      is the KL's (Schulman 2020);
    - reverse k3: ``(ref/pi_old) * k3(ref -> pi)``, the estimator of KL(ref||pi) from ref's samples,
      importance-weighted from pi_old with a weight that does not depend on theta; gradient
      ``rho (1 - ref/pi) grad log pi``.

    Each per-token term is smallest at pi(a) = ref(a), so the several steps PPO takes on one batch converge
    (why k1 is refused here: `check_kl_option`). At theta = theta_old each value equals `penalty_kl`'s.
    """
    check_kl_option(direction, estimator, "loss")
    if estimator == "exact":
        if logp_all is None or ref_logp_all is None:
            raise ValueError("The exact KL needs the full log-probs of both policy and reference.")
        return kl_from_logprobs(logp_all, ref_logp_all) if direction == "forward" \
            else kl_from_logprobs(ref_logp_all, logp_all)
    rho = bounded_ratio(logprob - logprob_old)
    w_old = bounded_ratio(logprob_ref - logprob_old).detach()  # ref / pi_old: a constant
    log_ratio = logprob - logprob_ref  # log pi - log ref
    if direction == "forward" and estimator == "k2":
        return rho.detach() * 0.5 * log_ratio.pow(2)
    if direction == "forward":  # k3
        return w_old - rho + rho * log_ratio  # = rho * (ref/pi - 1 - log(ref/pi)), written without ref/pi
    return rho - w_old - w_old * log_ratio  # reverse k3 = (ref/pi_old) * (pi/ref - 1 - log(pi/ref))


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
