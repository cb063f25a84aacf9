"""KL shift of edits: per-token exact KL against a float64 reference, per-sequence estimators on
samples, reward/diversity evaluation, sweeps, the generation helper, and the CLI commands."""

from __future__ import annotations

from copy import deepcopy

import pandas as pd
import pytest
import torch

from rlhf_interp import tokenize
from rlhf_interp.cli import main as cli_main
from rlhf_interp.edits import Ablation, Steering
from rlhf_interp.bridge import generate
from rlhf_interp.measure import (
    LogitsCache,
    distinct_n,
    evaluate_edit,
    kl_shift,
    score_generation,
    sequence_kl,
    steering_sweep,
)

PROMPTS = ["The old lighthouse keeper", "Hi", "Once upon a time in a quiet village,"]


@pytest.fixture(scope="module")
def vector(tiny):
    return torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 3.0


def test_generate_left_padded_batch_matches_single_prompts(tiny):
    batch = generate(tiny, PROMPTS, max_new_tokens=5, do_sample=False)
    tokens, mask = tokenize(tiny, PROMPTS)
    assert batch.prompt_len == tokens.shape[1] and torch.equal(batch.tokens[:, :batch.prompt_len], tokens)
    assert torch.equal(batch.attention_mask[:, :batch.prompt_len], mask)
    for row, prompt in enumerate(PROMPTS):
        alone = generate(tiny, [prompt], max_new_tokens=5, do_sample=False)
        assert alone.texts[0] == batch.texts[row]
        assert not batch.texts[row].startswith(prompt)  # continuation only
    a = generate(tiny, PROMPTS, max_new_tokens=5, seed=3)
    b = generate(tiny, PROMPTS, max_new_tokens=5, seed=3)
    assert torch.equal(a.tokens, b.tokens)


def test_generation_masks_stop_after_eos(tiny):
    from rlhf_interp.core.masks import continuation_mask

    new = torch.tensor([[5, 2, 2, 2], [5, 6, 7, 8], [2, 2, 2, 2]])
    assert continuation_mask(new, [2]).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_kl_shift_matches_float64_reference(tiny, vector):
    edit = Steering(vector, [0, 1], 1.5)
    df = kl_shift(tiny, edit, PROMPTS)
    tokens, mask = tokenize(tiny, PROMPTS)
    with torch.no_grad():
        ref = tiny(tokens, attention_mask=mask).double()
        with edit:
            ed = tiny(tokens, attention_mask=mask).double()
    p, q = torch.softmax(ed, -1), torch.softmax(ref, -1)
    real = mask.bool()
    forward = (p * (p.log() - q.log())).sum(-1)[real]
    reverse = (q * (q.log() - p.log())).sum(-1)[real]
    m = (p + q) / 2
    js = (0.5 * (p * (p.log() - m.log())).sum(-1) + 0.5 * (q * (q.log() - m.log())).sum(-1))[real]
    assert len(df) == int(mask.sum())
    assert list(df.columns) == ["prompt_idx", "position", "token", "generated", "kl_pi_ref", "kl_ref_pi", "js",
                                "entropy_edited", "entropy_reference"]
    torch.testing.assert_close(torch.tensor(df.kl_pi_ref.to_numpy()).double(), forward, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(df.kl_ref_pi.to_numpy()).double(), reverse, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(df.js.to_numpy()).double(), js, atol=1e-5, rtol=1e-4)
    assert (df.kl_pi_ref > 0).all()
    assert df[df.prompt_idx == 1].position.tolist() == [0, 1]  # "Hi": BOS + one token, pads dropped


def test_zero_edits_give_exactly_zero_kl(tiny, vector):
    for edit in (Steering(vector, "all", 0.0), Ablation([])):
        df = kl_shift(tiny, edit, PROMPTS)
        assert (df.kl_pi_ref == 0).all() and (df.kl_ref_pi == 0).all()
        assert (df.js == 0).all()
        seqs = sequence_kl(tiny, edit, PROMPTS, max_new_tokens=4)
        assert (seqs[["kl_k1", "kl_k3", "kl_exact"]].to_numpy() == 0).all()


def test_reference_cache_and_other_model(tiny, vector):
    cache = LogitsCache()
    kl_shift(tiny, Steering(vector, 0, 1.0), PROMPTS, cache=cache)
    kl_shift(tiny, Steering(vector, 1, 2.0), PROMPTS, cache=cache)
    assert (cache.misses, cache.hits) == (1, 1)
    other = deepcopy(tiny)
    with torch.no_grad():
        other.original_model.model.layers[0].mlp.down_proj.weight.mul_(2.0)
    vs_other = kl_shift(tiny, None, PROMPTS, reference=other)  # no edit: KL between two models
    assert (vs_other.kl_pi_ref > 0).all()


