"""Causal patching between base and tuned: exact zeros on self-patching, exact reproduction from residuals,
planted changes attributed to their layer and component, exact weight restoration, clear refusals."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from rlhf_interp import Steering, load_model, load_prompts, tokenize
from rlhf_interp.bridge import bridge_from_hf, build_tiny_model, load_tokenizer
from rlhf_interp.cli import main as cli_main
from rlhf_interp.diff import ModelMismatchError
from rlhf_interp.measure import evaluate_edit
from rlhf_interp.patching import (
    activation_patching,
    attribution_layers,
    patched,
    patching_trajectory,
    residual_attribution,
    rewarded_token_ids,
    swapped_weights,
    undo_rlhf,
    weight_patching,
)

from helpers import perturbed_tiny, save_run, where

TEXTS = load_prompts(limit=4, seed=0)


def tiny_copy(mlp_layer: int | None = None, scale: float = 0.3, seed: int = 1):
    """An independent tiny-test bridge; with ``mlp_layer``, that layer's MLP down projection perturbed."""
    weight = None if mlp_layer is None else f"model.layers.{mlp_layer}.mlp.down_proj.weight"
    return perturbed_tiny(weight, scale=scale, seed=seed, relative=True)


def row(df: pd.DataFrame, **equal) -> pd.Series:
    df = where(df, **equal)
    assert len(df) == 1, equal
    return df.iloc[0]


def clean_run(model, texts, names):
    tokens, mask = tokenize(model, texts)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=names)
    return tokens, mask, logits, cache


def test_patching_a_model_with_its_own_activations_changes_nothing(tiny):
    same = tiny_copy()  # same weights, another object
    table = activation_patching(tiny, same, TEXTS, batch_size=4, reward_token_ids=rewarded_token_ids(tiny.tokenizer))
    assert len(table) == 2 * (1 + 2 * 4)  # directions x (embedding + layers x components)
    assert (table[["kl_patched_tuned", "kl_patched_base", "kl_clean"]] == 0.0).all().all()
    assert table["fraction_recovered"].isna().all()  # 0/0: nothing to recover, said as NaN rather than a number
    names = [f"blocks.{layer}.{h}" for layer in range(2) for h in ("hook_attn_out", "hook_mlp_out", "hook_resid_post")]
    tokens, mask, logits, cache = clean_run(tiny, TEXTS, names)
    with torch.no_grad(), patched(tiny, {n: cache[n] for n in names}):
        again = tiny(tokens, attention_mask=mask)
    assert torch.equal(again, logits)


def test_patching_every_residual_from_tuned_reproduces_tuned_exactly(tiny):
    tuned = tiny_copy(mlp_layer=0)
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(2)]
    tokens, mask, tuned_logits, cache = clean_run(tuned, TEXTS, names)
    with torch.no_grad():
        base_logits = tiny(tokens, attention_mask=mask)
        with patched(tiny, {n: cache[n] for n in names}):
            patched_logits = tiny(tokens, attention_mask=mask)
    assert not torch.equal(base_logits, tuned_logits)
    assert torch.equal(patched_logits, tuned_logits)
    table = activation_patching(tiny, tuned, TEXTS, components=["hook_resid_post"], batch_size=4)
    last = row(table, direction="into_base", layer=1, component="hook_resid_post")
    assert last["kl_patched_tuned"] == 0.0 and last["fraction_recovered"] == 1.0 and last["kl_clean"] > 0
    back = row(table, direction="into_tuned", layer=1, component="hook_resid_post")
    assert back["kl_patched_base"] == 0.0 and back["fraction_recovered"] == 1.0


