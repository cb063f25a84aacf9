"""Edits: hooks scoped to the with-block, absolute positions under the KV cache, ablations, and the
weight-orthogonalization twin of direction ablation."""

from __future__ import annotations

from copy import deepcopy
from functools import partial

import pytest
import torch

from rlhf_interp import tokenize
from rlhf_interp.edits import (
    Ablation,
    Combined,
    DirectionAblation,
    EditError,
    Steering,
    orthogonalize_weights,
    parse_targets,
    prompt_length,
)
from rlhf_interp.bridge import generate

from helpers import prompt_logits

PROMPTS = ["The old lighthouse keeper", "Hi", "Once upon a time in a quiet village,"]


_logits = partial(prompt_logits, prompts=PROMPTS)  # the file's prompts, BOS + left padding, no grad


def _n_hooks(model) -> int:
    unique = {id(hp): hp for hp in model.hook_points()}
    return sum(len(hp.fwd_hooks) for hp in unique.values())


@pytest.fixture(scope="module")
def vector(tiny):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(tiny.cfg.d_model, generator=gen) * 3.0


def test_coef_zero_and_empty_ablation_are_bit_identical(tiny, vector):
    clean = _logits(tiny)
    with Steering(vector, "all", 0.0).on(tiny):
        assert _n_hooks(tiny) == tiny.cfg.n_layers  # the hooks are there and run
        steered = _logits(tiny)
    with Ablation([]).on(tiny):
        ablated = _logits(tiny)
    assert torch.equal(steered, clean) and torch.equal(ablated, clean)


def test_hooks_removed_on_exit_and_on_error(tiny, vector):
    clean = _logits(tiny)
    before = _n_hooks(tiny)
    edit = Steering(vector, [0, 1], 2.0).on(tiny) + Ablation("0.1", "zero").on(tiny)
    with edit:
        assert not torch.allclose(_logits(tiny), clean)
    assert _n_hooks(tiny) == before
    assert torch.equal(_logits(tiny), clean)
    with pytest.raises(ZeroDivisionError):
        with Steering(vector, 1, 5.0).on(tiny), Ablation("1.mlp", "zero").on(tiny):
            1 / 0
    assert _n_hooks(tiny) == before
    assert torch.equal(_logits(tiny), clean)


def test_combined_equals_nested_with(tiny, vector):
    a, b = Steering(vector, 0, 1.5), Ablation("1.attn", "zero")
    with a.on(tiny), b.on(tiny):
        nested = _logits(tiny)
    with Combined(a, b).on(tiny):
        combined = _logits(tiny)
    assert torch.equal(nested, combined)


def test_steering_adds_vector_to_resid_post(tiny, vector):
    tokens, mask = tokenize(tiny, PROMPTS)
    name = "blocks.0.hook_resid_post"
    _, clean = tiny.run_with_cache(tokens, attention_mask=mask, names_filter=[name])
    with Steering(vector, 0, 2.0).on(tiny):
        _, steered = tiny.run_with_cache(tokens, attention_mask=mask, names_filter=[name])
    diff = steered[name] - clean[name]
    real = mask.bool()
    torch.testing.assert_close(diff[real], (2.0 * vector).expand(int(real.sum()), -1))
    assert diff[~real].abs().max() == 0  # pads are never edited


@pytest.mark.parametrize("positions", ["all", "prompt", "generated", slice(2, 5)])
def test_steering_same_with_and_without_kv_cache(tiny, vector, positions):
    with Steering(vector, [0, 1], 2.0, positions=positions).on(tiny):
        cached = generate(tiny, PROMPTS, max_new_tokens=6, do_sample=False)
        uncached = generate(tiny, PROMPTS, max_new_tokens=6, do_sample=False, use_past_kv_cache=False)
    plain = generate(tiny, PROMPTS, max_new_tokens=6, do_sample=False)
    assert torch.equal(cached.tokens, uncached.tokens)
    assert not torch.equal(cached.tokens, plain.tokens)  # the edit does act


