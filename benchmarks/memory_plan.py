"""How much memory PPO needs per model size and training regime, counted from the models' own parameters.

Parameters are counted on meta-device models built from each SmolLM2 config (no weights downloaded), with the
trainer's own rules: `bridge.freezing.freeze_layers` for what trains (embeddings frozen by default: SmolLM2
ties them to the unembedding), PEFT LoRA with the config's default targets, the `ValueHead` the trainer
builds. Bytes, fp32 throughout (the trainer keeps fp32 master weights; `precision: bf16` autocasts the
forward passes only):

- policy weights 4 B x all parameters; gradients 4 B and AdamW moments 8 B x trainable parameters;
- reference 4 B x all parameters (a second model), except under LoRA (the adapter-off policy is the reference);
- logits: the rollout keeps the policy's and the reference's log-probabilities over the vocabulary for the
  batch (2 x batch x new tokens x vocab x 4 B); the update holds logits, log-softmax and its gradient for a
  minibatch (3 x minibatch x new tokens x vocab x 4 B). Block activations for backward are not counted
  (about 10-20% more at these sequence lengths); `benchmarks/gpu.md` measures the real peak.

Writes docs/scaling_memory.csv (one row per model x regime). ``python benchmarks/memory_plan.py``
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

OUT = Path(__file__).resolve().parent.parent / "docs" / "scaling_memory.csv"
SMOLLM2 = {  # hidden, intermediate, layers, heads, kv heads (vocab 49152, tied embeddings) from the Hub configs
    "SmolLM2-135M": (576, 1536, 30, 9, 3),
    "SmolLM2-360M": (960, 2560, 32, 15, 5),
    "SmolLM2-1.7B": (2048, 8192, 24, 32, 32),
}
BATCH, MINIBATCH, NEW_TOKENS, VOCAB = 16, 8, 24, 49152  # configs/periods.yaml-sized phases
LORA_R = 16
GB = 1e9


def _model(dims):
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, inter, layers, heads, kv = dims
    config = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, vocab_size=VOCAB,
                         tie_word_embeddings=True)
    with torch.device("meta"):
        return LlamaForCausalLM(config)


def _count(params) -> int:
    return sum(p.numel() for p in {id(p): p for p in params}.values())


def rows() -> list[dict]:
    from peft import LoraConfig, get_peft_model

    from rlhf_interp.bridge.freezing import freeze_layers
    from rlhf_interp.bridge.heads import ValueHead
    from rlhf_interp.ppo.config import PPOConfig

    logits_gb = (2 * BATCH + 3 * MINIBATCH) * NEW_TOKENS * VOCAB * 4 / GB
    out = []
    for name, dims in SMOLLM2.items():
        with torch.device("meta"):
            head = _count(ValueHead(dims[0], "mlp").parameters())
        regimes = {}
        for label, frozen in (("all blocks", 0), ("top half of the blocks", dims[2] // 2)):
            model = _model(dims)
            total = _count(model.parameters())
            trainable = _count(freeze_layers(model, frozen))
            regimes[label] = (total, trainable, True)
        model = _model(dims)
        peft = get_peft_model(model, LoraConfig(r=LORA_R, target_modules=list(PPOConfig().lora_targets)))
        lora = _count(p for p in peft.parameters() if p.requires_grad)
        regimes[f"LoRA r={LORA_R} (all linear layers)"] = (total + lora, lora, False)
        for label, (weights, trainable, separate_ref) in regimes.items():
            trainable += head
            policy = 4 * (weights + head) / GB
            grads_adam = 12 * trainable / GB
            reference = 4 * total / GB if separate_ref else 0.0
            out.append({"model": name, "trains": label, "parameters_m": round(total / 1e6, 1),
                        "trainable_m": round(trainable / 1e6, 1), "policy_weights_gb": round(policy, 2),
                        "grads_and_adamw_gb": round(grads_adam, 2), "reference_gb": round(reference, 2),
                        "logits_gb": round(logits_gb, 2),
                        "total_gb": round(policy + grads_adam + reference + logits_gb, 2)})
    return out


def main() -> None:
    table = pd.DataFrame(rows())
    table.to_csv(OUT, index=False)
    print(table.to_string(index=False))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
