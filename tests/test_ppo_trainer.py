"""The PPO trainer end to end on tiny-test: metrics, checkpoints other tools load, resume, clear errors,
and the KL it logs and optimises being the KL of the distribution it samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlhf_interp.bridge import build_tiny_model, load_tokenizer
from rlhf_interp.bridge.generation import generate
from rlhf_interp.cli import main as cli_main
from rlhf_interp.core.kl import kl_from_logprobs, masked_mean, sampling_logprobs
from rlhf_interp.ppo.kl_penalty import kl_options
from rlhf_interp.ppo import PPOConfig, PPOTrainer

from helpers import save_tiny

CONFIGS = Path(__file__).parent.parent / "configs"
ACCEPTED = [(d, e, p) for d, e, p, ok in kl_options() if ok]


@pytest.fixture(scope="module")
def ref_and_policy(tmp_path_factory) -> tuple[Path, Path]:
    """A reference with some structure (exact KL ~0.4/token to the policy) and a perturbed copy as policy."""
    root = tmp_path_factory.mktemp("models")
    return (save_tiny(root / "ref", logit_scale=10.0), save_tiny(root / "policy", logit_scale=10.0, noise=0.5))


SHORT_PROMPTS = ["Hello", "The cat", "I think", "Today we", "In the", "My name is", "Once", "The best", "Why do",
                 "She said", "Here is", "We went", "It was", "After the", "They are", "You can"]  # cheap passes


def _zero_reward(texts: list[str]) -> list[float]:
    return [0.0] * len(texts)


def tiny_config(**overrides) -> PPOConfig:
    return PPOConfig.load(CONFIGS / "tiny.yaml", [f"{k}={v}" for k, v in overrides.items()])


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_phase_run_writes_metrics_and_loadable_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    assert cli_main(["train", str(CONFIGS / "tiny.yaml"), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    metrics = _metrics(tmp_path / "run")
    assert [m["phase"] for m in metrics] == [1, 2]
    for key in ("reward_mean", "reward_std", "kl_pi_ref_per_token", "kl_ref_pi_per_token", "kl_pi_ref_k3_per_token",
                "non_score_reward", "entropy", "policy_loss", "value_loss", "clip_fraction", "approx_kl",
                "explained_variance", "lr", "kl_coef", "seconds", "tokens_per_second"):
        assert key in metrics[0] and metrics[0][key] == metrics[0][key], key  # present and not NaN
    assert metrics[1]["kl_pi_ref_per_token"] > 0  # the policy moved away from the reference
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


FULL_RUN = {"phases": 3, "checkpoint_every": 2}  # the run the three resume tests below compare against


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """One uninterrupted seeded run (read-only), shared by the resume tests: each compares its killed and resumed
    run with it."""
    run = tmp_path_factory.mktemp("full") / "run"
    PPOTrainer(tiny_config(**FULL_RUN), run, progress=False).train()
    return run


def test_resume_equals_uninterrupted(full_run, tmp_path):
    def kill_after_phase_2(trainer, metrics, rollout):
        if trainer.phase == 2:
            raise KeyboardInterrupt  # as if the process were killed right after checkpoint-000002

    killed = PPOTrainer(tiny_config(**FULL_RUN), tmp_path / "resumed", callbacks=[kill_after_phase_2], progress=False)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    assert len(_metrics(tmp_path / "resumed")) == 2
    resumed = PPOTrainer.resume(tmp_path / "resumed", progress=False)
    assert resumed.phase == 2
    resumed.train()
    a, b = _metrics(full_run), _metrics(tmp_path / "resumed")
    assert len(a) == len(b) == 3
    for key in ("reward_mean", "kl_pi_ref_per_token", "entropy", "policy_loss", "value_loss"):
        assert a[2][key] == pytest.approx(b[2][key], rel=1e-5, abs=1e-7), key


def test_train_or_resume_finishes_a_killed_run_and_leaves_a_finished_one(full_run, tmp_path):
    """`rlhf_interp.ppo.runs.train_or_resume`, what the studies call: a run killed after phase 1 of 3 is resumed to
    the uninterrupted run's metrics, a finished one is left alone (0 s, files untouched), and without ``reuse``
    the run starts again."""
    from rlhf_interp.ppo.runs import phases_done, train_or_resume

    config = tiny_config(**FULL_RUN)

    def kill_after_phase_1(trainer, metrics, rollout):
        if trainer.phase == 1:
            raise KeyboardInterrupt  # as if the process were killed right after phase 1 (the interrupt saves it)

    with pytest.raises(KeyboardInterrupt):
        train_or_resume(config, tmp_path / "run", callbacks=[kill_after_phase_1], progress=False)
    assert phases_done(tmp_path / "run") == 1 and phases_done(tmp_path / "nothing") == 0
    wall, cpu = train_or_resume(config, tmp_path / "run", progress=False)
    assert wall > 0 and cpu > 0
    full, resumed = _metrics(full_run), _metrics(tmp_path / "run")
    assert len(resumed) == len(full) == 3
    for key in ("reward_mean", "kl_pi_ref_per_token", "entropy", "policy_loss"):
        assert [m[key] for m in resumed] == pytest.approx([m[key] for m in full], rel=1e-5, abs=1e-7), key
    before = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    assert train_or_resume(config, tmp_path / "run", progress=False) == (0.0, 0.0)
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == before
    train_or_resume(tiny_config(phases=1), tmp_path / "run", reuse=False, progress=False)
    assert phases_done(tmp_path / "run") == 1  # started again: the old phases are gone


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
    {"kl_direction": "ref_pi", "kl_estimator": "k3", "adaptive_kl": True},
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


# --- the KL that is logged and optimised is that of the distribution that is sampled


def _exact_kl_on_own_samples(trainer: PPOTrainer, prompts: list[str], direction: str, max_new_tokens: int) -> float:
    """Exact per-token KL over the vocabulary in ``direction``, on the policy's own continuations (fixed seed)."""
    sampled = generate(trainer.policy, prompts, max_new_tokens=max_new_tokens, seed=7, stop_at_eos=False)
    cols = slice(sampled.prompt_len - 1, sampled.tokens.shape[1] - 1)
    with torch.no_grad():
        logp = sampling_logprobs(trainer.policy(sampled.tokens, attention_mask=sampled.attention_mask)[:, cols])
        logq = sampling_logprobs(trainer.reference(sampled.tokens, attention_mask=sampled.attention_mask)[:, cols])
    kl = kl_from_logprobs(logp, logq) if direction == "pi_ref" else kl_from_logprobs(logq, logp)
    return masked_mean(kl, sampled.generated_mask[:, sampled.prompt_len:].float()).item()