def test_generated_steers_every_new_token(tiny, vector):
    """The distribution of new token t+1 is read at the position of new token t: with
    positions='generated', logits from the cached loop must equal a teacher-forced pass that
    steers every column >= prompt length, and differ from the unsteered ones from the 2nd token on."""
    edit = Steering(vector, [0, 1], 2.0, positions="generated").on(tiny)
    with edit:
        gen = generate(tiny, PROMPTS, max_new_tokens=5, do_sample=False)
        tokens, mask = gen.tokens, torch.ones_like(gen.tokens)
        mask[:, :gen.prompt_len] = tokenize(tiny, PROMPTS)[1]
        with prompt_length(tiny, gen.prompt_len):
            teacher = tiny(tokens, attention_mask=mask)
    clean = tiny(tokens, attention_mask=mask)
    p = gen.prompt_len
    # Greedy tokens are the argmax of the steered teacher-forced logits at every step.
    assert torch.equal(teacher[:, p - 1:-1].argmax(-1), tokens[:, p:])
    # The prompt is untouched; every generated column (the first one included) is steered.
    torch.testing.assert_close(teacher[:, :p][mask[:, :p].bool()], clean[:, :p][mask[:, :p].bool()])
    per_col = (teacher[:, p:] - clean[:, p:]).abs().amax(dim=(0, 2))
    assert bool((per_col > 1e-3).all())


def test_prompt_positions_ignore_left_padding(tiny, vector):
    """'prompt' and slices count real tokens: a padded batch steers each row as if it were alone."""
    for positions in ("prompt", slice(1, 3)):
        with Steering(vector, [0], 3.0, positions=positions).on(tiny):
            batched = generate(tiny, PROMPTS, max_new_tokens=4, do_sample=False)
            alone = [generate(tiny, [p], max_new_tokens=4, do_sample=False) for p in PROMPTS]
        for row, single in enumerate(alone):
            assert batched.texts[row] == single.texts[0]


def test_head_ablation_matches_zeroed_o_proj_columns(tiny):
    """Zero-ablating head H through hook_z equals zeroing its input columns of W_O in a weight copy."""
    layer, head = 1, 2
    d_head = tiny.cfg.d_head
    with Ablation(f"{layer}.{head}", "zero").on(tiny):
        ablated = _logits(tiny)
    copy = deepcopy(tiny)  # session fixture: edit a copy's weights, never the original
    with torch.no_grad():
        copy.original_model.model.layers[layer].self_attn.o_proj.weight[:, head * d_head:(head + 1) * d_head] = 0
    real = tokenize(tiny, PROMPTS)[1].bool()  # pads are not edited (their logits are never used)
    torch.testing.assert_close(_logits(copy)[real], ablated[real], atol=1e-5, rtol=1e-5)


def test_mean_and_resample_ablation_use_reference_prompts(tiny):
    refs = ["A quiet morning by the sea", "The train left the station at noon", "Birds sang"]
    tokens, mask = tokenize(tiny, PROMPTS)
    name = "blocks.0.hook_mlp_out"
    # Independent mean over the real non-BOS tokens of the references.
    rt, rm = tokenize(tiny, refs)
    _, rcache = tiny.run_with_cache(rt, attention_mask=rm, names_filter=[name])
    keep = rm.bool().clone()
    keep[torch.arange(len(refs)), rm.argmax(1)] = False
    expected_mean = rcache[name][keep].mean(0)
    with Ablation("0.mlp", "mean", reference_prompts=refs).on(tiny):
        _, cache = tiny.run_with_cache(tokens, attention_mask=mask, names_filter=[name])
    torch.testing.assert_close(cache[name][mask.bool()], expected_mean.expand(int(mask.sum()), -1))
    # Resample: row i at real position p takes reference (i + 1) % n at position min(p, len - 1).
    with Ablation("0.mlp", "resample", reference_prompts=refs).on(tiny):
        _, cache = tiny.run_with_cache(tokens, attention_mask=mask, names_filter=[name])
    lengths = rm.sum(1)
    for row in range(len(PROMPTS)):
        src = (row + 1) % len(refs)
        ref_real = rcache[name][src][rm[src].bool()]
        got = cache[name][row][mask[row].bool()]
        idx = torch.clamp(torch.arange(got.shape[0]), max=int(lengths[src]) - 1)
        torch.testing.assert_close(got, ref_real[idx])


