"""Model diffing: exact zeros on a self-diff, planted changes found where planted, flat memory, clear refusals."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from rlhf_interp import load_model, load_prompts, tokenize
from rlhf_interp.cli import main as cli_main
from rlhf_interp.diff import (
    RESID_HOOKS,
    AttentionAccumulator,
    DirectionAccumulator,
    ModelMismatchError,
    OutputAccumulator,
    ResidualAccumulator,
    attention_diff_view,
    classify_param,
    diff_models,
    diff_trajectory,
    direction_logit_scores,
    most_changed_heads,
    policy_samples,
    residual_diff,
    weight_diff,
)
from rlhf_interp.diff.lens import token_id
from rlhf_interp.diff.stream import paired_batches
from rlhf_interp.bridge import RunDir, bridge_from_hf, build_tiny_model, load_tokenizer

from helpers import perturbed_tiny, save_run, where

PROMPTS = load_prompts(limit=6, seed=0)


def tiny_copy(edit_q_layer: int | None = None, scale: float = 0.3, seed: int = 0):
    """An independent tiny-test bridge, optionally with layer ``edit_q_layer``'s W_Q perturbed."""
    weight = None if edit_q_layer is None else f"model.layers.{edit_q_layer}.self_attn.q_proj.weight"
    return perturbed_tiny(weight, scale=scale, seed=seed)


def test_self_diff_is_exactly_zero(tiny):
    other = tiny_copy()  # same weights, a different object
    result = diff_models(tiny, other, PROMPTS, batch_size=4, watch_tokens=["."])
    assert set(result.residual["hook"]) == set(RESID_HOOKS) and len(result.residual) == 2 * len(RESID_HOOKS)
    assert (result.residual["cosine_sim"] == 1.0).all()
    assert (result.residual["rel_diff_norm"] == 0.0).all() and (result.residual["norm_ratio"] == 1.0).all()
    assert (result.residual_by_position["cosine_sim"] == 1.0).all()
    assert (result.directions["mean_diff_norm"] == 0.0).all() and (result.directions["rms_diff_norm"] == 0.0).all()
    assert (result.attention["js_divergence"] == 0.0).all()
    assert (result.output_tokens[["kl_pi_ref", "kl_ref_pi"]] == 0.0).all().all()
    assert result.output_summary["kl_pi_ref"].item() == 0.0 and (result.token_shifts["prob_diff"] == 0.0).all()
    assert (result.weights["diff_norm"] == 0.0).all()
    assert result.logit_lens_tokens["rank"].isna().all()  # a zero direction ranks nothing


def test_padding_and_bos_are_masked_out(tiny):
    tokens, mask = tokenize(tiny, PROMPTS)
    assert (mask == 0).any(), "the prompts should need padding for this test to mean anything"
    table = residual_diff(tiny, tiny, PROMPTS, batch_size=len(PROMPTS))
    assert (table["n_tokens"] == int(mask.sum()) - len(PROMPTS)).all()  # real tokens minus one BOS each
    with_bos = residual_diff(tiny, tiny, PROMPTS, include_bos=True)
    assert (with_bos["n_tokens"] == int(mask.sum())).all()


def test_planted_vector_is_found_at_its_layer_and_not_before(tiny):
    """Add a constant vector pointing at '.' in the unembedding to blocks.1.hook_mlp_out of a copy."""
    tuned = tiny_copy()
    dot = token_id(tiny, ".")
    planted = (tiny.W_U[:, dot] / tiny.ln_final.w).detach()
    planted = 0.5 * planted / planted.norm()
    with tuned.hooks(fwd_hooks=[("blocks.1.hook_mlp_out", lambda act, hook: act + planted)]):
        result = diff_models(tiny, tuned, PROMPTS, batch_size=4, watch_tokens=["."])
    res = result.residual.set_index(["layer", "hook"])
    untouched = [(0, h) for h in RESID_HOOKS] + [(1, "hook_resid_pre"), (1, "hook_resid_mid"), (1, "hook_attn_out")]
    for key in untouched:
        assert res.loc[key, "rel_diff_norm"] == 0.0 and res.loc[key, "cosine_sim"] == 1.0, key
    for key in [(1, "hook_mlp_out"), (1, "hook_resid_post")]:
        assert res.loc[key, "rel_diff_norm"] > 0.1 and res.loc[key, "cosine_sim"] < 1.0, key
    torch.testing.assert_close(result.vectors.vector(1), planted, atol=1e-5, rtol=1e-4)
    assert result.vectors.vector(0).abs().max() == 0
    layer1 = where(result.directions, layer=1).iloc[0]
    assert layer1["mean_share"] == pytest.approx(1.0, abs=1e-6)  # a constant shift has no variance
    ranks = where(result.logit_lens_tokens, layer=1, model="base")
    assert ranks["rank"].item() == 1
    top = where(result.logit_lens, layer=1, model="tuned", kind="promoted", rank=1)
    assert top["token"].item() == "."
    assert where(result.token_shifts, direction="up", rank=1)["token"].item() == "."
    assert (result.attention["js_divergence"] == 0.0).all()  # patterns are computed before the planted hook
    assert (result.weights["diff_norm"] == 0.0).all()  # a hook changes no weight


