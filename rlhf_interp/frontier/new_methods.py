"""Frontier v3 points: prompting, logit amplification and fine-tuned checkpoints, each with reward, KL per sequence,
capability (NLL on held-out text) and fluency, every number with n and a 95% interval.

Why a module of its own: these methods need what the v2 frontier never measured — a context-changing edit, an
edit that needs a second model, per-prompt rows for intervals, and the capability axis — and the rows must land
in the v2 frontier's column vocabulary (``method, kind, setting, strength, budget, hit, step, run, reward_mean,
reward_stderr, kl_exact_mean, kl_exact_stderr, kl_per_token, entropy_mean, distinct_2, n_sequences``) so the page
can draw them beside the existing points. Added columns: ``*_low`` / ``*_high`` (95% t intervals over prompts,
samples of one prompt averaged first), ``n_prompts``, ``samples_per_prompt``, ``split``, ``selected_on``,
``selection_kl``, and `rlhf_interp.measure.capability`'s ``capability_*`` and ``fluency_*`` columns.

Held-out selection: a strength (a prefix of the library, an amplification factor) is chosen on one split of
prompts (the KL closest to each budget) and reported on a disjoint split, with the same sampling seed for every
method (paired across methods on the report split).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from rlhf_interp.core.stats import mean_interval, unit_means
from rlhf_interp.edits import Edit, LogitAmplification, Prompting, few_shot
from rlhf_interp.edits.prompting import changes_context
from rlhf_interp.frontier.budget import EditFamily
from rlhf_interp.measure import distinct_n, sample, score_generation
from rlhf_interp.measure.capability import capability_columns, continuation_nll, fluency_columns, text_nll
from rlhf_interp.reward import get_reward, score

# The prompting library for the period task (written here: they are the edit, not evaluation data). Strength =
# index: the lightest prefixes and instructions first, then more and more period-dense examples. (On SmolLM2 a
# one-line instruction already costs several nats per 24-token continuation, hence the near-empty prefixes.)
PERIOD_INSTRUCTIONS = (
    ". ",  # the prompt follows a finished sentence: the lightest push
    "Story:\n",
    "Write in short sentences.\n",
    "Continue the story in very short sentences. Every sentence ends with a period.\n",
)
PERIOD_EXAMPLES = (
    "The rain stopped. The streets were quiet. A dog barked. Then it was still.",
    "She opened the box. It was empty. She closed it. Nobody saw.",
    "We walked home. The moon was out. The air was cold. We did not talk.",
    "He sat down. He ate. He slept. In the morning he left.",
    "The ship sailed at dawn. The sea was calm. The crew sang. Land was far.",
    "I knocked. No answer. I knocked again. The door opened. A man looked out.",
)


def prompting_library(instructions: Sequence[str] = PERIOD_INSTRUCTIONS,
                      examples: Sequence[str] = PERIOD_EXAMPLES, shots: Sequence[int] = (1, 2, 4, 6)
                      ) -> list[Prompting]:
    """The prefixes a prompting family steps through (index 0 is the empty prefix: the unchanged model)."""
    library = [Prompting("", label="no prefix", strength=0.0)]
    library += [Prompting(text, label=f"prefix {text.strip()[:40]!r}" if text.strip() != "." else "prefix '. '")
                for text in instructions]
    for k in shots:
        library.append(few_shot(list(examples), k, label=f"{k}-shot"))
    if instructions:
        library.append(few_shot(list(examples), max(shots), instruction=instructions[-1].strip(),
                                label=f"instruction + {max(shots)}-shot"))
    for i, edit in enumerate(library):
        edit.strength = float(i)
    return library


def prompting_family(library: Sequence[Prompting] | None = None) -> EditFamily:
    """Prompting as an `EditFamily` for `equal_kl` / a budget search: strength s picks ``library[round(s)]``
    (the KL is a step function of s: a budget between two prefixes is reported with ``hit = False``)."""
    library = list(library) if library is not None else prompting_library()
    return EditFamily("prompting", lambda s: library[min(max(int(round(s)), 0), len(library) - 1)],
                      {"kind": "prompting"}, start=1.0, max_strength=float(len(library) - 1))


def amplification_family(base) -> EditFamily:
    """Logit amplification on the tuned model as an `EditFamily`: strength s gives
    ``logits_base + s (logits_tuned - logits_base)``, i.e. a = s - 1 (s = 0: the base model, s = 1: the tuned one)."""
    return EditFamily("logit amplification", lambda s: LogitAmplification(base, s - 1.0), {"kind": "amplification"},
                      start=2.0, max_strength=64.0)


@dataclass
class Setup:
    """What every point shares: prompts of both splits, reward, sampling settings, the capability texts and the
    base model's capability table (the paired reference)."""

    base: Any
    report_prompts: list[str]
    selection_prompts: list[str]
    reward: str | Callable = "char_count"
    max_new_tokens: int = 24
    seed: int = 0
    samples_per_prompt: int = 4
    texts: Sequence[str] = ()
    base_capability: pd.DataFrame | None = None
    selection_samples: int = 1  # continuations per selection prompt (choosing needs the KL roughly, not tightly)

    def prompts(self, split: str) -> list[str]:
        return self.report_prompts if split == "report" else self.selection_prompts


