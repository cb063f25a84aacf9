"""Bad inputs, as a new user would try them, at the command line and in the Python API: one row per case.

CLI rows assert the exit code (2: user error or argparse; 130: Ctrl-C), that no traceback is printed, and the
key words of the one message. Rows marked ``early`` must fail before any model is loaded (the loader is made to
fail loudly for them). API rows assert the exception type and its key words. All on tiny-test.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from rlhf_interp.cli import main as cli_main

from fork_server import ForkServer
from helpers import save_tiny

CONFIGS = Path(__file__).parent.parent / "configs"
D_MODEL = 64  # tiny-test


# ----------------------------------------------------------------------------------------------
# The files a user might hand over


def _permute_tokenizer(directory: Path) -> None:
    """Swap the ids of two ordinary tokens: same size, same special tokens, different meaning of two ids."""
    path = directory / "tokenizer.json"
    data = json.loads(path.read_text())
    vocab = data["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    a, b = by_id[1000], by_id[1001]
    vocab[a], vocab[b] = 1001, 1000
    path.write_text(json.dumps(data))


def _vector_file(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    """Every bad (and a few good) input file the rows use."""
    from rlhf_interp.core.outdir import claim_dir
    from rlhf_interp.ppo import PPOConfig, PPOTrainer

    d = tmp_path_factory.mktemp("inputs")
    shutil.copy(CONFIGS / "tiny.yaml", d / "tiny.yaml")
    (d / "tiny_other.yaml").write_text((CONFIGS / "tiny.yaml").read_text().replace("kl_coef: 0.1", "kl_coef: 0.2"))
    (d / "bad.yaml").write_text("model: tiny-test\nphases: [1, 2\n")
    (d / "list.yaml").write_text("- model\n- phases\n")
    (d / "latin1.yaml").write_bytes(b"model: tiny-test\nreward: caf\xe9\n")
    (d / "confdir").mkdir()
    (d / "afile").write_text("not a directory\n")
    (d / "existing.jsonl").write_text('{"x": 1}\n')
    (d / "existing.csv").write_text("text,score\n")
    (d / "prompts_latin1.txt").write_bytes(b"Hello there\nun caf\xe9 noir\n")
    (d / "prompts_empty.txt").write_text("# only a comment\n\n")
    (d / "prompts_long.txt").write_text("Hello\n" + "word " * 1500 + "\n")
    (d / "prompts_nofield.jsonl").write_text('{"text": "hi"}\n')
    (d / "prompts_badjson.jsonl").write_text('{"prompt": "hi"\n')
    (d / "texts.txt").write_text("a short text\nanother text\n")
    # steering vectors
    gen = torch.Generator().manual_seed(0)
    ok = torch.randn(D_MODEL, generator=gen)
    _vector_file(d / "vec_ok.safetensors", {"layer.0": ok})
    _vector_file(d / "vec_two.safetensors", {"layer.0": ok, "layer.1": ok.flip(0)})
    _vector_file(d / "vec_nan.safetensors", {"layer.0": torch.full((D_MODEL,), float("nan"))})
    _vector_file(d / "vec_inf.safetensors", {"layer.0": ok.clone().index_fill_(0, torch.tensor([3]), float("inf"))})
    _vector_file(d / "vec_bool.safetensors", {"layer.0": ok > 0})
    _vector_file(d / "vec_int.safetensors", {"layer.0": (ok * 10).long()})
    _vector_file(d / "vec_wrongdim.safetensors", {"layer.0": torch.ones(10)})
    _vector_file(d / "vec_badkey.safetensors", {"weight": ok})
    (d / "vec_text.safetensors").write_text("this is not a tensor file\n")
    torch.save({"layer.0": ok}, d / "vec_pickle.pt")
    data = (d / "vec_ok.safetensors").read_bytes()
    (d / "vec_cut.safetensors").write_bytes(data[: len(data) // 2])
    # contrastive pairs and preference data
    (d / "pairs_badjson.jsonl").write_text('{"positive": "a", "negative": \n')
    (d / "pairs_missing.jsonl").write_text('{"positive": "a"}\n')
    (d / "prefs_latin1.jsonl").write_bytes(b'{"prompt": "p", "chosen": "caf\xe9", "rejected": "tea"}\n')
    (d / "prefs_badjson.jsonl").write_text('{"prompt": "p", "chosen": "a"\n')
    (d / "prefs_missing.jsonl").write_text('{"prompt": "p", "chosen": "a"}\n')
    (d / "prefs_same.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "a"}\n')
    (d / "prefs_one.jsonl").write_text('{"prompt": "p", "chosen": "a.", "rejected": "b"}\n')
    # models
    _permute_tokenizer(save_tiny(d / "permuted"))
    save_tiny(d / "small_vocab_no_tokenizer", vocab=1000, tokenizer=False)
    cut = save_tiny(d / "cut_weights")
    weights = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    (d / "not_a_model").mkdir()
    (d / "not_a_model" / "notes.txt").write_text("hello\n")
    # output directories that already belong to a run
    claim_dir(d / "steer_out", "steer", ["steering_sweep.csv", "config.json"])
    (d / "steer_out" / "steering_sweep.csv").write_text("layer,coef\n")
    claim_dir(d / "ablate_out", "ablate", ["ablation_sweep.csv", "config.json"])
    (d / "ablate_out" / "ablation_sweep.csv").write_text("target\n")
    (d / "rm_out").mkdir()
    (d / "rm_out" / "metrics.jsonl").write_text('{"epoch": 0}\n')
    (d / "ckpt_only" / "checkpoint-000001").mkdir(parents=True)
    (d / "ckpt_only" / "checkpoint-000001" / "config.json").write_text("{}")
    # a real one-phase run, a run killed before its first checkpoint, and a run with a crafted trainer state
    config = PPOConfig.load(d / "tiny.yaml", ["phases=1"])
    PPOTrainer(config, d / "run", progress=False).train()
    (d / "run_nockpt").mkdir()
    shutil.copy(d / "run" / "config.yaml", d / "run_nockpt" / "config.yaml")
    shutil.copy(d / "run" / "metrics.jsonl", d / "run_nockpt" / "metrics.jsonl")
    shutil.copytree(d / "run", d / "crafted")
    _crafted_pickle(d / "crafted" / "checkpoint-000001" / "trainer_state.pt", d / "pwned")
    # every other pickle-based file the toolkit reads, crafted the same way
    evil_bin = save_tiny(d / "evil_bin")
    (evil_bin / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": _Evil(d / "pwned")}, evil_bin / "pytorch_model.bin")
    torch.save({"hooks": ["hook_resid_post"], "mean": _Evil(d / "pwned")}, d / "evil_directions.pt")
    torch.save({"prompts": ["a"], "samples": _Evil(d / "pwned")}, d / "evil_reference_samples.pt")
    # issue 26: NaN weights, a crafted PEFT adapter, broken reward modules, enough pairs to train an RM
    nan = save_tiny(d / "nan_weights")
    from safetensors.torch import load_file, save_file

    weights = load_file(str(nan / "model.safetensors"))
    save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, str(nan / "model.safetensors"),
              metadata={"format": "pt"})
    _crafted_adapter(d / "evil_adapter", d / "pwned")
    (d / "badsyntax_mod.py").write_text("def f(texts):\n    return [1.0 for t in texts\n")
    (d / "raising_mod.py").write_text("raise RuntimeError('the config server is down')\ndef f(texts):\n    return []\n")
    for name, tag in (("prefs_many.jsonl", ""), ("prefs_other.jsonl", "x")):
        with (d / name).open("w") as f:
            for i in range(12):
                f.write(json.dumps({"prompt": "p", "chosen": f"a. b. {i}{tag}.", "rejected": f"none {i}"}) + "\n")
    _interrupted_reward_model(d / "prefs_many.jsonl", d / "rm_interrupted")
    torch.save({"epoch": 0, "records": [], "current": _Evil(d / "pwned")}, d / "evil_training_state.pt")
    (d / "badreward_mod.py").write_text(
        "calls = []\n"
        "def fail_second(texts):\n"
        "    calls.append(1)\n"
        "    if len(calls) > 1:\n"
        "        raise ValueError('the reward service is down')\n"
        "    return [float(len(t)) for t in texts]\n"
        "not_callable = 5\n")
    return d


class _Evil:
    """Unpickling this runs a shell command: what a crafted trainer_state.pt could do."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _interrupted_reward_model(data: Path, out: Path) -> None:
    """A `reward-model train --out OUT` stopped by Ctrl-C during its second epoch (its first one kept)."""
    import rlhf_interp.reward.training as training
    from rlhf_interp.cli.reward_model_cmd import TRAIN_OUTPUTS
    from rlhf_interp.core.outdir import claim_dir

    real = training.append_jsonl

    def stop(path, record):
        real(path, record)
        if record["epoch"] == 2 and record["split"] == "train":
            raise KeyboardInterrupt

    claim_dir(out, "reward-model train", TRAIN_OUTPUTS)
    training.append_jsonl = stop
    try:
        training.train_reward_model(data, "tiny-test", out, training.RewardTrainingConfig(epochs=4, patience=0),
                                    progress=False)
    except KeyboardInterrupt:
        pass
    finally:
        training.append_jsonl = real
    assert (out / training.TRAINING_STATE).exists()


def _hold_lock(directory: Path, cleanup: Callable) -> None:
    """Another process writing ``directory``: it takes the directory's lock (as the toolkit does) and waits."""
    import subprocess

    code = ("import fcntl, json, os, sys, time\n"
            "d = sys.argv[1]; os.makedirs(d, exist_ok=True)\n"
            "fd = os.open(os.path.join(d, '.rlhf-interp.lock'), os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, json.dumps({'command': 'train', 'pid': os.getpid(), 'host': 'here'}).encode())\n"
            "print('held', flush=True); time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
    cleanup(lambda: (proc.kill(), proc.wait()))
    assert proc.stdout.readline().strip() == "held"


def _tmpfs(directory: Path, size: str, cleanup: Callable) -> None:
    """A real small file system at ``directory`` (root only), so a write meets a real ENOSPC."""
    import subprocess

    directory.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip() or 'not root'}): the disk-full row "
                    f"needs a real full disk")
    cleanup(lambda: subprocess.run(["umount", "-l", str(directory)], capture_output=True))


