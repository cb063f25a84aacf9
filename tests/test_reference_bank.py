"""The reference bank's samples per PPO step (`kl_bank_per_step`): which bank samples a step uses, that more of
them average the sequence-level KL(ref||pi) loss over them, and that the config refuses more than the bank holds."""

from __future__ import annotations

import pytest
import torch

from rlhf_interp.ppo import PPOConfig
from rlhf_interp.ppo.reference_bank import BankBatch


def _bank(batch: int = 3, size: int = 4, gen: int = 2) -> BankBatch:
    # sample j of prompt i carries the number 10 * i + j in every field, so a row says where it came from
    ids = (10 * torch.arange(batch)[:, None] + torch.arange(size)[None, :]).float()
    tokens = ids[..., None].expand(batch, size, 1 + gen).long()
    return BankBatch(tokens, torch.ones_like(tokens), 1, torch.ones(batch, size, gen),
                     ids[..., None].expand(batch, size, gen).clone(), offset=4)


def test_one_sample_per_step_is_the_old_cycle_and_more_samples_continue_it():
    bank = _bank()
    idx = torch.tensor([2, 0])
    tokens, _, _, ref = bank.rows(idx, epoch=1)  # (offset + epoch) % size = 5 % 4 = 1
    assert tokens[:, 0].tolist() == [21, 1] and ref[:, 0].tolist() == [21.0, 1.0]
    tokens, _, gen_mask, ref = bank.rows(idx, epoch=1, per_step=3)  # samples (5 * 3 + i) % 4 = 3, 0, 1
    assert tokens[:, 0].tolist() == [23, 20, 21, 3, 0, 1]  # prompt-major: each prompt's samples together
    assert gen_mask.shape == (6, 2) and ref.shape == (6, 2)
    assert sorted(bank.rows(idx, 0, per_step=4)[0][:4, 0].tolist()) == [20, 21, 22, 23]  # the whole bank


def test_the_config_refuses_more_samples_per_step_than_the_bank_holds():
    PPOConfig(kl_direction="ref_pi", kl_placement="sequence", kl_bank_size=4, kl_bank_per_step=4).validate()
    with pytest.raises(ValueError, match="kl_bank_per_step.*larger than kl_bank_size"):
        PPOConfig(kl_direction="ref_pi", kl_placement="sequence", kl_bank_size=2, kl_bank_per_step=3).validate()


def test_more_samples_per_step_trains_and_spends_the_bank_passes(tmp_path):
    """A tiny sequence-placement run with 3 bank samples per step: finite metrics, and a KL loss that differs from
    the one-sample run's (other reference sequences enter each step)."""
    from rlhf_interp.ppo import PPOTrainer

    def run(per_step: int, name: str):
        cfg = PPOConfig.load("configs/tiny.yaml", [f"kl_bank_per_step={per_step}", "kl_direction=ref_pi",
                                                    "kl_placement=sequence", "kl_estimator=k1", "kl_bank_size=3",
                                                    "phases=1", "checkpoint_every=0", "sample_every=0",
                                                    "kl_coef=1.0"])
        return PPOTrainer(cfg, tmp_path / name, progress=False).train()[-1]

    one, three = run(1, "one"), run(3, "three")
    assert all(torch.isfinite(torch.tensor(float(three[k]))) for k in ("policy_loss", "kl_loss"))
    assert three["kl_loss"] != pytest.approx(one["kl_loss"], rel=1e-6)


def test_k_samples_per_step_give_the_gradient_of_their_average_sequence_kl(tiny):
    """The k-sample loss term's gradient, taken through the bridge (`sequence_kl_loss`), equals the true gradient of
    its target computed independently: minus the mean over the k bank sequences (all of one length) of
    grad log pi(x) per token, with log pi from a plain forward of the same weights. It also equals the mean of the
    one-sample steps' gradients over the same k sequences (the average adds no bias)."""
    import copy

    from rlhf_interp.bridge.heads import ValueHead
    from rlhf_interp.ppo.kl_penalty import KLPenalty
    from rlhf_interp.ppo.reference_bank import sequence_kl_loss

    policy = copy.deepcopy(tiny)
    head = ValueHead(policy.cfg.d_model)
    g = torch.Generator().manual_seed(0)
    batch, size, prompt, gen = 2, 3, 3, 4
    tokens = torch.randint(5, policy.cfg.d_vocab, (batch, size, prompt + gen), generator=g)
    ref_logprobs = -torch.rand(batch, size, gen, generator=g)
    bank = BankBatch(tokens, torch.ones_like(tokens), prompt, torch.ones(batch, size, gen), ref_logprobs, offset=0)
    penalty = KLPenalty(direction="ref_pi", estimator="k1", placement="sequence", coef=1.0, bank_size=size)
    idx = torch.arange(batch)
    params = [p for p in policy.parameters() if p.requires_grad]

    def grads(loss: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.flatten() for x in torch.autograd.grad(loss, params, allow_unused=False)])

    def surrogate(per_step: int, epoch: int) -> torch.Tensor:
        return grads(sequence_kl_loss(penalty, policy, head, bank, idx, epoch, value_hook="ln_final.hook_normalized",
                                      temperature=1.0, per_step=per_step))

    rows = tokens.reshape(batch * size, prompt + gen)  # every bank sequence once (per_step = size: the whole bank)
    logits = policy(rows, return_type="logits")[:, prompt - 1:-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, rows[:, prompt:, None]).squeeze(-1)
    true = grads(-logp.mean())
    torch.testing.assert_close(surrogate(size, 0), true, rtol=1e-4, atol=1e-6)
    one_at_a_time = torch.stack([surrogate(1, e) for e in range(size)]).mean(0)  # epochs 0..size-1: each sample once
    torch.testing.assert_close(one_at_a_time, true, rtol=1e-4, atol=1e-6)
    assert true.abs().max() > 1e-3  # a gradient that is there to compare
    assert not torch.allclose(surrogate(1, 0), true, rtol=1e-2, atol=1e-4)  # one sample alone is not the average
