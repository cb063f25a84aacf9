"""Run the benchmarks one after another, then regenerate the results table in the top-level README.md.

    python benchmarks/run_all.py                    # every benchmark at its quoted size (~30-40 min quiet), then the table
    python benchmarks/run_all.py --only rollout sweep
    python benchmarks/run_all.py --table-only       # the table from benchmarks/results/*.json, nothing run

Benchmarks time the machine, so they never run two at a time; each runs in its own process (and spawns its own
children where it alternates two sides). Run them on a quiet machine: a result taken while the 1-minute load was
above the number of cores is marked "noisy" in the table.

The table is written between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` in README.md's
``## Performance`` section (the section is created before ``## Conventions`` the first time); nothing else in
README.md changes. Every cell comes from a results JSON's ``headline`` and ``machine`` fields.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _bench_common import RESULTS

README = HERE.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
# name -> (results file stem, command). Order = the table's order.
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "ppo_phase": ("ppo_phase", ["trl_ppo_phase.py", "--rounds", "3", "--updates", "3"]),
    "ppo_phase_trl_malloc": ("ppo_phase_trl_malloc", ["trl_ppo_phase.py", "--rounds", "3", "--updates", "3",
                                                     "--trl-malloc"]),
    "allocator": ("allocator", ["allocator.py"]),
    "phase_under_load": ("phase_under_load", ["phase_under_load.py"]),
    "rollout": ("rollout", ["rollout_vs_generate.py"]),
    "rollout_bf16": ("rollout_bf16", ["rollout_vs_generate.py", "--precision", "bf16"]),
    "learn_step": ("learn_step", ["learn_step.py"]),
    "precision_drift": ("precision_drift", ["precision_drift.py"]),
    "sweep": ("sweep", ["sweep_efficiency.py"]),
    "diff_memory": ("diff_memory", ["diff_memory.py"]),
}
SECTION_INTRO = """## Performance

One command reruns every benchmark and rewrites the table below from `benchmarks/results/*.json`:
`python benchmarks/run_all.py` (`--table-only` rebuilds the table alone). What each benchmark measures,
how, and what each speed change bought: [benchmarks/README.md](benchmarks/README.md). Times drift on a shared
machine; the ratios are measured within one run, alternating the two sides. The fast path for training is
`precision: bf16` in a PPO config (bf16 autocast with fp32 weights, logits, log-probs and losses; off by default).

"""


def command_line(args: list[str]) -> str:
    return "python benchmarks/" + " ".join(args)


def run(names: list[str]) -> None:
    for name in names:
        _, args = BENCHMARKS[name]
        print(f"== {name}: {command_line(args)}", flush=True)
        proc = subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]], check=False)
        if proc.returncode:
            print(f"!! {name} exited with {proc.returncode}; its previous result (if any) stays in the table")


def _row(name: str, stem: str, args: list[str]) -> str:
    path = RESULTS / f"{stem}.json"
    if not path.exists():
        return f"| {name} | not measured yet | | | | `{command_line(args)}` |"
    data = json.loads(path.read_text())
    recorded = data.get("command") or (command_line(args) if args else "")
    command = f"`{recorded}`" if recorded else ""  # as it was run
    machine = data.get("machine", {})
    body = next((v for v in data.values() if isinstance(v, dict) and "headline" in v), {})
    head = body.get("headline", {"result": f"see `benchmarks/results/{stem}.json`"})
    met = {True: "yes", False: "**no**"}.get(head.get("met"), "")
    load = machine.get("load_average_1min_at_end")
    when = (f"{machine.get('date', '?')[:10]}, threads {machine.get('torch_threads', '?')}"
            + (f", load {load:.1f}" if isinstance(load, (int, float)) else "")
            + (" (noisy)" if machine.get("noisy") and head.get("timed", True) else ""))
    cells = [head.get("what", name), head.get("result", "see JSON"), head.get("target", ""), met, when, command]
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def table() -> str:
    lines = ["| Measurement | Result | Target | Met | Measured | Command |", "|---|---|---|---|---|---|"]
    known = set()
    for name, (stem, args) in BENCHMARKS.items():
        lines.append(_row(name, stem, args))
        known.add(stem)
    for path in sorted(RESULTS.glob("*.json")):  # any other result (e.g. a new benchmark) goes last
        if path.stem not in known:
            lines.append(_row(path.stem, path.stem, []))
    return "\n".join(lines)


def write_readme(text: str, readme: Path = README) -> None:
    """Replace what is between the markers (creating the section before ``## Conventions`` the first time)."""
    content = readme.read_text(encoding="utf-8")
    block = f"{START}\n{text}\n{END}"
    if START in content and END in content:
        pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
        new = pattern.sub(lambda _: block, content, count=1)
    else:
        section = SECTION_INTRO + block + "\n\n"
        anchor = content.find("\n## Conventions")
        new = content[:anchor + 1] + section + content[anchor + 1:] if anchor >= 0 else \
            content.rstrip("\n") + "\n\n" + section
    if new != content:
        tmp = readme.with_suffix(".md.tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(readme)
    print(f"updated the table in {readme}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--table-only", action="store_true", help="rebuild the README table; run nothing")
    parser.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)  # tests write a copy
    args = parser.parse_args()
    if not args.table_only:
        run(args.only or list(BENCHMARKS))
    write_readme(table(), args.readme)


if __name__ == "__main__":
    main()
