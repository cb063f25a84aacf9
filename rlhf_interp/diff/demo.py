"""A stand-in tuned run for trying the diff without a PPO checkpoint: a few Adam steps that raise log p(".") at every
position of a few prompts (a hand-written "period" objective), saved as a run directory with checkpoints along the
way. `analyses/diff_ppo.py --demo-tuned` diffs it; its page says it is a demo."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from rlhf_interp.bridge.loading import load_hf_model, load_model
from rlhf_interp.bridge.run_dirs import checkpoint_dir
from rlhf_interp.bridge.tokens import tokenize
from rlhf_interp.checkpoints import save_hf_model
from rlhf_interp.core.seeding import mix_seed
from rlhf_interp.prompts import load_prompts


def make_demo_run(base_name: str, run_dir: Path, *, steps: int, lr: float, seed: int) -> Path:
    """Adam on -mean log p('.') over every real position of 8 prompts; checkpoints at steps/4, steps/2, steps.

    A stand-in for a PPO run when there is none (no PPO, no KL penalty): every part of a diff, trajectory included,
    runs end to end on it. Writes ``run_dir/checkpoint-NNNNNN/`` (meta.json says it is a demo) and returns
    ``run_dir``.
    """
    model, tokenizer, _ = load_hf_model(base_name, device="cpu")
    bridge_for_tokens = load_model(base_name, device="cpu")
    tokens, mask = tokenize(bridge_for_tokens, load_prompts(limit=8, seed=mix_seed(seed, 1000)))
    del bridge_for_tokens
    dot = tokenizer(".", add_special_tokens=False)["input_ids"][0]
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    save_at = sorted({max(1, steps // 4), max(1, steps // 2), steps})
    for step in range(1, steps + 1):
        logprobs = torch.log_softmax(model(input_ids=tokens, attention_mask=mask).logits, dim=-1)[..., dot]
        loss = -(logprobs * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"[demo] step {step}: mean log p('.') = {-loss.item():.3f}", file=sys.stderr)
        if step in save_at:
            save_hf_model(model, tokenizer, checkpoint_dir(run_dir, step),
                          meta={"step": step, "base_model": base_name, "demo": "gradient ascent on log p('.')",
                                "lr": lr, "mean_logp_period": -loss.item()})
    return run_dir
