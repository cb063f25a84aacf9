"""Causal attribution between a base and a tuned bridge of one architecture: where does fine-tuning live?

Modules (one job each): `scores` (the shared loop: same tokens, counted positions, KLs, reward proxy,
fraction recovered), `activation` (patch one layer's attn_out / mlp_out / resid_mid / resid_post of one
model into the other; additive attribution along the residual stream), `weights` (swap one layer's weights
in, restored exactly on exit), `trajectory` (the attribution for every checkpoint of a run), `intervals` (95%
intervals over texts from the per-text sums), `undo` (ablate or subtract the fine-tuning direction from the
tuned model).
"""

from rlhf_interp.core.lazy import lazy_exports, names_from

_WHERE = {
    **names_from(".scores", "COLUMNS", "DIRECTIONS", "PER_TEXT_COLUMNS", "Patch", "rewarded_token_ids", "run_patches",
                 "summarize"),
    **names_from(".intervals", "first_layer_reaching", "fraction_difference", "fraction_interval",
                 "fraction_intervals", "kl_clean_interval", "proxy_recovered_interval"),
    **names_from(".activation", "COMPONENTS", "activation_patching", "hooks_to_replace", "patched",
                 "residual_attribution"),
    **names_from(".weights", "SWAP_COMPONENTS", "layer_parameters", "swapped_weights", "weight_patching"),
    **names_from(".trajectory", "patching_trajectory"),
    **names_from(".undo", "attribution_layers", "undo_rlhf", "undo_settings"),
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
