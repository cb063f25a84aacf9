"""A seeded tiny PPO run killed with SIGKILL at several points, then resumed, writes exactly the files of the
uninterrupted run: samples.jsonl byte for byte, metrics.jsonl record for record (all but the three wall-clock
fields, which are timings), and every kept checkpoint's weights, value head and trainer state byte for byte.

Each run is a child process (one torch thread). The child kills itself with SIGKILL at the named point, so no
Python cleanup runs: ``finally`` blocks, atexit and signal handlers are skipped as in a real crash. The children
are forked from one server that has made the child script's own first imports (torch, the trainer: nothing it
patches later), so no run pays ~6 s of CPU for them (tests/fork_server.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fork_server import ForkServer

TIMING_KEYS = {"seconds", "rollout_seconds", "tokens_per_second"}
CHECKPOINT_FILES_SAME_BYTES = ("model.safetensors", "value_head.safetensors", "trainer_state.pt", "config.json",
                               "generation_config.json", "tokenizer.json", "tokenizer_config.json")

# What CHILD imports before it patches anything: all the server may preload (see tests/fork_server.py).
CHILD_IMPORTS = ["torch", "rlhf_interp.ppo.run_dir", "rlhf_interp.ppo.trainer", "safetensors.torch", "rlhf_interp.ppo"]
CHILD = r'''
import os, signal, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
import rlhf_interp.ppo.run_dir as run_dir_mod
import rlhf_interp.ppo.trainer as trainer_mod
import safetensors.torch
from rlhf_interp.ppo import PPOConfig, PPOTrainer

run_dir, mode, spec = sys.argv[1], sys.argv[2], sys.argv[3]
OVERRIDES = ["model=tiny-test", "reward=length", "reward_kwargs={unit: chars}", "phases=6", "batch_size=4",
             "minibatch_size=2", "max_new_tokens=8", "ppo_epochs=2", "kl_estimator=k3", "checkpoint_every=2",
             "sample_every=1", "lr=1e-4", "head_lr=1e-3", "keep_checkpoints=2", "seed=3"]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

where, _, n = spec.partition(":")
n = int(n or 0)
if where == "before_checkpoint":  # phase n logged, its checkpoint not started
    real_save = run_dir_mod.save_hf_model
    def save(hf, tok, target, **kw):
        if Path(target).name == f"checkpoint-{n:06d}":
            die()
        return real_save(hf, tok, target, **kw)
    run_dir_mod.save_hf_model = save
elif where == "mid_checkpoint":  # model.safetensors written into .tmp-checkpoint-n, the value head not yet
    real_file = safetensors.torch.save_file
    def save_file(tensors, filename, *a, **k):
        if f".tmp-checkpoint-{n:06d}" in str(filename):
            die()
        return real_file(tensors, filename, *a, **k)
    safetensors.torch.save_file = save_file
elif where == "torn_log":  # half of phase n's first sample line written, no newline
    real_append = run_dir_mod.append_jsonl
    def append(path, record):
        if Path(path).name == "samples.jsonl" and record.get("phase") == n:
            import json
            line = json.dumps(record, ensure_ascii=False)
            with open(path, "a", encoding="utf-8") as f:
                f.write(line[: len(line) // 2])
            die()
        return real_append(path, record)
    run_dir_mod.append_jsonl = append
elif where == "mid_phase":  # phase n's optimizer steps done in memory, nothing of it logged or saved
    real_update, calls = trainer_mod.ppo_update, []
    def update(*a, **k):
        out = real_update(*a, **k)
        calls.append(1)
        if len(calls) == n:
            die()
        return out
    trainer_mod.ppo_update = update
elif where == "mid_prune":  # an old checkpoint renamed to .deleting-*, not yet deleted
    real_rmtree = run_dir_mod.shutil.rmtree
    def rmtree(path, *a, **k):
        if ".deleting-" in str(path):
            die()
        return real_rmtree(path, *a, **k)
    run_dir_mod.shutil.rmtree = rmtree
elif where == "mid_trim":  # on resume: the trimmed metrics.jsonl written to its temporary file, not renamed
    real_replace = os.replace
    def replace(src, dst, *a, **k):
        if Path(dst).name == "metrics.jsonl":
            die()
        return real_replace(src, dst, *a, **k)
    os.replace = replace

if mode == "fresh":
    trainer = PPOTrainer(PPOConfig.load(None, OVERRIDES), run_dir, progress=False)
else:
    trainer = PPOTrainer.resume(run_dir, progress=False)
trainer.train()
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with ForkServer(CHILD_IMPORTS, tmp_path_factory.mktemp("server"), env=env) as forks:
        yield forks


def _run(server: ForkServer, run_dir: Path, mode: str, spec: str = "") -> int:
    done = server.run(CHILD, run_dir, mode, spec, timeout=600)
    if done.returncode not in (0, -9):
        raise AssertionError(f"child failed ({done.returncode}):\n{done.communicate()[1][-3000:]}")
    return done.returncode


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, server) -> Path:
    tmp = tmp_path_factory.mktemp("full")
    assert _run(server, tmp / "run", "fresh") == 0
    return tmp / "run"


def _metrics_without_timings(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def assert_same_outputs(full: Path, resumed: Path) -> None:
    assert (resumed / "samples.jsonl").read_bytes() == (full / "samples.jsonl").read_bytes()
    assert _metrics_without_timings(resumed) == _metrics_without_timings(full)
    assert (resumed / "config.yaml").read_bytes() == (full / "config.yaml").read_bytes()
    names = sorted(p.name for p in full.glob("checkpoint-*"))
    assert names == ["checkpoint-000004", "checkpoint-000006"]  # keep_checkpoints=2
    assert sorted(p.name for p in resumed.glob("checkpoint-*")) == names
    for name in names:
        for file in CHECKPOINT_FILES_SAME_BYTES:
            assert (resumed / name / file).read_bytes() == (full / name / file).read_bytes(), f"{name}/{file}"
        meta_a, meta_b = (json.loads((d / name / "meta.json").read_text()) for d in (full, resumed))
        for meta in (meta_a, meta_b):
            meta.pop("saved_at")
            meta["metrics"] = {k: v for k, v in meta["metrics"].items() if k not in TIMING_KEYS}
        assert meta_a == meta_b, name
    leftovers = [p.name for p in resumed.iterdir() if p.name.startswith((".tmp-", ".old-", ".deleting-"))]
    assert not leftovers, leftovers


@pytest.mark.parametrize("kills", [
    ["torn_log:3"],  # a sample line cut in half by the kill
    ["before_checkpoint:4"],  # phases 3-4 logged, their checkpoint never started
    ["mid_checkpoint:4"],  # a half-written .tmp-checkpoint-000004 (model weights only) left behind
    ["mid_phase:5"],  # weights and optimizer part-way through phase 5
    ["mid_prune:6"],  # checkpoint-000002 renamed for deletion, not deleted
    ["torn_log:5", "mid_trim"],  # killed again while resuming, in the middle of trimming the logs
], ids=lambda kills: "+".join(kills))
def test_sigkill_then_resume_writes_the_uninterrupted_files(tmp_path, server, uninterrupted, kills):
    run = tmp_path / "run"
    assert _run(server, run, "fresh", kills[0]) == -9
    for spec in kills[1:]:
        assert _run(server, run, "resume", spec) == -9
    if kills[0].startswith("mid_checkpoint"):
        assert list(run.glob(".tmp-checkpoint-000004-*")), "the kill should have left a half-written checkpoint"
    assert _run(server, run, "resume") == 0
    assert_same_outputs(uninterrupted, run)


def test_sweep_removes_what_killed_writers_left_and_nothing_else(tmp_path):
    from rlhf_interp.core.outdir import sweep_stale

    (tmp_path / ".tmp-notes").write_text("a user's file, not in core.io's naming")
    (tmp_path / ".tmp-checkpoint-000002-999999-1").mkdir()  # a checkpoint write killed (pid 999999 is gone)
    (tmp_path / f".tmp-metrics.jsonl-{os.getpid()}-1").write_text("a write still in progress")
    (tmp_path / ".old-checkpoint-000004-999999-2").mkdir()  # a swap killed between its two renames
    (tmp_path / ".deleting-checkpoint-000001-999999-3").mkdir()  # pruning killed before the delete
    swept = sorted(p.name for p in sweep_stale(tmp_path))
    assert swept == [".deleting-checkpoint-000001-999999-3", ".old-checkpoint-000004-999999-2",
                     ".tmp-checkpoint-000002-999999-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".tmp-metrics.jsonl-{os.getpid()}-1", ".tmp-notes",
                                                          "checkpoint-000004"]  # the swapped-out one is back


def test_overwrite_deletes_only_what_the_earlier_run_wrote(tmp_path):
    from rlhf_interp.core.outdir import LOCK, MARKER, OutputError, claim_dir, read_marker

    out = tmp_path / "out"
    claim_dir(out, "ablate", ["ablation_sweep.csv", "ablation_sweep.png", "config.json"])
    claim_dir(out, "ablate", ["ablation_sweep.csv"])  # a marker alone (a run that wrote nothing): nothing to mix
    for name in ("ablation_sweep.csv", "config.json", "my_notes.txt"):
        (out / name).write_text(name)
    with pytest.raises(OutputError, match="already holds the output of `ablate`"):
        claim_dir(out, "steer", ["steering_sweep.csv", "config.json"])
    with pytest.raises(OutputError, match="replaces only an earlier `steer`"):  # never another command's run
        claim_dir(out, "steer", ["steering_sweep.csv", "config.json"], overwrite=True)
    claim_dir(out, "ablate", ["ablation_sweep.csv", "config.json"], overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK, MARKER, "my_notes.txt"])
    assert read_marker(out)["command"] == "ablate"