@pytest.mark.parametrize("planted", [0, 1])
def test_planted_mlp_change_is_attributed_to_its_layer_and_component(tiny, planted):
    tuned = tiny_copy(mlp_layer=planted)
    ids = rewarded_token_ids(tiny.tokenizer, ".")
    table = activation_patching(tiny, tuned, TEXTS, batch_size=4, reward_token_ids=ids)
    parts = residual_attribution(table)
    for direction in ("into_base", "into_tuned"):
        mine = parts[parts["direction"] == direction]
        assert abs(mine["increment"].sum() - 1.0) < 1e-9  # the increments split all of the KL
        assert row(mine, layer=planted, component="mlp")["increment"] >= 0.9
        sub = table[(table["direction"] == direction) & table["component"].isin(["hook_attn_out", "hook_mlp_out"])]
        top = sub.loc[sub["fraction_recovered"].idxmax()]
        assert (int(top["layer"]), top["component"]) == (planted, "hook_mlp_out") and top["fraction_recovered"] == 1.0
        upstream = sub[sub["layer"] < planted]
        assert (upstream["fraction_recovered"] == 0.0).all()
    # the reward proxy moves with the patch: all of its change comes back with the planted MLP's output
    assert row(table, direction="into_base", layer=planted, component="hook_mlp_out")["reward_proxy_recovered"] == 1.0
    # hook_resid_mid is the whole residual after attention (skip connection included), not just the MLP input
    if planted == 0:
        assert row(table, direction="into_base", layer=1, component="hook_resid_mid")["fraction_recovered"] == 1.0
    assert attribution_layers(table, k=1) == [planted]
    swaps = weight_patching(tiny, tuned, TEXTS, batch_size=4)
    assert row(swaps, direction="into_base", layer=planted, component="mlp")["fraction_recovered"] == 1.0
    assert row(swaps, direction="into_base", layer=planted, component="attn")["fraction_recovered"] == 0.0
    assert (swaps[swaps["layer"] != planted]["fraction_recovered"] == 0.0).all()


def test_mismatched_architectures_are_refused_before_any_forward(tiny):
    deeper = build_tiny_model()
    deeper.config.num_hidden_layers = 3
    from transformers import LlamaForCausalLM

    three = bridge_from_hf(LlamaForCausalLM(deeper.config), load_tokenizer(), name="three-layers")
    forwards = []
    with tiny.hooks(fwd_hooks=[("hook_embed", lambda act, hook: forwards.append(1))]):
        for call in (lambda: activation_patching(tiny, three, TEXTS), lambda: weight_patching(tiny, three, TEXTS)):
            with pytest.raises(ModelMismatchError, match="n_layers: base 2 vs tuned 3"):
                call()
        with pytest.raises(ModelMismatchError, match="n_layers"), swapped_weights(tiny, three, 0, "mlp"):
            pass
    assert not forwards
    with pytest.raises(ValueError, match="into_base"):
        activation_patching(tiny, tiny, TEXTS, directions=["base_to_tuned"])
    with pytest.raises(ValueError, match="hook_resid_post"):
        activation_patching(tiny, tiny, TEXTS, components=["hook_resid_psot"])
    with pytest.raises(ValueError, match="attn, mlp, block"):
        weight_patching(tiny, tiny, TEXTS, components=["ffn"])


def test_weight_swap_restores_exactly_also_on_error(tiny):
    receiver, donor = tiny_copy(), tiny_copy(mlp_layer=1, scale=1.0)
    before = {k: v.clone() for k, v in receiver.original_model.state_dict().items()}
    tokens, mask = tokenize(receiver, TEXTS)
    with torch.no_grad():
        clean = receiver(tokens, attention_mask=mask)
        donor_logits = donor(tokens, attention_mask=mask)
        with swapped_weights(receiver, donor, 1, "mlp") as names:
            assert names == ["model.layers.1.mlp.down_proj.weight", "model.layers.1.mlp.gate_proj.weight",
                             "model.layers.1.mlp.up_proj.weight", "model.layers.1.post_attention_layernorm.weight"]
            assert torch.equal(receiver.original_model.model.layers[1].mlp.down_proj.weight,
                               donor.original_model.model.layers[1].mlp.down_proj.weight)
            assert torch.equal(receiver(tokens, attention_mask=mask), donor_logits)
        with pytest.raises(RuntimeError, match="boom"), swapped_weights(receiver, donor, 1, "block"):
            raise RuntimeError("boom")
        after = receiver(tokens, attention_mask=mask)
    assert all(torch.equal(before[k], v) for k, v in receiver.original_model.state_dict().items())
    assert torch.equal(after, clean)


def test_patch_hooks_are_removed_on_error(tiny):
    tokens, mask, logits, cache = clean_run(tiny, TEXTS, ["blocks.0.hook_mlp_out"])
    wrong_batch = {"blocks.0.hook_mlp_out": cache["blocks.0.hook_mlp_out"][:1]}
    with pytest.raises(ValueError, match="shape"), torch.no_grad(), patched(tiny, wrong_batch):
        tiny(tokens, attention_mask=mask)  # a clear error, and the hook must still be removed
    with torch.no_grad():
        assert torch.equal(tiny(tokens, attention_mask=mask), logits)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory: an unchanged checkpoint (step 5), then one with layer 1's MLP perturbed (step 9)."""
    return save_run(tmp_path_factory.mktemp("run"), {5: tiny_copy(), 9: tiny_copy(mlp_layer=1)})


