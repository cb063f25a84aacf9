"""The PPO trainer end to end on tiny-test: metrics, checkpoints other tools load, resume, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlhf_interp.cli import main as cli_main
from rlhf_interp.ppo import PPOConfig, PPOTrainer

CONFIGS = Path(__file__).parent.parent / "configs"


def tiny_config(**overrides) -> PPOConfig:
    return PPOConfig.load(CONFIGS / "tiny.yaml", [f"{k}={v}" for k, v in overrides.items()])


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_phase_run_writes_metrics_and_loadable_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    assert cli_main(["train", str(CONFIGS / "tiny.yaml"), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    metrics = _metrics(tmp_path / "run")
    assert [m["phase"] for m in metrics] == [1, 2]
    for key in ("reward_mean", "reward_std", "kl_forward_per_token", "kl_reverse_per_token", "kl_forward_k3_per_token",
                "non_score_reward", "entropy", "policy_loss", "value_loss", "clip_fraction", "approx_kl",
                "explained_variance", "lr", "kl_coef", "seconds", "tokens_per_second"):
        assert key in metrics[0] and metrics[0][key] == metrics[0][key], key  # present and not NaN
    assert metrics[1]["kl_forward_per_token"] > 0  # the policy moved away from the reference
    ckpt = tmp_path / "run" / "checkpoint-000002"
    hf = AutoModelForCausalLM.from_pretrained(ckpt)
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["step"] == 2 and meta["base_model"] == "tiny-test" and meta["config"]["phases"] == 2
    assert (ckpt / "value_head.safetensors").exists() and (ckpt / "trainer_state.pt").exists()
    # The saved weights are the trained policy, not the base model.
    from rlhf_interp import load_hf_model

    base, _, _ = load_hf_model("tiny-test", device="cpu")
    diff = max((a - b).abs().max().item() for a, b in zip(hf.parameters(), base.parameters()))
    assert diff > 0
    assert not list((tmp_path / "run").glob(".tmp-*"))  # no half-written checkpoint left behind


def test_resume_equals_uninterrupted(tmp_path):
    full = PPOTrainer(tiny_config(phases=3), tmp_path / "full", progress=False)
    full.train()
    def kill_after_phase_2(trainer, metrics, rollout):
        if trainer.phase == 2:
            raise KeyboardInterrupt  # as if the process were killed right after checkpoint-000002

    killed = PPOTrainer(tiny_config(phases=3), tmp_path / "resumed", callbacks=[kill_after_phase_2], progress=False)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    assert len(_metrics(tmp_path / "resumed")) == 2
    resumed = PPOTrainer.resume(tmp_path / "resumed", progress=False)
    assert resumed.phase == 2
    resumed.train()
    a, b = _metrics(tmp_path / "full"), _metrics(tmp_path / "resumed")
    assert len(a) == len(b) == 3
    for key in ("reward_mean", "kl_forward_per_token", "entropy", "policy_loss", "value_loss"):
        assert a[2][key] == pytest.approx(b[2][key], rel=1e-5, abs=1e-7), key


def test_bad_reward_gives_clear_error(tmp_path):
    def wrong_length(texts):
        return [1.0]

    trainer = PPOTrainer(tiny_config(), tmp_path / "bad", reward=wrong_length, progress=False)
    with pytest.raises(ValueError, match=r"wrong_length.*returned 1 values for 4 texts"):
        trainer.train()

    def nan_reward(texts):
        return [float("nan")] * len(texts)

    trainer = PPOTrainer(tiny_config(), tmp_path / "nan", reward=nan_reward, progress=False)
    with pytest.raises(ValueError, match="nan_reward.*non-finite"):
        trainer.train()


def test_config_rejects_bad_values_with_field_and_range():
    with pytest.raises(ValueError, match=r"'gae_lambda' = 1.5 is out of range: allowed 0 to 1"):
        tiny_config(gae_lambda=1.5)
    with pytest.raises(ValueError, match="kl_estimator"):
        tiny_config(kl_estimator="k7")
    with pytest.raises(ValueError, match="Unknown config field"):
        tiny_config(learning_rate=1)


@pytest.mark.parametrize("overrides", [
    {"kl_estimator": "exact", "kl_placement": "loss"},
    {"kl_direction": "reverse", "kl_estimator": "k3", "adaptive_kl": True},
    {"lora_r": 4, "lora_targets": "[q_proj,v_proj]", "entropy_coef": 0.01},
    {"freeze_layers": 1, "stop_at_eos": True, "missing_eos_penalty": 1.0, "gae_lambda": 1.0},
])
def test_variants_train_and_move_the_policy(tmp_path, overrides):
    trainer = PPOTrainer(tiny_config(checkpoint_every=0, **overrides), tmp_path / "v", progress=False)
    before = {k: v.detach().clone() for k, v in trainer.hf_policy.named_parameters() if v.requires_grad}
    trainer.train()
    after = dict(trainer.hf_policy.named_parameters())
    assert any((after[k] - v).abs().max() > 0 for k, v in before.items())
    if overrides.get("freeze_layers"):
        frozen = [p for n, p in trainer.hf_policy.named_parameters() if "layers.0." in n.replace("._original_component", "")]
        assert frozen and not any(p.requires_grad for p in frozen)
    if overrides.get("lora_r"):
        assert all("lora_" in k for k in before)
        # The exported checkpoint has LoRA merged in: plain HF keys only, loadable by transformers.
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(tmp_path / "v" / "checkpoint-000002")


def test_lora_resume_restores_the_trained_adapter(tmp_path):
    trainer = PPOTrainer(tiny_config(lora_r=4, lora_targets="[q_proj,v_proj]"), tmp_path / "lora", progress=False)
    trainer.train()
    trained = {n: p.detach().clone() for n, p in trainer.hf_policy.named_parameters() if "lora_B" in n}
    assert trained and any(p.abs().max() > 0 for p in trained.values())  # lora_B starts at 0: it was trained
    resumed = PPOTrainer.resume(tmp_path / "lora", progress=False)
    restored = {n: p.detach() for n, p in resumed.hf_policy.named_parameters() if "lora_B" in n}
    assert restored.keys() == trained.keys()
    for name, value in trained.items():
        assert torch.equal(restored[name], value), name
