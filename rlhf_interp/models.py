"""Deprecated path: model loading lives in `rlhf_interp.bridge` (``from rlhf_interp.bridge import load_model``
or ``from rlhf_interp import load_model``). These names keep working for one release, with a warning."""

from rlhf_interp.core.lazy import lazy_exports, names_from

_WHERE = {
    **names_from("rlhf_interp.bridge.aliases", "EMBEDDED_ALIAS", "EMBEDDED_MODELS", "KNOWN_ALIASES", "TINY_ALIAS",
                 "TOKENIZER_DIR", "EmbeddedModel", "ModelLoadError", "cache_root", "default_device", "dir_size_bytes",
                 "embedded_model_dir", "is_cached", "resolve_dtype"),
    **names_from("rlhf_interp.bridge.embedded", "build_tiny_model", "fetch_embedded", "load_tokenizer"),
    **names_from("rlhf_interp.bridge.run_dirs", "find_model_dir"),
    **names_from("rlhf_interp.bridge.loading", "bridge_from_hf", "load_hf_model", "load_model", "model_device",
                 "model_source"),
    **names_from("rlhf_interp.bridge.tokens", "tokenize"),
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE, deprecated="rlhf_interp.bridge")