def test_weight_edit_is_found_in_weights_attention_and_residuals(tiny):
    tuned = tiny_copy(edit_q_layer=1)
    result = diff_models(tiny, tuned, PROMPTS, batch_size=3)
    changed = result.weights[result.weights["diff_norm"] > 0]
    assert changed["param"].tolist() == ["model.layers.1.self_attn.q_proj.weight"]
    summary = result.weights_summary.set_index(["layer", "component"])
    assert summary.loc[(1, "attn.W_Q"), "rel_diff_norm"] > 0 and summary.loc[(0, "attn.W_Q"), "rel_diff_norm"] == 0
    js = result.attention.set_index(["layer", "head"])["js_divergence"]
    assert (js.loc[0] == 0).all() and (js.loc[1] > 0).all()  # W_Q of all four heads was perturbed
    assert most_changed_heads(result.attention, 2)[0][0] == 1
    res = result.residual.set_index(["layer", "hook"])["rel_diff_norm"]
    assert (res.loc[0] == 0).all() and res.loc[(1, "hook_resid_pre")] == 0 and res.loc[(1, "hook_attn_out")] > 0
    assert result.output_summary["kl_pi_ref"].item() > 0 and result.output_summary["kl_ref_pi"].item() > 0
    view = attention_diff_view(tiny, tuned, PROMPTS[0], [(1, 0), (1, 2)])
    assert "L1H0 base" in str(view) and "L1H2 tuned" in str(view)


def test_accumulator_state_stays_flat_as_prompts_grow(tiny):
    cfg = tiny.cfg
    accumulators = [ResidualAccumulator(cfg.n_layers, RESID_HOOKS, max_positions=16),
                    DirectionAccumulator(cfg.n_layers, cfg.d_model, ("hook_resid_post", "hook_mlp_out")),
                    AttentionAccumulator(cfg.n_layers, cfg.n_heads), OutputAccumulator(cfg.d_vocab, per_token=False)]
    names = [n for acc in accumulators for n in acc.hook_names()]
    sizes_after: list[list[int]] = []
    prompts = load_prompts(limit=24, seed=1)
    for batch in paired_batches(tiny, tiny, prompts, names, batch_size=4):
        for acc in accumulators:
            acc.update(batch)
        sizes_after.append([acc.state_nbytes() for acc in accumulators])
    assert len(sizes_after) == 6 and all(sizes == sizes_after[0] for sizes in sizes_after)
    # O(hooks x layers x d_model^2) for the directions, as documented: sums of d and of d d^T in float64.
    assert sizes_after[0][1] == 8 * 2 * cfg.n_layers * (cfg.d_model + cfg.d_model ** 2)
    assert accumulators[1].count == accumulators[2].rows == accumulators[3].count > 24 * 2


