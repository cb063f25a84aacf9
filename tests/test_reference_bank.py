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
