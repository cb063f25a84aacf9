"""Coverage of the reference: which of the reference's own continuations has the policy stopped producing?

Why: KL(pi || ref) (pi_ref) lets the policy drop behaviours of the reference at little cost, while
KL(ref || pi) (ref_pi) charges for every reference sample the policy makes unlikely. The direct
measurement is on the reference's samples, not the policy's: draw ``N`` continuations per prompt from the
reference once (a fixed seed, kept on disk so a resumed study reuses them), then at each checkpoint ask how
much the policy's log-probability of each has fallen, ``delta = log pi(y) - log ref(y)`` (sequence sums).
A sample whose ``delta`` is below ``-threshold`` is a lost mode. Two by-products:

- ``-mean(delta)`` over the samples is the unbiased (k1) estimate of the *sequence-level* KL(ref || pi),
  KL(ref || pi) at the level where mass-covering is defined (PPO's per-token KL(ref || pi) penalties in the reward and the loss sum over the
  policy's states instead); with a reference forward it also gets the exact per-token KL on the
  reference's states (the Rao-Blackwellised sum, lower variance);
- the reference's greedy continuation (its single most likely path, approximately) and the policy's
  log-probability of it: the reference's top mode, kept or lost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from rlhf_interp.bridge import Generation, generate
from rlhf_interp.measure.token_scores import Forward, TokenScores, forward_of, score_tokens

# Default lost-mode thresholds (nats of sequence log-prob): 10x, 100x and 1000x less likely than under the reference.
THRESHOLDS: tuple[float, ...] = (math.log(10), math.log(100), math.log(1000))


@dataclass
class ReferenceSamples:
    """``n_per_prompt`` sampled continuations per prompt from the reference (rows ``i * n .. i * n + n - 1``
    belong to prompt ``i``), one greedy continuation per prompt, and the reference's per-token log-probs of each."""

    prompts: list[str]
    n_per_prompt: int
    samples: Generation
    greedy: Generation
    sample_logp_ref: Tensor  # [rows, T] reference log-prob per token of the samples
    greedy_logp_ref: Tensor  # [n_prompts, T]
    settings: dict

    def save(self, path: str | Path) -> Path:
        """One ``torch.save`` file (tensors, texts, settings), written atomically."""
        from rlhf_interp.core.io import atomic_path

        def gen_dict(g: Generation) -> dict:
            return {"prompts": g.prompts, "tokens": g.tokens.cpu(), "attention_mask": g.attention_mask.cpu(),
                    "generated_mask": g.generated_mask.cpu(), "prompt_len": g.prompt_len, "texts": g.texts}

        with atomic_path(path) as tmp:
            torch.save({"prompts": self.prompts, "n_per_prompt": self.n_per_prompt, "settings": self.settings,
                        "samples": gen_dict(self.samples), "greedy": gen_dict(self.greedy),
                        "sample_logp_ref": self.sample_logp_ref, "greedy_logp_ref": self.greedy_logp_ref}, tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceSamples:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: draw the reference samples first "
                                    f"(measure.coverage.draw_reference_samples(...).save(path)).")
        data = torch.load(path, weights_only=True)
        return cls(prompts=data["prompts"], n_per_prompt=data["n_per_prompt"], settings=data["settings"],
                   samples=Generation(**data["samples"]), greedy=Generation(**data["greedy"]),
                   sample_logp_ref=data["sample_logp_ref"], greedy_logp_ref=data["greedy_logp_ref"])

    def to(self, device) -> ReferenceSamples:
        def move(g: Generation) -> Generation:
            return Generation(g.prompts, g.tokens.to(device), g.attention_mask.to(device), g.generated_mask.to(device),
                              g.prompt_len, g.texts)

        return ReferenceSamples(self.prompts, self.n_per_prompt, move(self.samples), move(self.greedy),
                                self.sample_logp_ref, self.greedy_logp_ref, self.settings)


@torch.no_grad()
def draw_reference_samples(reference, prompts: Sequence[str], *, n_per_prompt: int, max_new_tokens: int,
                           seed: int = 0, temperature: float = 1.0, batch_size: int = 16) -> ReferenceSamples:
    """Sample ``n_per_prompt`` continuations per prompt from the ``reference`` bridge (no EOS stop, so every
    continuation has ``max_new_tokens`` tokens, as PPO's rollouts do) and its greedy continuation."""
    if n_per_prompt < 1:
        raise ValueError(f"n_per_prompt must be >= 1, got {n_per_prompt}.")
    prompts = list(prompts)
    repeated = [p for p in prompts for _ in range(n_per_prompt)]
    samples = generate(reference, repeated, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                       stop_at_eos=False)
    greedy = generate(reference, prompts, max_new_tokens=max_new_tokens, do_sample=False, stop_at_eos=False)
    fwd = forward_of(reference)
    s = score_tokens(fwd, samples.tokens, samples.attention_mask, samples.generated_mask, samples.prompt_len,
                     batch_size=batch_size, temperature=temperature)
    g = score_tokens(fwd, greedy.tokens, greedy.attention_mask, greedy.generated_mask, greedy.prompt_len,
                     batch_size=batch_size, temperature=temperature)
    settings = {"n_prompts": len(prompts), "n_per_prompt": n_per_prompt, "max_new_tokens": max_new_tokens,
                "seed": seed, "temperature": temperature}
    return ReferenceSamples(prompts, n_per_prompt, samples, greedy, s.logp, g.logp, settings)


