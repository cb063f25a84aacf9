"""Data-parallel PPO in 2 CPU processes (gloo), launched the way users launch it (``accelerate launch``).

- The same rollout batch split over 2 processes gives the gradient, and after one optimizer step the weights,
  of the 1-process update on the whole batch -- with sequences of different lengths, where averaging the
  processes' own means (DDP's plain average) would not; the test measures that this naive average is off.
- A 2-process training run of tiny-test completes, logs the global batch once, resumes, and its checkpoint
  loads with `load_model`.

This file is also the worker: ``accelerate launch ... tests/test_distributed.py equality OUT MODELS``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
PROMPTS = ["Hello", "The cat", "I think", "Today we", "In the", "My name is", "Once", "Why do"]
ROWS_PER_RANK = 4


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    return env


def _run(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    return done


# ----------------------------------------------------------------------------------------------- worker


def _equality_worker(out: Path, models: Path) -> None:
    """Both processes build the same full rollout; each then updates on its half with the distributed steps,
    and (as the reference) a separate copy updates on the whole batch in-process."""
    from rlhf_interp.bridge import bridge_from_hf, load_hf_model
    from rlhf_interp.bridge.heads import ValueHead
    from rlhf_interp.ppo import PPOConfig, losses
    from rlhf_interp.ppo.distributed import Distributed
    from rlhf_interp.ppo.kl_penalty import KLPenalty
    from rlhf_interp.ppo.rollout import collect
    from rlhf_interp.ppo.algorithms import UpdateContext, get_algorithm
    from rlhf_interp.ppo.update import ppo_update
    from rlhf_interp.reward.functions import get_reward

    dist = Distributed.from_env("cpu")
    assert dist.world_size == 2, dist.world_size
    cfg = PPOConfig.load(CONFIGS / "tiny.yaml", ["batch_size=8", "minibatch_size=8", "ppo_epochs=1", "kl_coef=0.2",
                                                 "max_new_tokens=6"])

    def policy_and_head():
        hf, tok, _ = load_hf_model(models / "policy", device="cpu")
        torch.manual_seed(5)
        return bridge_from_hf(hf, tok, name="policy"), ValueHead(hf.config.hidden_size, cfg.value_head)

    ref_hf, ref_tok, _ = load_hf_model(models / "ref", device="cpu")
    reference = bridge_from_hf(ref_hf, ref_tok, name="ref")
    sampler, sampler_head = policy_and_head()
    torch.manual_seed(11)
    rollout = collect(sampler, sampler_head, lambda t, m: reference(t, attention_mask=m),
                      get_reward("length", unit="chars"), PROMPTS, max_new_tokens=cfg.max_new_tokens,
                      kl_penalty=KLPenalty.from_config(cfg))
    same = dist.gather(rollout.tokens.reshape(1, -1), dim=1)
    assert torch.equal(same[0], same[1]), "the two processes sampled different rollouts"
    # Sequences of different lengths (as EOS makes them): the processes hold different token counts.
    keep = torch.arange(rollout.gen_mask.shape[1])[None] < torch.tensor([6, 2, 5, 3, 6, 6, 4, 5])[:, None]
    mask = rollout.gen_mask * keep
    rollout = dataclasses.replace(rollout, gen_mask=mask, **{k: getattr(rollout, k) * mask for k in (
        "kl_value", "kl_score", "kl_pi_ref", "kl_ref_pi", "entropy")})

    def step(policy, head, part, advantages, returns, config, run_dist):
        params = [p for p in policy.parameters() if p.requires_grad] + list(head.parameters())
        optimizer = torch.optim.SGD(params, lr=0.05)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        ctx = UpdateContext(policy, head, config, run_dist)  # the KL in the reward: no loss term
        stats = ppo_update(get_algorithm("ppo"), ctx, optimizer, scheduler, params, part, advantages, returns,
                           [torch.arange(config.batch_size)], cfg.kl_coef, 0)
        return params, stats

    def advantages_of(part):
        return losses.penalised_advantages(part.scores, part.kl_value, part.kl_score, part.values, part.gen_mask,
                                           cfg.kl_coef, cfg.gamma, cfg.gae_lambda)

    # 1 process, whole batch.
    whole_policy, whole_head = policy_and_head()
    start = [p.detach().clone() for p in list(whole_policy.parameters()) + list(whole_head.parameters())
             if p.requires_grad]
    adv, ret = advantages_of(rollout)
    whole_params, whole_stats = step(whole_policy, whole_head, rollout, losses.whiten(adv, rollout.gen_mask), ret,
                                     cfg, None)
    # 2 processes, each its rows.
    rows = torch.arange(dist.rank * ROWS_PER_RANK, (dist.rank + 1) * ROWS_PER_RANK)
    assert dist.shard(PROMPTS) == PROMPTS[rows[0]:rows[-1] + 1]
    tensors = {f.name: getattr(rollout, f.name)[rows] for f in dataclasses.fields(rollout)
               if torch.is_tensor(getattr(rollout, f.name)) and getattr(rollout, f.name).ndim}
    part = dataclasses.replace(rollout, prompts=dist.shard(PROMPTS), completions=dist.shard(rollout.completions),
                               **tensors)
    part_adv, part_ret = advantages_of(part)
    part_adv = dist.whiten(part_adv, part.gen_mask)
    torch.testing.assert_close(part_adv, losses.whiten(adv, rollout.gen_mask)[rows], rtol=1e-5, atol=1e-6)
    dist_policy, dist_head = policy_and_head()
    dist_params, dist_stats = step(dist_policy, dist_head, part, part_adv, part_ret, dist.local_config(cfg), dist)
    # The naive alternative: each process's own gradient, averaged over processes.
    own_policy, own_head = policy_and_head()
    own_params, _ = step(own_policy, own_head, part, part_adv, part_ret, dist.local_config(cfg), None)
    naive = [p.grad.clone() for p in own_params]
    for g in naive:
        torch.distributed.all_reduce(g)
        g /= 2

    def max_rel(a, b):
        return max(float((x - y).abs().max() / y.abs().max().clamp_min(1e-12)) for x, y in zip(a, b))

    whole_grads = [p.grad for p in whole_params]
    gathered = dist.gather_rollout(part)
    result = {
        "rank": dist.rank, "world": dist.world_size,
        "tokens_per_rank": dist.gather(part.gen_mask.sum().reshape(1)).tolist(),
        "grad_max_rel_err": max_rel([p.grad for p in dist_params], whole_grads),
        "naive_grad_max_rel_err": max_rel(naive, whole_grads),
        "param_max_abs_err": max(float((a - b).abs().max()) for a, b in zip(dist_params, whole_params)),
        "step_max_abs": max(float((a - s).abs().max()) for a, s in zip(whole_params, start)),
        "grad_norm": [dist_stats["grad_norm"], whole_stats["grad_norm"]],
        "gathered_prompts": gathered.prompts, "gathered_scores_equal": torch.equal(gathered.scores, rollout.scores),
        "gathered_mask_equal": torch.equal(gathered.gen_mask, rollout.gen_mask),
    }
    if dist.is_main:
        out.write_text(json.dumps(result))


# ----------------------------------------------------------------------------------------------- tests


def test_two_process_update_equals_one_process_update_on_the_whole_batch(tmp_path):
    from helpers import save_tiny
    from rlhf_interp.ppo.distributed import launch_command

    models = tmp_path / "models"
    save_tiny(models / "ref", logit_scale=10.0, seed=7)
    save_tiny(models / "policy", logit_scale=10.0, noise=0.5, seed=7)
    out = tmp_path / "result.json"
    cmd = launch_command(2, [])
    cmd = cmd[:cmd.index("-m", cmd.index("--main_process_port"))] + [str(Path(__file__).resolve()), "equality",
                                                                        str(out), str(models)]
    _run(cmd)
    r = json.loads(out.read_text())
    assert r["world"] == 2 and r["tokens_per_rank"][0] != r["tokens_per_rank"][1]
    assert r["grad_max_rel_err"] < 1e-5, r  # the all-reduced gradient is the whole-batch gradient
    assert r["naive_grad_max_rel_err"] > 1e-3, r  # ... which averaging the processes' means would miss
    assert r["step_max_abs"] > 1e-4 and r["param_max_abs_err"] < 1e-3 * r["step_max_abs"], r
    assert r["grad_norm"][0] == pytest.approx(r["grad_norm"][1], rel=1e-5)
    assert r["gathered_prompts"] == PROMPTS and r["gathered_scores_equal"] and r["gathered_mask_equal"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_process_training_run_completes_resumes_and_loads(tmp_path):
    from rlhf_interp.bridge import load_hf_model, load_model

    run = tmp_path / "run"
    cli = [sys.executable, "-m", "rlhf_interp.cli", "train"]
    _run(cli + [str(CONFIGS / "tiny.yaml"), "--out", str(run), "--no-progress", "--processes", "2"])
    metrics = _lines(run / "metrics.jsonl")
    assert [m["phase"] for m in metrics] == [1, 2] and all(m["processes"] == 2 for m in metrics)
    samples = _lines(run / "samples.jsonl")  # the global batch (4 prompts), written once
    assert [s["phase"] for s in samples] == [1] * 4 + [2] * 4
    assert (run / "checkpoint-000002" / "trainer_state.pt").exists()

    _run(cli + ["--out", str(run), "--resume", "--set", "phases=3", "--no-progress", "--processes", "2"])
    metrics = _lines(run / "metrics.jsonl")
    assert [m["phase"] for m in metrics] == [1, 2, 3]
    state = torch.load(run / "checkpoint-000003" / "trainer_state.pt", weights_only=True)
    assert state["phase"] == 3

    bridge = load_model(run, device="cpu")  # the run dir -> its latest checkpoint, as the analyses load it
    base, _, _ = load_hf_model("tiny-test", device="cpu")
    tokens = torch.tensor([[1, 504, 3458, 282, 4649]])
    with torch.no_grad():
        assert (bridge(tokens) - base(tokens).logits).abs().max() > 1e-4  # it trained


def test_one_process_phase_on_each_device(tmp_path, device):
    """The single-process path on every device present: on CUDA the metrics carry the phase's peak memory."""
    from rlhf_interp.ppo import PPOConfig, PPOTrainer

    config = PPOConfig.load(CONFIGS / "tiny.yaml", ["phases=1", f"device={device}"])
    trainer = PPOTrainer(config, tmp_path / "run", progress=False)
    assert trainer.device.type == device and not trainer.dist.active
    (metrics,) = trainer.train()
    assert "processes" not in metrics
    if device == "cuda":
        assert metrics["cuda_max_memory_allocated_gb"] > 0
    else:
        assert "cuda_max_memory_allocated_gb" not in metrics
    assert next(trainer.hf_policy.parameters()).device.type == device


