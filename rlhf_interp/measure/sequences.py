"""Per-sequence KL on the edited model's own samples, with reward, entropy and diversity.

Sample continuations from the edited model, then sum per-token KL over the generated tokens with the
k1 and k3 estimators (`kl.kl_estimate`) and the exact per-token KL (the Rao-Blackwellized estimator:
same expectation, lower variance). All three estimate the sequence-level ``KL(edited || reference)``
of the continuation; `kl.mean_and_stderr` gives their standard errors.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Sequence

import pandas as pd
import torch

from rlhf_interp.bridge.generation import Generation, generate
from rlhf_interp.bridge.tokens import check_context
from rlhf_interp.edits.base import Edit
from rlhf_interp.core.kl import (entropy_from_logprobs, kl_estimate, kl_from_logprobs, mean_and_stderr,
                            sampling_logprobs)
from rlhf_interp.edits.prompting import changes_context
from rlhf_interp.measure.context import continuation_logits, sample_in_context
from rlhf_interp.measure.token_shift import bind, check_reference, forward_logits
from rlhf_interp.reward.functions import get_reward, score


def distinct_n(token_lists: Iterable[Sequence[int]], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams, pooled over sequences."""
    grams = [tuple(t[i:i + n]) for t in token_lists for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


SCORE_CHUNK = 32  # sequences scored at once: each holds [tokens x vocabulary] log-probs of two models, several times


def gen_rows(gen: Generation, rows: slice) -> Generation:
    """Some rows of a `Generation` (same padded prompt width), e.g. to score a large sample in chunks."""
    return Generation(gen.prompts[rows], gen.tokens[rows], gen.attention_mask[rows], gen.generated_mask[rows],
                      gen.prompt_len, gen.texts[rows])


@torch.no_grad()
def score_generation(model, edit: Edit | None, gen: Generation, *, reference=None, batch_size: int = 16,
                     temperature: float = 1.0) -> pd.DataFrame:
    """Per-sequence KL of stored samples: one row per sequence.

    Every log-prob, KL and entropy is of the distributions the samples were drawn from: both models'
    logits divided by ``temperature`` (`kl.sampling_logprobs`), so pass the temperature that sampled them.

    Columns: prompt_idx, prompt, continuation, n_new_tokens, logprob_edited, logprob_reference,
    kl_k1, kl_k3, kl_exact (sums over the generated tokens, EOS included), entropy_mean (mean
    per-token entropy of the edited model along the sample).
    """
    check_reference(model, reference)
    if len(gen) > SCORE_CHUNK:  # full-vocabulary log-probs of both models: bounded memory, same numbers
        parts = [score_generation(model, edit, gen_rows(gen, slice(i, i + SCORE_CHUNK)), reference=reference,
                                  batch_size=batch_size, temperature=temperature)
                 for i in range(0, len(gen), SCORE_CHUNK)]
        return pd.concat(parts, ignore_index=True).assign(prompt_idx=range(len(gen)))
    edit = bind(model, edit)
    ref_model = reference if reference is not None else model
    ref_logits = forward_logits(ref_model, gen.tokens, gen.attention_mask, gen.prompt_len, batch_size)
    p = gen.prompt_len
    targets = gen.tokens[:, p:].cpu()
    tmask = gen.generated_mask[:, p:].cpu().float()
    # the logits that chose each new token (a prompting edit's come from its own, shifted context: measure.context)
    predicting, ref_predicting = continuation_logits(model, edit, gen, batch_size), ref_logits[:, p - 1:-1]
    logp_all = sampling_logprobs(predicting, temperature)
    logq_all = sampling_logprobs(ref_predicting, temperature)
    logp = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    logq = logq_all.gather(-1, targets[..., None]).squeeze(-1)
    k1 = kl_estimate(logp, logq, "k1")
    k3 = kl_estimate(logp, logq, "k3")
    exact = kl_from_logprobs(logp_all, logq_all)
    ent = entropy_from_logprobs(logp_all)
    n_tok = tmask.sum(1)
    return pd.DataFrame({
        "prompt_idx": range(len(gen)),
        "prompt": gen.prompts,
        "continuation": gen.texts,
        "n_new_tokens": n_tok.long().numpy(),
        "logprob_edited": (logp * tmask).sum(1).numpy(),
        "logprob_reference": (logq * tmask).sum(1).numpy(),
        "kl_k1": (k1 * tmask).sum(1).numpy(),
        "kl_k3": (k3 * tmask).sum(1).numpy(),
        "kl_exact": (exact * tmask).sum(1).numpy(),
        "entropy_mean": ((ent * tmask).sum(1) / n_tok.clamp_min(1)).numpy(),
    })


def sample(model, edit: Edit | None, prompts: Sequence[str], *, max_new_tokens: int = 24, seed: int | None = 0,
           samples_per_prompt: int = 1, temperature: float = 1.0, use_past_kv_cache: bool = True) -> Generation:
    """Sample continuations with ``edit`` active (prompts repeated ``samples_per_prompt`` times)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise ValueError("No prompts given: sampling needs at least one.")
    for name, value in (("max_new_tokens", max_new_tokens), ("samples_per_prompt", samples_per_prompt)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
    check_context(model, list(prompts), max_new_tokens)
    edit = bind(model, edit)
    prompts = [p for p in prompts for _ in range(samples_per_prompt)]
    if changes_context(edit):  # a prompting edit: sampled after its prefix, returned in the user's frame
        return sample_in_context(model, edit, prompts, max_new_tokens=max_new_tokens, seed=seed,
                                 temperature=temperature, use_past_kv_cache=use_past_kv_cache)
    with edit:
        return generate(model, prompts, max_new_tokens=max_new_tokens, seed=seed, temperature=temperature,
                        use_past_kv_cache=use_past_kv_cache)


def sequence_kl(model, edit: Edit | None, prompts: Sequence[str], *, reference=None, max_new_tokens: int = 24,
                seed: int | None = 0, samples_per_prompt: int = 1, temperature: float = 1.0) -> pd.DataFrame:
    """Sample from the edited model, then estimate KL(edited || reference) per sequence (see `score_generation`)."""
    gen = sample(model, edit, prompts, max_new_tokens=max_new_tokens, seed=seed, samples_per_prompt=samples_per_prompt,
                 temperature=temperature)
    return score_generation(model, edit, gen, reference=reference, temperature=temperature)


def summarize_sequences(df: pd.DataFrame) -> dict[str, float]:
    """Means and standard errors (`kl.mean_and_stderr`) of the per-sequence columns."""
    out: dict[str, float] = {"n_sequences": float(len(df))}
    for col in ("reward", "kl_k1", "kl_k3", "kl_exact"):
        if col in df:
            mean, se = mean_and_stderr(torch.tensor(df[col].to_numpy(), dtype=torch.float64))
            out[f"{col}_mean"], out[f"{col}_stderr"] = mean, se
    tokens = float(df["n_new_tokens"].sum())
    out["kl_per_token"] = float(df["kl_exact"].sum()) / max(tokens, 1.0)
    out["entropy_mean"] = float((df["entropy_mean"] * df["n_new_tokens"]).sum()) / max(tokens, 1.0)
    out["new_tokens_mean"] = float(df["n_new_tokens"].mean())
    return out


def evaluate_edit(model, edit: Edit | None, prompts: Sequence[str], reward: str | Callable = "char_count", *,
                  reference=None, max_new_tokens: int = 24, seed: int | None = 0, samples_per_prompt: int = 1,
                  return_sequences: bool = False, temperature: float = 1.0
                  ) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Reward, KL, entropy and diversity of the edited model's own samples.

    Returns a one-row DataFrame: n_sequences, reward_mean/_stderr, kl_k1_mean/_stderr,
    kl_k3_mean/_stderr, kl_exact_mean/_stderr (per sequence, nats), kl_per_token, entropy_mean
    (per token), distinct_1, distinct_2 (over generated tokens, EOS excluded), new_tokens_mean,
    seconds. With ``return_sequences`` also the per-sequence table (`score_generation` + reward).
    The reward scores the continuation only. The same ``seed`` gives every edit the same random
    numbers, which makes differences between settings less noisy. ``temperature`` samples and scores
    both models' tempered distributions (1: the models as they are).
    """
    start = time.perf_counter()
    check_reference(model, reference)  # before sampling, not after
    reward_fn = get_reward(reward) if not callable(reward) else reward
    gen = sample(model, edit, prompts, max_new_tokens=max_new_tokens, seed=seed, samples_per_prompt=samples_per_prompt,
                 temperature=temperature)
    seqs = score_generation(model, edit, gen, reference=reference, temperature=temperature)
    seqs["reward"] = score(reward_fn, gen.texts).numpy()
    summary = summarize_sequences(seqs)
    eos = model.tokenizer.eos_token_id
    lists = [[t for t, m in zip(row.tolist(), mrow.tolist()) if m and t != eos]
             for row, mrow in zip(gen.tokens[:, gen.prompt_len:].cpu(), gen.generated_mask[:, gen.prompt_len:].cpu())]
    summary["distinct_1"] = distinct_n(lists, 1)
    summary["distinct_2"] = distinct_n(lists, 2)
    summary["seconds"] = time.perf_counter() - start
    frame = pd.DataFrame([summary])
    frame["n_sequences"] = frame["n_sequences"].astype(int)
    return (frame, seqs) if return_sequences else frame
