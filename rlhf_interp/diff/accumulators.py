"""Streaming statistics over `PairedBatch` es: one accumulator per analysis.

Why fixed-size state: every buffer is allocated in ``__init__`` and only added to, so memory is set by
the model's shape (and ``max_positions``), never by the number of prompts. ``state_nbytes()`` reports
it, and the tests assert it stays flat as prompts stream in:

- `ResidualAccumulator`: O(hooks x layers x max_positions) scalars.
- `DirectionAccumulator`: O(hooks x layers x d_model^2) float64 -- the second-moment matrix of the
  difference per layer (SmolLM2-135M, one hook: 30 x 576^2 x 8 bytes = 80 MB). Exact PCA for that
  price; a randomized sketch would be smaller but approximate, and this size is fine on a laptop.
- `AttentionAccumulator`: O(layers x heads) scalars.
- `OutputAccumulator`: O(vocab) for the mean next-token probabilities; the optional per-token KL rows
  grow with the number of tokens (a handful of scalars each, not activations).

`ResidualAccumulator` and `DirectionAccumulator` also take one hook point at a time (``update_pair``), so
`diff_models` feeds them while the tuned model runs and never stores its residual activations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from rlhf_interp.diff.metrics import pattern_js, principal_directions, residual_token_metrics, second_moment
from rlhf_interp.diff.stream import PATTERN_HOOK, PairedBatch, block_hook
from rlhf_interp.core.kl import entropy, kl_divergence

_F64 = torch.float64


def _nbytes(*tensors: Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _hook_index(n_layers: int, hooks: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Full hook name -> (index in ``hooks``, layer): where a streamed pair's statistics go."""
    return {block_hook(layer, hook): (i, layer) for i, hook in enumerate(hooks) for layer in range(n_layers)}


# ----------------------------------------------------------------------------------------------
# Residual-stream metrics, per layer and per token position


class ResidualAccumulator:
    """Running means of `residual_token_metrics` per (hook, layer), and per position up to ``max_positions``."""

    METRICS: tuple[str, ...] = ("cosine_sim", "rel_diff_norm", "norm_ratio", "diff_norm", "base_norm", "tuned_norm")
    POSITION_METRICS: tuple[str, ...] = ("cosine_sim", "rel_diff_norm", "norm_ratio")

    def __init__(self, n_layers: int, hooks: Sequence[str], max_positions: int = 64):
        self.n_layers, self.hooks, self.max_positions = n_layers, tuple(hooks), max_positions
        h = len(self.hooks)
        self.sums = torch.zeros(len(self.METRICS), h, n_layers, dtype=_F64)
        self.counts = torch.zeros(h, n_layers, dtype=_F64)
        self.pos_sums = torch.zeros(len(self.POSITION_METRICS), h, n_layers, max_positions, dtype=_F64)
        self.pos_counts = torch.zeros(h, n_layers, max_positions, dtype=_F64)
        self._index = _hook_index(n_layers, self.hooks)

    def hook_names(self) -> list[str]:
        return [block_hook(layer, hook) for layer in range(self.n_layers) for hook in self.hooks]

    def state_nbytes(self) -> int:
        return _nbytes(self.sums, self.counts, self.pos_sums, self.pos_counts)

    def update(self, batch: PairedBatch) -> None:
        """A batch that holds both models' activations: `update_pair` on each of its hook points."""
        for name in self.hook_names():
            self.update_pair(batch, name, batch.base[name], batch.tuned[name])

    def update_pair(self, batch: PairedBatch, name: str, base: Tensor, tuned: Tensor) -> None:
        """One hook point of one batch (float64 temporaries of [tokens, d_model] only)."""
        i, layer = self._index[name]
        mask = batch.token_mask
        positions = batch.positions[mask].cpu()
        keep = positions < self.max_positions
        metrics = residual_token_metrics(base[mask].to(_F64), tuned[mask].to(_F64))
        for m, metric in enumerate(self.METRICS):
            self.sums[m, i, layer] += metrics[metric].sum().cpu()
        for m, metric in enumerate(self.POSITION_METRICS):
            self.pos_sums[m, i, layer].index_add_(0, positions[keep], metrics[metric].cpu()[keep])
        self.counts[i, layer] += positions.numel()
        self.pos_counts[i, layer].index_add_(0, positions[keep], torch.ones(int(keep.sum()), dtype=_F64))

    def result(self) -> pd.DataFrame:
        """One row per (layer, hook): token-mean metrics and ``n_tokens``."""
        means = self.sums / self.counts.clamp_min(1)
        rows = [{"layer": layer, "hook": hook,
                 **{name: means[m, i, layer].item() for m, name in enumerate(self.METRICS)},
                 "n_tokens": int(self.counts[i, layer].item())}
                for layer in range(self.n_layers) for i, hook in enumerate(self.hooks)]
        return pd.DataFrame(rows)

    def result_by_position(self) -> pd.DataFrame:
        """One row per (layer, hook, position) seen at least once."""
        means = self.pos_sums / self.pos_counts.clamp_min(1)
        rows = []
        for i, hook in enumerate(self.hooks):
            for layer in range(self.n_layers):
                for pos in torch.nonzero(self.pos_counts[i, layer]).flatten().tolist():
                    rows.append({"layer": layer, "hook": hook, "position": pos,
                                 **{name: means[m, i, layer, pos].item() for m, name in enumerate(self.POSITION_METRICS)},
                                 "n_tokens": int(self.pos_counts[i, layer, pos].item())})
        return pd.DataFrame(rows, columns=["layer", "hook", "position", *self.POSITION_METRICS, "n_tokens"])