def test_whole_layer_target_and_parsing(tiny):
    assert [str(t) for t in parse_targets("1")] == ["1.attn", "1.mlp"]
    assert [str(t) for t in parse_targets(["0.3", "1.mlp", (1, 0)])] == ["0.3", "1.mlp", "1.0"]
    tokens, mask = tokenize(tiny, PROMPTS)
    _, clean = tiny.run_with_cache(tokens, attention_mask=mask, names_filter=["blocks.1.hook_resid_pre"])
    with Ablation("1", "zero").on(tiny):
        _, cache = tiny.run_with_cache(tokens, attention_mask=mask, names_filter=["blocks.1.hook_resid_post"])
    real = mask.bool()
    torch.testing.assert_close(cache["blocks.1.hook_resid_post"][real], clean["blocks.1.hook_resid_pre"][real])


def test_orthogonalized_weights_match_direction_ablation(tiny):
    direction = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(1))
    clean = _logits(tiny)
    with DirectionAblation(direction).on(tiny):
        hooked = _logits(tiny)
    edited = orthogonalize_weights(tiny, direction)
    weights = _logits(edited)
    assert (hooked - clean).abs().max() > 1e-3  # the direction mattered
    torch.testing.assert_close(weights, hooked, atol=1e-5, rtol=1e-5)
    # Untied: the unembedding is the original embedding; the original model is untouched.
    emb = tiny.original_model.get_input_embeddings().weight
    assert torch.equal(edited.original_model.get_output_embeddings().weight, emb)
    assert not torch.allclose(edited.original_model.get_input_embeddings().weight, emb)
    assert torch.equal(_logits(tiny), clean)


def test_clear_errors(tiny, vector):
    with pytest.raises(EditError, match=r"size 10.*d_model is 64"):
        Steering(torch.ones(10), 0).on(tiny)
    with pytest.raises(EditError, match=r"resid_pre, resid_mid, resid_post, attn_out, mlp_out"):
        Steering(vector, 0, hook="resid")
    with pytest.raises(EditError, match=r"has 2 layers; valid layers are 0\.\.1"):
        Steering(vector, [0, 7]).on(tiny)
    with pytest.raises(EditError, match=r"4 attention \(query\) heads.*2 key/value heads"):
        Ablation("1.4").on(tiny)
    with pytest.raises(EditError, match=r"layer 9.*2 layers"):
        Ablation("9.attn").on(tiny)
    with pytest.raises(EditError, match="Use 'L'"):
        Ablation("first head")
    with pytest.raises(EditError, match="zero, mean, resample"):
        Ablation("0.1", "random")
    with pytest.raises(RuntimeError, match="not bound"):
        with Steering(vector, 0, 1.0):
            pass


@pytest.mark.integration
def test_orthogonalization_on_embedded_model(smol):
    """On SmolLM2 (tied embeddings, GQA 9/3 heads) the weight edit matches the hook version."""
    direction = torch.randn(smol.cfg.d_model, generator=torch.Generator().manual_seed(2))
    with DirectionAblation(direction).on(smol):
        hooked = _logits(smol)
    edited = orthogonalize_weights(smol, direction)
    torch.testing.assert_close(_logits(edited), hooked, atol=2e-4, rtol=1e-4)
    with pytest.raises(EditError, match=r"9 attention \(query\) heads.*3 key/value heads"):
        Ablation("3.9").on(smol)


def test_reference_activation_stores_are_bounded_and_keyed_on_content(tiny):
    """Regression (issue 12): the store of mean/resample reference activations never evicted."""
    import gc
    import weakref

    from rlhf_interp.edits import reference_activations
    from rlhf_interp.edits.ablation import REFERENCE_CACHE_SIZE

    first = reference_activations(tiny, ["one two", "three"])
    assert reference_activations(tiny, list(["one two", "three"])) is first  # same texts, same store
    alive = [weakref.ref(first)]
    del first
    for i in range(3 * REFERENCE_CACHE_SIZE):
        alive.append(weakref.ref(reference_activations(tiny, [f"prompt number {i}", "x"])))
    gc.collect()
    assert sum(r() is not None for r in alive) <= REFERENCE_CACHE_SIZE
