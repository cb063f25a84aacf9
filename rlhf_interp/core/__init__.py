"""Pure, model-free mechanics that every other package uses: masks and positions, atomic files and
JSONL, seeding, ``key=value`` options, statistics of reported numbers (intervals, verdicts). Nothing here imports the rest of rlhf_interp.

Submodules: `masks`, `io`, `seeding`, `key_value`, `stats` (import them directly; this file stays light).
"""
