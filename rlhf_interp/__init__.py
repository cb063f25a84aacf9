"""rlhf_interp: train RLHF policies with PPO on TransformerLens bridges and see what RLHF changed inside.

Data flows one way: lower packages never import higher ones.

Layout, written from the import graph by ``python scripts/import_graph.py --write`` (each unit by layer,
with the units it imports; a unit imports only lower layers)::

     [0] core         -> (nothing of ours)
     [1] prompts      -> core
     [2] bridge       -> core
     [3] checkpoints  -> core, bridge
     [4] edits        -> core, prompts, bridge
     [4] reward       -> core, prompts, bridge, checkpoints
     [5] diff         -> core, prompts, bridge, checkpoints
     [5] measure      -> core, prompts, bridge, checkpoints, edits, reward
     [5] ppo          -> core, prompts, bridge, checkpoints, reward
     [6] frontier     -> core, prompts, bridge, edits, reward, measure
     [6] patching     -> core, bridge, checkpoints, edits, diff, measure
     [7] report       -> core, measure, frontier, patching
     [8] cli          -> core, prompts, bridge, edits, reward, diff, measure, ppo, frontier, patching, report

Names below are re-exported lazily (PEP 562): ``import rlhf_interp`` imports no torch; the module that
defines a name is imported the first time the name is used.
"""

from rlhf_interp.core.lazy import lazy_exports, names_from
from rlhf_interp.core.version import __version__  # noqa: F401

_WHERE = {
    **names_from("rlhf_interp.checkpoints", "latest_checkpoint", "list_checkpoints", "read_meta", "save_hf_model"),
    **names_from("rlhf_interp.diff", "DifferenceDirections", "ModelDiff", "ModelMismatchError", "attention_diff",
                 "attention_diff_view", "check_compatible", "diff_models", "diff_trajectory", "difference_directions",
                 "logit_lens_table", "logit_lens_token_ranks", "most_changed_heads", "output_diff", "policy_samples",
                 "residual_diff", "summarize_weight_diff", "weight_diff"),
    **names_from("rlhf_interp.edits", "Ablation", "Combined", "DirectionAblation", "EditError", "NoEdit", "Steering",
                 "orthogonalize_weights", "prompt_length", "SteeringVector", "contrastive", "finetuning_direction",
                 "mean_difference", "pca_direction"),
    **names_from("rlhf_interp.bridge", "Generation", "generate", "EMBEDDED_ALIAS", "KNOWN_ALIASES", "TINY_ALIAS",
                 "ModelLoadError", "RunDir", "default_device", "fetch_embedded", "load_hf_model", "load_model",
                 "tokenize"),
    **names_from("rlhf_interp.core.kl", "AdaptiveKLController", "entropy", "js_divergence", "kl_divergence", "kl_estimate",
                 "kl_estimate_importance_weighted"),
    **names_from("rlhf_interp.measure", "LogitsCache", "ablation_sweep", "evaluate_edit", "kl_shift",
                 "score_generation", "sequence_kl", "steering_sweep", "sweep"),
    **names_from("rlhf_interp.reward", "PreferencePair", "read_preferences", "synthesize_pairs", "write_preferences",
                 "RewardModel", "RewardTrainingConfig", "bradley_terry_loss", "load_reward_model",
                 "train_reward_model"),
    **names_from("rlhf_interp.prompts", "load_prompts"),
    **names_from("rlhf_interp.report", "Report"),
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