def test_sequence_estimators_agree_on_average(tiny, vector):
    """k1, k3 and the exact sum estimate the same sequence KL; with many samples they agree."""
    df = sequence_kl(tiny, Steering(vector, [0, 1], 1.0), PROMPTS, max_new_tokens=6, samples_per_prompt=40, seed=1)
    assert len(df) == 3 * 40 and (df.n_new_tokens > 0).all()
    assert (df.kl_k3 >= 0).all() and (df.kl_exact > 0).all()
    k1, k3, exact = df.kl_k1.mean(), df.kl_k3.mean(), df.kl_exact.mean()
    se = df.kl_k1.std() / len(df) ** 0.5
    assert abs(k1 - exact) < 4 * se + 1e-3 and abs(k3 - exact) < 0.25 * exact


def test_score_generation_uses_the_sampled_tokens(tiny, vector):
    edit = Steering(vector, [1], 2.0, positions="generated").on(tiny)
    with edit:
        gen = generate(tiny, PROMPTS, max_new_tokens=4, seed=0)
    df = score_generation(tiny, edit, gen)
    # Independent: log-prob of each sampled token under the unedited model.
    with torch.no_grad():
        ref = torch.log_softmax(tiny(gen.tokens, attention_mask=gen.attention_mask), -1)
    p = gen.prompt_len
    lp = ref[:, p - 1:-1].gather(-1, gen.tokens[:, p:, None]).squeeze(-1)
    expected = (lp * gen.generated_mask[:, p:]).sum(1)
    torch.testing.assert_close(torch.tensor(df.logprob_reference.to_numpy()), expected.float(), atol=1e-4, rtol=1e-5)
    assert df.continuation.tolist() == gen.texts


def test_score_generation_scores_the_tempered_distributions(tiny, vector):
    """At temperature T the log-probs and the exact KL are those of logits / T, the distributions sampled from."""
    edit = Steering(vector, [1], 2.0).on(tiny)  # every position: a plain forward below applies it too
    with edit:
        gen = generate(tiny, PROMPTS, max_new_tokens=4, seed=0, temperature=2.0)
    hot = score_generation(tiny, edit, gen, temperature=2.0)
    plain = score_generation(tiny, edit, gen)
    with torch.no_grad():
        ref = tiny(gen.tokens, attention_mask=gen.attention_mask).double()
        with edit:
            pol = tiny(gen.tokens, attention_mask=gen.attention_mask).double()
    p, mask = gen.prompt_len, gen.generated_mask[:, gen.prompt_len:].double()
    logq, logp = (torch.log_softmax(x[:, p - 1:-1] / 2.0, -1) for x in (ref, pol))
    lq = logq.gather(-1, gen.tokens[:, p:, None]).squeeze(-1)
    exact = (logp.exp() * (logp - logq)).sum(-1)
    torch.testing.assert_close(torch.tensor(hot.logprob_reference.to_numpy()).double(), (lq * mask).sum(1),
                               atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(hot.kl_exact.to_numpy()).double(), (exact * mask).sum(1),
                               atol=1e-5, rtol=1e-4)
    assert (hot.kl_exact - plain.kl_exact).abs().max() > 1e-3  # the temperature really changes the score


def test_evaluate_edit_and_sweep(tiny, vector):
    summary = evaluate_edit(tiny, Steering(vector, [1], 2.0), PROMPTS, "length", max_new_tokens=5)
    assert len(summary) == 1
    for col in ("reward_mean", "reward_stderr", "kl_k1_mean", "kl_k3_mean", "kl_exact_mean", "kl_per_token",
                "entropy_mean", "distinct_1", "distinct_2", "seconds"):
        assert col in summary
    assert summary.reward_mean.item() > 0
    sweep = steering_sweep(tiny, vector, [0, 1], [0.0, 2.0], PROMPTS, "char_count", max_new_tokens=4)
    assert len(sweep) == 4 and {"layer", "coef", "kl_prompt_mean"} <= set(sweep.columns)
    assert (sweep[sweep.coef == 0][["kl_exact_mean", "kl_prompt_mean"]].to_numpy() == 0).all()
    assert (sweep[sweep.coef == 2][["kl_exact_mean", "kl_prompt_mean"]].to_numpy() > 0).all()


def test_distinct_n():
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 1) == pytest.approx(4 / 6)
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 2) == pytest.approx(3 / 4)


