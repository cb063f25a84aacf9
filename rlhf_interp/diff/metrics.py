"""Pure per-token math comparing two activations or distributions (no models, no state).

Written so that identical inputs give *exactly* 0 difference, cosine 1 and divergence 0: the cosine is
``1 - ||a/|a| - b/|b|||^2 / 2`` (identical unit vectors subtract to exact zeros, and the form is also
more accurate than ``a.b / (|a||b|)`` near 1, where RLHF changes live).
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from rlhf_interp.core.kl import js_divergence_probs

_EPS = 1e-12


def cosine_similarity_exact(a: Float[Tensor, "... d"], b: Float[Tensor, "... d"]) -> Float[Tensor, "..."]:
    """Cosine similarity along the last dim; exactly 1 when ``a == b``."""
    unit_a = a / torch.linalg.vector_norm(a, dim=-1, keepdim=True).clamp_min(_EPS)
    unit_b = b / torch.linalg.vector_norm(b, dim=-1, keepdim=True).clamp_min(_EPS)
    return 1.0 - 0.5 * (unit_a - unit_b).pow(2).sum(-1)


def residual_token_metrics(base: Float[Tensor, "... d"], tuned: Float[Tensor, "... d"]
                           ) -> dict[str, Float[Tensor, "..."]]:
    """Per-token comparison of two residual vectors.

    ``cosine_sim``; ``rel_diff_norm`` = ||tuned - base|| / ||base||; ``norm_ratio`` = ||tuned|| / ||base||;
    and the raw norms ``diff_norm``, ``base_norm``, ``tuned_norm``.
    """
    base_norm = torch.linalg.vector_norm(base, dim=-1)
    tuned_norm = torch.linalg.vector_norm(tuned, dim=-1)
    diff_norm = torch.linalg.vector_norm(tuned - base, dim=-1)
    safe = base_norm.clamp_min(_EPS)
    return {
        "cosine_sim": cosine_similarity_exact(base, tuned),
        "rel_diff_norm": diff_norm / safe,
        "norm_ratio": tuned_norm / safe,
        "diff_norm": diff_norm,
        "base_norm": base_norm,
        "tuned_norm": tuned_norm,
    }


def mask_keys(pattern: Float[Tensor, "batch head query key"], key_mask: Bool[Tensor, "batch key"]
              ) -> Float[Tensor, "batch head query key"]:
    """Zero attention to padded keys and renormalise each row (rows with no real key stay all-zero)."""
    masked = pattern * key_mask[:, None, None, :].to(pattern.dtype)
    return masked / masked.sum(-1, keepdim=True).clamp_min(_EPS)


def pattern_js(base: Float[Tensor, "batch head query key"], tuned: Float[Tensor, "batch head query key"],
               key_mask: Bool[Tensor, "batch key"]) -> Float[Tensor, "batch head query"]:
    """Jensen-Shannon divergence (nats, at most log 2) between two attention patterns, per query row."""
    return js_divergence_probs(mask_keys(base, key_mask), mask_keys(tuned, key_mask))


def second_moment(x: Float[Tensor, "... n d"]) -> Float[Tensor, "... d d"]:
    """Sum over samples of the outer product x x^T (per leading index, e.g. per layer)."""
    return x.mT @ x


def principal_directions(total: Float[Tensor, "d"], second: Float[Tensor, "d d"], count: int, k: int
                         ) -> tuple[Float[Tensor, "d"], Float[Tensor, "k"], Float[Tensor, "k d"], float]:
    """From running sums of x and x x^T: the mean, the top-``k`` covariance eigenvalues and eigenvectors
    (rows, oriented to have a non-negative dot product with the mean so signs are reproducible), and the
    total variance (trace of the covariance)."""
    mean = total / max(count, 1)
    cov = second / max(count, 1) - torch.outer(mean, mean)
    cov = 0.5 * (cov + cov.T)
    values, vectors = torch.linalg.eigh(cov)
    order = torch.argsort(values, descending=True)[:k]
    values, vectors = values[order].clamp_min(0.0), vectors[:, order].T
    signs = torch.where(vectors @ mean < 0, -1.0, 1.0).to(vectors.dtype)
    return mean, values, vectors * signs[:, None], float(torch.diagonal(cov).sum().clamp_min(0.0))
