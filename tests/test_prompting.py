"""Prompting as an edit: sampled after its prefix, its continuation scored in both contexts (the columns shift),
KL 0 for the empty prefix and equal to a hand computation otherwise, the same with and without the KV cache."""

from __future__ import annotations

import pytest
import torch

from rlhf_interp import tokenize
from rlhf_interp.core.kl import kl_from_logprobs
from rlhf_interp.edits import EditError, Prompting, Steering, few_shot
from rlhf_interp.measure import evaluate_edit, kl_shift, sample, score_generation

PROMPTS = ["The old lighthouse keeper", "Hi", "Once upon a time in a quiet village,"]
PREFIX = "Write short sentences. End each with a period.\n"


def _row_logits(model, text: str, new_tokens: list[int]) -> torch.Tensor:
    """Logits predicting each of ``new_tokens`` after ``text``, one unpadded row (no shared code with measure)."""
    tokens, _ = tokenize(model, [text])
    full = torch.cat([tokens, torch.tensor([new_tokens])], dim=1)
    with torch.no_grad():
        logits = model(full, attention_mask=torch.ones_like(full)).float()
    return logits[0, tokens.shape[1] - 1:-1]


def test_empty_prefix_is_the_unchanged_model(tiny):
    gen = sample(tiny, Prompting(""), PROMPTS, max_new_tokens=5, seed=3)
    plain = sample(tiny, None, PROMPTS, max_new_tokens=5, seed=3)
    assert torch.equal(gen.tokens, plain.tokens) and gen.texts == plain.texts
    seqs = score_generation(tiny, Prompting(""), gen)
    assert (seqs[["kl_k1", "kl_exact"]].abs().to_numpy() < 1e-6).all()


def test_prompting_kl_equals_hand_computation_on_shifted_positions(tiny):
    edit = Prompting(PREFIX)
    gen = sample(tiny, edit, PROMPTS, max_new_tokens=6, seed=1)
    assert gen.prompts == PROMPTS and gen.prompt_len == tokenize(tiny, PROMPTS)[0].shape[1]  # the user's frame
    seqs = score_generation(tiny, edit, gen)
    p = gen.prompt_len
    for i, prompt in enumerate(PROMPTS):
        keep = gen.generated_mask[i, p:].bool()
        new = gen.tokens[i, p:][keep].tolist()
        logp = torch.log_softmax(_row_logits(tiny, PREFIX + prompt, new), -1)
        logq = torch.log_softmax(_row_logits(tiny, prompt, new), -1)
        target = torch.tensor(new)[:, None]
        k1 = (logp.gather(-1, target) - logq.gather(-1, target)).sum()
        exact = kl_from_logprobs(logp, logq).sum()
        assert seqs.kl_exact[i] == pytest.approx(float(exact), rel=1e-4, abs=1e-5)
        assert seqs.kl_k1[i] == pytest.approx(float(k1), rel=1e-4, abs=1e-5)
        assert seqs.logprob_edited[i] == pytest.approx(float(logp.gather(-1, target).sum()), rel=1e-4, abs=1e-5)
    assert (seqs.kl_exact > 0).all()


def test_prompted_samples_follow_the_prefix(tiny):
    """The continuation is drawn from the prompted context: greedy tokens are the argmax after prefix + prompt."""
    gen = sample(tiny, Prompting(PREFIX), PROMPTS, max_new_tokens=4, seed=0, temperature=1e-4)
    p = gen.prompt_len
    for i, prompt in enumerate(PROMPTS):
        new = gen.tokens[i, p:].tolist()
        assert _row_logits(tiny, PREFIX + prompt, new).argmax(-1).tolist() == new


def test_same_samples_with_and_without_kv_cache(tiny):
    edit = few_shot(["The dog ran. The cat sat.", "It rained. We left."], 2)
    cached = sample(tiny, edit, PROMPTS, max_new_tokens=6, seed=5, use_past_kv_cache=True)
    uncached = sample(tiny, edit, PROMPTS, max_new_tokens=6, seed=5, use_past_kv_cache=False)
    plain = sample(tiny, None, PROMPTS, max_new_tokens=6, seed=5)
    assert torch.equal(cached.tokens, uncached.tokens)
    assert not torch.equal(cached.tokens, plain.tokens)  # the prefix does act


def test_evaluate_edit_and_refusals(tiny):
    row = evaluate_edit(tiny, Prompting(PREFIX), PROMPTS, "char_count", max_new_tokens=4, seed=0)
    assert row.kl_exact_mean.iloc[0] > 0 and row.n_sequences.iloc[0] == 3
    with pytest.raises(EditError, match="changes the prompt"):
        with Prompting(PREFIX).on(tiny):
            pass
    with pytest.raises(EditError, match="changes the prompt"):
        kl_shift(tiny, Prompting(PREFIX), PROMPTS)  # teacher-forced KL has no counterpart: refused, not 0
    with pytest.raises(EditError, match="changes the prompt"):
        sample(tiny, Prompting(PREFIX) + Steering(torch.ones(tiny.cfg.d_model), 0, 1.0), PROMPTS)


def test_few_shot_strength():
    examples = ["A. B.", "C. D.", "E. F."]
    assert few_shot(examples, 0).prefix == ""
    assert few_shot(examples, 2).prefix == "A. B.\n\nC. D.\n\n" and few_shot(examples, 2).strength == 2.0
    assert few_shot(examples, 1, instruction="Be brief.").prefix == "Be brief.\n\nA. B.\n\n"
    with pytest.raises(EditError, match="shots"):
        few_shot(examples, 4)


def test_prompting_family_steps_through_the_library(tiny):
    from rlhf_interp.frontier.new_methods import closest_to_budgets, prompting_family, prompting_library

    library = prompting_library()
    family = prompting_family(library)
    assert family.make(0).prefix == "" and family.make(2.4) is library[2] and family.make(99) is library[-1]
    assert [e.strength for e in library] == list(range(len(library)))
    import pandas as pd

    cands = pd.DataFrame({"strength": [1, 2, 3], "kl_exact_mean": [0.4, 1.1, 3.5]})
    picked = closest_to_budgets(cands, [1.0, 4.0])
    assert picked.strength.tolist() == [2, 3] and picked.hit.tolist() == [True, True]
