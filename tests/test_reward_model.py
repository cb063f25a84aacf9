"""Learned reward models: Bradley-Terry loss, preference files, synthetic pairs, training, checkpoints, PPO use."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlhf_interp.core.masks import gather_last, last_token_index
from rlhf_interp.reward import (
    PreferenceDataError,
    PreferencePair,
    RewardTrainingConfig,
    bradley_terry_loss,
    get_reward,
    load_reward_model,
    preference_accuracy,
    read_preferences,
    score,
    split_pairs,
    synthesize_pairs,
    train_reward_model,
    write_preferences,
)

from preference_data import period_pairs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny-test RM trained briefly on period pairs (shared by the read-only tests below)."""
    out = tmp_path_factory.mktemp("rm") / "rm"
    pairs = period_pairs(160)
    rm, frame = train_reward_model(pairs, "tiny-test", out, RewardTrainingConfig(epochs=3, lr=1e-3, head_lr=3e-3, freeze_layers=1),
                                   progress=False)
    return out, rm, frame, pairs


# ---------------------------------------------------------------------------------------------- math


def test_bradley_terry_loss_hand_computed():
    r_chosen, r_rejected = torch.tensor([2.0, 0.0, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    # -log sigmoid(d) = log(1 + exp(-d)) for d = 2, -1, 0
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0)) + math.log(2.0)) / 3
    assert bradley_terry_loss(r_chosen, r_rejected).item() == pytest.approx(expected, rel=1e-6)
    assert preference_accuracy(r_chosen, r_rejected).item() == pytest.approx((1 + 0 + 0.5) / 3)
    # The gradient pushes the chosen score up and the rejected one down.
    rc, rr = r_chosen.clone().requires_grad_(), r_rejected.clone().requires_grad_()
    bradley_terry_loss(rc, rr).backward()
    assert (rc.grad < 0).all() and (rr.grad > 0).all()


def test_last_token_index_left_and_right_padding(tiny):
    from rlhf_interp import tokenize

    tokens, mask = tokenize(tiny, ["a much longer text than the other one", "short"])
    assert mask[:, -1].all(), "tokenize left-pads: the last column is every row's last real token"
    assert last_token_index(mask).tolist() == [mask.shape[1] - 1] * 2
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    values = torch.arange(15.0).reshape(3, 5)
    assert gather_last(values, right).tolist() == [2.0, 9.0, 10.0]


# ---------------------------------------------------------------------------------------------- data


def test_preference_file_round_trip_keeps_extra_fields(tmp_path):
    pairs = [PreferencePair("p", "good.", "bad", {"chosen_score": 1.0}), PreferencePair("", "x\ny", "z")]
    path = write_preferences(pairs, tmp_path / "prefs.jsonl")
    assert read_preferences(path) == pairs


@pytest.mark.parametrize("bad_line, problem", [
    ('{"prompt": "p", "chosen": "a", "rejected": ', "not valid JSON"),
    ('{"prompt": "p", "chosen": "a"}', "missing key(s) ['rejected']"),
    ('{"prompt": "p", "chosen": 3, "rejected": "b"}', "chosen is int"),
    ('{"prompt": "p", "chosen": "same", "rejected": "same"}', "the same text"),
    ('["p", "a", "b"]', "expected a JSON object"),
])
def test_malformed_line_is_reported_with_its_line_number(tmp_path, bad_line, problem):
    good = json.dumps({"prompt": "p", "chosen": "a.", "rejected": "a"})
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join([good, good, "", bad_line, good]) + "\n")
    with pytest.raises(PreferenceDataError) as info:
        read_preferences(path)
    message = str(info.value)
    assert f"{path}:4:" in message and problem in message and "nothing was trained" in message


def test_training_refuses_a_malformed_file_before_writing_anything(tmp_path):
    path = tmp_path / "prefs.jsonl"
    lines = [json.dumps(p.to_json()) for p in period_pairs(20)]
    lines[12] = lines[12][:-5]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PreferenceDataError, match=r"prefs.jsonl:13:"):
        train_reward_model(path, "tiny-test", tmp_path / "rm", progress=False)
    assert not (tmp_path / "rm").exists()


