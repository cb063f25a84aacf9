from __future__ import annotations

import json

import pytest
import torch

from rlhf_interp import ModelLoadError, load_hf_model, load_model, load_prompts, tokenize
from rlhf_interp.cli import main as cli_main


def test_tiny_is_seeded_and_uses_real_tokenizer(tiny):
    again = load_model("tiny-test", device="cpu")
    tokens, mask = tokenize(tiny, ["The capital of France is"])
    assert tokens[0, 0].item() == tiny.tokenizer.bos_token_id == 1
    assert tokens.shape[1] == 6  # BOS + 5 SmolLM2 tokens
    torch.testing.assert_close(tiny(tokens, attention_mask=mask), again(tokens, attention_mask=mask))
    assert tiny.cfg.n_layers == 2 and tiny.cfg.d_model == 64


def test_tokenize_left_pads_and_masks(tiny):
    tokens, mask = tokenize(tiny, ["hi", "The capital of France is"])
    assert mask[0].tolist()[:4] == [0, 0, 0, 0] and mask[0, -1] == 1
    assert tokens[0, -2].item() == tiny.tokenizer.bos_token_id
    # Left padding with a mask leaves the last-token logits of the short prompt unchanged.
    alone, alone_mask = tokenize(tiny, ["hi"])
    batched = tiny(tokens, attention_mask=mask)[0, -1]
    single = tiny(alone, attention_mask=alone_mask)[0, -1]
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)


def test_unknown_name_lists_aliases():
    with pytest.raises(ModelLoadError) as err:
        load_model("no-such-model-xyz")
    assert "smollm2-135m" in str(err.value) and "tiny-test" in str(err.value)


def test_directory_without_model_says_what_is_missing(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError) as err:
        load_model(tmp_path)
    assert "config.json" in str(err.value) and "notes.txt" in str(err.value)


def test_prompts_shipped_and_user_files(tmp_path):
    shipped = load_prompts()
    assert len(shipped) >= 300 and len(set(shipped)) == len(shipped)
    assert load_prompts(seed=1, limit=5) == load_prompts(seed=1, limit=5) != load_prompts(seed=2, limit=5)
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"prompt": "a"}) + "\n" + "{oops\n")
    with pytest.raises(ValueError, match=":2:"):
        load_prompts(jsonl)
    txt = tmp_path / "p.txt"
    txt.write_text("# comment\nfirst\n\nsecond\n")
    assert load_prompts(txt) == ["first", "second"]


def test_cli_models_list(capsys):
    assert cli_main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "tiny-test" in out


@pytest.mark.integration
def test_embedded_logits_match_hf(smol):
    hf, tokenizer, _ = load_hf_model("smollm2-135m", device="cpu")
    tokens, mask = tokenize(smol, ["The capital of France is", "Once upon a time"])
    with torch.no_grad():
        ours = smol(tokens, attention_mask=mask)
        theirs = hf(input_ids=tokens, attention_mask=mask).logits
    last = mask.bool()
    assert (ours[last] - theirs[last]).abs().max().item() < 1e-4


@pytest.mark.integration
def test_embedded_hooks_fire_on_every_layer(smol):
    tokens, mask = tokenize(smol, ["Hello world"])
    seen: dict[int, tuple] = {}

    def record(layer):
        def hook(act, hook):
            seen[layer] = tuple(act.shape)
            return act
        return hook

    names = [(f"blocks.{L}.hook_resid_post", record(L)) for L in range(smol.cfg.n_layers)]
    smol.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=names)
    assert sorted(seen) == list(range(30))
    assert all(shape == (1, tokens.shape[1], 576) for shape in seen.values())


@pytest.mark.integration
def test_embedded_greedy_names_paris(smol):
    text = smol.generate("The capital of France is", max_new_tokens=8, do_sample=False, verbose=False)
    assert "Paris" in text


def test_loads_trl_style_value_head_checkpoint(tmp_path):
    """TRL's AutoModelForCausalLMWithValueHead saves 'pretrained_model.'-prefixed weights plus 'v_head.' tensors."""
    from safetensors.torch import save_file

    from rlhf_interp.checkpoints import hf_state_dict

    hf, tokenizer, _ = load_hf_model("tiny-test", device="cpu")
    with torch.no_grad():
        hf.model.norm.weight.mul_(1.5)  # so the loaded model must be this one, not a fresh tiny-test
    state = {f"pretrained_model.{k}": v.contiguous() for k, v in hf_state_dict(hf).items()}
    state["v_head.summary.weight"] = torch.zeros(1, 64)
    hf.config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    save_file(state, str(tmp_path / "model.safetensors"))
    loaded = load_model(tmp_path, device="cpu")
    tokens, mask = tokenize(loaded, ["Hello there"])
    with torch.no_grad():
        expected = hf(input_ids=tokens, attention_mask=mask).logits
    torch.testing.assert_close(loaded(tokens, attention_mask=mask), expected, atol=1e-4, rtol=1e-4)


def test_loads_peft_adapter_directory_merged(tmp_path):
    from peft import LoraConfig, get_peft_model

    hf, tokenizer, _ = load_hf_model("tiny-test", device="cpu")
    peft_model = get_peft_model(hf, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.peft_config["default"].base_model_name_or_path = "tiny-test"
    peft_model.save_pretrained(tmp_path)
    tokens, mask = tokenize(load_model("tiny-test", device="cpu"), ["Hello there"])
    with torch.no_grad():
        expected = peft_model(input_ids=tokens, attention_mask=mask).logits
        base = load_model("tiny-test", device="cpu")(tokens, attention_mask=mask)
    loaded = load_model(tmp_path, device="cpu")
    got = loaded(tokens, attention_mask=mask)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert (got - base).abs().max() > 1e-3  # the adapter really changed the model
