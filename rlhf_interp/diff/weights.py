"""Weight diff: how far each parameter tensor moved, named in TransformerLens's vocabulary.

Read from the clean Hugging Face state dict (`rlhf_interp.bridge.hf.hf_state_dict`): the bridge's own
state dict carries alias keys, so every tensor would be counted several times.
"""

from __future__ import annotations

import re

import pandas as pd
import torch

from rlhf_interp.bridge.hf import hf_state_dict
from rlhf_interp.diff.compat import ModelMismatchError, check_compatible

# (pattern on the HF parameter name, TransformerLens-style component stem, group). First match wins.
# Covers Llama/Qwen/Mistral/Gemma-style names and GPT-2/NeoX-style names.
_COMPONENTS: tuple[tuple[str, str, str], ...] = (
    (r"(self_attn|attn|attention)\.(q_proj|query)\b", "attn.{}_Q", "attention"),
    (r"(self_attn|attn|attention)\.(k_proj|key)\b", "attn.{}_K", "attention"),
    (r"(self_attn|attn|attention)\.(v_proj|value)\b", "attn.{}_V", "attention"),
    (r"(self_attn|attn|attention)\.(c_attn|query_key_value|qkv_proj|Wqkv)\b", "attn.{}_QKV", "attention"),
    (r"(self_attn|attn|attention)\.(o_proj|c_proj|dense|out_proj)\b", "attn.{}_O", "attention"),
    (r"(self_attn|attn|attention)\.(q_norm|q_layernorm)\b", "attn.q_norm.{}", "norm"),
    (r"(self_attn|attn|attention)\.(k_norm|k_layernorm)\b", "attn.k_norm.{}", "norm"),
    (r"mlp\.(gate_proj|w1)\b", "mlp.{}_gate", "mlp"),
    (r"mlp\.(up_proj|c_fc|dense_h_to_4h|fc1|w3)\b", "mlp.{}_in", "mlp"),
    (r"mlp\.(down_proj|c_proj|dense_4h_to_h|fc2|w2)\b", "mlp.{}_out", "mlp"),
    (r"(input_layernorm|ln_1)\b", "ln1.{}", "norm"),
    (r"(post_attention_layernorm|ln_2|pre_feedforward_layernorm)\b", "ln2.{}", "norm"),
    (r"(post_feedforward_layernorm)\b", "ln2_post.{}", "norm"),
    (r"(embed_tokens|wte|embed_in)\b", "embed.{}_E", "embedding"),
    (r"(wpe|embed_positions)\b", "pos_embed.{}_pos", "embedding"),
    (r"(lm_head|embed_out)\b", "unembed.{}_U", "embedding"),
    (r"(^|\.)(norm|ln_f|final_layer_norm|final_layernorm)\.", "ln_final.{}", "norm"),
)
_LAYER = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")


def classify_param(name: str) -> tuple[int, str, str]:
    """``"model.layers.3.self_attn.q_proj.weight"`` -> ``(3, "attn.W_Q", "attention")``; layer -1 when the
    tensor belongs to no block. Norm weights are ``w``/``b`` (TransformerLens's ``ln1.w``)."""
    found = _LAYER.search(name)
    layer = int(found.group(1)) if found else -1
    is_bias = name.endswith(".bias")
    for pattern, stem, group in _COMPONENTS:
        if re.search(pattern, name):
            if group == "norm":
                return layer, stem.format("b" if is_bias else "w"), group
            return layer, stem.format("b" if is_bias else "W"), group
    tail = name[found.end():] if found else name
    return layer, tail.removesuffix(".weight"), "other"


def weight_diff(base, tuned) -> pd.DataFrame:
    """One row per parameter tensor: ``param`` (HF name), ``layer`` (-1 outside blocks), ``component``
    (e.g. ``attn.W_Q``), ``group`` (attention/mlp/norm/embedding/other), ``numel``, ``base_norm`` and
    ``diff_norm`` (Frobenius), ``rel_diff_norm`` = ||tuned - base||_F / ||base||_F."""
    if hasattr(base, "cfg") and hasattr(tuned, "cfg"):
        check_compatible(base, tuned)
    a, b = hf_state_dict(base), hf_state_dict(tuned)  # a bridge or its HF model
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ModelMismatchError(f"The models hold different parameter tensors: only in base {only_a[:5]}, "
                                 f"only in tuned {only_b[:5]}. Diff models of one architecture.")
    rows = []
    for name in a:
        if a[name].shape != b[name].shape:
            raise ModelMismatchError(f"{name}: base shape {tuple(a[name].shape)} vs tuned {tuple(b[name].shape)}.")
        layer, component, group = classify_param(name)
        base_t = a[name].detach()
        diff = b[name].detach().to(base_t.device, base_t.dtype) - base_t
        base_norm = torch.linalg.vector_norm(base_t, dtype=torch.float64).item()
        diff_norm = torch.linalg.vector_norm(diff, dtype=torch.float64).item()
        rows.append({"param": name, "layer": layer, "component": component, "group": group,
                     "numel": base_t.numel(), "base_norm": base_norm, "diff_norm": diff_norm,
                     "rel_diff_norm": diff_norm / base_norm if base_norm > 0 else float(diff_norm > 0)})
    return pd.DataFrame(rows)


def summarize_weight_diff(per_tensor: pd.DataFrame, by: tuple[str, ...] = ("layer", "component")) -> pd.DataFrame:
    """Pool tensors into groups (default per layer and component; ``by=("layer", "group")`` per layer and
    attention/MLP/norm). Norms are pooled Frobenius norms, so ``rel_diff_norm`` = sqrt(sum diff^2) /
    sqrt(sum base^2). Keeps ``step`` when present (trajectories)."""
    keys = [*(["step"] if "step" in per_tensor.columns else []), *by]
    squared = per_tensor.assign(base_sq=per_tensor["base_norm"] ** 2, diff_sq=per_tensor["diff_norm"] ** 2)
    agg = {"numel": "sum", "base_sq": "sum", "diff_sq": "sum"}
    if "group" not in by and "component" in by:
        agg["group"] = "first"
    out = squared.groupby(keys, as_index=False, sort=True).agg(agg)
    out["base_norm"], out["diff_norm"] = out["base_sq"] ** 0.5, out["diff_sq"] ** 0.5
    out["rel_diff_norm"] = out["diff_norm"] / out["base_norm"].where(out["base_norm"] > 0)
    return out.drop(columns=["base_sq", "diff_sq"])