def test_trajectory_attributes_each_checkpoint(tiny, tiny_run):
    table = patching_trajectory(tiny, tiny_run, TEXTS[:3], components=["hook_resid_post"], directions=["into_base"])
    assert table.columns[0] == "step" and set(table["step"]) == {5, 9}
    assert (table[table["step"] == 5]["kl_clean"] == 0.0).all()
    parts = residual_attribution(table)
    assert set(parts["component"]) == {"embed", "block", "unembed"}
    assert row(parts, step=9, layer=1, component="block")["increment"] == 1.0
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        patching_trajectory(tiny, tiny_run / "nothing-here", TEXTS)


def test_undo_subtracting_a_planted_shift_restores_base(tiny):
    """'Tuned' = base + a fixed vector at layer 0 (a steering edit kept on): subtracting the measured mean
    difference there must undo it; adding it to base must reproduce tuned."""
    tuned = tiny_copy()
    shift = 3.0 * torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(5))
    ids = rewarded_token_ids(tiny.tokenizer, ".")
    with Steering(shift, [0], positions=slice(1, None), model=tuned):
        table = undo_rlhf(tiny, tuned, TEXTS, [0], pcs=(1,), reward_token_ids=ids, max_new_tokens=0)
        sampled = undo_rlhf(tiny, tuned, TEXTS[:2], [0], pcs=(1,), max_new_tokens=3, prompts=TEXTS[:2], reward="length")
        direct = evaluate_edit(tuned, None, TEXTS[:2], "length", reference=tiny, max_new_tokens=3, seed=0)
    assert list(table["method"]) == ["none", "none", "ablate_mean", "ablate_mean_local", "ablate_pcs1",
                                     "subtract_mean", "add_mean"]
    none = row(table, model="tuned", method="none")
    assert none["kl_tf_base"] > 0 and none["kl_removed"] == 0.0 and none["proxy_gain_kept"] == 1.0
    assert row(table, model="base", method="none")["kl_tf_base"] == 0.0
    undone = row(table, method="subtract_mean")
    assert undone["kl_tf_base"] < 1e-4 * none["kl_tf_base"] and undone["kl_removed"] > 0.999
    assert abs(undone["proxy_gain_kept"]) < 1e-3
    added = row(table, method="add_mean")
    assert added["kl_tf_tuned"] < 1e-4 * none["kl_tf_base"]
    for column in ("reward_mean", "kl_sample_per_token", "reward_gain_kept", "reward_gain_removed"):
        assert column in sampled
    assert row(sampled, model="tuned", method="none")["reward_mean"] == pytest.approx(direct["reward_mean"].item())