@torch.no_grad()
def measure_coverage(policy: Forward, refs: ReferenceSamples, *, reference: Forward | None = None,
                     batch_size: int = 16) -> tuple[pd.DataFrame, TokenScores]:
    """Score the reference's continuations under ``policy`` (a `forward_of` bridge or any forward).

    Returns a table with one row per continuation -- ``kind`` ("sample" or "greedy"), ``prompt_idx``,
    ``sample_idx``, ``n_tokens``, ``logprob_ref``, ``logprob_policy``, ``delta`` (policy - ref, nats), and
    with ``reference`` also ``kl_ref_pi_exact_sum`` / ``kl_pi_ref_exact_sum`` (exact per-token KLs summed
    over the reference's states) -- and the per-token scores of the sampled continuations (for the
    estimator audit: tokens sampled from the reference).
    """
    temperature = refs.settings.get("temperature", 1.0)
    tables, sample_scores = [], None
    for kind, gen, logp_ref in (("sample", refs.samples, refs.sample_logp_ref), ("greedy", refs.greedy,
                                                                                  refs.greedy_logp_ref)):
        scores = score_tokens(policy, gen.tokens, gen.attention_mask, gen.generated_mask, gen.prompt_len,
                              reference=reference if kind == "sample" else None, batch_size=batch_size,
                              temperature=temperature)
        n = refs.n_per_prompt if kind == "sample" else 1
        rows = torch.arange(gen.tokens.shape[0])
        table = pd.DataFrame({"kind": kind, "prompt_idx": (rows // n).numpy(), "sample_idx": (rows % n).numpy(),
                              "n_tokens": scores.mask.sum(-1).long().numpy(),
                              "logprob_ref": (logp_ref * scores.mask).sum(-1).double().numpy(),
                              "logprob_policy": scores.sums("logp").double().numpy()})
        table["delta"] = table["logprob_policy"] - table["logprob_ref"]
        if kind == "sample":
            sample_scores = scores
            if reference is not None:
                table["kl_ref_pi_exact_sum"] = scores.sums("kl_ref_pi").double().numpy()
                table["kl_pi_ref_exact_sum"] = scores.sums("kl_pi_ref").double().numpy()
        tables.append(table)
    assert sample_scores is not None
    if reference is None:
        sample_scores.logp_ref = torch.where(sample_scores.mask.bool(), refs.sample_logp_ref.float(), 0.0)
    return pd.concat(tables, ignore_index=True), sample_scores


def coverage_summary(table: pd.DataFrame, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float]:
    """One row of numbers from a `measure_coverage` table.

    ``lost_<t>``: share of reference samples with ``delta < -t`` (t in nats, named by the factor e^t,
    e.g. ``lost_100x``); ``delta_mean`` / ``delta_median`` / ``delta_p10``; ``kl_ref_pi_seq_k1`` =
    -mean delta (unbiased sequence-level KL(ref || pi)) and, when measured, ``kl_ref_pi_seq_exact`` (the
    Rao-Blackwellised version); ``greedy_logprob_policy`` / ``greedy_delta``: the policy's log-prob of the
    reference's greedy continuation and its change.
    """
    samples = table[table["kind"] == "sample"]
    greedy = table[table["kind"] == "greedy"]
    if samples.empty:
        raise ValueError("The coverage table has no reference samples (kind == 'sample').")
    delta = samples["delta"]
    out: dict[str, float] = {f"lost_{round(math.exp(t)):d}x": float((delta < -t).mean()) for t in thresholds}
    out.update(delta_mean=float(delta.mean()), delta_median=float(delta.median()), delta_p10=float(delta.quantile(0.1)),
               kl_ref_pi_seq_k1=float(-delta.mean()),
               kl_ref_pi_seq_k1_stderr=float(delta.std(ddof=1) / math.sqrt(len(delta))) if len(delta) > 1 else math.nan)
    if "kl_ref_pi_exact_sum" in samples:
        out["kl_ref_pi_seq_exact"] = float(samples["kl_ref_pi_exact_sum"].mean())
    if not greedy.empty:
        out.update(greedy_logprob_ref=float(greedy["logprob_ref"].mean()),
                   greedy_logprob_policy=float(greedy["logprob_policy"].mean()),
                   greedy_delta=float(greedy["delta"].mean()))
    return out