def test_split_is_disjoint_and_seeded():
    pairs = period_pairs(50)
    train, val = split_pairs(pairs, 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40 and not set(map(id, train)) & set(map(id, val))
    assert split_pairs(pairs, 0.2, seed=3) == (train, val)


def test_synthesize_pairs_labels_by_the_reward_and_drops_ties(tiny):
    reward = get_reward("length", unit="chars")
    pairs, stats = synthesize_pairs(tiny, reward, ["Once upon a time", "The cat"], 12, max_new_tokens=6,
                                    batch_size=8, seed=1, progress=False)
    assert len(pairs) == stats.pairs == 12
    assert stats.sampled_pairs >= stats.pairs + stats.ties and stats.tokens_generated > 0
    for pair in pairs:
        chosen, rejected = score(reward, [pair.chosen, pair.rejected]).tolist()
        assert chosen > rejected and pair.extra["chosen_score"] == chosen and not pair.extra["flipped"]
    flipped, stats = synthesize_pairs(tiny, reward, ["Once upon a time"], 6, max_new_tokens=6, batch_size=8,
                                      label_noise=1.0, progress=False)
    assert stats.flipped == 6
    assert all(len(p.chosen) < len(p.rejected) for p in flipped)


def test_synthesize_pairs_fails_clearly_on_a_constant_reward(tiny):
    with pytest.raises(RuntimeError, match="tied scores"):
        synthesize_pairs(tiny, lambda texts: torch.zeros(len(texts)), ["Hi"], 3, max_new_tokens=2, batch_size=4,
                         progress=False)


# ---------------------------------------------------------------------------------------------- training


def test_training_learns_the_preference_and_logs_per_epoch(trained):
    out, rm, frame, pairs = trained
    val = frame[frame.split == "val"].set_index("epoch")
    assert val.loc[0, "accuracy"] == 0.5  # zero-initialised head: every pair tied
    assert val["accuracy"].max() >= 0.9 and val["loss"].min() < 0.5
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == len(frame) and {r["split"] for r in logged} == {"train", "val"}
    held_out = period_pairs(40, seed=99)
    chosen = rm.score([p.chosen for p in held_out])
    rejected = rm.score([p.rejected for p in held_out])
    assert preference_accuracy(chosen, rejected).item() >= 0.9
    # Normalisation statistics are those of the training texts.
    meta = json.loads((out / "model" / "meta.json").read_text())
    assert meta["normalization"]["std"] > 0 and meta["kind"] == "reward_model"


def test_checkpoint_round_trips(trained):
    out, rm, _, pairs = trained
    texts = [p.chosen for p in pairs[:6]] + [p.rejected for p in pairs[:6]] + [""]
    reloaded = load_reward_model(out)
    assert reloaded.mean == rm.mean and reloaded.std == rm.std
    torch.testing.assert_close(reloaded.score(texts), rm.score(texts), rtol=0, atol=1e-5)
    torch.testing.assert_close(reloaded.score(texts, normalize=False), rm.score(texts, normalize=False), rtol=0, atol=1e-5)
    assert not torch.equal(rm.score(texts), rm.score(texts, normalize=False))
    # The backbone is a plain HF directory: load_model opens it for the analysis tools.
    from rlhf_interp import load_model
    from rlhf_interp.checkpoints import hf_state_dict

    backbone = hf_state_dict(load_model(out, device="cpu").original_model)
    saved = hf_state_dict(rm.bridge.original_model)
    assert all(torch.equal(backbone[k], saved[k].cpu()) for k in saved)
    # Batching and order do not change a text's score.
    torch.testing.assert_close(reloaded.score(texts[::-1], batch_size=1).flip(0), reloaded.score(texts), rtol=0, atol=1e-4)


def test_frozen_prefix_cache_gives_the_same_training_as_full_passes(tmp_path):
    pairs = period_pairs(24)
    config = dict(epochs=1, lr=1e-3, head_lr=3e-3, freeze_layers=1, batch_size=8)
    cached, cached_frame = train_reward_model(pairs, "tiny-test", tmp_path / "a", RewardTrainingConfig(**config),
                                              progress=False)
    full, full_frame = train_reward_model(pairs, "tiny-test", tmp_path / "b",
                                          RewardTrainingConfig(**config, cache_activations=False), progress=False)
    assert cached.meta["training"]["cached_prefix"] and not full.meta["training"]["cached_prefix"]
    assert cached_frame["loss"].tolist() == pytest.approx(full_frame["loss"].tolist(), abs=1e-4)
    texts = [p.chosen for p in pairs[:4]]
    torch.testing.assert_close(cached.score(texts), full.score(texts), rtol=0, atol=1e-3)


def test_head_only_training_leaves_the_backbone_unchanged(tmp_path, tiny):
    from rlhf_interp.checkpoints import hf_state_dict

    rm, _ = train_reward_model(period_pairs(20), "tiny-test", tmp_path / "rm",
                               RewardTrainingConfig(epochs=1, head_only=True, head="mlp"), progress=False)
    before, after = hf_state_dict(tiny.original_model), hf_state_dict(rm.bridge.original_model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert rm.head.kind == "mlp" and rm.meta["training"]["frozen_layers"] == tiny.cfg.n_layers


# ---------------------------------------------------------------------------------------------- use


def test_get_reward_routes_to_the_reward_model(trained):
    out, rm, _, pairs = trained
    reward = get_reward(f"reward_model:{out}")
    texts = [pairs[0].chosen, pairs[0].rejected]
    assert reward.reward_name.startswith("reward_model:")
    values = score(reward, texts)
    assert values.requires_grad is False
    torch.testing.assert_close(values, rm.score(texts), rtol=0, atol=1e-5)


def test_ppo_runs_two_phases_against_a_reward_model(trained, tmp_path):
    from rlhf_interp.ppo import PPOConfig, PPOTrainer

    out, rm, _, _ = trained
    config = PPOConfig.load("configs/tiny.yaml", [f"reward=reward_model:{out}", "reward_kwargs={}"])
    seen = []
    trainer = PPOTrainer(config, tmp_path / "run", progress=False,
                         callbacks=[lambda t, m, rollout: seen.append((rollout.completions, rollout.scores.cpu()))])
    history = trainer.train()
    with pytest.raises(ValueError, match="reward_kwargs"):  # tiny.yaml's {unit: chars} belongs to another reward
        get_reward(f"reward_model:{out}", unit="chars")
    assert [m["phase"] for m in history] == [1, 2]
    for completions, scores in seen:
        torch.testing.assert_close(scores, rm.score(completions), rtol=0, atol=1e-4)


def test_cli_synth_train_score(tmp_path, capsys):
    from rlhf_interp.cli import main

    data = tmp_path / "pairs.jsonl"
    assert main(["reward-model", "synth", "--reward", "char_count", "--reward-arg", "char=e", "--model", "tiny-test",
                 "--n-pairs", "16", "--max-new-tokens", "6", "--batch-size", "16", "--out", str(data),
                 "--no-progress"]) == 0
    pairs = read_preferences(data)
    assert len(pairs) == 16 and all(p.chosen.count("e") > p.rejected.count("e") for p in pairs)
    assert main(["reward-model", "train", str(data), "--base", "tiny-test", "--out", str(tmp_path / "rm"),
                 "--epochs", "1", "--no-progress"]) == 0
    assert "val accuracy" in capsys.readouterr().out
    assert main(["reward-model", "train", str(data), "--base", "tiny-test", "--out", str(tmp_path / "rm"),
                 "--epochs", "1", "--no-progress"]) == 2  # refuses to overwrite
    texts = tmp_path / "texts.txt"
    texts.write_text("one. two. three.\nnone here\n")
    capsys.readouterr()
    assert main(["reward-model", "score", str(tmp_path / "rm"), "--texts", str(texts)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith('"one. two. three."')
    expected = load_reward_model(tmp_path / "rm").score(["one. two. three.", "none here"])
    assert [float(line.split("\t")[0]) for line in lines] == pytest.approx(expected.tolist(), abs=1e-3)


def test_cli_train_reports_a_malformed_line(tmp_path, capsys):
    from rlhf_interp.cli import main

    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a.", "rejected": "a"}\n{"prompt": "p"}\n')
    assert main(["reward-model", "train", str(data), "--base", "tiny-test", "--out", str(tmp_path / "rm")]) == 2
    assert "bad.jsonl:2:" in capsys.readouterr().err
    assert not (tmp_path / "rm").exists()



def test_get_reward_accepts_a_bound_method():
    """Regression (issue 12): naming a bound method raised AttributeError."""

    class Counter:
        def __init__(self, char):
            self.char = char

        def count(self, texts):
            return [float(t.count(self.char)) for t in texts]

    reward = get_reward(Counter("!").count)
    assert reward.reward_name == "count"
    assert score(reward, ["a!!", "b"]).tolist() == [2.0, 0.0]


def test_get_reward_leaves_the_shared_builtin_unnamed():
    """Regression (issue 12): get_reward renamed the module-level char_count, so 'periods' became 'char_count'."""
    from rlhf_interp.reward import char_count

    periods = get_reward("periods")
    counts = get_reward("char_count", char="!")
    assert periods.reward_name == "periods" and counts.reward_name == "char_count"
    assert not hasattr(char_count, "reward_name")
    assert score(counts, ["a!.!"]).tolist() == [2.0]


# ---------------------------------------------------------------------------------------------- learned vs true


def test_hacking_measures_on_a_trained_rm(trained, tiny, tmp_path):
    """`rlhf_interp.reward.hacking`, the pieces the reward-hacking and iterated-RM studies share: held-out texts are
    seeded and scored by both rewards; an appended '.' is worth exactly 1 to the period count and nothing else is;
    proxy counts and per-phase tables are what the samples say; a made RM and its pairs are reused unopened."""
    import pandas as pd

    from rlhf_interp.reward.hacking import (
        RMRecipe,
        exploits,
        heldout_texts,
        pairwise_accuracy,
        phase_table,
        probe_suffixes,
        proxy_counts,
    )

    out, rm, frame, pairs = trained
    periods = get_reward("char_count", char=".")
    prompts = ["Say", "Once upon a time"]
    heldout = heldout_texts(tiny, rm, periods, prompts, 5, max_new_tokens=6, batch_size=2, seed=3)
    again = heldout_texts(tiny, rm, periods, prompts, 5, max_new_tokens=6, batch_size=2, seed=3)
    pd.testing.assert_frame_equal(heldout, again)
    assert list(heldout.columns) == ["text", "true_reward", "rm_reward"] and len(heldout) == 5
    assert heldout.true_reward.tolist() == [float(t.count(".")) for t in heldout.text]
    assert heldout.rm_reward.tolist() == pytest.approx(rm.score(heldout.text.tolist()).tolist(), abs=1e-5)

    probes = probe_suffixes(rm, periods, heldout.text.tolist(), [".", " ...", "?"]).set_index("suffix")
    assert probes.true_delta.tolist() == [1.0, 3.0, 0.0]
    assert (probes.rm_delta_stderr >= 0).all()

    samples = pd.DataFrame({"phase": [1, 1, 2, 2], "completion": ["a.", "?", "..", "b"],
                            "true_reward": [1.0, 0.0, 2.0, 0.0], "rm_reward": [0.5, 0.1, 0.9, -0.2]})
    counts = proxy_counts(samples, pd.DataFrame({"text": ["x.", "y!"]})).set_index(["phase", "feature"]).mean_count
    assert counts[(0, "period")] == 0.5 and counts[(0, "exclamation")] == 0.5
    assert counts[(1, "question")] == 0.5 and counts[(2, "period")] == 1.0
    table = phase_table(samples, pd.DataFrame({"phase": [1, 2], "entropy": [3.0, 2.5]}),
                        pd.DataFrame({"true_reward": [0.0, 2.0], "rm_reward": [0.0, 1.0]}))
    assert table.true_reward.tolist() == [0.5, 1.0] and table.entropy.tolist() == [3.0, 2.5]
    assert table.true_reward_z.tolist() == pytest.approx([(0.5 - 1) / 2 ** 0.5, 0.0])
    assert table.spearman.tolist() == pytest.approx([1.0, 1.0])
    assert exploits(samples, pd.DataFrame({"true_reward": [0.0, 2.0], "rm_reward": [0.0, 1.0]}), k=1
                    ).completion.tolist() == ["?"]  # RM z (0.1-0.5)/0.71 = -0.57 vs true z -1/1.41 = -0.71
    assert pairwise_accuracy(pd.Series([1, 2, 3, 3]), pd.Series([0.1, 0.3, 0.2, 0.2])) == pytest.approx(
        (1 + 1 + 1 + 0 + 0) / 5)  # (1,2) (1,3) (1,3') right, (2,3) (2,3') wrong; (3,3') tied in truth: skipped
    assert pairwise_accuracy(pd.Series([1, 2]), pd.Series([0.5, 0.5])) == 0.5

    recipe = RMRecipe(model="does-not-exist", n_pairs=4)  # reuse opens no model: a wrong name does no harm
    write_preferences(pairs[:4], tmp_path / "pairs.jsonl")
    assert recipe.pairs(tmp_path / "pairs.jsonl", periods, 8, reuse=True) == {"reused": True}
    reused, seconds = recipe.train(tmp_path / "pairs.jsonl", out, reuse=True)
    pd.testing.assert_frame_equal(reused, frame, check_dtype=False)
    assert seconds == pytest.approx(frame.seconds.sum())
    import argparse

    assert RMRecipe.from_namespace(argparse.Namespace(model="m", epochs=2, other=1), seed=5) == RMRecipe(
        model="m", epochs=2, seed=5)
