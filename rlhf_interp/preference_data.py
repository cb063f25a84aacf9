"""Deprecated path: preference pairs live in `rlhf_interp.reward` (``from rlhf_interp.reward import
read_preferences, synthesize_pairs``). These names keep working for one release, with a warning."""

from rlhf_interp.core.lazy import lazy_exports, names_from

_WHERE = {
    **names_from("rlhf_interp.reward.preferences", "MAX_REPORTED_ERRORS", "REQUIRED_FIELDS", "PreferenceDataError",
                 "PreferencePair", "parse_preference_line", "read_preferences", "split_pairs", "write_preferences"),
    **names_from("rlhf_interp.reward.synthetic", "SynthStats", "label_pair", "synthesize_pairs"),
    **names_from("rlhf_interp.bridge.generation", "generate"),
    **names_from("rlhf_interp.reward.functions", "RewardFn", "score"),
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE, deprecated="rlhf_interp.reward")
