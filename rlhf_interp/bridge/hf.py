"""The Hugging Face internals the toolkit needs, in one place, so edits, reward models and checkpoints
stay in TransformerLens's vocabulary.

- clean state dicts and un-wrapped copies of a bridge-wrapped model (the bridge wraps HF modules in
  place, so its state dict carries alias keys ``..._original_component...`` that HF refuses to save);
- the pieces of a Llama-family decoder (embedding, per-layer output projections, the decoder tail);
- a pre-hook on the decoder that reports, for every forward pass, its input shape, attention mask and
  KV-cache length (TransformerLens hooks see only activations).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from rlhf_interp.bridge.cache_compat import cache_argument


class UnsupportedArchitecture(ValueError):
    """The model lacks the Llama-family layout an operation needs; the message names what is missing."""


def hf_model_of(model):
    """The HF model behind a bridge (or the model itself when it is one)."""
    return getattr(model, "original_model", model)


def plain_param_name(key: str) -> str:
    """The Hugging Face name of a parameter of a bridge-wrapped (or merged-PEFT) model.

    Bridge aliases carry ``._original_component``; a merged PEFT layer keeps its weight in ``.base_layer``.
    """
    return key.replace("._original_component", "").replace(".base_layer", "")


def hf_state_dict(hf_model) -> dict[str, Tensor]:
    """The clean Hugging Face state dict of a (possibly bridge-wrapped) model."""
    from transformers import AutoModelForCausalLM

    hf_model = hf_model_of(hf_model)
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(hf_model.config)
    expected = set(fresh.state_dict().keys())
    clean: dict[str, Tensor] = {}
    for key, tensor in hf_model.state_dict().items():
        plain = plain_param_name(key)
        if plain in expected and plain not in clean:
            clean[plain] = tensor
    if getattr(hf_model.config, "tie_word_embeddings", False):
        clean.pop("lm_head.weight", None)
    missing = expected - set(clean) - {"lm_head.weight"}
    if missing:
        raise RuntimeError(f"Could not find {len(missing)} HF weights in the model, e.g. {sorted(missing)[:3]}.")
    return clean


def _config_copy(hf_model):
    config = hf_model.config.__class__.from_dict(hf_model.config.to_dict())
    config.output_attentions = False  # the bridge turns it on; a clean export should not carry it
    return config


def save_pretrained_clean(hf_model, tokenizer, directory: str | Path) -> None:
    """``save_pretrained`` of the model's clean weights (CPU copies) and of its tokenizer into ``directory``."""
    from transformers import AutoModelForCausalLM

    hf_model = hf_model_of(hf_model)
    config = _config_copy(hf_model)
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config)
    state = {k: v.detach().cpu() for k, v in hf_state_dict(hf_model).items()}
    fresh.load_state_dict(state, strict=False, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    fresh.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


@torch.no_grad()
def untied_copy(hf_model):
    """A runnable, un-wrapped copy of the model (same dtype, device, attention implementation) whose
    unembedding is a separate tensor, so its embedding can be edited without changing the output layer."""
    from transformers import AutoModelForCausalLM

    hf_model = hf_model_of(hf_model)
    state = {k: v.detach().clone() for k, v in hf_state_dict(hf_model).items()}
    config = _config_copy(hf_model)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    config.tie_word_embeddings = False
    first = next(hf_model.parameters())
    fresh = AutoModelForCausalLM.from_config(config, dtype=first.dtype,
                                             attn_implementation=hf_model.config._attn_implementation)
    if tied or "lm_head.weight" not in state:
        state["lm_head.weight"] = hf_model.get_output_embeddings().weight.detach().clone()
    fresh.load_state_dict(state, strict=True)
    return fresh.to(first.device).eval()


@dataclass
class ResidualWriters:
    """The weights that write into the residual stream of a Llama-family decoder."""

    embedding: Tensor  # [vocab, d_model]
    outputs: list[torch.nn.Linear]  # every attention output and MLP down projection: weight [d_model, d_in]


def residual_writers(hf_model) -> ResidualWriters:
    """Token embedding plus each layer's ``self_attn.o_proj`` and ``mlp.down_proj``."""
    hf_model = hf_model_of(hf_model)
    layers = getattr(hf_model.base_model, "layers", None)
    if layers is None:
        raise UnsupportedArchitecture(f"needs decoder layers at model.layers (Llama-style); "
                                      f"{type(hf_model).__name__} has none.")
    outputs = []
    for i, layer in enumerate(layers):
        pair = [getattr(getattr(layer, "self_attn", None), "o_proj", None),
                getattr(getattr(layer, "mlp", None), "down_proj", None)]
        if any(o is None for o in pair):
            raise UnsupportedArchitecture(f"supports Llama-style layers (self_attn.o_proj, mlp.down_proj); "
                                          f"layer {i} of {type(hf_model).__name__} lacks one.")
        outputs.extend(pair)
    return ResidualWriters(hf_model.get_input_embeddings().weight, outputs)


# ----------------------------------------------------------------------------------------------
# Running part of the decoder


def supports_decoder_tail(bridge) -> bool:
    """Whether `run_decoder_tail` can run this model (Llama-family decoder pieces present)."""
    decoder = getattr(hf_model_of(bridge), "model", None)
    return all(hasattr(decoder, a) for a in ("layers", "rotary_emb", "norm"))


def run_decoder_tail(bridge, resid: Tensor, attention_mask: Tensor, start_layer: int) -> Tensor:
    """Run blocks ``start_layer..`` and the final norm on a residual stream (bridge hooks fire as in a full pass).

    Uses the decoder's own pieces (``model.layers``, ``model.rotary_emb``, ``model.norm``), because the
    bridge's ``start_at_layer`` still executes the earlier blocks. Positions are 0..pos-1: rotary
    attention depends only on relative positions, so left padding changes nothing.
    """
    from transformers.masking_utils import create_causal_mask

    decoder = hf_model_of(bridge).model
    position_ids = torch.arange(resid.shape[1], device=resid.device).unsqueeze(0)
    causal_mask = create_causal_mask(config=decoder.config, inputs_embeds=resid, attention_mask=attention_mask,
                                     past_key_values=None, position_ids=position_ids)
    position_embeddings = decoder.rotary_emb(resid, position_ids=position_ids)
    hidden = resid
    for layer in decoder.layers[start_layer:]:
        hidden = layer(hidden, attention_mask=causal_mask, position_embeddings=position_embeddings,
                       position_ids=position_ids)
    return decoder.norm(hidden)


# ----------------------------------------------------------------------------------------------
# Watching forward passes


@dataclass
class ForwardPass:
    """What a decoder forward pass is about to process."""

    input_ids: Tensor | None  # [batch, seq], None when embeddings were passed
    batch: int
    seq: int
    past_len: int  # tokens already in the KV cache (0 without a cache)
    attention_mask: Tensor | None  # [batch, past_len + seq] when the caller passed a 2-d mask
    device: torch.device


def watch_forward_passes(bridge, callback: Callable[[ForwardPass | None], None]) -> Any:
    """Call ``callback`` before every forward pass of the HF decoder (``None`` when the pass has no token
    input). Returns the hook handle: ``handle.remove()`` stops watching."""
    hf = hf_model_of(bridge)
    decoder = getattr(hf, "base_model", hf)

    def pre_hook(module, args, kwargs) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        source = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
        if source is None:
            callback(None)
            return
        batch, seq = source.shape[:2]
        past = cache_argument(kwargs)  # `past_key_values`, or `cache` from transformers 5.24 on
        past_len = int(past.get_seq_length()) if past is not None and hasattr(past, "get_seq_length") else 0
        mask = kwargs.get("attention_mask")
        usable = isinstance(mask, Tensor) and mask.ndim == 2 and mask.shape[0] == batch and mask.shape[1] >= seq
        callback(ForwardPass(input_ids, batch, seq, past_len, mask if usable else None, source.device))

    return decoder.register_forward_pre_hook(pre_hook, with_kwargs=True)