def interval_columns(values: Sequence[float], prompt_idx: Sequence[int], name: str) -> dict[str, float]:
    """``name_mean/_stderr/_low/_high`` of per-sample values, averaged per prompt first (t over prompts)."""
    per_prompt, _ = unit_means(values, prompt_idx)
    iv = mean_interval(per_prompt)
    se = float(np.std(per_prompt, ddof=1) / math.sqrt(len(per_prompt))) if len(per_prompt) > 1 else math.nan
    return {f"{name}_mean": iv.value, f"{name}_stderr": se, f"{name}_low": iv.low, f"{name}_high": iv.high}


def measure_point(setup: Setup, model, edit: Edit | None, *, reference=None, split: str = "report",
                  capability: bool = True) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame | None]:
    """One point: ``(row, per_sequence, per_text)``. ``model`` with ``edit`` sampled on the split's prompts
    (``samples_per_prompt`` each, one seed), scored for reward, the exact per-sequence KL(changed || base)
    (``reference``: the base model when ``model`` is a tuned one, None when the edit is on the base), the base
    model's NLL of the continuations (fluency) and, with ``capability``, NLL / top-1 on the capability texts."""
    prompts = setup.prompts(split)
    k = setup.samples_per_prompt if split == "report" else setup.selection_samples
    gen = sample(model, edit, prompts, max_new_tokens=setup.max_new_tokens, seed=setup.seed, samples_per_prompt=k)
    seqs = score_generation(model, edit, gen, reference=reference)
    reward_fn = get_reward(setup.reward) if not callable(setup.reward) else setup.reward
    seqs["reward"] = score(reward_fn, gen.texts).numpy()
    seqs["prompt_idx"] = np.arange(len(gen)) // k
    if base_scored(setup, model, edit, reference):  # the reference pass was the base model on the user's frame
        n = seqs["n_new_tokens"].to_numpy(dtype=float)
        fluency = pd.DataFrame({"fluency_nll": -seqs["logprob_reference"].to_numpy(dtype=float)
                                / np.where(n > 0, n, np.nan)})
    else:
        fluency = continuation_nll(setup.base, gen)
    seqs["fluency_nll"] = fluency["fluency_nll"].to_numpy()
    tokens = float(seqs["n_new_tokens"].sum())
    eos = model.tokenizer.eos_token_id
    p = gen.prompt_len
    lists = [[t for t, m in zip(row.tolist(), mrow.tolist()) if m and t != eos]
             for row, mrow in zip(gen.tokens[:, p:].cpu(), gen.generated_mask[:, p:].cpu())]
    row: dict[str, Any] = {
        **interval_columns(seqs["reward"], seqs["prompt_idx"], "reward"),
        **interval_columns(seqs["kl_exact"], seqs["prompt_idx"], "kl_exact"),
        "kl_per_token": float(seqs["kl_exact"].sum()) / max(tokens, 1.0),
        "entropy_mean": float((seqs["entropy_mean"] * seqs["n_new_tokens"]).sum()) / max(tokens, 1.0),
        "distinct_2": distinct_n(lists, 2), "n_sequences": len(gen), "n_prompts": len(prompts),
        "samples_per_prompt": k, "split": split,
        **fluency_columns(fluency, seqs["prompt_idx"]),
    }
    per_text = None
    if capability and len(setup.texts):
        per_text = text_nll(model, edit, list(setup.texts))
        row.update(capability_columns(per_text, setup.base_capability))
    return row, seqs.drop(columns=["prompt", "continuation"]).assign(continuation=gen.texts), per_text


def base_scored(setup: Setup, model, edit: Edit | None, reference) -> bool:
    """Whether `score_generation`'s reference log-probs are already the base model's NLL of the continuations
    given the user's prompt (fluency): a tuned model scored against the base, or a hook edit on the base scored
    against the base without it. A context edit scores in its prompted frame, so fluency is measured apart."""
    if reference is not None:
        return reference is setup.base
    return model is setup.base and (edit is None or not changes_context(edit))


def closest_to_budgets(candidates: pd.DataFrame, budgets: Sequence[float], *, rel_tol: float = 0.25
                       ) -> pd.DataFrame:
    """For each budget the candidate (a row of selection-split measurements with ``kl_exact_mean``) whose KL is
    closest in log space; ``hit``: within ``rel_tol`` of the budget (on the selection split)."""
    rows = []
    usable = candidates[candidates["kl_exact_mean"] > 0]
    for budget in budgets:
        if usable.empty:
            break
        gap = (np.log(usable["kl_exact_mean"]) - math.log(budget)).abs()
        best = usable.loc[gap.idxmin()]
        rows.append({**best.to_dict(), "budget": float(budget),
                     "hit": bool(abs(best["kl_exact_mean"] - budget) <= rel_tol * budget),
                     "selection_kl": float(best["kl_exact_mean"])})
    return pd.DataFrame(rows)


__all__ = ["PERIOD_EXAMPLES", "PERIOD_INSTRUCTIONS", "Setup", "amplification_family", "base_scored", "closest_to_budgets",
           "interval_columns", "measure_point", "prompting_family", "prompting_library"]
