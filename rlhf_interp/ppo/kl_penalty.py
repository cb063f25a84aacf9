"""The KL penalty of a run, decided once: `KLPenalty` (direction x estimator x placement x coefficient).

Built from the config (`KLPenalty.from_config`), frozen, and the **only** place that branches on the KL's
direction, estimator or placement. It hands

1. the rollout its per-token terms (`rollout_terms`: the value logged / put in the reward, and each token's score);
2. the advantages their coefficient (`reward_coef`: beta when the KL is in the reward, else 0);
3. the loss its term (`loss_term` on the rollout's tokens, `sequence_loss_term` on the reference bank);
4. the controller the KL it reads (`controlled_metric`) and the metric name of its own estimate (`value_metric`).

Which options exist, and why the refused ones are refused, is the table below; the proofs are
`tests/test_kl_gradients.py` (enumerated float64 gradients) and ``docs/kl.md``.

Placements: ``reward`` (per-token, in the per-token reward: the KL over the policy's own states, which move with it),
``loss`` (a loss term at the rollout's states, held fixed), ``sequence`` (KL(ref||pi) of whole sequences: a loss term
on a bank of the reference's own samples per prompt, drawn once; `rlhf_interp.ppo.reference_bank`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from rlhf_interp.core.kl import (DIRECTIONS, ESTIMATORS, LEGACY_DIRECTIONS, AdaptiveKLController, FixedKLController,
                                 kl_loss_terms, kl_reward_terms, kl_sequence_terms, legacy_direction_message,
                                 masked_mean, penalty_kl)

PLACEMENTS: tuple[str, ...] = ("reward", "loss", "sequence")

# Refused combinations: why, and the nearest working choice (direction, estimator, placement).
_K1_IN_LOSS = (
    "unweighted, k1 = log(pi/ref) on tokens from pi_old has expected gradient E_{pi_old}[grad log pi] = "
    "-grad KL(pi_old||pi) once theta != theta_old (later epochs and minibatches): it pushes pi *away from pi_old*, "
    "not towards ref (and is exactly zero at theta_old for pi_ref; biased for ref_pi). Importance-weighted by "
    "rho = pi/pi_old it is unbiased for one step, but its per-token minimum is not at pi = ref (pi_ref: rho log(pi/ref) "
    "is smallest at pi(a) = ref(a)/e; ref_pi: -(ref/pi_old) log(pi/ref) keeps pushing every sampled token up), so "
    "the several steps PPO takes on one batch drift (docs/kl_drift.csv). k3 has the same expected gradient, "
    "its minimum at pi = ref, and less variance.")
_REFUSED: dict[tuple[str, str, str], tuple[str, tuple[str, str, str]]] = {
    ("pi_ref", "k1", "loss"): (_K1_IN_LOSS, ("pi_ref", "k3", "loss")),
    ("ref_pi", "k1", "loss"): (_K1_IN_LOSS, ("ref_pi", "k3", "loss")),
    ("pi_ref", "k2", "reward"): (
        "k2 is a biased estimate of the KL's value (E[k2] != KL), and in the reward its value is what earlier "
        "tokens are credited with, so the gradient would be that of E[sum k2], not of KL(pi||ref) "
        "(k2 stays available as a loss term, where only its gradient matters).", ("pi_ref", "k1", "reward")),
    ("ref_pi", "k2", "reward"): (
        "k2 has no importance-weighted form for KL(ref||pi), and its value is biased.", ("ref_pi", "k3", "reward")),
    ("ref_pi", "k2", "loss"): (
        "k2 has no importance-weighted form for KL(ref||pi): weighting (log pi - log ref)^2 / 2 by ref/pi gives "
        "the gradient of E_ref[(log pi - log ref)^2 / 2], a different divergence, and unweighted its gradient is "
        "that of KL(pi||ref).", ("ref_pi", "k3", "loss")),
    ("ref_pi", "k2", "sequence"): (
        "on the reference's samples k2 = (log pi - log ref)^2 / 2 has gradient E_ref[(log pi - log ref) grad log pi], "
        "the gradient of E_ref[(log pi/ref)^2]/2, not of KL(ref||pi).", ("ref_pi", "k1", "sequence")),
}
for _e in ESTIMATORS:  # KL(pi||ref) of sequences needs no bank: the reward placement already follows its gradient
    _REFUSED[("pi_ref", _e, "sequence")] = (
        "the sequence placement samples the reference, which is how KL(ref||pi) of sequences is estimated; "
        "KL(pi||ref) of sequences is an expectation over the policy's own samples, and the reward placement "
        "already follows its gradient.", ("pi_ref", "k1" if _e == "k2" else _e, "reward"))


def nearest_kl_option(direction: str, estimator: str, placement: str) -> tuple[str, str, str] | None:
    """The working choice `check_kl_option` suggests for a refused combination (None if it is accepted)."""
    refused = _REFUSED.get((direction, estimator, placement))
    return refused[1] if refused else None


def check_kl_option(direction: str, estimator: str, placement: str) -> None:
    """Raise ValueError unless this direction x estimator x placement has a gradient that estimates the
    gradient of the KL it names; the message says why and names the nearest working choice."""
    if direction in LEGACY_DIRECTIONS:
        raise ValueError(legacy_direction_message(direction))
    for name, value, allowed in (("kl_direction", direction, DIRECTIONS), ("kl_estimator", estimator, ESTIMATORS),
                                 ("kl_placement", placement, PLACEMENTS)):
        if value not in allowed:
            raise ValueError(f"Unknown {name} {value!r}; use one of {allowed} (pi_ref = KL(pi||ref), "
                             f"ref_pi = KL(ref||pi)).")
    refused = _REFUSED.get((direction, estimator, placement))
    if refused:
        reason, (d, e, p) = refused
        raise ValueError(f"kl_direction '{direction}' with kl_estimator '{estimator}' and kl_placement "
                         f"'{placement}' is refused: {reason} Nearest working choice: kl_direction '{d}', "
                         f"kl_estimator '{e}', kl_placement '{p}' (the table is in docs/kl.md).")


def kl_options() -> list[tuple[str, str, str, bool]]:
    """Every ``(direction, estimator, placement, accepted)``."""
    return [(d, e, p, (d, e, p) not in _REFUSED) for d in DIRECTIONS for e in ESTIMATORS for p in PLACEMENTS]


@dataclass(frozen=True)
class KLPenalty:
    """One run's KL penalty. ``coef`` is the starting coefficient (the controller may move it: pass the
    current one to `reward_coef` / the loss). ``bank_size``: reference samples per prompt (sequence placement)."""

    direction: str = "pi_ref"
    estimator: str = "k1"
    placement: str = "reward"
    coef: float = 0.1
    adaptive: bool = False
    target: float = 0.08
    horizon: float = 10000
    bank_size: int = 0

    def __post_init__(self) -> None:
        check_kl_option(self.direction, self.estimator, self.placement)

    @classmethod
    def from_config(cls, config) -> "KLPenalty":
        """From a `PPOConfig` (its ``kl_*`` fields); validates the combination."""
        return cls(direction=config.kl_direction, estimator=config.kl_estimator, placement=config.kl_placement,
                   coef=config.kl_coef, adaptive=config.adaptive_kl, target=config.kl_target,
                   horizon=config.kl_horizon, bank_size=config.kl_bank_size if config.kl_placement == "sequence" else 0)

    # --- what the rest of the phase asks
    @property
    def in_reward(self) -> bool:
        return self.placement == "reward"

    @property
    def uses_bank(self) -> bool:
        """Whether the update needs the reference's own samples (`reference_bank.ReferenceBank`): the sequence
        placement with a coefficient that can be nonzero (kl_coef 0 without the controller draws no bank)."""
        return self.placement == "sequence" and (self.coef > 0 or self.adaptive)

    @property
    def keeps_ref_logp_all(self) -> bool:
        """Whether the loss needs the reference's full log-probs at the rollout's states (exact, in the loss)."""
        return self.placement == "loss" and self.estimator == "exact"

    @property
    def needs_full_logprobs(self) -> bool:
        """Whether a loss term sums over the vocabulary (exact in the loss or on the bank)."""
        return self.placement in ("loss", "sequence") and self.estimator == "exact"

    @property
    def value_metric(self) -> str:
        """Metric name of the configured estimator's value per token, e.g. ``kl_pi_ref_k1_per_token``."""
        return f"kl_{self.direction}_{self.estimator}_per_token"

    @property
    def controlled_metric(self) -> str:
        """The exact per-token KL (at the rollout's states) the adaptive controller reads."""
        return f"kl_{self.direction}_per_token"

    def require_placement(self, allowed: tuple[str, ...], who: str, reason: str = "") -> None:
        """Refuse this penalty's placement unless it is in ``allowed`` (e.g. what an algorithm's advantages keep
        right); the message names the field, ``who`` refuses it, why, and the first allowed placement."""
        if self.placement not in allowed:
            raise ValueError(f"Config field 'kl_placement' = {self.placement!r} is refused with {who}: {reason} "
                             f"Use kl_placement: {allowed[0]!r}.")

    def controller(self) -> AdaptiveKLController | FixedKLController:
        return AdaptiveKLController(self.coef, self.target, self.horizon) if self.adaptive \
            else FixedKLController(self.coef)

    # --- 1. the rollout
    def rollout_terms(self, logprobs: Tensor, ref_logprobs: Tensor, logp_all: Tensor, ref_logp_all: Tensor
                      ) -> tuple[Tensor, Tensor]:
        """``(value, score)`` per generated token. Reward placement: `kl.kl_reward_terms`. Otherwise the value
        of the configured estimator on the policy's tokens (logged; for the sequence placement, ``k1``/``k3``
        values are importance-weighted estimates of KL(ref||pi) at the policy's states), and score = value (unused)."""
        if self.in_reward:
            return kl_reward_terms(logprobs, ref_logprobs, direction=self.direction, estimator=self.estimator,
                                   logp_all=logp_all, ref_logp_all=ref_logp_all)
        value = penalty_kl(logprobs, ref_logprobs, direction=self.direction,
                           estimator="k3" if self.estimator == "k2" and self.direction == "ref_pi" else self.estimator,
                           logits_policy=logp_all, logits_ref=ref_logp_all)
        return value, value

    # --- 2. the advantages
    def reward_coef(self, coef: float) -> float:
        """The coefficient of the KL in the per-token reward: ``coef`` in the reward placement, else 0."""
        return coef if self.in_reward else 0.0

    def loss_coef(self, coef: float) -> float:
        """The coefficient of the loss term: ``coef`` when the KL is a loss term (loss or sequence), else 0."""
        return 0.0 if self.in_reward else coef

    # --- 3. the loss
    def loss_term(self, logprobs: Tensor, old_logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor,
                  logp_all: Tensor | None = None, ref_logp_all: Tensor | None = None) -> Tensor | None:
        """The per-token-mean KL loss term on the rollout's tokens (``loss`` placement), else None."""
        if self.placement != "loss":
            return None
        terms = kl_loss_terms(logprobs, old_logprobs, ref_logprobs, direction=self.direction,
                              estimator=self.estimator, logp_all=logp_all, ref_logp_all=ref_logp_all)
        return masked_mean(terms, mask)

    def sequence_loss_term(self, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor,
                           logp_all: Tensor | None = None, ref_logp_all: Tensor | None = None) -> Tensor | None:
        """The KL(ref||pi)-of-sequences term on the bank's tokens (``sequence`` placement), else None.

        The per-token mean over the bank's real tokens of `kl.kl_sequence_terms`: the bank's sequence-level
        KL(ref||pi) estimate divided by its mean length, so ``kl_coef`` is per token as in the other placements;
        its gradient is that of KL_seq(ref||pi) / (mean length)."""
        if self.placement != "sequence":
            return None
        terms = kl_sequence_terms(logprobs, ref_logprobs, estimator=self.estimator, logp_all=logp_all,
                                  ref_logp_all=ref_logp_all)
        return masked_mean(terms, mask)
