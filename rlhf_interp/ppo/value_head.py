"""Deprecated path: the value head is the scalar head of `rlhf_interp.bridge.heads` (the reward model's score
head is the same thing). These names keep working for one release, with a warning."""

from rlhf_interp.core.lazy import lazy_exports, names_from

_WHERE = names_from("rlhf_interp.bridge.heads", "ValueHead", "check_hook_name", "forward_with_values",
                    "values_from_hook")
__getattr__, __dir__ = lazy_exports(__name__, _WHERE, deprecated="rlhf_interp.bridge.heads")
