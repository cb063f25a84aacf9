"""PPO's losses, in the order of the algorithm (Schulman et al. 2017; Ziegler et al. 2019 for the LM case).

Shapes: ``[batch, gen]`` — one entry per generated token; ``mask`` is 1 on real generated tokens
(0 after EOS). Token t's value ``V_t`` is the value of the state *before* token t is chosen.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from rlhf_interp.core.kl import bounded_ratio, masked_mean

BatchGen = "batch gen"


def per_token_rewards(scores: Float[Tensor, "batch"], kl: Float[Tensor, BatchGen], mask: Float[Tensor, BatchGen],
                      kl_coef: float) -> Float[Tensor, BatchGen]:
    """r_t = -beta * KL_t at every token, plus the sequence score at the last real token (Ziegler eq. 1)."""
    rewards = -kl_coef * kl * mask
    last = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & mask.bool()  # one-hot at the last real token
    return rewards + last.to(rewards.dtype) * scores[:, None]


def penalised_advantages(scores: Float[Tensor, "batch"], kl_value: Float[Tensor, BatchGen], kl_score: Float[Tensor, BatchGen],
                         values: Float[Tensor, BatchGen], mask: Float[Tensor, BatchGen], kl_coef: float, gamma: float,
                         lam: float) -> tuple[Float[Tensor, BatchGen], Float[Tensor, BatchGen]]:
    """Advantages and returns with the KL in the reward (``kl_coef = 0``: the score alone).

    ``r_t = -beta * kl_value_t`` (+ score at the end) goes through GAE, so earlier tokens are credited with
    the KL of the states they lead to; then each token's own advantage gets ``-beta * (kl_score_t -
    kl_value_t)``, so the coefficient on its own log-prob gradient is ``-beta * kl_score_t`` -- what the KL's
    gradient needs (`kl.kl_reward_terms`, docs/kl.md). For forward k1, score == value and nothing is added.
    The returns (the value head's targets) stay those of the reward stream.
    """
    rewards = per_token_rewards(scores, kl_value, mask, kl_coef)
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    if kl_coef:
        advantages = advantages - kl_coef * (kl_score - kl_value) * mask
    return advantages, returns


def gae(rewards: Float[Tensor, BatchGen], values: Float[Tensor, BatchGen], mask: Float[Tensor, BatchGen],
        gamma: float, lam: float) -> tuple[Float[Tensor, BatchGen], Float[Tensor, BatchGen]]:
    """Generalized advantage estimation (Schulman et al. 2016), episodic: no bootstrap after the last token.

    delta_t = r_t + gamma * V_{t+1} - V_t;  A_t = delta_t + gamma * lambda * A_{t+1};  returns R_t = A_t + V_t.
    lambda = 1 gives Monte-Carlo returns minus the baseline (ARENA's form); lambda = 0 gives one-step TD.
    """
    values = values * mask
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = next_advantage * mask[:, t]
        # Past the end of a sequence (mask 0) nothing flows back.
        next_value = values[:, t] * mask[:, t]
        next_advantage = next_advantage * mask[:, t]
    returns = advantages + values
    return advantages * mask, returns * mask


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """Normalise to zero mean and unit variance over the masked entries."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_range: float
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Clipped surrogate: L = -E[min(rho A, clip(rho, 1-eps, 1+eps) A)], rho = pi/pi_old.

    Returns (loss, clip fraction, approx KL(pi_old || pi) by k3). The log-ratio is clamped before exp
    (`kl.LOG_RATIO_BOUND`), so one far-off token cannot overflow the loss to inf."""
    log_ratio = logprobs - old_logprobs
    ratio = bounded_ratio(log_ratio)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_range, 1.0 + clip_range) * advantages
    loss = -masked_mean(torch.minimum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean(((ratio - 1.0).abs() > clip_range).float(), mask)
        approx_kl = masked_mean((ratio - 1.0) - ratio.log(), mask)
    return loss, clip_fraction, approx_kl


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float) -> Tensor:
    """Clipped value loss: 0.5 * E[max((V - R)^2, (clip(V, V_old +- eps) - R)^2)]; clip_range 0 disables clipping."""
    unclipped = (values - returns) ** 2
    if clip_range <= 0:
        return 0.5 * masked_mean(unclipped, mask)
    clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)
    return 0.5 * masked_mean(torch.maximum(unclipped, (clipped_values - returns) ** 2), mask)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 - Var[R - V] / Var[R]: 1 is a perfect critic, 0 no better than a constant, < 0 worse."""
    var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    residual = returns - values
    var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    return float(1.0 - var_residual / var_returns.clamp_min(1e-8))


class RunningStd:
    """Welford running variance of reward scores, for reward normalisation."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: torch.Tensor) -> None:
        for v in values.double().tolist():
            self.count += 1
            delta = v - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (v - self.mean)

    @property
    def std(self) -> float:
        """Running std, or 1 while it is undefined or ~0 (a constant reward must not be divided by 0)."""
        std = math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 1.0
        return std if std > 1e-8 else 1.0

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, s: dict[str, float]) -> None:
        self.count, self.mean, self.m2 = int(s["count"]), s["mean"], s["m2"]
