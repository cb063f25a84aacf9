"""The site's one chart style (fixed colour + marker per method family): `rlhf_interp.core.style`, under the
name report code imports it by. See that module for why it is fixed and where it lives."""

from rlhf_interp.core.style import (  # noqa: F401
    CYCLE_COLORS,
    CYCLE_MARKERS,
    FAMILIES,
    REFERENCE,
    SYMBOL_WORDS,
    Mark,
    collisions,
    color_word,
    cycle,
    distinct_marks,
    family,
    mark,
    mark_of,
)

__all__ = ["CYCLE_COLORS", "CYCLE_MARKERS", "FAMILIES", "REFERENCE", "SYMBOL_WORDS", "Mark", "collisions",
           "color_word", "cycle", "distinct_marks", "family", "mark", "mark_of"]
