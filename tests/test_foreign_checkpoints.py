"""Checkpoints other RLHF libraries wrote load by their directory layout: TRL (PPO / GRPO / DPO output dirs,
LoRA adapters, legacy value-head saves), OpenRLHF (``--save_path``, ``global_stepN_hf``, LoRA under ZeRO-3),
verl (``global_step_N/actor/huggingface`` after the model merger, ``lora_adapter``). Layouts that hold no
model yet (verl FSDP shards, DeepSpeed ZeRO states) are refused with the conversion command.

Each directory is built here from tiny-test with the file names, key names and config files its tool writes;
every successful load is checked against the logits of the model that was saved, and against the model it
must not be (so picking the wrong checkpoint, or a silent random init, fails).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rlhf_interp.bridge import (
    build_tiny_model,
    load_hf_model,
    load_model,
    load_tokenizer,
)
from rlhf_interp.bridge.aliases import ModelLoadError
from rlhf_interp.bridge.loading import select_device
from rlhf_interp.bridge.run_dirs import (
    ADAPTER,
    HF_DIR,
    UnconvertedCheckpointError,
    resolve_layout,
)
from rlhf_interp.cli import main as cli_main

TOKENS = torch.tensor([[1, 504, 3458, 282, 4649, 314, 12, 198]])


def _model(seed: int):
    """tiny-test with its blocks perturbed by ``seed`` (seed 0: tiny-test itself), so each save is distinguishable."""
    model = build_tiny_model()
    if seed:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "layers." in name and "norm" not in name:
                    param.add_(0.5 * param.std() * torch.randn(param.shape, generator=generator))
    return model.eval()


@torch.no_grad()
def _logits(model) -> torch.Tensor:
    return model(TOKENS).logits.float()


def _assert_loads_as(path: Path, expected, *, not_like=None) -> None:
    hf, _, _ = load_hf_model(path, device="cpu")
    got = _logits(hf)
    torch.testing.assert_close(got, _logits(expected), rtol=1e-5, atol=1e-5)
    if not_like is not None:
        assert (got - _logits(not_like)).abs().max() > 1e-2, "loaded the wrong checkpoint"


def _hf_save(model, directory: Path, **kwargs) -> Path:
    model.save_pretrained(directory, **kwargs)
    load_tokenizer().save_pretrained(directory)
    return directory


def _trainer_files(directory: Path, step: int) -> None:
    """What the transformers Trainer (TRL's base) writes beside the model in checkpoint-N/."""
    (directory / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    torch.save({"output_dir": str(directory.parent)}, directory / "training_args.bin")
    torch.save({"state": {}, "param_groups": []}, directory / "optimizer.pt")
    torch.save({"last_epoch": step}, directory / "scheduler.pt")


def _lora(base, seed: int):
    """A PEFT LoRA model on ``base`` whose adapter is not zero (lora_B starts at 0: merged it would equal base)."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))
    return peft_model.eval()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    """The base model as a plain HF directory: what adapter_config.json's base_model_name_or_path points to."""
    return _hf_save(_model(0), tmp_path_factory.mktemp("base") / "tiny-base")


# ----------------------------------------------------------------------------------------------- TRL


def test_trl_output_dir_takes_the_final_save_else_the_newest_checkpoint(tmp_path):
    out = tmp_path / "ppo-out"
    step9, step10, final = _model(9), _model(10), _model(11)
    for step, model in ((9, step9), (10, step10)):  # numeric order: checkpoint-10 is newer than checkpoint-9
        _hf_save(model, out / f"checkpoint-{step}")
        _trainer_files(out / f"checkpoint-{step}", step)
    layout = resolve_layout(out)
    assert layout.path == out / "checkpoint-10" and layout.kind == HF_DIR and layout.tool.startswith("TRL")
    _assert_loads_as(out, step10, not_like=step9)
    _assert_loads_as(out / "checkpoint-9", step9, not_like=step10)

    # PPOTrainer.save_model writes the policy alone into output_dir at the end: that is the run's model.
    _hf_save(final, out)
    torch.save({"output_dir": str(out)}, out / "training_args.bin")
    (out / "README.md").write_text("---\nlibrary_name: transformers\ntags: [trl, ppo]\n---\n")
    _assert_loads_as(out, final, not_like=step10)


def test_trl_lora_checkpoint_is_merged_into_its_base(tmp_path, base_dir):
    """GRPO / DPO / PPO with a peft_config save adapter_model.safetensors + adapter_config.json per checkpoint."""
    out = tmp_path / "grpo-out"
    base_hf, _, _ = load_hf_model(base_dir, device="cpu")
    early = _lora(base_hf, seed=1)
    early.save_pretrained(out / "checkpoint-5")
    early_logits = _logits(early)
    late = _lora(_model(0), seed=2)
    late.save_pretrained(out / "checkpoint-20")
    for step in (5, 20):
        _trainer_files(out / f"checkpoint-{step}", step)
        config = json.loads((out / f"checkpoint-{step}" / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = str(base_dir)  # TRL records where the base came from
        (out / f"checkpoint-{step}" / "adapter_config.json").write_text(json.dumps(config))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (out / "checkpoint-20").iterdir()}
    layout = resolve_layout(out)
    assert layout.path == out / "checkpoint-20" and layout.kind == ADAPTER
    merged, _, _ = load_hf_model(out, device="cpu")
    torch.testing.assert_close(_logits(merged), _logits(late), rtol=1e-5, atol=1e-5)
    assert (_logits(merged) - _logits(_model(0))).abs().max() > 1e-2  # the adapter changed the model
    bridge = load_model(out / "checkpoint-5", device="cpu")  # the analyses' entry point, merged on load
    torch.testing.assert_close(bridge(TOKENS).float(), early_logits, rtol=1e-4, atol=1e-4)


def test_trl_value_head_saves_strip_prefix_and_head(tmp_path):
    """Legacy TRL ``AutoModelForCausalLMWithValueHead``: the LM's keys plus ``v_head.summary.*``; saved through
    the wrapper's own state_dict the LM keys also carry ``pretrained_model.`` (here as pytorch_model.bin)."""
    policy = _model(3)
    state = {k: v.clone().contiguous() for k, v in policy.state_dict().items() if k != "lm_head.weight"}
    head = {"v_head.summary.weight": torch.randn(1, 64), "v_head.summary.bias": torch.zeros(1)}

    plain = tmp_path / "valuehead-safetensors"
    _hf_save(policy, plain)
    save_file({**state, **head}, str(plain / "model.safetensors"), metadata={"format": "pt"})
    _assert_loads_as(plain, policy, not_like=_model(0))

    prefixed = tmp_path / "valuehead-bin"
    _hf_save(policy, prefixed)
    (prefixed / "model.safetensors").unlink()
    torch.save({**{f"pretrained_model.{k}": v for k, v in state.items()}, **head}, prefixed / "pytorch_model.bin")
    _assert_loads_as(prefixed, policy, not_like=_model(0))


def test_weights_with_unknown_key_names_are_refused_not_randomly_initialised(tmp_path):
    odd = tmp_path / "odd"
    _hf_save(_model(4), odd)
    save_file({f"transformer.{k}": v.contiguous() for k, v in _model(4).state_dict().items()
               if k != "lm_head.weight"}, str(odd / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="lack .* of the model's tensors"):
        load_hf_model(odd, device="cpu")


# ----------------------------------------------------------------------------------------------- OpenRLHF


def _openrlhf_save_model(model, output_dir: Path) -> Path:
    """OpenRLHF ``strategy.save_model``: save_pretrained(state_dict=...), then config.to_json_file, tokenizer."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, state_dict={k: v.clone() for k, v in model.state_dict().items()})
    model.config.to_json_file(str(output_dir / "config.json"))
    load_tokenizer().save_pretrained(output_dir)
    return output_dir


def test_openrlhf_save_path_and_hf_ckpt_steps_load(tmp_path):
    actor = _model(5)
    _assert_loads_as(_openrlhf_save_model(actor, tmp_path / "checkpoint" / "llama-rlhf"), actor, not_like=_model(0))
    ckpt = tmp_path / "ckpt"  # --ckpt_path with --save_hf_ckpt: global_step{N}_hf/, newest by N
    _openrlhf_save_model(_model(6), ckpt / "global_step8_hf")
    _openrlhf_save_model(_model(7), ckpt / "global_step16_hf")
    _deepspeed_state(ckpt / "_actor", 16)  # the DeepSpeed states beside them do not get in the way
    assert resolve_layout(ckpt).tool.startswith("OpenRLHF")
    _assert_loads_as(ckpt, _model(7), not_like=_model(6))


def test_openrlhf_lora_under_zero3_writes_adapter_bin_beside_the_base_config(tmp_path, base_dir):
    from peft import get_peft_model_state_dict

    base_hf, _, _ = load_hf_model(base_dir, device="cpu")
    peft_model = _lora(base_hf, seed=3)
    expected = _logits(peft_model)
    out = tmp_path / "save_path"
    peft_model.save_pretrained(out)  # then OpenRLHF under ZeRO-3 swaps the safetensors for a .bin
    torch.save(get_peft_model_state_dict(peft_model), out / "adapter_model.bin")
    (out / "adapter_model.safetensors").unlink()
    peft_model.base_model.model.config.to_json_file(str(out / "config.json"))
    load_tokenizer().save_pretrained(out)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base_dir)
    (out / "adapter_config.json").write_text(json.dumps(config))
    layout = resolve_layout(out)
    assert layout.kind == ADAPTER and layout.tool == "OpenRLHF (LoRA)"
    merged, _, _ = load_hf_model(out, device="cpu")
    torch.testing.assert_close(_logits(merged), expected, rtol=1e-5, atol=1e-5)


def _deepspeed_state(actor_dir: Path, step: int) -> None:
    """What DeepSpeed's save_checkpoint leaves under OpenRLHF's --ckpt_path/_actor."""
    tag = actor_dir / f"global_step{step}"
    tag.mkdir(parents=True)
    torch.save({"module": {"w": torch.zeros(2)}}, tag / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {}}, tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (actor_dir / "latest").write_text(f"global_step{step}")
    (actor_dir / "zero_to_fp32.py").write_text("# DeepSpeed's consolidation script, copied beside each save\n")


def test_deepspeed_zero_state_is_refused_with_the_consolidation_command(tmp_path):
    ckpt = tmp_path / "ckpt"
    _deepspeed_state(ckpt / "_actor", 12)
    for path in (ckpt, ckpt / "_actor", ckpt / "_actor" / "global_step12"):
        with pytest.raises(UnconvertedCheckpointError, match="DeepSpeed ZeRO") as err:
            load_hf_model(path, device="cpu")
        assert f"{ckpt / '_actor' / 'zero_to_fp32.py'} {ckpt / '_actor'} OUT_DIR --tag global_step12" in str(err.value)
        assert "--save_hf_ckpt" in str(err.value)


# ----------------------------------------------------------------------------------------------- verl


def _verl_actor(root: Path, step: int, world: int = 2) -> Path:
    """verl's FSDP checkpoint manager: per-rank shards, fsdp_config.json, huggingface/ with config + tokenizer."""
    actor = root / f"global_step_{step}" / "actor"
    actor.mkdir(parents=True)
    for rank in range(world):
        for kind in ("model", "optim", "extra_state"):
            torch.save({"rank": rank}, actor / f"{kind}_world_size_{world}_rank_{rank}.pt")
    (actor / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 1, "world_size": world}))
    hf = actor / "huggingface"
    _model(0).config.save_pretrained(hf)
    load_tokenizer().save_pretrained(hf)
    (root / "latest_checkpointed_iteration.txt").write_text(str(step))
    return actor


def test_verl_unmerged_shards_name_the_model_merger_then_the_merged_actor_loads(tmp_path):
    root = tmp_path / "checkpoints" / "proj" / "exp"
    _verl_actor(root, 2)
    actor = _verl_actor(root, 4)
    for path in (root, root / "global_step_4", actor, actor / "huggingface"):
        with pytest.raises(UnconvertedCheckpointError) as err:
            load_hf_model(path, device="cpu")
        assert (f"python -m verl.model_merger merge --backend fsdp --local_dir {actor} --target_dir "
                f"{actor / 'huggingface'}") in str(err.value)
    # The merger writes the full model into huggingface/ (bf16 in verl; fp32 here to compare exactly).
    merged = _model(8)
    merged.save_pretrained(actor / "huggingface")
    layout = resolve_layout(root)
    assert layout.path == actor / "huggingface" and layout.tool == "verl (merged)"
    _assert_loads_as(root, merged, not_like=_model(0))
    with pytest.raises(UnconvertedCheckpointError):  # step 2 is still unmerged
        load_hf_model(root / "global_step_2", device="cpu")
    (root / "latest_checkpointed_iteration.txt").write_text("2")  # verl's marker decides which step is latest
    with pytest.raises(UnconvertedCheckpointError, match="global_step_2"):
        load_hf_model(root, device="cpu")


def test_verl_lora_adapter_beside_the_shards_loads_merged(tmp_path, base_dir):
    root = tmp_path / "exp"
    actor = _verl_actor(root, 3)
    base_hf, _, _ = load_hf_model(base_dir, device="cpu")
    peft_model = _lora(base_hf, seed=4)
    peft_model.save_pretrained(actor / "lora_adapter")
    config = json.loads((actor / "lora_adapter" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base_dir)
    (actor / "lora_adapter" / "adapter_config.json").write_text(json.dumps(config))
    layout = resolve_layout(root)
    assert layout.path == actor / "lora_adapter" and layout.tool == "verl (LoRA)"
    merged, _, _ = load_hf_model(root, device="cpu")
    torch.testing.assert_close(_logits(merged), _logits(peft_model), rtol=1e-5, atol=1e-5)


def test_a_foreign_lora_checkpoint_loads_onto_each_device(tmp_path, base_dir, device):
    base_hf, _, _ = load_hf_model(base_dir, device="cpu")
    peft_model = _lora(base_hf, seed=6)
    expected = _logits(peft_model)
    peft_model.save_pretrained(tmp_path / "dpo-out" / "checkpoint-1")
    config = json.loads((tmp_path / "dpo-out" / "checkpoint-1" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base_dir)
    (tmp_path / "dpo-out" / "checkpoint-1" / "adapter_config.json").write_text(json.dumps(config))
    bridge = load_model(tmp_path / "dpo-out", device=device)
    assert next(bridge.parameters()).device.type == device
    with torch.no_grad():
        got = bridge(TOKENS.to(device)).float().cpu()
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------------------------- errors, CLI


def test_unrecognised_layouts_get_errors_that_say_what_is_there(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ModelLoadError, match=r"not a model directory.*notes\.txt"):
        load_hf_model(tmp_path / "empty", device="cpu")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no adapter weights"):
        load_hf_model(adapter, device="cpu")
    config_only = tmp_path / "config-only"
    _model(0).config.save_pretrained(config_only)
    with pytest.raises(ModelLoadError, match="config.json but no weights"):
        load_hf_model(config_only, device="cpu")
    (tmp_path / "run" / "checkpoint-3").mkdir(parents=True)
    with pytest.raises(ModelLoadError, match="none holds a model"):
        load_hf_model(tmp_path / "run", device="cpu")
    lost = tmp_path / "lost-base"
    _lora(_model(0), seed=5).save_pretrained(lost)
    config = json.loads((lost / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "moved-away")
    (lost / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="(?s)PEFT adapter .* base model .*moved-away.*Fix"):
        load_hf_model(lost, device="cpu")


def test_cli_reads_a_foreign_checkpoint_and_reports_an_unconverted_one_without_traceback(tmp_path, capsys):
    out = tmp_path / "trl"
    _hf_save(_model(12), out / "checkpoint-7")
    _trainer_files(out / "checkpoint-7", 7)
    code = cli_main(["diff", "--base", "tiny-test", "--tuned", str(out), "--out", str(tmp_path / "diff"),
                     "--n-prompts", "2", "--batch-size", "2"])
    assert code == 0 and (tmp_path / "diff" / "config.json").exists()
    actor = _verl_actor(tmp_path / "verl", 1)
    code = cli_main(["diff", "--base", "tiny-test", "--tuned", str(tmp_path / "verl"), "--out", str(tmp_path / "d2")])
    err = capsys.readouterr().err
    assert code == 2 and "verl.model_merger merge" in err and str(actor) in err and "Traceback" not in err


def test_device_selection_refuses_devices_this_machine_lacks():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA GPU.*Fix"):
            select_device("cuda")
    else:
        with pytest.raises(ModelLoadError, match="GPU"):
            select_device(f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(ModelLoadError, match="Unknown device"):
        select_device("tpu-please")