def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != ".rlhf-interp.lock"}


def _crafted_adapter(directory: Path, target: Path) -> Path:
    """A PEFT LoRA adapter on tiny-test whose adapter_model.bin is a crafted pickle."""
    from peft import LoraConfig, get_peft_model

    from rlhf_interp.bridge import build_tiny_model

    get_peft_model(build_tiny_model(), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(
        directory, safe_serialization=False)
    config = json.loads((directory / "adapter_config.json").read_text())
    (directory / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "tiny-test"}))
    for stale in directory.glob("adapter_model.*"):
        stale.unlink()
    torch.save({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": _Evil(target)},
               directory / "adapter_model.bin")
    return directory


def _crafted_pickle(path: Path, target: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["optimizer"]["evil"] = _Evil(target)
    torch.save(state, path)


# ----------------------------------------------------------------------------------------------
# CLI rows


@dataclass
class C:
    """One CLI case: argv ({d}: the inputs, {o}: a fresh output path), exit code, key words of the message."""

    id: str
    argv: str
    code: int
    words: tuple[str, ...]
    early: bool = False  # must fail before any model is loaded
    patch: str | None = None  # a named monkeypatch (Ctrl-C, a full disk, ...)
    check: str | None = None  # a named check afterwards


TINY = "--model tiny-test --n-prompts 2 --max-new-tokens 4"
VEC = "--vector {d}/vec_ok.safetensors"
CLI_CASES = [
    # --- train: config files and --set
    C("train-config-missing", "train {d}/nope.yaml --out {o}", 2, ("does not exist",), early=True),
    C("train-config-bad-yaml", "train {d}/bad.yaml --out {o}", 2, ("not valid yaml", "line 2"), early=True),
    C("train-config-not-mapping", "train {d}/list.yaml --out {o}", 2, ("mapping",), early=True),
    C("train-config-latin1", "train {d}/latin1.yaml --out {o}", 2, ("utf-8",), early=True),
    C("train-config-directory", "train {d}/confdir --out {o}", 2, ("directory",), early=True),
    C("train-set-bad-yaml", "train {d}/tiny.yaml --out {o} --set 'reward_kwargs={{a: [1, 2}}'", 2,
      ("not valid yaml", "reward_kwargs"), early=True),
    C("train-set-no-equals", "train {d}/tiny.yaml --out {o} --set phases", 2, ("key=value",), early=True),
    C("train-set-unknown-field", "train {d}/tiny.yaml --out {o} --set learning_rate=1", 2,
      ("unknown config field", "learning_rate"), early=True),
    C("train-phases-float", "train {d}/tiny.yaml --out {o} --set phases=2.5", 2, ("phases", "whole number"),
      early=True),
    C("train-batch-size-float", "train {d}/tiny.yaml --out {o} --set batch_size=4.5", 2,
      ("batch_size", "whole number"), early=True),
    C("train-bool-maybe", "train {d}/tiny.yaml --out {o} --set stop_at_eos=maybe", 2, ("stop_at_eos", "true or false"),
      early=True),
    C("train-bool-int", "train {d}/tiny.yaml --out {o} --set stop_at_eos=1", 2, ("stop_at_eos", "true or false"),
      early=True),
    C("train-int-bool", "train {d}/tiny.yaml --out {o} --set phases=true", 2, ("phases", "not a boolean"), early=True),
    C("train-reward-kwargs-int", "train {d}/tiny.yaml --out {o} --set reward_kwargs=5", 2,
      ("reward_kwargs", "mapping"), early=True),
    C("train-reward-kwargs-int-key", "train {d}/tiny.yaml --out {o} --set 'reward_kwargs={{1: 2}}'", 2,
      ("reward_kwargs", "key 1", "string"), early=True),
    C("train-lora-targets-str", "train {d}/tiny.yaml --out {o} --set lora_targets=q_proj", 2,
      ("lora_targets", "list"), early=True),
    C("train-lora-targets-ints", "train {d}/tiny.yaml --out {o} --set lora_targets=[1,2]", 2,
      ("lora_targets", "item 0", "string"), early=True),
    C("train-top-k-float", "train {d}/tiny.yaml --out {o} --set top_k=2.5", 2, ("top_k", "whole number"), early=True),
    C("train-top-k", "train {d}/tiny.yaml --out {o} --set top_k=40", 2, ("top_k", "not supported", "temperature"),
      early=True),
    C("train-top-p", "train {d}/tiny.yaml --out {o} --set top_p=0.9", 2, ("top_p", "not supported"), early=True),
    C("train-keep-checkpoints-negative", "train {d}/tiny.yaml --out {o} --set keep_checkpoints=-1", 2,
      ("keep_checkpoints", ">= 1", "null"), early=True),
    C("train-keep-checkpoints-zero", "train {d}/tiny.yaml --out {o} --set keep_checkpoints=0", 2,
      ("keep_checkpoints", ">= 1"), early=True),
    C("train-device-cuda-without-cuda", "train {d}/tiny.yaml --out {o} --set device=cuda", 2,
      ("cuda is not available", "device=cpu"), early=True, patch="no_cuda"),
    C("train-device-gpu", "train {d}/tiny.yaml --out {o} --set device=gpu", 2, ("device", "not a device"), early=True),
    C("train-lr-nan", "train {d}/tiny.yaml --out {o} --set lr=.nan", 2, ("lr", "range"), early=True),
    C("train-lr-text", "train {d}/tiny.yaml --out {o} --set lr=fast", 2, ("lr", "number"), early=True),
    C("train-penalty-inf", "train {d}/tiny.yaml --out {o} --set missing_eos_penalty=.inf", 2,
      ("missing_eos_penalty", "finite"), early=True),
    C("train-seed-null", "train {d}/tiny.yaml --out {o} --set seed=null", 2, ("seed", "cannot be null"), early=True),
    C("train-estimator-unknown", "train {d}/tiny.yaml --out {o} --set kl_estimator=k7", 2, ("kl_estimator", "one of"),
      early=True),
    C("train-direction-unknown", "train {d}/tiny.yaml --out {o} --set kl_direction=backward", 2,
      ("kl_direction", "one of"), early=True),
    C("train-k1-in-loss", "train {d}/tiny.yaml --out {o} --set kl_estimator=k1 --set kl_placement=loss", 2,
      ("k1",), early=True),
    C("train-minibatch-not-dividing", "train {d}/tiny.yaml --out {o} --set minibatch_size=3", 2,
      ("minibatch_size", "divide"), early=True),
    C("train-gae-lambda-range", "train {d}/tiny.yaml --out {o} --set gae_lambda=1.5", 2, ("gae_lambda", "0 to 1"),
      early=True),
    C("train-empty-ref-model", "train {d}/tiny.yaml --out {o} --set \"ref_model=''\"", 2, ("ref_model",), early=True),
    C("train-empty-reward", "train {d}/tiny.yaml --out {o} --set \"reward=''\"", 2, ("reward", "empty"), early=True),
    C("train-no-config", "train --out {o}", 2, ("give a config",), early=True),
    # --- train: what the config names
    C("train-reward-unknown", "train {d}/tiny.yaml --out {o} --set reward=nonsense", 2, ("unknown reward",),
      early=True),
    C("train-reward-not-callable", "train {d}/tiny.yaml --out {o} --set reward=badreward_mod:not_callable", 2,
      ("not a function",), early=True),
    C("train-reward-no-module", "train {d}/tiny.yaml --out {o} --set reward=no_such_module_xyz:f", 2,
      ("cannot import reward",), early=True),
    C("train-model-unknown", "train {d}/tiny.yaml --out {o} --set model=not-a-model!", 2, ("unknown model",)),
    C("train-model-not-a-model-dir", "train {d}/tiny.yaml --out {o} --set model={d}/not_a_model", 2,
      ("not a model directory",)),
    C("train-prompts-missing", "train {d}/tiny.yaml --out {o} --set prompts={d}/nope.txt", 2, ("does not exist",),
      early=True),
    C("train-prompts-latin1", "train {d}/tiny.yaml --out {o} --set prompts={d}/prompts_latin1.txt", 2,
      ("utf-8", "prompts_latin1.txt:2"), early=True),
    C("train-prompts-empty", "train {d}/tiny.yaml --out {o} --set prompts={d}/prompts_empty.txt", 2,
      ("holds no prompts",), early=True),
    C("train-prompt-too-long", "train {d}/tiny.yaml --out {o} --set prompts={d}/prompts_long.txt", 2,
      ("context of 512", "prompt 1")),
    # --- train: run directories
    C("train-out-holds-run", "train {d}/tiny.yaml --out {d}/run", 2, ("already holds", "--resume", "--overwrite"),
      early=True),
    C("train-out-holds-checkpoints-only", "train {d}/tiny.yaml --out {d}/ckpt_only", 2,
      ("already holds", "checkpoint-000001"), early=True),
    C("train-out-holds-steer", "train {d}/tiny.yaml --out {d}/steer_out", 2, ("already holds", "steer"), early=True),
    C("train-out-is-file", "train {d}/tiny.yaml --out {d}/afile", 2, ("is a file",), early=True),
    C("train-out-under-file", "train {d}/tiny.yaml --out {d}/afile/run", 2, ("cannot write",), early=True),
    C("train-out-unwritable", "train {d}/tiny.yaml --out /sys/rlhf-interp-test-run", 2, ("cannot write",),
      early=True),
    C("train-resume-missing-dir", "train --resume --out {d}/nope", 2, ("no run directory",), early=True),
    C("train-resume-no-checkpoint", "train --resume --out {d}/run_nockpt", 2,
      ("no checkpoint", "before its first checkpoint", "--overwrite"), early=True),
    C("train-resume-steer-dir", "train --resume --out {d}/steer_out", 2, ("not a ppo run",), early=True),
    C("train-resume-and-overwrite", "train {d}/tiny.yaml --resume --overwrite --out {d}/run", 2,
      ("give one of them",), early=True),
    C("train-resume-changed-config", "train {d}/tiny_other.yaml --resume --out {d}/run", 2,
      ("differs", "kl_coef", "--set"), early=True),
    C("train-resume-crafted-pickle", "train --resume --out {d}/crafted", 2, ("refused unopened", "trainer_state.pt"),
      check="not_pwned"),
    C("train-ctrl-c-while-loading", "train {d}/tiny.yaml --out {o}", 130, ("interrupted",), patch="ctrl_c_on_load"),
    C("train-ctrl-c-mid-run", "train {d}/tiny.yaml --out {o} --set phases=3", 130,
      ("interrupted after phase 1 of 3", "--resume"), patch="sigint_after_phase_1", check="checkpoint_1"),
    C("train-sigterm-mid-run", "train {d}/tiny.yaml --out {o} --set phases=3", 130,
      ("interrupted after phase 1 of 3",), patch="sigterm_after_phase_1", check="checkpoint_1"),
    C("train-ctrl-c-twice", "train {d}/tiny.yaml --out {o} --set phases=3 --set checkpoint_every=2", 130,
      ("interrupted (ctrl-c)",), patch="sigint_twice_in_phase_1", check="no_checkpoint"),
    C("train-disk-full", "train {d}/tiny.yaml --out {o}", 2, ("disk is full",), patch="disk_full"),
    C("train-reward-fails-mid-run", "train {d}/tiny.yaml --out {o} --set reward=badreward_mod:fail_second --set 'reward_kwargs={{}}'", 2,
      ("badreward_mod:fail_second", "the reward service is down", "phase 1 is saved", "--resume"),
      check="checkpoint_1"),
    C("train-overwrite-restarts-a-dead-run", "train {d}/tiny.yaml --out {o} --overwrite", 0, (),
      patch="dead_run_in_out", check="fresh_run"),
    # --- steer
    C("steer-coefs-empty", f"steer {TINY} {VEC} --coefs '' --out {{o}}", 2, ("at least one", "coefficients"),
      early=True),
    C("steer-coefs-nan", f"steer {TINY} {VEC} --coefs nan --out {{o}}", 2, ("finite",), early=True),
    C("steer-coefs-inf", f"steer {TINY} {VEC} --coefs 1,inf --out {{o}}", 2, ("finite",), early=True),
    C("steer-coefs-text", f"steer {TINY} {VEC} --coefs a,b --out {{o}}", 2, ("comma-separated",), early=True),
    C("steer-layers-empty", f"steer {TINY} {VEC} --layers '' --out {{o}}", 2, ("at least one layer",), early=True),
    C("steer-layers-text", f"steer {TINY} {VEC} --layers x --out {{o}}", 2, ("layer numbers",), early=True),
    C("steer-layer-out-of-range", f"steer {TINY} {VEC} --layers 99 --out {{o}}", 2, ("does not exist", "2 layers")),
    C("steer-vector-text-file", f"steer {TINY} --vector {{d}}/vec_text.safetensors --out {{o}}", 2,
      ("not a readable safetensors",), early=True),
    C("steer-vector-pickle", f"steer {TINY} --vector {{d}}/vec_pickle.pt --out {{o}}", 2,
      ("pickles", "not read"), early=True),
    C("steer-vector-nan", f"steer {TINY} --vector {{d}}/vec_nan.safetensors --out {{o}}", 2, ("non-finite",),
      early=True),
    C("steer-vector-inf", f"steer {TINY} --vector {{d}}/vec_inf.safetensors --out {{o}}", 2, ("1 non-finite",),
      early=True),
    C("steer-vector-bool", f"steer {TINY} --vector {{d}}/vec_bool.safetensors --out {{o}}", 2,
      ("floating-point", "bool"), early=True),
    C("steer-vector-int", f"steer {TINY} --vector {{d}}/vec_int.safetensors --out {{o}}", 2,
      ("floating-point", "int64"), early=True),
    C("steer-vector-truncated", f"steer {TINY} --vector {{d}}/vec_cut.safetensors --out {{o}}", 2,
      ("not a readable safetensors",), early=True),
    C("steer-vector-bad-key", f"steer {TINY} --vector {{d}}/vec_badkey.safetensors --out {{o}}", 2,
      ("layer.l",), early=True),
    C("steer-vector-missing", f"steer {TINY} --vector {{d}}/nope.safetensors --out {{o}}", 2, ("does not exist",),
      early=True),
    C("steer-vector-directory", f"steer {TINY} --vector {{d}} --out {{o}}", 2, ("is a directory",), early=True),
    C("steer-vector-wrong-size", f"steer {TINY} --vector {{d}}/vec_wrongdim.safetensors --out {{o}}", 2,
      ("d_model is 64",)),
    C("steer-no-vector-source", f"steer {TINY} --out {{o}}", 2, ("exactly one vector source",)),
    C("steer-positive-alone", f"steer {TINY} --positive yes --out {{o}}", 2, ("go together",)),
    C("steer-pairs-bad-json", f"steer {TINY} --pairs {{d}}/pairs_badjson.jsonl --out {{o}}", 2,
      ("pairs_badjson.jsonl:1", "not valid json")),
    C("steer-pairs-missing-field", f"steer {TINY} --pairs {{d}}/pairs_missing.jsonl --out {{o}}", 2,
      ("'positive' and 'negative'",)),
    C("steer-hook-unknown", f"steer {TINY} --positive a b --negative c d --hook resid_sideways --out {{o}}", 2,
      ("unknown hook",)),
    C("steer-max-new-tokens-zero", f"steer {TINY} {VEC} --max-new-tokens 0 --out {{o}}", 2, ("at least 1",),
      early=True),
    C("steer-n-prompts-negative", f"steer {TINY} {VEC} --n-prompts -1 --out {{o}}", 2, ("--n-prompts", "at least 1"),
      early=True),
    C("steer-n-prompts-text", f"steer {TINY} {VEC} --n-prompts many --out {{o}}", 2, ("whole number",), early=True),
    C("steer-positions-unknown", f"steer {TINY} {VEC} --positions middle --out {{o}}", 2, ("invalid choice",),
      early=True),
    C("steer-out-unwritable", f"steer {TINY} {VEC} --out /sys/rlhf-interp-test-steer", 2, ("cannot write",),
      early=True),
    C("steer-out-is-file", f"steer {TINY} {VEC} --out {{d}}/afile", 2, ("is a file",), early=True),
    C("steer-into-ablate-out", f"steer {TINY} {VEC} --out {{d}}/ablate_out", 2, ("already holds", "ablate"),
      early=True),
    C("steer-save-vector-exists", f"steer {TINY} {VEC} --save-vector {{d}}/vec_two.safetensors --out {{o}}", 2,
      ("already exists", "--overwrite"), early=True),
    C("steer-save-vector-directory", f"steer {TINY} {VEC} --save-vector {{d}} --out {{o}}", 2, ("is a directory",),
      early=True),
    C("steer-prompts-latin1", f"steer {TINY} {VEC} --prompts {{d}}/prompts_latin1.txt --out {{o}}", 2,
      ("utf-8", "byte 0xe9"), early=True),
    C("steer-prompts-jsonl-no-field", f"steer {TINY} {VEC} --prompts {{d}}/prompts_nofield.jsonl --out {{o}}", 2,
      ("'prompt' field",), early=True),
    C("steer-prompts-jsonl-bad", f"steer {TINY} {VEC} --prompts {{d}}/prompts_badjson.jsonl --out {{o}}", 2,
      ("prompts_badjson.jsonl:1",), early=True),
    C("steer-prompt-too-long", f"steer {TINY} {VEC} --prompts {{d}}/prompts_long.txt --out {{o}}", 2,
      ("context of 512",)),
    C("steer-reward-unknown", f"steer {TINY} {VEC} --reward nonsense --out {{o}}", 2, ("unknown reward",)),
    # --- ablate
    C("ablate-no-target", f"ablate {TINY} --out {{o}}", 2, ("exactly one of",), early=True),
    C("ablate-two-targets", f"ablate {TINY} --targets 0.attn --layers 0 --out {{o}}", 2, ("exactly one of",),
      early=True),
    C("ablate-targets-empty", f"ablate {TINY} --targets ';' --out {{o}}", 2, ("names no target",), early=True),
    C("ablate-targets-garbled", f"ablate {TINY} --targets x.y --out {{o}}", 2, ("cannot read ablation target",),
      early=True),
    C("ablate-target-layer-out-of-range", f"ablate {TINY} --targets 99.attn --out {{o}}", 2, ("layer 99", "2 layers")),
    C("ablate-head-out-of-range", f"ablate {TINY} --targets 0.99 --out {{o}}", 2, ("head 99",)),
    C("ablate-layers-empty", f"ablate {TINY} --layers '' --out {{o}}", 2, ("at least one layer",), early=True),
    C("ablate-reference-prompts-empty", f"ablate {TINY} --targets 0.attn --kind mean --reference-prompts "
      f"{{d}}/prompts_empty.txt --out {{o}}", 2, ("holds no prompts",), early=True),
    C("ablate-kind-unknown", f"ablate {TINY} --targets 0.attn --kind random --out {{o}}", 2, ("invalid choice",),
      early=True),
    C("ablate-into-steer-out", f"ablate {TINY} --targets 0.attn --out {{d}}/steer_out", 2, ("already holds", "steer"),
      early=True),
    # --- measure
    C("measure-nothing", f"measure {TINY} --out {{o}}", 2, ("nothing to measure",), early=True),
    C("measure-steer-nan", f"measure {TINY} --steer {{d}}/vec_nan.safetensors --out {{o}}", 2, ("non-finite",),
      early=True),
    C("measure-coef-nan", f"measure {TINY} --steer {{d}}/vec_ok.safetensors --coef nan --out {{o}}", 2, ("finite",),
      early=True),
    C("measure-coef-inf", f"measure {TINY} --steer {{d}}/vec_ok.safetensors --coef inf --out {{o}}", 2, ("finite",),
      early=True),
    C("measure-layers-float", f"measure {TINY} --steer {{d}}/vec_ok.safetensors --layers 1.0 --out {{o}}", 2,
      ("layer numbers",), early=True),
    C("measure-direction-needs-one-layer", f"measure {TINY} --ablate-direction {{d}}/vec_two.safetensors --out {{o}}",
      2, ("needs one layer",), early=True),
    C("measure-permuted-tokenizer", f"measure {TINY} --reference {{d}}/permuted --out {{o}}", 2,
      ("tokenizer vocab hash", "same tokenizer")),
    C("measure-reference-unknown", f"measure {TINY} --reference not-a-model! --out {{o}}", 2, ("unknown model",)),
    C("measure-n-prompts-zero", f"measure {TINY} --reference tiny-test --n-prompts 0 --out {{o}}", 2,
      ("at least 1",), early=True),
    C("measure-out-unwritable", f"measure {TINY} --reference tiny-test --out /sys/rlhf-interp-test-measure", 2,
      ("cannot write",), early=True),
    # --- diff / patch
    C("diff-permuted-tokenizer", "diff --base tiny-test --tuned {d}/permuted --n-prompts 2 --out {o}", 2,
      ("cannot diff", "tokenizer vocab hash")),
    C("diff-trajectory-without-checkpoints", "diff --base tiny-test --tuned {d}/permuted --trajectory --out {o}", 2,
      ("--trajectory needs",), early=True),
    C("diff-out-is-file", "diff --base tiny-test --tuned {d}/permuted --out {d}/afile", 2, ("is a file",), early=True),
    C("diff-samples-negative", "diff --base tiny-test --tuned {d}/permuted --samples -1 --out {o}", 2, ("--samples",),
      early=True),
    C("diff-n-prompts-zero", "diff --base tiny-test --tuned {d}/permuted --n-prompts 0 --out {o}", 2, ("at least 1",),
      early=True),
    C("diff-tuned-missing", "diff --base tiny-test --tuned {d}/nope --out {o}", 2, ("unknown model",)),
    C("diff-tuned-truncated-weights", "diff --base tiny-test --tuned {d}/cut_weights --out {o}", 2,
      ("unreadable", "cut short")),
    C("diff-tuned-crafted-pytorch-model-bin", "diff --base tiny-test --tuned {d}/evil_bin --out {o}", 2,
      ("refused unopened", "safetensors")),
    C("diff-tuned-no-tokenizer-other-vocab", "diff --base tiny-test --tuned {d}/small_vocab_no_tokenizer --out {o}",
      2, ("no tokenizer files", "1000")),
    C("patch-empty-reward-substring", "patch --base tiny-test --tuned {d}/permuted --reward-substring '' --out {o}",
      2, ("reward-substring",), early=True),
    C("patch-trajectory-without-checkpoints", "patch --base tiny-test --tuned {d}/permuted --trajectory --out {o}", 2,
      ("--trajectory needs",), early=True),
    # --- reward models
    C("synth-out-exists", "reward-model synth --reward length --model tiny-test --n-pairs 2 --out {d}/existing.jsonl",
      2, ("already exists", "--overwrite"), early=True),
    C("synth-n-pairs-zero", "reward-model synth --reward length --n-pairs 0 --out {o}.jsonl", 2, ("at least 1",),
      early=True),
    C("synth-reward-unknown", "reward-model synth --reward nonsense --n-pairs 2 --out {o}.jsonl", 2,
      ("unknown reward",), early=True),
    C("synth-reward-arg-no-equals", "reward-model synth --reward length --reward-arg chars --n-pairs 2 --out {o}.jsonl",
      2, ("key=value",), early=True),
    C("synth-temperature-nan", "reward-model synth --reward length --temperature nan --n-pairs 2 --out {o}.jsonl", 2,
      ("finite",), early=True),
    C("rm-train-data-latin1", "reward-model train {d}/prefs_latin1.jsonl --base tiny-test --out {o}", 2,
      ("prefs_latin1.jsonl:1", "utf-8"), early=True),
    C("rm-train-data-bad-json", "reward-model train {d}/prefs_badjson.jsonl --base tiny-test --out {o}", 2,
      ("not valid json",), early=True),
    C("rm-train-data-missing-key", "reward-model train {d}/prefs_missing.jsonl --base tiny-test --out {o}", 2,
      ("missing key", "rejected"), early=True),
    C("rm-train-data-same-texts", "reward-model train {d}/prefs_same.jsonl --base tiny-test --out {o}", 2,
      ("same text",), early=True),
    C("rm-train-one-pair", "reward-model train {d}/prefs_one.jsonl --base tiny-test --out {o}", 2,
      ("at least 2",), early=True),
    C("rm-train-out-holds-rm", "reward-model train {d}/prefs_one.jsonl --base tiny-test --out {d}/rm_out", 2,
      ("already holds", "--overwrite"), early=True),
    C("rm-train-val-fraction-nan", "reward-model train {d}/prefs_one.jsonl --base tiny-test --val-fraction nan "
      "--out {o}", 2, ("finite",), early=True),
    C("rm-score-missing-model", "reward-model score {d}/nope --texts {d}/texts.txt", 2, ("not a reward model",),
      early=True),
    C("rm-score-out-exists", "reward-model score {d}/nope --texts {d}/texts.txt --out {d}/existing.csv", 2,
      ("already exists",), early=True),
    # --- issue 26: inputs are never outputs (refused before --out is touched; the input left intact)
    C("diff-out-is-its-tuned-run", "diff --base tiny-test --tuned {o} --out {o} --overwrite", 2,
      ("is the input --tuned", "never writes where it reads"), early=True, patch="run_in_out", check="out_run_intact"),
    C("diff-out-inside-tuned-run", "diff --base tiny-test --tuned {o} --out {o}/diff --overwrite", 2,
      ("is inside the input --tuned",), early=True, patch="run_in_out", check="out_run_intact"),
    C("diff-out-contains-prompts", "diff --base tiny-test --tuned tiny-test --prompts {d}/texts.txt --out {d} "
      "--overwrite", 2, ("contains the input --prompts",), early=True),
    C("patch-out-is-tuned", "patch --base tiny-test --tuned {o} --out {o} --overwrite", 2, ("is the input --tuned",),
      early=True, patch="run_in_out", check="out_run_intact"),
    C("measure-out-is-reference", f"measure {TINY} --reference {{o}} --out {{o}} --overwrite", 2,
      ("is the input --reference",), early=True, patch="run_in_out", check="out_run_intact"),
    C("steer-out-contains-vector", f"steer {TINY} --vector {{o}}/v.safetensors --out {{o}} --overwrite", 2,
      ("contains the input --vector",), early=True, patch="vector_in_out"),
    C("train-out-is-its-model", "train {d}/tiny.yaml --set model={o}/checkpoint-000001 --out {o} --overwrite", 2,
      ("contains the input config field model",), early=True, patch="run_in_out", check="out_run_intact"),
    C("train-out-contains-config", "train {d}/tiny.yaml --out {d} --overwrite", 2, ("contains the input config",),
      early=True),
    C("synth-out-is-prompts", "reward-model synth --reward length --prompts {d}/texts.txt --n-pairs 2 "
      "--out {d}/texts.txt --overwrite", 2, ("is the input --prompts",), early=True),
    C("score-out-is-texts", "reward-model score {d}/rm_out --texts {d}/texts.txt --out {d}/texts.txt --overwrite", 2,
      ("is the input --texts",), early=True),
    C("rm-train-out-contains-data", "reward-model train {d}/prefs_many.jsonl --base tiny-test --out {d} --overwrite",
      2, ("contains the input data",), early=True),
    C("diff-overwrite-a-training-run", "diff --base tiny-test --tuned {d}/permuted --out {o} --overwrite", 2,
      ("holds the output of `train`", "replaces only an earlier `diff`"), early=True, patch="run_in_out",
      check="out_run_intact"),
    C("train-overwrite-a-steer-run", "train {d}/tiny.yaml --out {d}/steer_out --overwrite", 2,
      ("holds the output of `steer`", "replaces only an earlier `train`"), early=True),
    # --- issue 26: one writer per directory (another real process holds the lock)
    C("train-out-locked", "train {d}/tiny.yaml --out {o}", 2, ("being written by", "one writer"), early=True,
      patch="locked_by_other"),
    C("train-resume-locked", "train --resume --out {o}", 2, ("being written by", "one writer"), early=True,
      patch="run_in_out_locked", check="out_run_intact"),
    C("train-resume-set-locked", "train {d}/tiny.yaml --resume --out {o} --set phases=3", 2, ("being written by",),
      early=True, patch="run_in_out_locked", check="out_run_intact"),
    C("diff-out-locked", "diff --base tiny-test --tuned {d}/permuted --out {o}", 2, ("being written by",), early=True,
      patch="locked_by_other"),
    C("steer-out-locked", f"steer {TINY} {VEC} --out {{o}}", 2, ("being written by",), early=True,
      patch="locked_by_other"),
    C("rm-train-out-locked", "reward-model train {d}/prefs_many.jsonl --base tiny-test --out {o}", 2,
      ("being written by",), early=True, patch="locked_by_other"),
    C("rm-train-resume-locked", "reward-model train {d}/prefs_many.jsonl --base tiny-test --out {o} --resume", 2,
      ("being written by",), early=True, patch="rm_interrupted_in_out_locked", check="rm_state_kept"),
    # --- issue 26: interrupted work keeps what it had, and says so
    C("rm-train-ctrl-c-mid-run", "reward-model train {d}/prefs_many.jsonl --base tiny-test --epochs 4 --patience 0 "
      "--no-progress --out {o}", 130, ("interrupted (ctrl-c)", "kept: 1 of 4 epoch(s)", "--resume"),
      patch="rm_sigint_after_epoch_1", check="rm_state_kept"),
    C("rm-train-sigterm-mid-run", "reward-model train {d}/prefs_many.jsonl --base tiny-test --epochs 4 --patience 0 "
      "--no-progress --out {o}", 130, ("interrupted (sigterm)", "kept: 1 of 4 epoch(s)", "--resume"),
      patch="rm_sigterm_after_epoch_1", check="rm_state_kept"),
    C("rm-train-rerun-after-interrupt", "reward-model train {d}/prefs_many.jsonl --base tiny-test --out {o}", 2,
      ("already holds", "--resume"), early=True, patch="rm_interrupted_in_out"),
    C("rm-train-resume-nothing", "reward-model train {d}/prefs_many.jsonl --base tiny-test --out {d}/steer_out "
      "--resume", 2, ("not a reward-model training",), early=True),
    C("rm-train-resume-no-state", "reward-model train {d}/prefs_many.jsonl --base tiny-test --out {o} --resume", 2,
      ("no directory",), early=True),
    C("rm-train-resume-other-data", "reward-model train {d}/prefs_other.jsonl --base tiny-test --out {o} --resume "
      "--no-progress", 2, ("data_sha256", "same command"), early=True, patch="rm_interrupted_in_out"),
    C("rm-train-resume-other-lr", "reward-model train {d}/prefs_many.jsonl --base tiny-test --lr 0.5 --out {o} "
      "--resume --no-progress", 2, ("lr (2e-05 -> 0.5)",), early=True, patch="rm_interrupted_in_out"),
    C("diff-sigterm-while-loading", "diff --base tiny-test --tuned {d}/permuted --out {o}", 130,
      ("interrupted (sigterm)", "partial output", "--overwrite"), patch="sigterm_on_load"),
    C("measure-sigterm-while-loading", f"measure {TINY} --reference tiny-test --out {{o}}", 130,
      ("interrupted (sigterm)", "--overwrite"), patch="sigterm_on_load"),
    C("synth-ctrl-c-while-loading", "reward-model synth --reward length --model tiny-test --n-pairs 2 --out {o}.jsonl",
      130, ("interrupted (ctrl-c)", "nothing was written"), patch="ctrl_c_on_model_load"),
    # --- issue 26: resume means one thing
    C("train-resume-same-command-with-set", "train {d}/tiny.yaml --set phases=1 --resume --out {o}", 0, (),
      patch="run_in_out", check="phases_1"),
    C("train-resume-same-command-extended", "train {d}/tiny.yaml --set phases=2 --resume --out {o}", 0, (),
      patch="run_in_out", check="phases_1_2"),
    C("train-resume-kl-coef-takes-effect", "train --resume --out {o} --set phases=2 --set kl_coef=5.0", 0, (),
      patch="run_in_out", check="kl_coef_5"),
    C("train-resume-lr-refused", "train --resume --out {o} --set lr=0.5", 2,
      ("lr (0.0001 -> 0.5)", "cannot take effect", "another --out"), early=True, patch="run_in_out",
      check="out_run_intact"),
    C("train-resume-edited-config-yaml", "train --resume --out {o}", 2, ("gamma (1.0 -> 0.5)", "config.yaml"),
      early=True, patch="run_in_out_gamma_edited"),
    # --- issue 26: model pairs checked the same way everywhere; non-finite weights are an error
    C("train-ref-model-permuted-tokenizer", "train {d}/tiny.yaml --out {o} --set ref_model={d}/permuted", 2,
      ("ref_model", "tokenizer vocab hash")),
    C("train-ref-model-nan-weights", "train {d}/tiny.yaml --out {o} --set ref_model={d}/nan_weights", 2,
      ("non-finite weights", "nan_weights")),
    C("train-model-nan-weights", "train {d}/tiny.yaml --out {o} --set model={d}/nan_weights", 2,
      ("non-finite weights",)),
    C("measure-reference-nan-weights", f"measure {TINY} --reference {{d}}/nan_weights --out {{o}}", 2,
      ("non-finite weights", "nan_weights")),
    C("diff-tuned-nan-weights", "diff --base tiny-test --tuned {d}/nan_weights --n-prompts 2 --out {o}", 2,
      ("non-finite weights",)),
    C("steer-model-nan-weights", f"steer --model {{d}}/nan_weights --n-prompts 2 {VEC} --out {{o}}", 2,
      ("non-finite weights",)),
    # --- issue 26: every error names the thing, the file and the fix
    C("train-reward-syntax-error", "train {d}/tiny.yaml --out {o} --set reward=badsyntax_mod:f --set "
      "'reward_kwargs={{}}'", 2, ("badsyntax_mod:f", "badsyntax_mod.py", "line 2"), early=True),
    C("train-reward-relative-module", "train {d}/tiny.yaml --out {o} --set reward=.rel:f", 2,
      ("'.rel:f'", "relative"), early=True),
    C("train-reward-module-raises-on-import", "train {d}/tiny.yaml --out {o} --set reward=raising_mod:f", 2,
      ("raising_mod:f", "the config server is down", "in your module"), early=True),
    C("synth-reward-syntax-error", "reward-model synth --reward badsyntax_mod:f --n-pairs 2 --out {o}.jsonl", 2,
      ("badsyntax_mod", "line 2"), early=True),
    C("diff-tuned-crafted-adapter-bin", "diff --base tiny-test --tuned {d}/evil_adapter --out {o}", 2,
      ("adapter_model.bin", "refused unopened", "adapter_model.safetensors"), check="not_pwned"),
    C("train-disk-full-safetensors-error", "train {d}/tiny.yaml --out {o}", 2, ("disk is full", "writing"),
      patch="disk_full_safetensors"),
    C("train-permission-denied-safetensors-error", "train {d}/tiny.yaml --out {o}", 2,
      ("permission denied", "writing"), patch="denied_safetensors"),
    C("train-disk-full-real-tmpfs", "train {d}/tiny.yaml --out {o}", 2, ("disk is full", "writing"),
      patch="tmpfs_out", check="message_names_out"),
    C("diff-disk-full-real-tmpfs", "diff --base tiny-test --tuned tiny-test --n-prompts 2 --out {o}", 2,
      ("disk is full",), patch="tmpfs_out_tiny", check="message_names_out"),
    C("rm-train-disk-full-real-tmpfs", "reward-model train {d}/prefs_many.jsonl --base tiny-test --epochs 2 "
      "--no-progress --out {o}", 2, ("disk is full",), patch="tmpfs_out_tiny", check="message_names_out"),
    # --- models, report, --debug
    C("models-describe-max-new-tokens-negative", "models describe tiny-test --max-new-tokens -1", 2, ("at least 1",),
      early=True),
    C("models-describe-unknown", "models describe not-a-model!", 2, ("unknown model",)),
    C("models-fetch-unknown", "models fetch nope", 2, ("not an embedded model",), early=True),
    C("report-root-missing", "report --root {d}/nope --only x", 2, ("not a directory",), early=True),
    C("command-unknown", "transmogrify", 2, ("invalid choice",), early=True),
    C("debug-flag-after-command", "train {d}/nope.yaml --out {o} --debug", -1, (), patch="expect_traceback"),
    C("debug-flag-before-command", "--debug steer --model tiny-test --coefs '' --vector x --out {o}", -1, (),
      patch="expect_traceback"),
]


def _run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli_main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _apply_patch(name: str | None, monkeypatch, d: Path, out: Path, cleanup: Callable = lambda f: None) -> None:
    import rlhf_interp.ppo.config as config_mod
    import rlhf_interp.ppo.run_dir as run_dir_mod

    if name == "no_cuda":  # as on a CPU-only machine
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    elif name == "ctrl_c_on_load":
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt
        monkeypatch.setattr(config_mod.PPOConfig, "load", classmethod(lambda cls, *a, **k: interrupted()))
    elif name in ("sigint_after_phase_1", "sigterm_after_phase_1", "sigint_twice_in_phase_1"):
        real_log = run_dir_mod.RunLoggers.log
        signals = {"sigint_after_phase_1": [signal.SIGINT], "sigterm_after_phase_1": [signal.SIGTERM],
                   "sigint_twice_in_phase_1": [signal.SIGINT, signal.SIGINT]}[name]

        def log(self, phase, metrics, rollout):
            real_log(self, phase, metrics, rollout)
            if phase == 1:  # the user presses Ctrl-C (or the scheduler sends SIGTERM) during phase 1
                for sig in signals:
                    os.kill(os.getpid(), sig)
        monkeypatch.setattr(run_dir_mod.RunLoggers, "log", log)
    elif name == "disk_full":
        import safetensors.torch

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[1]) if len(args) > 1 else None)
        monkeypatch.setattr(safetensors.torch, "save_file", full)
    elif name in ("run_in_out", "run_in_out_locked", "run_in_out_gamma_edited"):  # a one-phase run in --out
        shutil.copytree(d / "run", out, ignore=shutil.ignore_patterns(".rlhf-interp.lock"))
        if name == "run_in_out_locked":
            _hold_lock(out, cleanup)
        if name == "run_in_out_gamma_edited":  # the user edits the run's config.yaml
            text = (out / "config.yaml").read_text()
            assert "gamma: 1.0" in text
            (out / "config.yaml").write_text(text.replace("gamma: 1.0", "gamma: 0.5"))
    elif name == "vector_in_out":
        out.mkdir()
        shutil.copy(d / "vec_ok.safetensors", out / "v.safetensors")
    elif name == "locked_by_other":
        _hold_lock(out, cleanup)
    elif name in ("rm_interrupted_in_out", "rm_interrupted_in_out_locked"):
        shutil.copytree(d / "rm_interrupted", out, ignore=shutil.ignore_patterns(".rlhf-interp.lock"))
        if name.endswith("_locked"):
            _hold_lock(out, cleanup)
    elif name in ("rm_sigint_after_epoch_1", "rm_sigterm_after_epoch_1"):
        import rlhf_interp.reward.training as training

        real_append = training.append_jsonl
        sig = signal.SIGINT if name == "rm_sigint_after_epoch_1" else signal.SIGTERM
        if sig == signal.SIGINT:  # Ctrl-C raises KeyboardInterrupt, as in a fresh process, whatever ran before here
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)
            cleanup(lambda: signal.signal(signal.SIGINT, previous))

        def append(path, record):
            real_append(path, record)
            if record["epoch"] == 2 and record["split"] == "train":  # epoch 1 is checkpointed by now
                os.kill(os.getpid(), sig)
        monkeypatch.setattr(training, "append_jsonl", append)
    elif name in ("sigterm_on_load", "ctrl_c_on_model_load"):
        import rlhf_interp.bridge as bridge

        def load_model(*args, **kwargs):
            if name == "ctrl_c_on_model_load":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)
        monkeypatch.setattr(bridge, "load_model", load_model)
    elif name in ("disk_full_safetensors", "denied_safetensors"):  # what real safetensors raises (not OSError)
        import safetensors.torch
        from safetensors import SafetensorError

        message = ("Error while serializing: I/O error: No space left on device (os error 28)"
                   if name == "disk_full_safetensors" else
                   "Error while serializing: I/O error: Permission denied (os error 13)")

        def fail(*args, **kwargs):
            raise SafetensorError(message)
        monkeypatch.setattr(safetensors.torch, "save_file", fail)
    elif name == "tmpfs_out":  # room for config and logs, not for a checkpoint
        _tmpfs(out, "2m", cleanup)
    elif name == "tmpfs_out_tiny":
        _tmpfs(out, "24k", cleanup)
    elif name == "dead_run_in_out":  # a run killed before its first checkpoint
        shutil.copytree(d / "run_nockpt", out)
        (out / ".tmp-checkpoint-000001-999999-1").mkdir()