def _recomputed(base, tuned, prompts: list[str], hooks: tuple[str, ...], batch_size: int):
    """Residual metrics and difference moments the plain way: both models' caches in full (run_with_cache,
    logits and all), real tokens gathered per (layer, hook), formulas written out in float64."""
    got: dict[tuple[int, str], list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
    names = [f"blocks.{layer}.{hook}" for layer in range(base.cfg.n_layers) for hook in hooks]
    for start in range(0, len(prompts), batch_size):
        tokens, mask = tokenize(base, prompts[start:start + batch_size])
        real = mask.bool().clone()
        real[torch.arange(len(real)), mask.argmax(1)] = False  # BOS: each row's first real token
        positions = mask.cumsum(1) - 1
        _, b = base.run_with_cache(tokens, attention_mask=mask, names_filter=names)
        _, t = tuned.run_with_cache(tokens, attention_mask=mask, names_filter=names)
        for name in names:
            layer, hook = int(name.split(".")[1]), name.split(".", 2)[2]
            got.setdefault((layer, hook), []).append((b[name][real].double(), t[name][real].double(), positions[real]))
    out = {}
    for key, parts in got.items():
        x, y, pos = (torch.cat(p) for p in zip(*parts))
        d = y - x
        out[key] = {"cosine_sim": torch.nn.functional.cosine_similarity(x, y, dim=-1),
                    "rel_diff_norm": d.norm(dim=-1) / x.norm(dim=-1), "norm_ratio": y.norm(dim=-1) / x.norm(dim=-1),
                    "diff_norm": d.norm(dim=-1), "base_norm": x.norm(dim=-1), "tuned_norm": y.norm(dim=-1),
                    "position": pos, "mean_diff": d.mean(0), "cov": torch.cov(d.T, correction=0)}
    return out


def test_fused_pass_matches_a_plain_recomputation(tiny):
    """Residual metrics and directions are computed pair by pair inside the tuned pass (no tuned cache, no
    logits); they must equal the same statistics from two full caches, by layer, hook and position."""
    tuned = tiny_copy(edit_q_layer=1)
    with torch.no_grad():  # and a change in layer 0's MLP, so that both layers' directions are non-zero
        tuned.original_model.model.layers[0].mlp.up_proj.weight.mul_(1.05)
    prompts = load_prompts(limit=7, seed=2)
    result = diff_models(tiny, tuned, prompts, analyses=("residual", "directions"), batch_size=3,
                         direction_hooks=("hook_resid_post", "hook_attn_out"))
    plain = _recomputed(tiny, tuned, prompts, RESID_HOOKS, batch_size=3)
    for row in result.residual.itertuples():
        want = plain[(row.layer, row.hook)]
        assert row.n_tokens == len(want["position"])
        for metric in ResidualAccumulator.METRICS:
            assert getattr(row, metric) == pytest.approx(want[metric].mean().item(), rel=1e-9, abs=1e-12), (row, metric)
    assert (result.residual.query("layer == 1 or hook == 'hook_mlp_out'")["rel_diff_norm"] > 0).all()
    for row in result.residual_by_position.itertuples():
        want = plain[(row.layer, row.hook)]
        at = want["position"] == row.position
        assert row.n_tokens == int(at.sum())
        assert row.cosine_sim == pytest.approx(want["cosine_sim"][at].mean().item(), rel=1e-9, abs=1e-12)
        assert row.rel_diff_norm == pytest.approx(want["rel_diff_norm"][at].mean().item(), rel=1e-9)
    vectors = result.vectors
    for h, hook in enumerate(vectors.hooks):
        for layer in range(tiny.cfg.n_layers):
            want = plain[(layer, hook)]
            torch.testing.assert_close(vectors.mean[h, layer].double(), want["mean_diff"], rtol=1e-5, atol=1e-7)
            top = torch.linalg.eigvalsh(want["cov"]).flip(0)[:vectors.explained_variance.shape[-1]]
            torch.testing.assert_close(vectors.explained_variance[h, layer], top.clamp_min(0), rtol=1e-6, atol=1e-10)
            assert vectors.total_variance[h, layer].item() == pytest.approx(want["cov"].trace().item(), rel=1e-9)
    assert vectors.n_tokens == len(plain[(0, "hook_resid_post")]["position"])


def test_residual_pairs_are_streamed_not_kept(tiny):
    """With on_pair, the streamed hook points reach the handler once per batch and are gone from the
    yielded batch; the others (attention patterns) are kept; and no pass runs the unembedding."""
    names = [f"blocks.{layer}.{hook}" for layer in range(tiny.cfg.n_layers) for hook in RESID_HOOKS]
    kept = ["blocks.1.attn.hook_pattern"]
    seen: list[str] = []
    unembeds: list[int] = []
    with tiny.hooks(fwd_hooks=[("unembed.hook_out", lambda act, hook: unembeds.append(1))]):
        for batch in paired_batches(tiny, tiny, PROMPTS, names + kept, batch_size=3, need_logits=False,
                                    on_pair=lambda b, name, x, y: seen.append(name), streamed=names):
            assert list(batch.base) == kept and list(batch.tuned) == kept and batch.tuned_logits is None
    assert sorted(seen) == sorted(names * 2) and not unembeds


def test_mismatched_models_are_rejected_before_any_forward(tiny):
    forwards = []
    deeper = build_tiny_model()
    deeper.config.num_hidden_layers = 3
    from transformers import LlamaForCausalLM

    three = bridge_from_hf(LlamaForCausalLM(deeper.config), load_tokenizer(), name="three-layers")
    with tiny.hooks(fwd_hooks=[("hook_embed", lambda act, hook: forwards.append(1))]):
        with pytest.raises(ModelMismatchError) as err:
            diff_models(tiny, three, PROMPTS)
    assert "n_layers: base 2 vs tuned 3" in str(err.value) and not forwards
    other_vocab = bridge_from_hf(build_tiny_model(), load_tokenizer(), name="other-tokenizer")
    other_vocab.tokenizer.add_tokens(["<new-token>"])  # the bridge keeps its own tokenizer object
    with pytest.raises(ModelMismatchError, match="tokenizer vocab size: base 49152 vs tuned 49153"):
        diff_models(tiny, other_vocab, PROMPTS)
    with pytest.raises(ModelMismatchError):
        weight_diff(tiny, three)
    with pytest.raises(ValueError, match="hook_resid_post"):
        diff_models(tiny, tiny, PROMPTS, hooks=["hook_resid_psot"])


def test_logit_lens_matches_the_real_final_norm_to_first_order():
    """The lens score of v should rank tokens like the actual logit change from adding a little v before ln_final."""
    model = tiny_copy()
    with torch.no_grad():
        model.ln_final.w.copy_(torch.rand(model.cfg.d_model, generator=torch.Generator().manual_seed(1)) + 0.5)
    tokens, mask = tokenize(model, ["The weather today is"])
    _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=["blocks.1.hook_resid_post"])
    x = cache["blocks.1.hook_resid_post"][0, -1]
    v = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        delta = model.unembed(model.ln_final(x + 1e-3 * x.norm() * v / v.norm())) - model.unembed(model.ln_final(x))
    score = direction_logit_scores(model, v[None])[0]
    corr = torch.corrcoef(torch.stack([delta - delta.mean(), score]))[0, 1]
    assert corr > 0.95
    unweighted = (v @ model.W_U) - (v @ model.W_U).mean()  # forgetting ln_final.w ranks worse
    assert corr > torch.corrcoef(torch.stack([delta, unweighted]))[0, 1]


