"""Every shipped config loads and validates: a renamed or removed field must be renamed in configs/ too."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf_interp.ppo import PPOConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert any(p.name == "periods.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads(path):
    config = PPOConfig.load(path)
    assert config.phases > 0
