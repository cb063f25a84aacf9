"""Deprecated path: steering vectors live in `rlhf_interp.edits.vectors` (``from rlhf_interp.edits import
SteeringVector, mean_difference``). These names keep working for one release, with a warning."""

from rlhf_interp.core.lazy import lazy_exports, names_from

_WHERE = {
    **names_from("rlhf_interp.edits.vectors", "Reduce", "SteeringVector", "contrastive", "finetuning_direction",
                 "mean_difference", "paired_differences", "pca_direction", "reduced_activations", "residual_norms"),
    **names_from("rlhf_interp.edits.base", "resolve_layers", "steering_hook_name"),
    **names_from("rlhf_interp.bridge.loading", "model_source"),
    **names_from("rlhf_interp.bridge.tokens", "tokenize"),
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE, deprecated="rlhf_interp.edits")