def test_cli_patch_writes_tables(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(["patch", "--base", "tiny-test", "--tuned", str(tiny_run), "--out", str(out), "--n-prompts", "3",
                     "--components", "hook_mlp_out", "hook_resid_post", "--weights", "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "L1 hook_mlp_out" in printed and "recovered" in printed
    table = pd.read_csv(out / "activation_patching.csv")
    assert row(table, direction="into_base", layer=1, component="hook_mlp_out")["fraction_recovered"] == 1.0
    assert (out / "residual_attribution.csv").exists() and (out / "weight_patching.csv").exists()
    bad = cli_main(["patch", "--base", "tiny-test", "--tuned", str(tmp_path / "missing"), "--out", str(out) + "2"])
    assert bad == 2 and "missing" in capsys.readouterr().err


def test_causal_report_is_written_and_rebuilds_from_its_csvs(tiny_run, tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    from rlhf_interp.patching import summarize

    path = Path(__file__).resolve().parent.parent / "analyses" / "causal_ppo.py"
    spec = importlib.util.spec_from_file_location("causal_ppo", path)
    analysis = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(analysis)
    args = ["--base", "tiny-test", "--tuned", str(tiny_run), "--n-prompts", "6", "--samples", "3", "--batch-size", "4",
            "--text-chunk", "4", "--undo-prompts", "4", "--undo-tokens", "2", "--undo-layers", "1",
            "--undo-pcs", "1,3", "--root", str(tmp_path), "--name", "c", "--work-dir", str(tmp_path / "work")]
    assert analysis.main(args) == 0
    out = tmp_path / "c"
    page, readme = (out / "index.html").read_text(), (out / "README.md").read_text()
    act = pd.read_csv(out / "activation_patching.csv")
    top = act[(act["direction"] == "into_base") & act["component"].isin(["hook_attn_out", "hook_mlp_out"])]
    best = top.loc[top["fraction_recovered"].idxmax()]
    line = f"L{int(best['layer'])} MLP output {best['fraction_recovered']:.3f} ["
    assert line == "L1 MLP output 1.000 [" and line in readme and line in page
    # the summary is the pooled ratio of the per-text sums kept beside it (texts of two resumable parts)
    per_text = pd.read_csv(out / "patching_per_text.csv")
    assert sorted(per_text["text"].unique()) == list(range(6))
    again = summarize(per_text)
    assert (again["fraction_recovered"] - act["fraction_recovered"]).abs().max() < 1e-12
    assert (act["fraction_low"] <= act["fraction_recovered"] + 1e-12).all()
    assert (act["fraction_recovered"] <= act["fraction_high"] + 1e-12).all()
    claims = {c["id"]: c for c in json.loads((out / "report.json").read_text())["claims"]}
    assert claims["top_patch"]["value"] == pytest.approx(best["fraction_recovered"])
    assert claims["top_patch"]["n"] == {"texts": 6, "positions": int(per_text[per_text["patch"] == -1]["n_tokens"].sum()) // 2}
    assert claims["top_vs_runner_up"]["verdict"] and claims["undo_reward"]["verdict"]
    assert claims["resid_reaches_50"]["value"] == 1.0  # the planted change is in layer 1's MLP
    undo, sampled = pd.read_csv(out / "undo.csv"), pd.read_csv(out / "undo_prompts.csv")
    assert set(undo["method"]) >= {"none", "ablate_mean", "ablate_mean_local", "ablate_pcs1", "ablate_pcs3",
                                  "subtract_mean", "add_mean"}
    assert len(sampled) == 4 * len(undo)  # every edit sampled on the same 4 prompts
    tuned = sampled[(sampled["model"] == "tuned") & (sampled["method"] == "none")]
    assert tuned["reward"].mean() == pytest.approx(undo[(undo["model"] == "tuned") & (undo["method"] == "none")]
                                                   ["reward_mean"].item())
    # resumable: a second run with the same settings recomputes nothing and writes the same tables
    done = sorted((tmp_path / "work").glob("*/*.done.json"))
    assert [d.name for d in done][:3] == ["activation_000.done.json", "activation_001.done.json", "texts.done.json"][:3]
    stamps = [d.stat().st_mtime_ns for d in done]
    assert analysis.main(args) == 0
    assert [d.stat().st_mtime_ns for d in done] == stamps
    assert pd.read_csv(out / "activation_patching.csv").equals(act)
    (out / "README.md").unlink()
    assert analysis.main(["--from-csv", "--root", str(tmp_path), "--name", "c"]) == 0  # no model: CSVs in, page out
    assert (out / "README.md").read_text() == readme


@pytest.mark.integration
def test_embedded_planted_mlp_change_found_at_its_layer(smol):
    """SmolLM2 with layer 20's MLP perturbed in a copy: only that layer's MLP output (and weights) carry it."""
    tuned = load_model("smollm2-135m", device="cpu")
    w = tuned.original_model.model.layers[20].mlp.down_proj.weight
    with torch.no_grad():
        w.add_(0.2 * w.std() * torch.randn(w.shape, generator=torch.Generator().manual_seed(0)))
    texts = TEXTS[:2]
    table = activation_patching(smol, tuned, texts, components=["hook_attn_out", "hook_mlp_out"], layers=[19, 20, 21],
                                directions=["into_base"], embedding=False)
    assert row(table, layer=20, component="hook_mlp_out")["fraction_recovered"] == 1.0
    assert (table[table["layer"] < 20]["fraction_recovered"] == 0.0).all() and table["kl_clean"].iloc[0] > 1e-4
    later = table[table["layer"] > 20]["fraction_recovered"]
    assert (later < 0.9).all()
    swaps = weight_patching(smol, tuned, texts, components=["mlp"], layers=[20], directions=["into_base"])
    assert swaps["fraction_recovered"].item() == 1.0