def _check(name: str | None, d: Path, out: Path, err: str = "") -> None:
    phases = (lambda: [json.loads(x)["phase"] for x in (out / "metrics.jsonl").read_text().splitlines()])
    if name == "out_run_intact":  # the run in --out, byte for byte as it was
        assert _tree(out) == _tree(d / "run") | ({"config.yaml": (out / "config.yaml").read_bytes()}
                                                 if "gamma" in err else {})
    elif name == "rm_state_kept":
        assert (out / "training_state.pt").exists() and not (out / "model").exists()
    elif name == "phases_1":
        assert phases() == [1]
    elif name == "phases_1_2":
        assert phases() == [1, 2] and (out / "checkpoint-000002").is_dir()
    elif name == "kl_coef_5":  # config.yaml, the restored controller and the next checkpoint all say 5.0
        import yaml

        assert yaml.safe_load((out / "config.yaml").read_text())["kl_coef"] == 5.0
        state = torch.load(out / "checkpoint-000002" / "trainer_state.pt", weights_only=True)
        assert state["kl_controller"]["coef"] == 5.0
        assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1]).get("kl_coef", 5.0) == 5.0
    elif name == "message_names_out":
        assert str(out) in " ".join(err.split()), err
    elif name == "not_pwned":
        assert not (d / "pwned").exists(), "the crafted pickle ran code"
    elif name == "checkpoint_1":
        assert (out / "checkpoint-000001" / "trainer_state.pt").exists()
        assert not (out / "checkpoint-000002").exists()
        assert [json.loads(x)["phase"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    elif name == "no_checkpoint":  # stopped at once: nothing half-done was saved
        assert not list(out.glob("checkpoint-*")) and not list(out.glob(".tmp-*"))
    elif name == "fresh_run":
        assert [json.loads(x)["phase"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
        assert not list(out.glob(".tmp-*"))


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_bad_input(case: C, d: Path, tmp_path: Path, capsys, monkeypatch, request):
    import rlhf_interp.bridge.loading as loading

    out = tmp_path / "out"
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("RLHF_INTERP_DEBUG", raising=False)
    if case.early:
        def no_model(*args, **kwargs):
            raise AssertionError("a model was loaded before the input was checked")
        monkeypatch.setattr(loading, "load_hf_model", no_model)
        monkeypatch.setattr("rlhf_interp.ppo.trainer.load_hf_model", no_model)
    _apply_patch(case.patch, monkeypatch, d, out, request.addfinalizer)
    import shlex

    argv = shlex.split(case.argv.format(d=d, o=out))
    if case.patch == "expect_traceback":
        with pytest.raises(Exception):  # --debug: the exception itself reaches the caller
            cli_main(argv)
        return
    if "--no-progress" not in argv and argv[0] == "train":
        argv.append("--no-progress")
    code, _, err = _run_cli(argv, capsys)
    assert code == case.code, err
    assert "Traceback" not in err
    text = " ".join(err.split()).lower()
    for word in case.words:
        assert word.lower() in text, f"{word!r} not in: {err}"
    if code == 2 and "usage:" not in err:  # one message from the command (progress bars may come before it)
        assert any(line.startswith("rlhf-interp ") for line in err.replace("\r", "\n").splitlines()), err
    assert not (d / "pwned").exists(), "a crafted file ran code"
    _check(case.check, d, out, err)


def test_debug_env_shows_the_traceback(d, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLHF_INTERP_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        cli_main(["train", str(d / "nope.yaml"), "--out", str(tmp_path / "o")])


# ----------------------------------------------------------------------------------------------
# API rows


@dataclass
class A:
    id: str
    call: Callable[[Path, Any], Any]  # (inputs dir, tiny bridge) -> anything; must raise
    error: type[BaseException]
    words: tuple[str, ...] = field(default_factory=tuple)


def _steer(vector, layers=0, coef=1.0, **kw):
    from rlhf_interp.edits import Steering

    return lambda d, tiny: Steering(vector, layers, coef, **kw).on(tiny)


def _config(**fields):
    from rlhf_interp.ppo import PPOConfig

    return lambda d, tiny: PPOConfig(**{"model": "tiny-test", **fields}).validate()


def _trainer_into(run: str, **kw):
    def call(d, tiny):
        from rlhf_interp.ppo import PPOConfig, PPOTrainer

        PPOTrainer(PPOConfig.load(d / "tiny.yaml"), d / run, progress=False, **kw).train()
    return call


def _resume(run: str, overrides: list[str] | None = None):
    def call(d, tiny):
        from rlhf_interp.ppo import PPOTrainer

        PPOTrainer.resume(d / run, overrides=overrides, progress=False)
    return call


def _kl_shift(reference: str | None = None, prompts=("Hello",)):
    def call(d, tiny):
        from rlhf_interp.bridge import load_model
        from rlhf_interp.measure import kl_shift

        ref = load_model(str(d / reference), device="cpu") if reference else None
        kl_shift(tiny, None, list(prompts), reference=ref)
    return call


def _sample(**kw):
    def call(d, tiny):
        from rlhf_interp.measure.sequences import sample

        sample(tiny, None, ["Hello"], **kw)
    return call


def _vector_load(name: str):
    def call(d, tiny):
        from rlhf_interp.edits import SteeringVector

        SteeringVector.load(d / name)
    return call


def _prompts(source: str | None = None, **kw):
    def call(d, tiny):
        from rlhf_interp.prompts import load_prompts

        load_prompts(str(d / source) if source else None, **kw)
    return call


def _claim(target: str, command: str = "steer", outputs=("steering_sweep.csv",), inputs=None, **kw):
    def call(d, tiny):
        from rlhf_interp.core.outdir import claim_dir

        claim_dir(target.format(d=d), command, list(outputs), **kw,
                  inputs={k: v.format(d=d) for k, v in (inputs or {}).items()})
    return call


def _trainer_with(*overrides: str):
    def call(d, tiny):
        from rlhf_interp.ppo import PPOConfig, PPOTrainer

        config = PPOConfig.load(d / "tiny.yaml", [o.format(d=d) for o in overrides])
        PPOTrainer(config, d / "never_written", progress=False)
    return call


def _rm_train(out: str, base: str = "tiny-test", **kw):
    def call(d, tiny):
        from rlhf_interp.reward.training import RewardTrainingConfig, train_reward_model

        train_reward_model(d / "prefs_many.jsonl", base.format(d=d), d / out,
                           RewardTrainingConfig(epochs=4, patience=0), progress=False, **kw)
    return call


def _kl_shift_nan_reference(d, tiny):
    from rlhf_interp.bridge import load_model
    from rlhf_interp.measure import kl_shift

    reference = load_model("tiny-test", device="cpu")
    with torch.no_grad():
        next(p for n, p in reference.named_parameters() if "norm" in n).fill_(float("nan"))
    kl_shift(tiny, None, ["Hello there"], reference=reference)


def _trim_bad_middle_line(d, tiny):
    from rlhf_interp.core.io import trim_jsonl

    path = d / "middle.jsonl"
    path.write_text('{"phase": 1}\n{"phase": 2\n{"phase": 3}\n')
    trim_jsonl(path, lambda r: r["phase"] <= 1)


NAN_VEC = torch.full((D_MODEL,), float("nan"))
OK_VEC = torch.ones(D_MODEL)

API_CASES = [
    # config
    A("config-phases-float", _config(phases=2.5), ValueError, ("phases", "whole number")),
    A("config-stop-at-eos-string", _config(stop_at_eos="maybe"), ValueError, ("true or false",)),
    A("config-reward-kwargs-list", _config(reward_kwargs=[1]), ValueError, ("mapping",)),
    A("config-lora-targets-str", _config(lora_targets="q_proj"), ValueError, ("list",)),
    A("config-keep-checkpoints-negative", _config(keep_checkpoints=-1), ValueError, ("keep_checkpoints",)),
    A("config-top-k", _config(top_k=5), ValueError, ("not supported in ppo",)),
    A("config-model-int", _config(model=5), ValueError, ("model", "string")),
    A("config-lr-bool", _config(lr=True), ValueError, ("lr", "not a boolean")),
    A("config-from-dict-int-key", lambda d, t: __import__("rlhf_interp.ppo", fromlist=["PPOConfig"]).PPOConfig
      .from_dict({1: 2}), ValueError, ("unknown config field",)),
    A("config-device-gpu", _config(device="gpu"), ValueError, ("not a device",)),
    # trainer and run directories
    A("trainer-into-existing-run", _trainer_into("run"), ValueError, ("already holds", "overwrite")),
    A("trainer-into-checkpoints-only", _trainer_into("ckpt_only"), ValueError, ("already holds",)),
    A("trainer-reward-not-callable", lambda d, t: __import__("rlhf_interp.ppo", fromlist=["PPOTrainer"]).PPOTrainer(
        __import__("rlhf_interp.ppo", fromlist=["PPOConfig"]).PPOConfig.load(d / "tiny.yaml"), d / "x", reward=5,
        progress=False), ValueError, ("not a function",)),
    A("resume-no-checkpoint", _resume("run_nockpt"), FileNotFoundError, ("overwrite=true",)),
    A("resume-crafted-pickle", _resume("crafted"), ValueError, ("refused unopened",)),
    A("resume-steer-dir", _resume("steer_out"), ValueError, ("not a ppo run",)),
    A("resume-missing", _resume("nope"), FileNotFoundError, ("no run directory",)),
    # edits
    A("steering-layers-float", _steer(OK_VEC, layers=1.0), ValueError, ("layers must be",)),
    A("steering-layers-bool", _steer(OK_VEC, layers=True), ValueError, ("layers must be",)),
    A("steering-layers-empty", _steer(OK_VEC, layers=[]), ValueError, ("empty",)),
    A("steering-layers-float-items", _steer(OK_VEC, layers=[0.5]), ValueError, ("not an int",)),
    A("steering-layer-out-of-range", _steer(OK_VEC, layers=5), ValueError, ("does not exist",)),
    A("steering-vector-nan", _steer(NAN_VEC), ValueError, ("non-finite",)),
    A("steering-vector-inf", _steer(OK_VEC * float("inf")), ValueError, ("non-finite",)),
    A("steering-vector-bool", _steer(OK_VEC.bool()), ValueError, ("floating-point",)),
    A("steering-vector-complex", _steer(OK_VEC.to(torch.complex64)), ValueError, ("floating-point",)),
    A("steering-vector-int", _steer(OK_VEC.long()), ValueError, ("floating-point",)),
    A("steering-vector-string", _steer("up"), ValueError, ("steering takes",)),
    A("steering-vector-wrong-size", _steer(torch.ones(10)), ValueError, ("d_model is 64",)),
    A("steering-dict-empty", _steer({}, layers=None), ValueError, ("no layers",)),
    A("steering-dict-nan", _steer({0: NAN_VEC}, layers=None), ValueError, ("layer 0", "non-finite")),
    A("steering-single-vector-no-layers", _steer(OK_VEC, layers=None), ValueError, ("needs layers",)),
    A("steering-coef-inf", _steer(OK_VEC, coef=float("inf")), ValueError, ("finite",)),
    A("steering-coef-nan", _steer(OK_VEC, coef=float("nan")), ValueError, ("finite",)),
    A("steering-coef-text", _steer(OK_VEC, coef="strong"), ValueError, ("number",)),
    A("steering-hook-unknown", _steer(OK_VEC, hook="resid_sideways"), ValueError, ("unknown hook",)),
    A("steering-positions-unknown", _steer(OK_VEC, positions="middle"), ValueError, ("positions",)),
    A("ablation-mean-no-reference-prompts", lambda d, t: __import__("rlhf_interp.edits", fromlist=["Ablation"])
      .Ablation("0.attn", "mean", reference_prompts=[]), ValueError, ("reference prompts",)),
    A("ablation-kind-unknown", lambda d, t: __import__("rlhf_interp.edits", fromlist=["Ablation"])
      .Ablation("0.attn", "random"), ValueError, ("unknown ablation kind",)),
    A("direction-ablation-nan", lambda d, t: __import__("rlhf_interp.edits", fromlist=["DirectionAblation"])
      .DirectionAblation(NAN_VEC).on(t), ValueError, ("non-finite",)),
    A("direction-ablation-zero", lambda d, t: __import__("rlhf_interp.edits", fromlist=["DirectionAblation"])
      .DirectionAblation(torch.zeros(D_MODEL)).on(t), ValueError, ("zero",)),
    A("vector-load-pickle", _vector_load("vec_pickle.pt"), ValueError, ("pickles",)),
    A("vector-load-text", _vector_load("vec_text.safetensors"), ValueError, ("not a readable",)),
    A("vector-load-nan", _vector_load("vec_nan.safetensors"), ValueError, ("non-finite",)),
    A("vector-load-bool", _vector_load("vec_bool.safetensors"), ValueError, ("floating-point",)),
    # measure
    A("measure-permuted-tokenizer", _kl_shift("permuted"), ValueError, ("tokenizer vocab hash",)),
    A("measure-prompt-too-long", _kl_shift(prompts=("word " * 600,)), ValueError, ("context of 512",)),
    A("measure-no-prompts", _kl_shift(prompts=()), ValueError, ("no prompts",)),
    A("sample-max-new-tokens-zero", _sample(max_new_tokens=0), ValueError, ("max_new_tokens",)),
    A("sample-samples-per-prompt-zero", _sample(samples_per_prompt=0), ValueError, ("samples_per_prompt",)),
    A("sample-context-overflow", _sample(max_new_tokens=600), ValueError, ("context of 512",)),
    A("sweep-empty", lambda d, t: __import__("rlhf_interp.measure", fromlist=["sweep"]).sweep(t, [], ["Hi"]),
      ValueError, ("nothing to evaluate",)),
    A("steering-sweep-no-coefs", lambda d, t: __import__("rlhf_interp.measure", fromlist=["steering_sweep"])
      .steering_sweep(t, OK_VEC, [0], [], ["Hi"]), ValueError, ("at least one layer and one coefficient",)),
    A("steering-sweep-no-layers", lambda d, t: __import__("rlhf_interp.measure", fromlist=["steering_sweep"])
      .steering_sweep(t, OK_VEC, [], [1.0], ["Hi"]), ValueError, ("at least one layer",)),
    A("ablation-sweep-no-targets", lambda d, t: __import__("rlhf_interp.measure", fromlist=["ablation_sweep"])
      .ablation_sweep(t, [], ["Hi"]), ValueError, ("at least one target",)),
    # prompts, files, output directories, models
    A("prompts-limit-negative", _prompts(limit=-1), ValueError, ("limit",)),
    A("prompts-limit-zero", _prompts(limit=0), ValueError, ("limit",)),
    A("prompts-limit-float", _prompts(limit=2.5), ValueError, ("limit",)),
    A("prompts-latin1", _prompts("prompts_latin1.txt"), ValueError, ("prompts_latin1.txt:2", "utf-8")),
    A("jsonl-bad-middle-line", _trim_bad_middle_line, ValueError, ("middle.jsonl:2", "torn last line")),
    A("claim-out-is-file", _claim("{d}/afile"), ValueError, ("is a file",)),
    A("claim-out-unwritable", _claim("/sys/rlhf-interp-test-claim"), ValueError, ("cannot write",)),
    A("claim-out-other-command", _claim("{d}/ablate_out"), ValueError, ("already holds", "ablate")),
    A("reward-not-callable", lambda d, t: __import__("rlhf_interp.reward", fromlist=["get_reward"])
      .get_reward("os:sep"), ValueError, ("not a function",)),
    A("model-no-tokenizer-other-vocab", lambda d, t: __import__("rlhf_interp.bridge", fromlist=["load_model"])
      .load_model(str(d / "small_vocab_no_tokenizer"), device="cpu"), RuntimeError, ("no tokenizer files",)),
    A("model-crafted-pytorch-model-bin", lambda d, t: __import__("rlhf_interp.bridge", fromlist=["load_model"])
      .load_model(str(d / "evil_bin"), device="cpu"), RuntimeError, ("refused unopened",)),
    A("diff-directions-crafted", lambda d, t: __import__("rlhf_interp.diff.accumulators", fromlist=["x"])
      .DifferenceDirections.load(d / "evil_directions.pt"), pickle.UnpicklingError, ("weights only load failed",)),
    A("reference-samples-crafted", lambda d, t: __import__("rlhf_interp.measure.coverage", fromlist=["x"])
      .ReferenceSamples.load(d / "evil_reference_samples.pt"), pickle.UnpicklingError, ("weights only load failed",)),
    A("model-truncated-weights", lambda d, t: __import__("rlhf_interp.bridge", fromlist=["load_model"])
      .load_model(str(d / "cut_weights"), device="cpu"), RuntimeError, ("unreadable", "cut short")),
    # issue 26
    A("claim-out-is-an-input", _claim("{d}/run", "diff", inputs={"--tuned": "{d}/run"}), ValueError,
      ("is the input --tuned",)),
    A("claim-out-inside-an-input", _claim("{d}/run/diff", "diff", inputs={"--tuned": "{d}/run"}), ValueError,
      ("is inside the input --tuned",)),
    A("claim-overwrite-another-commands-run", _claim("{d}/ablate_out", overwrite=True), ValueError,
      ("holds the output of `ablate`", "replaces only an earlier `steer`")),
    A("resume-changed-lr", _resume("run", overrides=["lr=0.5"]), ValueError, ("lr (0.0001 -> 0.5)", "another --out")),
    A("resume-switch-to-adaptive-kl", _resume("run", overrides=["adaptive_kl=true"]), ValueError, ("adaptive_kl",)),
    A("trainer-ref-model-permuted-tokenizer", _trainer_with("ref_model={d}/permuted"), ValueError,
      ("ref_model", "tokenizer vocab hash")),
    A("load-model-nan-weights", lambda d, t: __import__("rlhf_interp.bridge", fromlist=["load_model"])
      .load_model(str(d / "nan_weights"), device="cpu"), RuntimeError, ("non-finite weights", "nan_weights")),
    A("load-model-crafted-adapter-bin", lambda d, t: __import__("rlhf_interp.bridge", fromlist=["load_model"])
      .load_model(str(d / "evil_adapter"), device="cpu"), RuntimeError,
      ("adapter_model.bin", "refused unopened", "adapter_model.safetensors")),
    A("kl-shift-nan-outputs", _kl_shift_nan_reference, ValueError, ("logits of the reference", "not finite")),
    A("reward-syntax-error", lambda d, t: __import__("rlhf_interp.reward", fromlist=["get_reward"])
      .get_reward("badsyntax_mod:f"), ValueError, ("badsyntax_mod:f", "line 2")),
    A("reward-relative-module", lambda d, t: __import__("rlhf_interp.reward", fromlist=["get_reward"])
      .get_reward(".rel:f"), ValueError, ("relative",)),
    A("reward-module-raises-on-import", lambda d, t: __import__("rlhf_interp.reward", fromlist=["get_reward"])
      .get_reward("raising_mod:f"), ValueError, ("raising_mod", "in your module")),
    A("rm-resume-nothing", _rm_train("rm_out", resume=True), FileNotFoundError, ("nothing to resume",)),
    A("rm-resume-and-overwrite", _rm_train("rm_out", resume=True, overwrite=True), ValueError,
      ("give one of them",)),
    A("rm-resume-other-base", _rm_train("rm_interrupted", base="{d}/permuted", resume=True), ValueError,
      ("base ('tiny-test'",)),
    A("rm-training-state-crafted", lambda d, t: __import__("rlhf_interp.reward.training", fromlist=["x"])
      .read_training_state(d / "evil_training_state.pt", {}), ValueError, ("refused unopened",)),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_bad_input(case: A, d: Path, tiny, monkeypatch):
    monkeypatch.syspath_prepend(str(d))
    with pytest.raises(case.error) as info:
        case.call(d, tiny)
    text = " ".join(str(info.value).split()).lower()
    for word in case.words:
        assert word.lower() in text, f"{word!r} not in: {info.value}"
    assert not (d / "pwned").exists(), "a crafted file ran code"


def test_crafted_trainer_state_runs_no_code(d):
    """The crafted file really would run code under a plain pickle load; the trainer refuses it unopened."""
    from rlhf_interp.ppo import PPOTrainer

    state = d / "crafted" / "checkpoint-000001" / "trainer_state.pt"
    with pytest.raises(ValueError, match="refused unopened"):
        PPOTrainer.resume(d / "crafted", progress=False)
    assert not (d / "pwned").exists()
    torch.load(state, weights_only=False)  # what the trainer did before: the payload runs
    assert (d / "pwned").exists()
    (d / "pwned").unlink()


# ----------------------------------------------------------------------------------------------
# Issue 26 with real processes: one writer per run directory; an interrupted reward model resumes

_NO_MODEL = ("import sys\n"
             "import rlhf_interp.bridge.loading as loading, rlhf_interp.ppo.trainer as trainer\n"
             "def no_model(*a, **k):\n"
             "    raise AssertionError('a model was loaded before the lock was checked')\n"
             "loading.load_hf_model = trainer.load_hf_model = no_model\n"
             "from rlhf_interp.cli import main\n"
             "sys.exit(main(sys.argv[1:]))\n")
_WAIT_IN_TRAIN = ("import os, sys, time\n"
                  "from rlhf_interp.ppo import PPOTrainer\n"
                  "real = PPOTrainer.train\n"
                  "def train(self):\n"
                  "    print('READY', flush=True)\n"
                  "    while not os.path.exists(os.environ['GO']):\n"
                  "        time.sleep(0.05)\n"
                  "    return real(self)\n"
                  "PPOTrainer.train = train\n"
                  "from rlhf_interp.cli import main\n"
                  "sys.exit(main(sys.argv[1:]))\n")


# What each child script here imports before it patches anything: `rlhf_interp.reward.training` (and the torch,
# transformers, ... it imports) is in all of them (_NO_MODEL's and _WAIT_IN_TRAIN's imports load it too), so the
# fork server may preload it (tests/fork_server.py: never more than a child's own first imports).
CHILD_IMPORTS = ["rlhf_interp.reward.training"]


@pytest.fixture(scope="module")
def forks(tmp_path_factory):
    """Real processes, forked from one server that made the imports every child script starts with."""
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "RLHF_INTERP_DEBUG": None}
    with ForkServer(CHILD_IMPORTS, tmp_path_factory.mktemp("forks"), env=env) as server:
        yield server


def test_second_writer_is_refused_before_a_model_loads(d, tmp_path, forks):
    """Two real `train --resume` at once: the second (and a `train --overwrite`, and a `diff --overwrite` into
    the same run) is refused by the first one's lock before it loads a model, and the first finishes the run
    with every phase once. Then two plain `train` into one new --out: the second is refused the same way."""
    run, go = tmp_path / "run", tmp_path / "go"
    shutil.copytree(d / "run", run, ignore=shutil.ignore_patterns(".rlhf-interp.lock"))
    first = forks.spawn(_WAIT_IN_TRAIN, "train", "--resume", "--out", run, "--set", "phases=2", "--no-progress",
                        env={"GO": str(go)})
    try:
        first.wait_for_line("READY")  # it has claimed the run and loaded its models; training waits for "go"
        before = _tree(run)
        for argv in (["train", "--resume", "--out", run, "--set", "phases=2", "--no-progress"],
                     ["train", CONFIGS / "tiny.yaml", "--out", run, "--overwrite", "--no-progress"],
                     ["diff", "--base", "tiny-test", "--tuned", "tiny-test", "--out", run, "--overwrite"]):
            second = forks.run(_NO_MODEL, *argv, timeout=300)
            out, err = second.communicate()
            assert second.returncode == 2, err
            assert "being written by `train --resume`" in err and f"pid {first.pid}" in err, err
            assert "Traceback" not in err and "a model was loaded" not in err, err
            assert _tree(run) == before  # nothing touched
    finally:
        go.touch()
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert [json.loads(x)["phase"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]

    fresh, go2 = tmp_path / "fresh", tmp_path / "go2"
    first = forks.spawn(_WAIT_IN_TRAIN, "train", CONFIGS / "tiny.yaml", "--out", fresh, "--no-progress",
                        env={"GO": str(go2)})
    try:
        first.wait_for_line("READY")
        second = forks.run(_NO_MODEL, "train", CONFIGS / "tiny.yaml", "--out", fresh, "--no-progress", timeout=300)
        _, err = second.communicate()
        assert second.returncode == 2 and "being written by `train`" in err and "a model was loaded" not in err, err
    finally:
        go2.touch()
        first.communicate(timeout=600)
    assert first.returncode == 0


_CLI = "import sys\nfrom rlhf_interp.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def _rm_argv(data: Path, out: Path) -> list:
    return ["reward-model", "train", data, "--base", "tiny-test", "--epochs", "6", "--patience", "0", "--no-cache",
            "--no-progress", "--out", out]


@pytest.fixture(scope="module")
def rm_pairs(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("rm_pairs") / "pairs.jsonl"
    with data.open("w") as f:
        for i in range(24):
            f.write(json.dumps({"prompt": "p", "chosen": f"one. two. {i}.", "rejected": f"none at all {i}"}) + "\n")
    return data


@pytest.fixture(scope="module")
def rm_uninterrupted(tmp_path_factory, rm_pairs, forks) -> Path:
    """The reward model `reward-model train` writes uninterrupted, in a process like the interrupted ones (same
    threads, same numbers); made once for both signals."""
    whole = tmp_path_factory.mktemp("rm_whole") / "whole"
    uninterrupted = forks.run(_CLI, *_rm_argv(rm_pairs, whole), timeout=900)
    assert uninterrupted.returncode == 0, uninterrupted.communicate()[1]
    return whole


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_reward_model_train_resumes(rm_pairs, rm_uninterrupted, tmp_path, sig, forks):
    """A real `reward-model train` process stopped by Ctrl-C or SIGTERM mid-training keeps its last whole epoch and
    says how to continue; the same command plus --resume finishes it, and the model equals an uninterrupted
    run's, tensor for tensor; the log has every epoch once."""
    from safetensors.torch import load_file

    out = tmp_path / "rm"
    argv = _rm_argv(rm_pairs, out)
    go = tmp_path / "go"
    # The child pauses once epoch 2's validation record is written, so the signal lands mid-training however
    # fast or loaded the machine is (a polling race let a quick child finish all 6 epochs first).
    # A foreground terminal's Ctrl-C: the default SIGINT handler, even when this suite was started in the
    # background (a shell's background job inherits SIGINT ignored, and so would the child).
    pause_after_epoch_2 = ("import os, signal, sys, time\n"
                           "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                           "import rlhf_interp.reward.training as training\n"
                           "real = training.append_jsonl\n"
                           "def append(path, record):\n"
                           "    real(path, record)\n"
                           "    if record.get('epoch') == 2 and record.get('split') == 'val':\n"
                           "        print('READY', flush=True)\n"
                           "        while not os.path.exists(os.environ['GO']):\n"
                           "            time.sleep(0.05)\n"
                           "training.append_jsonl = append\n" + _CLI)
    proc = forks.spawn(pause_after_epoch_2, *argv, env={"GO": str(go)})
    try:
        proc.wait_for_line("READY")
        proc.send_signal(sig)
    finally:
        go.touch()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    text = " ".join(err.split())
    assert f"interrupted ({'SIGTERM' if sig == signal.SIGTERM else 'Ctrl-C'})" in text, err
    assert "of 6 epoch(s)" in text and "--resume" in text, err
    assert (out / "training_state.pt").exists() and not (out / "model").exists()

    resumed = forks.run(_CLI, *argv, "--resume", timeout=900)
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    epochs = [(r["epoch"], r["split"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert epochs == [(0, "val")] + [(e, s) for e in range(1, 7) for s in ("train", "val")]
    assert not (out / "training_state.pt").exists()

    whole = rm_uninterrupted
    for name in ("model.safetensors", "reward_head.safetensors"):
        a, b = load_file(str(whole / "model" / name)), load_file(str(out / "model" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    meta = lambda p: {k: v for k, v in json.loads((p / "model" / "meta.json").read_text()).items() if k != "saved_at"}
    assert meta(whole)["val_loss"] == meta(out)["val_loss"]


def test_suite_size():
    assert len(CLI_CASES) + len(API_CASES) >= 120
    assert len({c.id for c in CLI_CASES}) == len(CLI_CASES) and len({c.id for c in API_CASES}) == len(API_CASES)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