def test_launch_flags_and_batch_split_are_checked():
    from rlhf_interp.ppo import PPOConfig
    from rlhf_interp.ppo.distributed import (
        Distributed,
        launch_command,
        strip_processes_flag,
    )

    assert strip_processes_flag(["train", "c.yaml", "--processes", "2", "--out", "d", "--processes=3"]) == \
        ["train", "c.yaml", "--out", "d"]
    cmd = launch_command(2, ["train", "c.yaml"], port=29999)
    assert cmd[cmd.index("--num_processes") + 1] == "2" and cmd[-4:] == ["-m", "rlhf_interp.cli", "train", "c.yaml"]
    with pytest.raises(ValueError, match="2 or more"):
        launch_command(1, [])
    three = Distributed(torch.device("cpu"), rank=1, world_size=3)
    with pytest.raises(ValueError, match="'batch_size' = 4 must be divisible by the number of processes \\(3\\)"):
        three.check_config(PPOConfig.load(CONFIGS / "tiny.yaml"))
    two = Distributed(torch.device("cpu"), rank=1, world_size=2)
    local = two.local_config(PPOConfig.load(CONFIGS / "tiny.yaml"))
    assert (local.batch_size, local.minibatch_size) == (2, 1) and two.shard([1, 2, 3, 4]) == [3, 4]
    assert two.seed(0, 3) != Distributed(torch.device("cpu")).seed(0, 3)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if sys.argv[1] == "equality":
        _equality_worker(Path(sys.argv[2]), Path(sys.argv[3]))
