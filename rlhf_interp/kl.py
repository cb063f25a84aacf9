"""Pure math on logits and log-probs: exact KL and JS, Schulman's k1/k2/k3 estimators, entropy,
and the adaptive KL controller of Ziegler et al. (2019).

Everything here is a function of tensors (torch only), so it can be checked against a float64
reference in a test and reused by the trainer, the model diff and the edit measurements alike.

Notation: ``P`` and ``Q`` are distributions over the vocabulary given as logits along the last dim.
``KL(P || Q) = sum_x P(x) (log P(x) - log Q(x))``.
In RLHF, the *forward* penalty is ``KL(pi || ref)`` (samples come from pi, the standard choice);
the *reverse* one is ``KL(ref || pi)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

Estimator = Literal["k1", "k2", "k3"]
ESTIMATORS: tuple[str, ...] = ("exact", "k1", "k2", "k3")
DIRECTIONS: tuple[str, ...] = ("forward", "reverse")


def kl_divergence(logits_p: Float[Tensor, "... vocab"], logits_q: Float[Tensor, "... vocab"]
                  ) -> Float[Tensor, "..."]:
    """Exact KL(P || Q) along the last dim, one value per position."""
    logp = torch.log_softmax(logits_p, dim=-1)
    logq = torch.log_softmax(logits_q, dim=-1)
    return (logp.exp() * (logp - logq)).sum(dim=-1)


def js_divergence(logits_p: Float[Tensor, "... vocab"], logits_q: Float[Tensor, "... vocab"]
                  ) -> Float[Tensor, "..."]:
    """Jensen-Shannon divergence (natural log, so at most log 2) along the last dim."""
    logp = torch.log_softmax(logits_p, dim=-1)
    logq = torch.log_softmax(logits_q, dim=-1)
    # log(p/m) and log(q/m) written through d = log q - log p, so identical inputs give exactly 0.
    d = logq - logp
    log2 = torch.log(torch.tensor(2.0, dtype=d.dtype, device=d.device))
    log_p_over_m = log2 - torch.nn.functional.softplus(d)
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
    return -(logp.exp() * logp).sum(dim=-1)


def kl_estimate(logprob_p: Float[Tensor, "..."], logprob_q: Float[Tensor, "..."],
                estimator: Estimator = "k1") -> Float[Tensor, "..."]:
    """Per-sample estimate of KL(P || Q) for samples x ~ P, given log P(x) and log Q(x).

    With ``log r = log Q(x) - log P(x)`` (Schulman, "Approximating KL divergence", 2020):
    - k1 = -log r: unbiased, high variance, can be negative per sample;
    - k2 = (log r)^2 / 2: biased (low bias near P = Q), always >= 0;
    - k3 = (r - 1) - log r: unbiased and always >= 0, low variance.
    """
    log_ratio = logprob_q - logprob_p
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.pow(2)
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"Unknown KL estimator {estimator!r}; use one of 'k1', 'k2', 'k3'.")


def kl_estimate_reverse(logprob_p: Float[Tensor, "..."], logprob_q: Float[Tensor, "..."],
                        estimator: Estimator = "k1") -> Float[Tensor, "..."]:
    """Per-sample estimate of the *reverse* KL(Q || P) from samples x ~ P, by importance weighting.

    ``KL(Q||P) = E_P[w (log Q - log P)]`` with ``w = Q(x)/P(x)``. k1 is that weighted log-ratio;
    k3 uses the non-negative form ``E_P[w log w - w + 1]`` (its expectation is the same, since
    ``E_P[w] = 1``). k2 has no clean importance-weighted form and is refused. The weights make these
    noisy when pi and ref differ a lot: prefer ``exact`` for the reverse direction when you can.
    """
    log_w = logprob_q - logprob_p
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
    """The per-token KL used as the RLHF penalty, for tokens sampled from the policy.

    ``direction='forward'`` is KL(pi || ref), ``'reverse'`` is KL(ref || pi). ``estimator='exact'``
    sums over the vocabulary and needs both logits; k1/k2/k3 need only the sampled tokens' log-probs.
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
