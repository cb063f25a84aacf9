"""Shared fixtures: a tiny random model (fast unit tests) and the embedded SmolLM2 (integration)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny():
    """tiny-test bridge shared by unit tests: read-only use only (copy before editing weights)."""
    from rlhf_interp import load_model

    return load_model("tiny-test", device="cpu")


@pytest.fixture(scope="session")
def smol():
    """The embedded SmolLM2-135M-Instruct bridge (fetched and converted on first use)."""
    from rlhf_interp import load_model

    return load_model("smollm2-135m", device="cpu")
