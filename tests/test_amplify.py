"""Logit amplification: logits_tuned + a (logits_tuned - logits_base) on every pass of the tuned model, so a = 0 is
the tuned model, a = -1 the base model, its per-sequence KL is the exact per-token sum, and KV-cached sampling
gives what uncached sampling gives."""

from __future__ import annotations

from copy import deepcopy

import pytest
import torch

from rlhf_interp import tokenize
from rlhf_interp.bridge import generate
from rlhf_interp.core.kl import kl_from_logprobs
from rlhf_interp.edits import EditError, LogitAmplification
from rlhf_interp.measure import sample, score_generation

PROMPTS = ["The old lighthouse keeper", "Hi", "Once upon a time in a quiet village,"]


@pytest.fixture(scope="module")
def tuned(tiny):
    """The tiny model with its MLPs and final norm changed: a stand-in for a fine-tuned copy (same tokenizer)."""
    other = deepcopy(tiny)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in other.original_model.model.layers:
            w = layer.mlp.down_proj.weight
            w.add_(torch.randn(w.shape, generator=gen) * 0.5 * w.std())
        norm = other.original_model.model.norm.weight
        norm.mul_(1 + 4 * torch.rand(norm.shape, generator=gen))  # sharper, different logits: a visible change
    return other


def _logits(model, tokens, mask):
    with torch.no_grad():
        return model(tokens, attention_mask=mask).float()


def test_amplified_logits_are_the_formula(tiny, tuned):
    tokens, mask = tokenize(tiny, PROMPTS)
    base, tuned_logits = _logits(tiny, tokens, mask), _logits(tuned, tokens, mask)
    with LogitAmplification(tiny, 0.0).on(tuned):
        at_zero = _logits(tuned, tokens, mask)
    with LogitAmplification(tiny, -1.0).on(tuned):
        at_minus_one = _logits(tuned, tokens, mask)
    with LogitAmplification(tiny, 2.5).on(tuned):
        at_two = _logits(tuned, tokens, mask)
    real = mask.bool()
    assert torch.equal(at_zero, tuned_logits)  # a = 0: the tuned model's distribution
    torch.testing.assert_close(at_minus_one[real], base[real], atol=1e-4, rtol=1e-4)  # a = -1: the base model
    torch.testing.assert_close(at_two[real], (tuned_logits + 2.5 * (tuned_logits - base))[real], atol=1e-4, rtol=1e-4)
    assert torch.equal(_logits(tuned, tokens, mask), tuned_logits)  # the hook and the watcher are gone on exit


def test_kl_matches_exact_computation(tiny, tuned):
    a = 1.5
    edit = LogitAmplification(tiny, a)
    gen = sample(tuned, edit, PROMPTS, max_new_tokens=5, seed=2)
    seqs = score_generation(tuned, edit, gen, reference=tiny)
    p = gen.prompt_len
    for i in range(len(PROMPTS)):
        keep = gen.attention_mask[i].bool()
        row = gen.tokens[i][keep][None]
        one = torch.ones_like(row)
        lt, lb = _logits(tuned, row, one)[0], _logits(tiny, row, one)[0]
        n_new = int(gen.generated_mask[i, p:].sum())
        amp = (lt + a * (lt - lb))[-n_new - 1:-1]
        base = lb[-n_new - 1:-1]
        exact = kl_from_logprobs(torch.log_softmax(amp, -1), torch.log_softmax(base, -1)).sum()
        assert seqs.kl_exact[i] == pytest.approx(float(exact), rel=1e-3, abs=1e-4)
    assert (seqs.kl_exact > 0).all()


def test_same_samples_with_and_without_kv_cache(tiny, tuned):
    with LogitAmplification(tiny, 4.0).on(tuned):
        # sampled with one seed (greedy decoding of a random tiny model repeats its last token whatever a is)
        cached = generate(tuned, PROMPTS, max_new_tokens=6, seed=0)
        uncached = generate(tuned, PROMPTS, max_new_tokens=6, seed=0, use_past_kv_cache=False)
        bridge = generate(tuned, PROMPTS, max_new_tokens=6, seed=0, sampler="bridge")
    plain = generate(tuned, PROMPTS, max_new_tokens=6, seed=0)
    assert torch.equal(cached.tokens, uncached.tokens) and torch.equal(cached.tokens, bridge.tokens)
    assert not torch.equal(cached.tokens, plain.tokens)  # the amplification does act


def test_refusals(tiny, tuned):
    with pytest.raises(EditError, match="both"):
        LogitAmplification(tiny, 1.0).on(tiny)
    with pytest.raises(EditError, match="finite"):
        LogitAmplification(tiny, float("inf"))


def test_amplification_family_in_the_budget_search(tiny, tuned):
    """equal_kl bisects s = 1 + a: s = 0 is the base model (KL 0), larger s spends more KL."""
    from rlhf_interp.frontier import equal_kl
    from rlhf_interp.frontier.new_methods import amplification_family

    family = amplification_family(tiny)
    assert family.make(1.0).a == 0.0 and family.make(0.0).a == -1.0
    points, evaluations = equal_kl(tuned, family, PROMPTS, "char_count", [0.5], reference=tiny, max_new_tokens=4,
                                   rel_tol=0.3, max_evals_per_budget=4)
    assert len(points) == 1 and len(evaluations) >= 1
    ordered = evaluations.sort_values("strength")
    assert ordered.kl_exact_mean.is_monotonic_increasing or len(ordered) == 1
