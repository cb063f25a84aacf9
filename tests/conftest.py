"""Shared fixtures: a tiny random model (fast unit tests) and the embedded SmolLM2 (integration)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub

import pytest
import torch

from rlhf_interp.core.threads import apply_threads, usable_cores

# The library's rule (rlhf_interp/core/threads.py): the user's OMP_NUM_THREADS wins; else the cores of this
# worker's share (at most 2) minus those other processes keep busy now, because OpenMP threads that spin-wait for
# a descheduled sibling make an oversubscribed process many times slower, not 2x.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))  # pytest-xdist: the cores are shared out
_share = max(1, min(2, usable_cores() // _workers))
_threads = apply_threads(cores=_share)
# Fixed for the session from here: child processes a test starts (CLI runs, accelerate workers) share out the
# cores too, and the trainer keeps this count rather than re-deciding per phase (tests compare runs' numbers).
os.environ.setdefault("OMP_NUM_THREADS", str(_threads))


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


# Every device this machine has: a test taking ``device`` runs once per device; CUDA is skipped, with the
# reason, where there is none (so a GPU machine runs the same tests on the GPU without any change).
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(
               not torch.cuda.is_available(), reason="no CUDA GPU here (torch.cuda.is_available() is False)"))]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """``"cpu"``, then ``"cuda"`` when a GPU is present (skipped otherwise)."""
    return request.param


# The files whose tests run longest (the README's blocks, which continue each other and so run on one worker; then
# the crash and training tests) are handed out first: pytest-xdist's `--dist loadfile` gives whole files to the
# workers in collection order, and a long file collected last would leave the other worker idle at the end.
# The order is fixed (same on every worker, as xdist requires); the tests inside each file keep theirs.
_LONG_FIRST = ("test_readme.py", "test_ppo_trainer.py", "test_algorithms.py", "test_crash_safety.py",
               "test_bad_inputs.py", "test_rm_refresh.py", "test_patching.py", "test_generation.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