@pytest.mark.parametrize("option", ACCEPTED, ids=["-".join(o) for o in ACCEPTED])
def test_kl_falls_under_zero_reward_for_every_accepted_option(tmp_path, ref_and_policy, option):
    """Policy = perturbed copy of the reference, reward 0: only the KL acts, so the exact KL must fall.

    value_loss_coef 0 keeps the critic's gradient out of the shared trunk (it would move the policy in a
    direction unrelated to the KL), and gae_lambda 1 makes the untrained critic's advantages plain returns.
    """
    direction, estimator, placement = option
    ref_dir, policy_dir = ref_and_policy
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(SHORT_PROMPTS) + "\n")
    config = tiny_config(model=str(policy_dir), ref_model=str(ref_dir), prompts=str(prompts_file),
                         kl_direction=direction, kl_estimator=estimator, kl_placement=placement, kl_coef=5.0, phases=4,
                         batch_size=32, minibatch_size=16, max_new_tokens=4, ppo_epochs=2, lr=3e-4, lr_decay=False,
                         value_loss_coef=0.0, gae_lambda=1.0, checkpoint_every=0, sample_every=0)
    trainer = PPOTrainer(config, tmp_path / "run", reward=_zero_reward, progress=False)
    before = _exact_kl_on_own_samples(trainer, SHORT_PROMPTS, direction, config.max_new_tokens)
    trainer.train()
    after = _exact_kl_on_own_samples(trainer, SHORT_PROMPTS, direction, config.max_new_tokens)
    assert before > 0.2 and after < 0.9 * before, (before, after)


