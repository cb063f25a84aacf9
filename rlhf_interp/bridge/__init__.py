"""From a name to a `TransformerBridge`, and reading it: the layer every analysis and the trainer stand on.

- `loading`: ``load_model`` / ``load_hf_model`` / ``bridge_from_hf`` for aliases, HF dirs, run dirs,
  foreign checkpoints (`aliases`, `embedded`, `run_dirs`, `foreign` hold the pieces);
- `tokens`: ``tokenize`` (BOS prepended, left-padded, with a mask);
- `activations`: ``capture`` / ``capture_texts`` / ``recording``, the one activation-capture helper;
- `generation`: ``generate`` -> `Generation` (tokens, masks, texts);
- `heads`: the scalar head on a hook (PPO value head, reward-model score head);
- `freezing`: which weights train; `hf`: the Hugging Face internals nothing else touches.
"""

from rlhf_interp.core.lazy import lazy_exports, names_from

_WHERE = {
    **names_from(".aliases", "EMBEDDED_ALIAS", "EMBEDDED_MODELS", "KNOWN_ALIASES", "TINY_ALIAS", "TOKENIZER_DIR",
                 "EmbeddedModel", "ModelLoadError", "cache_root", "default_device", "dir_size_bytes",
                 "embedded_model_dir", "is_cached", "resolve_dtype"),
    **names_from(".embedded", "build_tiny_model", "fetch_embedded", "load_tokenizer"),
    **names_from(".run_dirs", "CHECKPOINT_PATTERN", "Checkpoint", "RunDir", "checkpoint_dir", "checkpoint_step",
                 "find_model_dir", "latest_checkpoint", "list_checkpoints", "read_meta"),
    **names_from(".loading", "bridge_from_hf", "load_hf_model", "load_model", "model_device", "model_source"),
    **names_from(".tokens", "tokenize"),
    **names_from(".activations", "Captured", "capture", "capture_texts", "recording"),
    **names_from(".generation", "Generation", "generate"),
    **names_from(".heads", "ValueHead", "check_hook_name", "forward_with_values", "values_from_hook"),
    **names_from(".freezing", "freeze_layers"),
    **names_from(".hf", "hf_state_dict", "plain_param_name", "save_pretrained_clean"),
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
