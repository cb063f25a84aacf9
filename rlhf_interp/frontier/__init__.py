"""The equal-KL frontier: every way of changing a model, as reward bought per nat of KL from the base model.

- `best_of_n`: sampling n continuations and keeping the best (KL analytic and measured);
- `budget`: bisect an edit family's strength to hit KL budgets (`EditFamily`, `equal_kl`);
- `RankOneEdit`, `rank_one_edit`: re-exported from `rlhf_interp.edits.rank_one` (a ROME/MEMIT-style edit);
- `search`: multi-objective Optuna search over layer x coefficient x positions (`edit_search`);
- `finetuned`: PPO checkpoints (full, LoRA, frozen layers) placed at their measured KL;
- `fit`: Gao et al. (2022) functional forms for best-of-n and RL;
- `collateral`: KL on unrelated prompts and the tokens that moved most.
"""

from rlhf_interp.core.lazy import lazy_exports, names_from

_WHERE = {
    **names_from(".best_of_n", "analytic_kl", "best_of_n_table", "evaluate_best_of_n", "expected_best", "log_density_ratio",
                 "measured_kl", "sample_pool"),
    **names_from(".budget", "EditFamily", "equal_kl", "find_strength"),
    **names_from("rlhf_interp.edits.rank_one", "RankOneEdit", "key_statistics", "rank_one_edit", "target_direction"),
    **names_from(".targets", "target_tokens_for_reward"),
    **names_from(".search", "POSITIONS", "SearchResult", "edit_search", "reward_pairs", "scale_to_residual"),
    **names_from(".plot", "frontier_figure", "is_true", "series_label"),
    **names_from(".finetuned", "RunInfo", "checkpoint_points", "read_run"),
    **names_from(".fit", "FORMS", "fit_gao", "gao_curve"),
    **names_from(".collateral", "UNRELATED_PROMPTS", "collateral_kl", "top_moved_tokens"),
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