def test_tempered_rollout_logs_the_exact_tempered_kl(tmp_path, ref_and_policy):
    ref_dir, policy_dir = ref_and_policy
    config = tiny_config(model=str(policy_dir), ref_model=str(ref_dir), temperature=0.7, phases=1, lr=0.0,
                         head_lr=0.0, checkpoint_every=0, sample_every=0)
    trainer = PPOTrainer(config, tmp_path / "run", progress=False)
    metrics, rollout = trainer.run_phase()
    cols = slice(rollout.prompt_len - 1, rollout.tokens.shape[1] - 1)
    with torch.no_grad():  # lr 0: the policy is still the one that sampled
        pi = trainer.policy(rollout.tokens, attention_mask=rollout.attention_mask)[:, cols].double()
        ref = trainer.reference(rollout.tokens, attention_mask=rollout.attention_mask)[:, cols].double()
    mask = rollout.gen_mask.double()

    def logged_kind(temperature: float) -> tuple[float, float, float]:
        p, q = torch.softmax(pi / temperature, -1), torch.softmax(ref / temperature, -1)
        per_token = [(p * (p.log() - q.log())).sum(-1), (q * (q.log() - p.log())).sum(-1), -(p * p.log()).sum(-1)]
        return tuple(((x * mask).sum() / mask.sum()).item() for x in per_token)

    forward, reverse, entropy = logged_kind(0.7)
    assert metrics["kl_pi_ref_per_token"] == pytest.approx(forward, rel=1e-4)
    assert metrics["kl_ref_pi_per_token"] == pytest.approx(reverse, rel=1e-4)
    assert metrics["entropy"] == pytest.approx(entropy, rel=1e-4)
    assert abs(logged_kind(1.0)[0] - forward) > 0.05 * forward  # the temperature matters here: the test can fail


