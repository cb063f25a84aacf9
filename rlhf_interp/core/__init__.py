"""Pure, model-free mechanics that every other package uses: masks and positions, atomic files and
JSONL, seeding, ``key=value`` options. Nothing here imports the rest of rlhf_interp.

Submodules: `masks`, `io`, `seeding`, `key_value` (import them directly; this file stays light).
"""
