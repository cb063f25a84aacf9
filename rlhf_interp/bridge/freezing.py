"""Which weights train: the first N blocks frozen, embeddings frozen unless asked. One rule for the PPO
policy and the reward model's backbone.

SmolLM2 ties its embedding to the unembedding, so "train the embeddings" also trains the output layer.
"""

from __future__ import annotations

import re

import torch

from rlhf_interp.bridge.hf import hf_model_of, plain_param_name

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_EMBEDDING = ("embed_tokens", "lm_head")


def freeze_layers(model, n_frozen: int, *, train_embeddings: bool = False, train_final_norm: bool = True
                  ) -> list[torch.nn.Parameter]:
    """Freeze blocks ``0..n_frozen-1`` (and the embeddings unless ``train_embeddings``, and the final norm
    unless ``train_final_norm``); every other weight trains. Returns the trainable parameters (each once).

    ``model``: a bridge or its HF model (the same tensors). Raises ValueError when ``n_frozen`` exceeds
    the number of layers.
    """
    hf = hf_model_of(model)
    n_layers = int(hf.config.num_hidden_layers)
    if not 0 <= n_frozen <= n_layers:
        raise ValueError(f"freeze_layers = {n_frozen} but the model has {n_layers} layers (valid: 0..{n_layers}).")
    trainable: dict[int, torch.nn.Parameter] = {}
    for name, param in hf.named_parameters(remove_duplicate=False):
        plain = plain_param_name(name)
        layer = _LAYER.search(plain)
        if layer is not None:
            frozen = int(layer.group(1)) < n_frozen
        elif any(part in plain for part in _EMBEDDING):
            frozen = not train_embeddings
        else:
            frozen = not train_final_norm
        if frozen:
            trainable.pop(id(param), None)
        param.requires_grad_(not frozen)
        if not frozen:
            trainable[id(param)] = param
    return [p for p in trainable.values() if p.requires_grad]