def test_classify_param_uses_transformerlens_names():
    assert classify_param("model.layers.3.self_attn.q_proj.weight") == (3, "attn.W_Q", "attention")
    assert classify_param("model.layers.0.self_attn.o_proj.weight") == (0, "attn.W_O", "attention")
    assert classify_param("model.layers.12.mlp.down_proj.weight") == (12, "mlp.W_out", "mlp")
    assert classify_param("model.layers.2.post_attention_layernorm.weight") == (2, "ln2.w", "norm")
    assert classify_param("model.norm.weight") == (-1, "ln_final.w", "norm")
    assert classify_param("model.embed_tokens.weight") == (-1, "embed.W_E", "embedding")
    assert classify_param("transformer.h.5.attn.c_attn.bias") == (5, "attn.b_QKV", "attention")
    assert classify_param("transformer.h.5.mlp.c_proj.weight") == (5, "mlp.W_out", "mlp")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory with an unchanged checkpoint (step 5) and one with layer 1's W_Q edited (step 9)."""
    return save_run(tmp_path_factory.mktemp("run"), {5: tiny_copy(), 9: tiny_copy(edit_q_layer=1)})


def test_trajectory_has_a_step_column(tiny, tiny_run):
    result = diff_trajectory(tiny, tiny_run, PROMPTS[:3], analyses=("residual", "weights", "output"))
    for name, df in result.tables().items():
        assert df.columns[0] == "step" and set(df["step"]) == {5, 9}, name
    res = result.residual.set_index(["step", "layer", "hook"])["rel_diff_norm"]
    assert (res.loc[5] == 0).all()
    assert (res.loc[9].loc[0] == 0).all() and res.loc[(9, 1, "hook_attn_out")] > 0
    assert result.config["steps"] == [5, 9]



