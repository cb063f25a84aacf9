"""How far does an edit move the model's output distribution? KL shift, reward, entropy, diversity.

Fine-tuning with a KL penalty keeps ``KL(pi || ref)`` in check; this module puts the same number
on edits so the two can be compared: how much KL does a steering vector or an ablation spend for
the reward it buys?

Two views:
- **Per token, on fixed text** (`kl_shift`): teacher-forced next-token distributions of the
  edited model vs a reference at every real position of the given prompts (or of stored
  prompt + continuation tokens). Exact KL both ways, JS, entropies. Reference logits are cached
  (`LogitsCache`) so a sweep pays for them once.
- **Per sequence, on the edited model's own samples** (`sequence_kl`, `evaluate_edit`): sample
  continuations from the edited model, then sum per-token KL over the generated tokens with the
  k1 and k3 estimators (`kl.kl_estimate`) and the exact per-token KL (the Rao-Blackwellized
  estimator: same expectation, lower variance). All three estimate the sequence-level
  ``KL(edited || reference)`` of the continuation; `kl.mean_and_stderr` gives their standard errors.

Column conventions (tidy, one observation per row): ``kl_forward`` = KL(edited || reference),
``kl_reverse`` = KL(reference || edited), both in nats.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from rlhf_interp.edits import Ablation, Edit, NoEdit, Steering, active_edits, edit_columns, prompt_length
from rlhf_interp.generation import Generation, generate
from rlhf_interp.kl import entropy, js_divergence, kl_divergence, kl_estimate, mean_and_stderr
from rlhf_interp.models import tokenize
from rlhf_interp.rewards import get_reward, score

TokenBatch = tuple[Tensor, Tensor, int]  # tokens, attention_mask, prompt_len


# ----------------------------------------------------------------------------------------------
# Forward passes and the reference cache


def _as_batch(model, prompts: Sequence[str] | Generation) -> tuple[TokenBatch, list[str]]:
    if isinstance(prompts, Generation):
        return (prompts.tokens, prompts.attention_mask, prompts.prompt_len), prompts.prompts
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("No prompts given.")
    tokens, mask = tokenize(model, prompts)
    return (tokens, mask, tokens.shape[1]), prompts


@torch.no_grad()
def forward_logits(model, tokens: Tensor, mask: Tensor, prompt_len: int | None = None,
                   batch_size: int = 16) -> Float[Tensor, "batch seq vocab"]:
    """Logits (float32, CPU) in chunks of ``batch_size``; ``prompt_len`` tells position-aware edits
    which columns were generated."""
    device = model.cfg.device
    out = []
    for start in range(0, tokens.shape[0], batch_size):
        t = tokens[start:start + batch_size].to(device)
        m = mask[start:start + batch_size].to(device)
        if prompt_len is not None:
            with prompt_length(model, prompt_len):
                logits = model(t, attention_mask=m)
        else:
            logits = model(t, attention_mask=m)
        out.append(logits.float().cpu())
    return torch.cat(out)


def _digest(*tensors: Tensor) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class LogitsCache:
    """Reference logits keyed by (model, active edits, tokens, mask): computed once, reused across a sweep.

    Holds at most ``max_entries`` batches (least recently used dropped first).
    """

    def __init__(self, max_entries: int = 8):
        self.max_entries = max_entries
        self._store: OrderedDict[tuple, Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def logits(self, model, tokens: Tensor, mask: Tensor, prompt_len: int | None = None,
               batch_size: int = 16) -> Tensor:
        key = (id(model), tuple(repr(e) for e in active_edits(model)), prompt_len, _digest(tokens, mask))
        if key in self._store:
            self.hits += 1
            self._store.move_to_end(key)
            return self._store[key]
        self.misses += 1
        value = forward_logits(model, tokens, mask, prompt_len, batch_size)
        self._store[key] = value
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._store)


def _bind(model, edit: Edit | None) -> Edit:
    edit = edit if edit is not None else NoEdit()
    if edit.model is not None and edit.model is not model:
        raise ValueError(f"{edit!r} is bound to another model than the one being measured; build it unbound "
                         f"(measure binds it) or bind it to this model.")
    return edit.on(model)


def _check_reference(model, reference) -> None:
    if reference is None:
        return
    if int(reference.cfg.d_vocab) != int(model.cfg.d_vocab):
        raise ValueError(f"Reference model's vocabulary ({reference.cfg.d_vocab}) differs from the edited model's "
                         f"({model.cfg.d_vocab}); KL needs the same tokenizer.")


# ----------------------------------------------------------------------------------------------
# Per-token KL shift on fixed text


def kl_shift(model, edit: Edit | None, prompts: Sequence[str] | Generation, *, reference=None,
             cache: LogitsCache | None = None, batch_size: int = 16) -> pd.DataFrame:
    """Per-position KL between the edited model and a reference, teacher-forced on fixed tokens.

    ``prompts``: texts (tokenized with BOS, left-padded) or a `Generation` (prompt + continuation;
    columns at or after its ``prompt_len`` count as generated). ``reference``: None = the same
    model without ``edit`` (any edits already active around the call stay on), or another model
    with the same tokenizer (e.g. the base model when ``model`` is the tuned one).

    One row per (prompt, real position) — the next-token distribution at that position.
    Columns: prompt_idx, position (among real tokens, BOS = 0), token (the input token there),
    generated (bool), kl_forward (KL(edited || reference)), kl_reverse, js, entropy_edited,
    entropy_reference.
    """
    _check_reference(model, reference)
    edit = _bind(model, edit)
    (tokens, mask, prompt_len), _ = _as_batch(model, prompts)
    cache = cache if cache is not None else LogitsCache(max_entries=1)
    ref_model = reference if reference is not None else model
    ref_logits = cache.logits(ref_model, tokens, mask, prompt_len, batch_size)
    with edit:
        logits = forward_logits(model, tokens, mask, prompt_len, batch_size)
    return _per_token_frame(model, logits, ref_logits, tokens, mask, prompt_len)


def _per_token_frame(model, logits: Tensor, ref_logits: Tensor, tokens: Tensor, mask: Tensor, prompt_len: int
                     ) -> pd.DataFrame:
    real = mask.bool().cpu()
    lp, lq = logits[real], ref_logits[real]  # [n_real, vocab]
    positions = (torch.cumsum(mask.cpu(), dim=1) - 1)[real]
    columns = torch.arange(tokens.shape[1]).expand_as(tokens)[real]
    rows = torch.arange(tokens.shape[0])[:, None].expand_as(tokens)[real]
    ids = tokens.cpu()[real]
    tokenizer = model.tokenizer
    return pd.DataFrame({
        "prompt_idx": rows.numpy(),
        "position": positions.numpy(),
        "token": tokenizer.convert_ids_to_tokens(ids.tolist()),
        "generated": (columns >= prompt_len).numpy(),
        "kl_forward": kl_divergence(lp, lq).numpy(),
        "kl_reverse": kl_divergence(lq, lp).numpy(),
        "js": js_divergence(lp, lq).numpy(),
        "entropy_edited": entropy(lp).numpy(),
        "entropy_reference": entropy(lq).numpy(),
    })


# ----------------------------------------------------------------------------------------------
# Per-sequence KL on samples from the edited model


def distinct_n(token_lists: Iterable[Sequence[int]], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams, pooled over sequences."""
    grams = [tuple(t[i:i + n]) for t in token_lists for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


@torch.no_grad()
def score_generation(model, edit: Edit | None, gen: Generation, *, reference=None, batch_size: int = 16
                     ) -> pd.DataFrame:
    """Per-sequence KL of stored samples: one row per sequence.

    Columns: prompt_idx, prompt, continuation, n_new_tokens, logprob_edited, logprob_reference,
    kl_k1, kl_k3, kl_exact (sums over the generated tokens, EOS included), entropy_mean (mean
    per-token entropy of the edited model along the sample).
    """
    _check_reference(model, reference)
    edit = _bind(model, edit)
    ref_model = reference if reference is not None else model
    ref_logits = forward_logits(ref_model, gen.tokens, gen.attention_mask, gen.prompt_len, batch_size)
    with edit:
        logits = forward_logits(model, gen.tokens, gen.attention_mask, gen.prompt_len, batch_size)
    p = gen.prompt_len
    targets = gen.tokens[:, p:].cpu()
    tmask = gen.generated_mask[:, p:].cpu().float()
    logp_all = torch.log_softmax(logits[:, p - 1:-1], dim=-1)
    logq_all = torch.log_softmax(ref_logits[:, p - 1:-1], dim=-1)
    logp = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    logq = logq_all.gather(-1, targets[..., None]).squeeze(-1)
    k1 = kl_estimate(logp, logq, "k1")
    k3 = kl_estimate(logp, logq, "k3")
    exact = (logp_all.exp() * (logp_all - logq_all)).sum(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
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
    edit = _bind(model, edit)
    prompts = [p for p in prompts for _ in range(samples_per_prompt)]
    with edit:
        return generate(model, prompts, max_new_tokens=max_new_tokens, seed=seed, temperature=temperature,
                        use_past_kv_cache=use_past_kv_cache)


def sequence_kl(model, edit: Edit | None, prompts: Sequence[str], *, reference=None, max_new_tokens: int = 24,
                seed: int | None = 0, samples_per_prompt: int = 1) -> pd.DataFrame:
    """Sample from the edited model, then estimate KL(edited || reference) per sequence (see `score_generation`)."""
    gen = sample(model, edit, prompts, max_new_tokens=max_new_tokens, seed=seed, samples_per_prompt=samples_per_prompt)
    return score_generation(model, edit, gen, reference=reference)


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
                  return_sequences: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Reward, KL, entropy and diversity of the edited model's own samples.

    Returns a one-row DataFrame: n_sequences, reward_mean/_stderr, kl_k1_mean/_stderr,
    kl_k3_mean/_stderr, kl_exact_mean/_stderr (per sequence, nats), kl_per_token, entropy_mean
    (per token), distinct_1, distinct_2 (over generated tokens, EOS excluded), new_tokens_mean,
    seconds. With ``return_sequences`` also the per-sequence table (`score_generation` + reward).
    The reward scores the continuation only. The same ``seed`` gives every edit the same random
    numbers, which makes differences between settings less noisy.
    """
    start = time.perf_counter()
    reward_fn = get_reward(reward) if not callable(reward) else reward
    gen = sample(model, edit, prompts, max_new_tokens=max_new_tokens, seed=seed, samples_per_prompt=samples_per_prompt)
    seqs = score_generation(model, edit, gen, reference=reference)
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


# ----------------------------------------------------------------------------------------------
# Sweeps


def sweep(model, settings: Iterable[tuple[dict[str, Any], Edit] | Edit], prompts: Sequence[str],
          reward: str | Callable = "char_count", *, reference=None, max_new_tokens: int = 24, seed: int | None = 0,
          samples_per_prompt: int = 1, prompt_kl: bool = True, cache: LogitsCache | None = None,
          keep_sequences: bool = False, desc: str = "sweep") -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate each ``(columns, edit)`` setting (a bare edit describes itself); one row per setting.

    Columns: the setting's own columns, then `evaluate_edit`'s, then (``prompt_kl``) kl_prompt_mean
    and kl_prompt_max: the mean / max per-position KL(edited || reference) teacher-forced on the
    prompts (reference logits computed once for the whole sweep).
    """
    settings = [s if isinstance(s, tuple) else (edit_columns(s), s) for s in settings]
    cache = cache if cache is not None else LogitsCache(max_entries=2)
    rows, seq_frames = [], []
    for columns, edit in tqdm(settings, desc=desc, unit="setting"):
        summary, seqs = evaluate_edit(model, edit, prompts, reward, reference=reference, max_new_tokens=max_new_tokens,
                                      seed=seed, samples_per_prompt=samples_per_prompt, return_sequences=True)
        row = {**columns, **summary.iloc[0].to_dict()}
        if prompt_kl:
            start = time.perf_counter()
            per_token = kl_shift(model, edit, prompts, reference=reference, cache=cache)
            row["kl_prompt_mean"] = float(per_token["kl_forward"].mean())
            row["kl_prompt_max"] = float(per_token["kl_forward"].max())
            row["seconds"] += time.perf_counter() - start
        rows.append(row)
        if keep_sequences:
            seq_frames.append(seqs.assign(**columns))
    frame = pd.DataFrame(rows)
    if "n_sequences" in frame:
        frame["n_sequences"] = frame["n_sequences"].astype(int)
    if keep_sequences:
        return frame, pd.concat(seq_frames, ignore_index=True)
    return frame


def steering_settings(vector, layers: Iterable[int], coefs: Iterable[float], *, positions="all",
                      hook: str = "resid_post") -> list[tuple[dict[str, Any], Edit]]:
    """Layer x coefficient grid of `Steering` edits (columns: layer, coef, positions, hook)."""
    pos = positions if isinstance(positions, str) else str(positions)
    return [({"layer": layer, "coef": float(coef), "positions": pos, "hook": hook},
             Steering(vector, [layer], coef, positions=positions, hook=hook))
            for layer in layers for coef in coefs]


def steering_sweep(model, vector, layers: Iterable[int], coefs: Iterable[float], prompts: Sequence[str],
                   reward: str | Callable = "char_count", *, positions="all", hook: str = "resid_post", **kwargs):
    """`sweep` over a layer x coefficient grid of one steering vector (per-layer vectors allowed)."""
    return sweep(model, steering_settings(vector, layers, coefs, positions=positions, hook=hook), prompts, reward,
                 desc="steering sweep", **kwargs)


def ablation_sweep(model, targets: Iterable, prompts: Sequence[str], reward: str | Callable = "char_count", *,
                   kind: str = "zero", reference_prompts: Sequence[str] | None = None, **kwargs):
    """`sweep` over ablation targets (e.g. every head of a layer); columns: target, kind."""
    settings = [({"target": str(t) if not isinstance(t, (list, tuple)) else ",".join(map(str, t)), "kind": kind},
                 Ablation(t, kind, reference_prompts=reference_prompts)) for t in targets]
    return sweep(model, settings, prompts, reward, desc=f"{kind} ablation sweep", **kwargs)


def all_heads(model, layers: Iterable[int] | str = "all") -> list[str]:
    """``"L.H"`` targets for every query head of the given layers."""
    from rlhf_interp.edits import resolve_layers

    return [f"{layer}.{head}" for layer in resolve_layers(model, layers) for head in range(int(model.cfg.n_heads))]


__all__ = [
    "LogitsCache", "ablation_sweep", "all_heads", "distinct_n", "evaluate_edit", "forward_logits",
    "kl_shift", "sample", "score_generation", "sequence_kl", "steering_settings", "steering_sweep",
    "summarize_sequences", "sweep",
]