def test_ratio_is_one_before_any_step_with_dropout_in_the_model_config(tmp_path):
    """lr 0: every minibatch of every epoch sees the policy that sampled, so every ratio must be 1."""
    model_dir = save_tiny(tmp_path / "dropout", attention_dropout=0.5)
    config = tiny_config(model=str(model_dir), ref_model="tiny-test", phases=1, ppo_epochs=2, batch_size=4,
                         minibatch_size=2, lr=0.0, head_lr=0.0, checkpoint_every=0, sample_every=0)
    trainer = PPOTrainer(config, tmp_path / "run", progress=False)
    tokens = torch.tensor([[1, 504, 3117, 314, 1123, 7]])
    trainer.policy.train()  # the dropout in this model is real: in train mode two passes differ
    assert not torch.equal(trainer.policy(tokens), trainer.policy(tokens))
    trainer.policy.eval()
    metrics, rollout = trainer.run_phase()
    assert metrics["max_abs_log_ratio"] < 1e-5
    assert not trainer.policy.training and not trainer.reference.training
    # The rollout's log-probs are the eval-mode model's.
    cols = slice(rollout.prompt_len - 1, rollout.tokens.shape[1] - 1)
    with torch.no_grad():
        logp = sampling_logprobs(trainer.policy(rollout.tokens, attention_mask=rollout.attention_mask)[:, cols])
    again = logp.gather(-1, rollout.gen_tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(again * rollout.gen_mask, rollout.logprobs * rollout.gen_mask, atol=1e-5, rtol=0)


def test_update_reuses_the_rollout_pass_for_its_first_minibatch(tmp_path, monkeypatch):
    import rlhf_interp.ppo.algorithms.base as update_module  # where the update's minibatches are made

    calls = []
    real = update_module.policy_forward
    monkeypatch.setattr(update_module, "policy_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    trainer = PPOTrainer(tiny_config(phases=1, batch_size=4, minibatch_size=2, ppo_epochs=2, checkpoint_every=0),
                         tmp_path / "run", progress=False)
    trainer.run_phase()
    assert len(calls) == 2 * 2 - 1  # 4 minibatches, the first one's forward pass came from the rollout


def test_resume_after_an_unsaved_phase_and_a_torn_line_does_not_duplicate_logs(full_run, tmp_path):
    def kill_after_phase_3(trainer, metrics, rollout):
        if trainer.phase == 3:
            raise KeyboardInterrupt  # phase 3 is logged, its checkpoint never written

    run = tmp_path / "resumed"
    killed = PPOTrainer(tiny_config(**FULL_RUN), run, callbacks=[kill_after_phase_3], progress=False)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    import shutil

    shutil.rmtree(run / "checkpoint-000003")  # the interrupt saved phase 3; a SIGKILL would not have
    for name in ("metrics.jsonl", "samples.jsonl"):  # a write cut short by the kill
        with open(run / name, "a") as f:
            f.write('{"phase": 4, "prompt": "cut sho')
    resumed = PPOTrainer.resume(run, progress=False)
    assert resumed.phase == 2 and [m["phase"] for m in resumed.history] == [1, 2]
    resumed.train()
    for name in ("metrics.jsonl", "samples.jsonl"):
        expected = [json.loads(line) for line in (full_run / name).read_text().splitlines()]
        got = [json.loads(line) for line in (run / name).read_text().splitlines()]
        assert [r["phase"] for r in got] == [r["phase"] for r in expected], name
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (full_run / "samples.jsonl").read_text().splitlines()]
    assert [(s["prompt"], s["completion"]) for s in samples] == [(s["prompt"], s["completion"]) for s in expected]


def test_config_refuses_top_k_top_p_and_empty_ref_model():
    for field, value in (("top_k", 40), ("top_p", 0.9)):
        with pytest.raises(ValueError, match=rf"'{field}' .* not supported in PPO.*temperature"):
            tiny_config(**{field: value})
    with pytest.raises(ValueError, match="ref_model"):
        tiny_config(ref_model="''")


def test_a_run_directory_written_with_the_old_kl_words_resumes(tmp_path):
    """Issue 29: a run recorded with kl_direction: reverse and kl_forward_* / kl_reverse_* metrics (as every run
    before the rename was) still resumes: its recorded values and metric names are mapped when read."""
    import yaml

    run = tmp_path / "old"
    PPOTrainer(tiny_config(phases=1, checkpoint_every=1, kl_direction="ref_pi", kl_estimator="k3"), run,
               progress=False).train()
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "kl_direction": "reverse"}, sort_keys=False))
    ckpt = sorted(run.glob("checkpoint-*"))[-1]
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["config"]["kl_direction"] = "reverse"
    (ckpt / "meta.json").write_text(json.dumps(meta))
    old = [{k.replace("kl_pi_ref", "kl_forward").replace("kl_ref_pi", "kl_reverse"): v for k, v in m.items()}
           for m in _metrics(run)]
    assert "kl_reverse_k3_per_token" in old[0]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in old))
    with pytest.raises(ValueError, match="ambiguous"):
        PPOConfig.load(run / "config.yaml")  # a config a user writes with the old word is refused ...
    trainer = PPOTrainer.resume(run, overrides=["phases=2"], progress=False)  # ... the run's own record is mapped
    assert trainer.config.kl_direction == "ref_pi" and trainer.kl_penalty.direction == "ref_pi"
    assert trainer.history[0]["kl_ref_pi_k3_per_token"] == old[0]["kl_reverse_k3_per_token"]
    assert trainer.train()[0]["phase"] == 2