def test_run_dir_reads_checkpoints_logs_and_config(tiny_run, tmp_path):
    """`RunDir`, the one reader of a run directory: checkpoints by step, one loaded model at a time (dropped
    before the next loads), metrics with the pre-issue-29 KL names mapped, samples, and the config."""
    import gc
    import json
    import shutil
    import weakref

    run = RunDir(tiny_run)
    assert run.steps == [5, 9] and run.latest == tiny_run / "checkpoint-000009"
    assert run.checkpoint(9) == run.latest and run.checkpoints[0] == (5, tiny_run / "checkpoint-000005")
    with pytest.raises(ValueError, match=r"no checkpoint for step 7; it has \[5, 9\]"):
        run.checkpoint(7)
    loaded, alive = [], []
    for ckpt in run.for_each_checkpoint([9, 5], load=lambda p: load_model(str(p), device="cpu")):
        q = ckpt.model.original_model.model.layers[1].self_attn.q_proj.weight
        loaded.append((ckpt.step, ckpt.path.name, q.detach().clone()))
        alive.append(weakref.ref(ckpt.model))
    gc.collect()
    assert [(s, n) for s, n, _ in loaded] == [(9, "checkpoint-000009"), (5, "checkpoint-000005")]
    assert not torch.equal(loaded[0][2], loaded[1][2])  # step 9 has layer 1's W_Q edited
    assert [ref() for ref in alive] == [None, None]  # nothing kept a model past its loop body
    assert [c.model for c in run.for_each_checkpoint()] == [None, None]  # no load: steps and paths only
    with pytest.raises(FileNotFoundError, match="no finished checkpoint"):
        next(RunDir(tmp_path / "nothing").for_each_checkpoint())

    copy = tmp_path / "run"
    shutil.copytree(tiny_run / "checkpoint-000005", copy / "checkpoint-000005")
    (copy / "metrics.jsonl").write_text(json.dumps({"phase": 1, "kl_forward_per_token": 0.5}) + "\n"
                                        + json.dumps({"phase": 2, "kl_forward_per_token": 0.25}) + "\n")
    (copy / "samples.jsonl").write_text(json.dumps({"phase": 1, "prompt": "Hi", "completion": ".", "reward": 1}) + "\n")
    assert RunDir(copy).metrics()["kl_pi_ref_per_token"].tolist() == [0.5, 0.25]
    assert RunDir(copy).samples().iloc[0].to_dict() == {"phase": 1, "prompt": "Hi", "completion": ".", "reward": 1}
    assert RunDir(copy).config() == {}  # neither config.yaml nor a config in meta.json
    (copy / "config.yaml").write_text("model: tiny-test\nphases: 2\n")
    assert RunDir(copy).config() == {"model": "tiny-test", "phases": 2}
    with pytest.raises(FileNotFoundError, match="metrics.jsonl is missing"):
        RunDir(tiny_run).metrics()