def test_cli_steer_ablate_measure(tiny, tmp_path, capsys):
    vec_path = tmp_path / "vec.safetensors"
    assert cli_main(["steer", "--model", "tiny-test", "--positive", "A. B. C.", "Yes. No.", "--negative", "A B C",
                     "Yes no", "--layers", "0,1", "--coefs", "0,4", "--n-prompts", "3", "--max-new-tokens", "3",
                     "--save-vector", str(vec_path), "--out", str(tmp_path / "steer")]) == 0
    table = pd.read_csv(tmp_path / "steer" / "steering_sweep.csv")
    assert len(table) == 4 and (tmp_path / "steer" / "steering_sweep.png").exists() and vec_path.exists()
    assert cli_main(["steer", "--model", "tiny-test", "--vector", str(vec_path), "--layers", "1", "--coefs", "2",
                     "--n-prompts", "2", "--max-new-tokens", "2", "--out", str(tmp_path / "steer2")]) == 0
    assert cli_main(["ablate", "--model", "tiny-test", "--heads-of-layer", "1", "--kind", "mean", "--n-prompts", "2",
                     "--max-new-tokens", "2", "--out", str(tmp_path / "ablate")]) == 0
    assert len(pd.read_csv(tmp_path / "ablate" / "ablation_sweep.csv")) == 4
    assert (tmp_path / "ablate" / "ablation_sweep.png").exists()
    assert cli_main(["measure", "--model", "tiny-test", "--steer", str(vec_path), "--layers", "1", "--coef", "2",
                     "--n-prompts", "2", "--max-new-tokens", "2", "--out", str(tmp_path / "measure")]) == 0
    out = capsys.readouterr().out
    assert "kl_pi_ref" in out and (tmp_path / "measure" / "kl_shift.csv").exists()
    assert cli_main(["measure", "--model", "tiny-test", "--ablate", "0.9", "--n-prompts", "2",
                     "--out", str(tmp_path / "bad")]) == 2
    assert "4 attention (query) heads" in capsys.readouterr().err


@pytest.mark.integration
def test_steering_sweep_on_embedded_model(smol):
    """One steering setting on SmolLM2: coefficient 0 costs nothing, a real vector costs KL."""
    from rlhf_interp.edits import contrastive

    sv = contrastive(smol, [("I came. I saw. I left.", "I came, I saw, I left")], layers=[10])
    df = steering_sweep(smol, sv, [10], [0.0, 4.0], PROMPTS[:2], "char_count", max_new_tokens=6)
    assert df.loc[df.coef == 0, "kl_exact_mean"].item() == 0
    assert df.loc[df.coef == 4, "kl_prompt_mean"].item() > 0


# --- regressions (issue 12): caches key on content; sweep rows name the hook actually steered ---------------


def _same_repr_steerings(model):
    g = torch.Generator().manual_seed(1)
    a = Steering(torch.randn(model.cfg.d_model, generator=g) * 3, [0], 1.0)
    b = Steering(torch.randn(model.cfg.d_model, generator=g) * 3, [0], 1.0)
    assert repr(a) == repr(b)  # the old cache key could not tell them apart
    return a, b


def test_logits_cache_keys_on_the_steering_vector_not_its_repr(tiny):
    from rlhf_interp.measure import forward_logits

    a, b = _same_repr_steerings(tiny)
    tokens, mask = tokenize(tiny, PROMPTS)
    cache = LogitsCache(max_entries=2)
    with a.on(tiny):
        under_a = cache.logits(tiny, tokens, mask)
    with b.on(tiny):
        under_b = cache.logits(tiny, tokens, mask)
        direct = forward_logits(tiny, tokens, mask)
    assert cache.misses == 2 and cache.hits == 0
    assert torch.equal(under_b, direct)
    assert not torch.allclose(under_a, under_b)
    with b.on(tiny):
        assert cache.logits(tiny, tokens, mask) is under_b and cache.hits == 1
    cache.logits(tiny, tokens, mask)  # a third content (no edit on): the least recently used entry (a) goes
    assert len(cache) == 2 and cache.misses == 3
    with a.on(tiny):
        cache.logits(tiny, tokens, mask)
    assert cache.misses == 4


def test_kl_shift_reference_follows_the_active_vector(tiny):
    from rlhf_interp.edits import NoEdit

    a, b = _same_repr_steerings(tiny)
    cache = LogitsCache()
    with a.on(tiny):
        kl_shift(tiny, NoEdit(), PROMPTS, cache=cache)
    with b.on(tiny):  # reference = the model with b on, edited = the same: KL exactly 0, not a's stale logits
        df = kl_shift(tiny, NoEdit(), PROMPTS, cache=cache)
    assert (df["kl_pi_ref"] == 0).all()


def test_sweep_hook_column_names_the_hook_that_was_steered(tiny):
    from rlhf_interp.edits import SteeringVector
    from rlhf_interp.measure import steering_settings

    v = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(2)) * 3
    vector = SteeringVector({0: v, 1: v}, hook="mlp_out")  # read at mlp_out, so steered there by default
    (columns, edit), = steering_settings(vector, [1], [2.0])
    tokens, mask = tokenize(tiny, PROMPTS)
    with torch.no_grad():
        with edit.on(tiny):
            steered = tiny(tokens, attention_mask=mask)
        with tiny.hooks(fwd_hooks=[(f"blocks.1.hook_{columns['hook']}", lambda act, hook: act + 2.0 * v)]):
            labelled = tiny(tokens, attention_mask=mask)
    assert columns["hook"] == "mlp_out"
    real = mask.bool()
    assert torch.allclose(steered[real], labelled[real], atol=1e-5)
    (columns, edit), = steering_settings(vector, [1], [2.0], hook="resid_pre")  # an explicit hook wins
    assert columns["hook"] == edit.hook == "resid_pre"
