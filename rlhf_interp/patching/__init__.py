"""Causal attribution between a base and a tuned bridge of one architecture: where does fine-tuning live?

Modules (one job each): `scores` (the shared loop: same tokens, counted positions, KLs, reward proxy,
fraction recovered), `activation` (patch one layer's attn_out / mlp_out / resid_post of one model into the
other), `weights` (swap one layer's weights in, restored exactly on exit), `trajectory` (the attribution for
every checkpoint of a run), `undo` (ablate or subtract the fine-tuning direction from the tuned model).
"""

from rlhf_interp.patching.activation import (
    COMPONENTS,
    activation_patching,
    patched,
    residual_attribution,
)
from rlhf_interp.patching.scores import (
    COLUMNS,
    DIRECTIONS,
    Patch,
    rewarded_token_ids,
    run_patches,
)
from rlhf_interp.patching.trajectory import patching_trajectory, run_checkpoints
from rlhf_interp.patching.undo import attribution_layers, undo_rlhf, undo_settings
from rlhf_interp.patching.weights import (
    SWAP_COMPONENTS,
    layer_parameters,
    swapped_weights,
    weight_patching,
)

__all__ = [
    "COLUMNS", "COMPONENTS", "DIRECTIONS", "SWAP_COMPONENTS", "Patch", "activation_patching", "attribution_layers",
    "layer_parameters", "patched", "patching_trajectory", "residual_attribution", "rewarded_token_ids", "run_checkpoints",
    "run_patches", "swapped_weights", "undo_rlhf", "undo_settings", "weight_patching",
]