def test_demo_run_trajectory_summary_and_attention_views(tiny, tmp_path):
    """The library half of analyses/diff_ppo.py: the demo run raises log p('.') and saves checkpoints; the summary
    of its trajectory has one row per step with the peak where the diff says; the tidy attention patterns hold the
    heads' weights and rebuild base, tuned and tuned - base views without a model; the checkpoints picked keep
    the first and the last."""
    from rlhf_interp.diff.attention_view import attention_views, head_patterns, pattern_table
    from rlhf_interp.diff.demo import make_demo_run
    from rlhf_interp.diff.trajectory import evenly_spaced, trajectory_summary

    assert evenly_spaced(list(range(10)), 4) == [0, 3, 6, 9] and evenly_spaced([1, 2], 4) == [1, 2]
    run = make_demo_run("tiny-test", tmp_path / "run", steps=4, lr=1e-2, seed=0)
    metas = [json.loads((path / "meta.json").read_text()) for _, path in RunDir(run).checkpoints]
    assert RunDir(run).steps == [1, 2, 4] and all("demo" in m for m in metas)
    assert metas[-1]["mean_logp_period"] > metas[0]["mean_logp_period"]  # the objective went up

    result = diff_trajectory(tiny, run, PROMPTS[:2], analyses=("residual", "directions", "output", "weights"),
                             watch_tokens=["."], per_token=False)
    tables = result.tables()
    summary = trajectory_summary(tables, ["."], "hook_resid_post")
    assert summary.step.tolist() == [1, 2, 4] and (summary["best_lens_rank_."] >= 1).all()
    post = tables["residual"].query("hook == 'hook_resid_post'")
    for row in summary.itertuples():
        at = post[post.step == row.step]
        assert row.peak_rel_diff_norm == at.rel_diff_norm.max() and row.peak_layer == at.loc[at.rel_diff_norm.idxmax(),
                                                                                              "layer"]
    assert (summary.weights_rel_diff_norm > 0).all()

    tuned = load_model(str(RunDir(run).latest), device="cpu")
    heads = [(0, 0), (1, 1)]
    tokens, base_patterns = head_patterns(tiny, PROMPTS[0], heads)
    _, tuned_patterns = head_patterns(tuned, PROMPTS[0], heads)
    table = pattern_table(tokens, heads, {"base": base_patterns, "tuned": tuned_patterns})
    n = len(tokens)
    assert len(table) == 2 * len(heads) * n * (n + 1) // 2  # models x heads x (query, key <= query)
    sums = table.groupby(["model", "layer", "head", "query_pos"]).weight.sum()
    assert sums.to_numpy() == pytest.approx(1.0, abs=1e-5)  # each query row of a causal pattern sums to 1
    shown_tokens, side_by_side, difference, bound, moves = attention_views(table, heads)
    assert shown_tokens == tokens and len(moves) == len(heads)
    assert bound == pytest.approx(float((tuned_patterns - base_patterns).abs().max()) or 1.0, abs=1e-6)


def test_cli_diff_writes_tables_and_figures(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(["diff", "--base", "tiny-test", "--tuned", str(tiny_run), "--out", str(out), "--n-prompts", "4",
                     "--watch-token", ".", "--device", "cpu"])
    assert code == 0
    text = capsys.readouterr().out
    assert "--trajectory" in text and "layers with the largest hook_resid_post change" in text
    for name in ("residual", "residual_by_position", "directions", "components", "logit_lens", "logit_lens_tokens",
                 "weights", "weights_summary", "attention", "output_tokens", "token_shifts"):
        assert (out / f"{name}.csv").stat().st_size > 0, name
    for name in ("residual_rel_diff_norm", "attention_js", "weights_rel_diff_norm", "token_shifts"):
        assert (out / f"{name}.png").stat().st_size > 0, name
    residual = pd.read_csv(out / "residual.csv")
    assert residual.query("layer == 1 and hook == 'hook_attn_out'")["rel_diff_norm"].item() > 0
    assert (out / "directions.pt").exists()
    bad = cli_main(["diff", "--base", "tiny-test", "--tuned", str(tmp_path), "--out", str(out), "--trajectory"])
    assert bad == 2 and "checkpoint" in capsys.readouterr().err


def test_policy_samples_are_seeded_continuations(tiny):
    first = policy_samples(tiny, PROMPTS[:2], max_new_tokens=4, seed=3)
    again = policy_samples(tiny, PROMPTS[:2], max_new_tokens=4, seed=3)
    assert first == again and len(first) == 2
    assert all(text.startswith(prompt) and len(text) > len(prompt) for text, prompt in zip(first, PROMPTS))


@pytest.mark.integration
def test_embedded_planted_change_found_at_its_layer(smol):
    """On SmolLM2: a vector added at blocks.12.hook_resid_post changes nothing before layer 12, everything after."""
    tuned = load_model("smollm2-135m", device="cpu")
    vector = torch.randn(smol.cfg.d_model, generator=torch.Generator().manual_seed(0))
    with tuned.hooks(fwd_hooks=[("blocks.12.hook_resid_post", lambda act, hook: act + vector)]):
        result = diff_models(smol, tuned, PROMPTS[:4], analyses=("residual", "output"), hooks=["hook_resid_post"])
    post = result.residual.set_index("layer")["rel_diff_norm"]
    assert (post.loc[:11] == 0).all() and (post.loc[12:] > 0).all()
    assert result.output_summary["kl_pi_ref"].item() > 0
    same = diff_models(smol, tuned, PROMPTS[:2], analyses=("residual", "output"), hooks=["hook_resid_post"])
    assert (same.residual["cosine_sim"] == 1.0).all() and same.output_summary["kl_pi_ref"].item() == 0.0