# ----------------------------------------------------------------------------------------------
# Difference directions: mean of (tuned - base) and its principal components


@dataclass
class DifferenceDirections:
    """Per (hook, layer): the mean difference vector and the top principal components of the difference.

    ``mean[h, L]`` is E[tuned - base] (d_model); ``components[h, L, k]`` are unit vectors, ordered by
    ``explained_variance``; ``total_variance`` is the trace of the difference's covariance and
    ``mean_sq_norm`` is E||tuned - base||^2. Use ``vector(layer)`` as a steering direction.
    """

    hooks: tuple[str, ...]
    mean: Float[Tensor, "hook layer d_model"]
    components: Float[Tensor, "hook layer k d_model"]
    explained_variance: Float[Tensor, "hook layer k"]
    total_variance: Float[Tensor, "hook layer"]
    mean_sq_norm: Float[Tensor, "hook layer"]
    n_tokens: int

    def vector(self, layer: int, hook: str = "hook_resid_post", kind: str | int = "mean") -> Tensor:
        """The mean-difference direction (``kind="mean"``) or principal component ``kind=i`` at a layer."""
        if hook not in self.hooks:
            raise KeyError(f"No directions for {hook!r}; computed for {list(self.hooks)}.")
        h = self.hooks.index(hook)
        return self.mean[h, layer] if kind == "mean" else self.components[h, layer, int(kind)]

    def table(self) -> pd.DataFrame:
        """One row per (layer, hook): ``mean_diff_norm`` = ||E[d]||, ``rms_diff_norm`` = sqrt(E||d||^2),
        ``mean_share`` = ||E[d]||^2 / E||d||^2 (how much of the difference is one constant shift),
        ``top_pc_variance_ratio`` (share of the difference's variance along the top component),
        ``top_pc_cos_with_mean``, ``n_tokens``."""
        rows = []
        for h, hook in enumerate(self.hooks):
            for layer in range(self.mean.shape[1]):
                mean_sq = self.mean[h, layer].pow(2).sum().item()
                second = self.mean_sq_norm[h, layer].item()
                total = self.total_variance[h, layer].item()
                top = self.explained_variance[h, layer, 0].item()
                rows.append({"layer": layer, "hook": hook, "mean_diff_norm": mean_sq ** 0.5,
                             "rms_diff_norm": second ** 0.5, "mean_share": mean_sq / second if second > 0 else 0.0,
                             "top_pc_variance_ratio": top / total if total > 0 else 0.0,
                             "top_pc_cos_with_mean": _cos(self.components[h, layer, 0], self.mean[h, layer]),
                             "n_tokens": self.n_tokens})
        return pd.DataFrame(rows)

    def components_table(self) -> pd.DataFrame:
        """One row per (layer, hook, component): ``explained_variance``, ``explained_variance_ratio``,
        ``cos_with_mean`` (cosine between that component and the mean difference)."""
        rows = []
        for h, hook in enumerate(self.hooks):
            for layer in range(self.mean.shape[1]):
                total = self.total_variance[h, layer].item()
                for c in range(self.components.shape[2]):
                    var = self.explained_variance[h, layer, c].item()
                    rows.append({"layer": layer, "hook": hook, "component": c, "explained_variance": var,
                                 "explained_variance_ratio": var / total if total > 0 else 0.0,
                                 "cos_with_mean": _cos(self.components[h, layer, c], self.mean[h, layer])})
        return pd.DataFrame(rows)

    def save(self, path: str | Path) -> Path:
        """Save as a ``.pt`` file (tensors + hook names) for steering experiments."""
        path = Path(path)
        from rlhf_interp.core.io import save_torch  # a full disk: an OSError naming the file

        save_torch({"hooks": list(self.hooks), "mean": self.mean, "components": self.components,
                    "explained_variance": self.explained_variance, "total_variance": self.total_variance,
                    "mean_sq_norm": self.mean_sq_norm, "n_tokens": self.n_tokens}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "DifferenceDirections":
        data = torch.load(Path(path), weights_only=True)
        return cls(hooks=tuple(data.pop("hooks")), **data)


def _cos(a: Tensor, b: Tensor) -> float:
    denom = (a.norm() * b.norm()).item()
    return (a @ b).item() / denom if denom > 0 else 0.0


class DirectionAccumulator:
    """Running sums of d = tuned - base and of d d^T per (hook, layer), in float64."""

    def __init__(self, n_layers: int, d_model: int, hooks: Sequence[str] = ("hook_resid_post",),
                 n_components: int = 5):
        self.n_layers, self.d_model, self.hooks = n_layers, d_model, tuple(hooks)
        self.n_components = min(n_components, d_model)
        self.total = torch.zeros(len(self.hooks), n_layers, d_model, dtype=_F64)
        self.second = torch.zeros(len(self.hooks), n_layers, d_model, d_model, dtype=_F64)
        self.counts = torch.zeros(len(self.hooks), n_layers, dtype=torch.int64)  # tokens per hook point
        self._index = _hook_index(n_layers, self.hooks)

    def hook_names(self) -> list[str]:
        return [block_hook(layer, hook) for layer in range(self.n_layers) for hook in self.hooks]

    def state_nbytes(self) -> int:
        return _nbytes(self.total, self.second)

    @property
    def count(self) -> int:
        """Tokens seen (the same at every hook point once a batch is complete)."""
        return int(self.counts.max())

    def update(self, batch: PairedBatch) -> None:
        """A batch that holds both models' activations: `update_pair` on each of its hook points."""
        for name in self.hook_names():
            self.update_pair(batch, name, batch.base[name], batch.tuned[name])

    def update_pair(self, batch: PairedBatch, name: str, base: Tensor, tuned: Tensor) -> None:
        """One hook point of one batch: add d and d d^T over its real tokens."""
        i, layer = self._index[name]
        mask = batch.token_mask
        diff = (tuned[mask].to(_F64) - base[mask].to(_F64)).cpu()
        self.total[i, layer] += diff.sum(0)
        self.second[i, layer] += second_moment(diff)
        self.counts[i, layer] += diff.shape[0]

    def result(self) -> DifferenceDirections:
        h, k = len(self.hooks), self.n_components
        mean = torch.zeros(h, self.n_layers, self.d_model, dtype=_F64)
        comps = torch.zeros(h, self.n_layers, k, self.d_model, dtype=_F64)
        var = torch.zeros(h, self.n_layers, k, dtype=_F64)
        total_var = torch.zeros(h, self.n_layers, dtype=_F64)
        for i in range(h):
            for layer in range(self.n_layers):
                m, v, c, t = principal_directions(self.total[i, layer], self.second[i, layer],
                                                  int(self.counts[i, layer]), k)
                mean[i, layer], var[i, layer], comps[i, layer], total_var[i, layer] = m, v, c, t
        mean_sq = torch.diagonal(self.second, dim1=-2, dim2=-1).sum(-1) / self.counts.clamp_min(1).to(_F64)
        return DifferenceDirections(hooks=self.hooks, mean=mean.float(), components=comps.float(),
                                    explained_variance=var, total_variance=total_var, mean_sq_norm=mean_sq,
                                    n_tokens=self.count)


# ----------------------------------------------------------------------------------------------
# Attention patterns, per head


class AttentionAccumulator:
    """Mean Jensen-Shannon divergence between base and tuned ``hook_pattern`` per (layer, head), over real
    query rows (padded keys masked out), plus each model's mean attention to the BOS token."""

    def __init__(self, n_layers: int, n_heads: int):
        self.n_layers, self.n_heads = n_layers, n_heads
        self.js = torch.zeros(n_layers, n_heads, dtype=_F64)
        self.bos = torch.zeros(2, n_layers, n_heads, dtype=_F64)
        self.rows = 0

    def hook_names(self) -> list[str]:
        return [block_hook(layer, PATTERN_HOOK) for layer in range(self.n_layers)]

    def state_nbytes(self) -> int:
        return _nbytes(self.js, self.bos)

    def update(self, batch: PairedBatch) -> None:
        key_mask = batch.attention_mask.bool()
        query_mask = batch.token_mask.to(_F64)[:, None, :]
        bos_key = (batch.positions == 0).to(_F64)[:, None, None, :]
        for layer in range(self.n_layers):
            name = block_hook(layer, PATTERN_HOOK)
            base, tuned = batch.base[name].to(_F64), batch.tuned[name].to(_F64)
            self.js[layer] += (pattern_js(base, tuned, key_mask) * query_mask).sum((0, 2)).cpu()
            for m, pattern in enumerate((base, tuned)):
                self.bos[m, layer] += ((pattern * bos_key).sum(-1) * query_mask).sum((0, 2)).cpu()
        self.rows += int(batch.token_mask.sum().item())

    def result(self) -> pd.DataFrame:
        """One row per (layer, head): ``js_divergence`` (nats), ``base_bos_attention``,
        ``tuned_bos_attention`` (mean attention mass on BOS), ``n_rows`` (query rows averaged)."""
        n = max(self.rows, 1)
        return pd.DataFrame([{"layer": layer, "head": head, "js_divergence": self.js[layer, head].item() / n,
                              "base_bos_attention": self.bos[0, layer, head].item() / n,
                              "tuned_bos_attention": self.bos[1, layer, head].item() / n, "n_rows": self.rows}
                             for layer in range(self.n_layers) for head in range(self.n_heads)])


# ----------------------------------------------------------------------------------------------
# Next-token distributions


class OutputAccumulator:
    """Per-token KL between the two models' next-token distributions, and the mean probability of every
    vocabulary token under each model (to find the tokens whose probability moved most).

    ``kl_pi_ref`` is KL(tuned || base) -- the RLHF penalty's direction, KL(pi || ref) -- and
    ``kl_ref_pi`` is KL(base || tuned)."""

    def __init__(self, d_vocab: int, per_token: bool = True):
        self.per_token = per_token
        self.prob_sums = torch.zeros(2, d_vocab, dtype=_F64)
        self.kl_sums = torch.zeros(2, dtype=_F64)
        self.count = 0
        self._rows: list[Tensor] = []  # per-token rows: prompt, position, token, kl_fwd, kl_rev, H_base, H_tuned

    def hook_names(self) -> list[str]:
        return []

    def state_nbytes(self) -> int:
        """Size of the fixed state (the optional per-token rows are a result table, not counted)."""
        return _nbytes(self.prob_sums, self.kl_sums)

    def update(self, batch: PairedBatch) -> None:
        mask = batch.token_mask
        base, tuned = batch.base_logits[mask].float(), batch.tuned_logits[mask].float()
        kl_fwd, kl_rev = kl_divergence(tuned, base), kl_divergence(base, tuned)
        self.kl_sums += torch.stack([kl_fwd.sum(), kl_rev.sum()]).to(_F64).cpu()
        for m, logits in enumerate((base, tuned)):
            self.prob_sums[m] += torch.softmax(logits, dim=-1).sum(0).to(_F64).cpu()
        self.count += int(mask.sum().item())
        if self.per_token:
            prompt = batch.prompt_index[:, None].expand_as(mask)[mask.cpu()].to(_F64)
            self._rows.append(torch.stack([
                prompt, batch.positions[mask].cpu().to(_F64), batch.tokens[mask].cpu().to(_F64),
                kl_fwd.cpu().to(_F64), kl_rev.cpu().to(_F64), entropy(base).cpu().to(_F64),
                entropy(tuned).cpu().to(_F64)], dim=1))

    def per_token_table(self, tokenizer) -> pd.DataFrame:
        """One row per (prompt_index, position): ``token_id``/``token`` (the input token at that position;
        the distributions compared are for the token after it), ``kl_pi_ref``, ``kl_ref_pi``,
        ``entropy_base``, ``entropy_tuned`` (nats)."""
        columns = ["prompt_index", "position", "token_id", "kl_pi_ref", "kl_ref_pi", "entropy_base", "entropy_tuned"]
        if not self._rows:
            return pd.DataFrame(columns=columns[:3] + ["token"] + columns[3:])
        df = pd.DataFrame(torch.cat(self._rows).numpy(), columns=columns)
        for col in ("prompt_index", "position", "token_id"):
            df[col] = df[col].astype(int)
        df.insert(3, "token", [tokenizer.decode([t]) for t in df["token_id"]])
        return df

    def token_shifts(self, tokenizer, top_k: int = 20) -> pd.DataFrame:
        """The ``top_k`` tokens whose mean next-token probability rose most and the ``top_k`` that fell most.

        Columns: ``direction`` ("up"/"down"), ``rank`` (1 = largest move), ``token_id``, ``token``,
        ``base_mean_prob``, ``tuned_mean_prob``, ``prob_diff`` (tuned - base), ``log_ratio``
        (log tuned/base of the mean probabilities)."""
        n = max(self.count, 1)
        base, tuned = self.prob_sums[0] / n, self.prob_sums[1] / n
        diff = tuned - base
        rows = []
        for direction, order in (("up", torch.argsort(diff, descending=True)), ("down", torch.argsort(diff))):
            for rank, token_id in enumerate(order[:top_k].tolist(), start=1):
                rows.append({"direction": direction, "rank": rank, "token_id": token_id,
                             "token": tokenizer.decode([token_id]), "base_mean_prob": base[token_id].item(),
                             "tuned_mean_prob": tuned[token_id].item(), "prob_diff": diff[token_id].item(),
                             "log_ratio": (torch.log(tuned[token_id].clamp_min(1e-30))
                                           - torch.log(base[token_id].clamp_min(1e-30))).item()})
        return pd.DataFrame(rows)

    def summary(self) -> dict[str, float]:
        n = max(self.count, 1)
        return {"kl_pi_ref": self.kl_sums[0].item() / n, "kl_ref_pi": self.kl_sums[1].item() / n,
                "n_tokens": self.count}
