"""Run the benchmarks one after another, then regenerate the results table in the top-level README.md.

    python benchmarks/run_all.py                    # every benchmark at its quoted size (~30-40 min quiet), then the table
    python benchmarks/run_all.py --only rollout sweep
    python benchmarks/run_all.py --table-only       # the table from benchmarks/results/*.json, nothing run

Benchmarks time the machine, so they never run two at a time; each runs in its own process (and spawns its own
children where it alternates two sides). Run them on a quiet machine: a result taken while the 1-minute load was
above the number of cores is marked "noisy" in the table.

The table is written between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` in README.md's
``## Performance`` section (the section is created before ``## Conventions`` the first time); nothing else in
README.md changes. Every cell comes from a results JSON's ``headline`` and ``machine`` fields, and every row
says whether its figure was taken on a quiet machine (the 1-minute load average at the end of the run against
the cores; ``noisy`` when it was above them, `_bench_common.machine_info`).

The comparison with TRL leads the table, at equal precision only (issue 34): one row for ours vs TRL 1.12 both
in fp32 and one both in bf16, each taken from a pair alternated in one run with the same allocator settings
(TRL given our glibc malloc settings), from any ``ppo_phase*.json`` (``pairs`` written by
``trl_ppo_phase.py --precisions fp32 bf16``, or an older single-pair file's ``work`` precisions and
``trl_malloc``). A precision with no such pair says "not measured". Every other TRL comparison (ours bf16 vs
TRL fp32, or TRL with glibc's malloc defaults) follows as a labelled secondary row. Each ratio carries its n
and 95% interval: the recorded one, else the same bootstrap (`_bench_common.ratio_interval`) over the update
times the file records.
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
from _bench_common import RESULTS, ratio_interval

README = HERE.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
# name -> (results file stem, command). Order = the table's order; the TRL comparison's rows come from every
# ppo_phase*.json (`trl_rows`): the equal-precision run also yields the mixed pair (ours bf16, TRL fp32) with
# TRL on our malloc settings, so the separate --trl-malloc run of issue 17 is no longer part of a full run.
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "ppo_phase": ("ppo_phase", ["trl_ppo_phase.py", "--rounds", "3", "--updates", "3", "--precisions", "fp32",
                                "bf16"]),
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


HEADER = ["| Measurement | Result | Target | Met | Measured | Quiet machine | Command |",
          "|---|---|---|---|---|---|---|"]
EQUAL_PRECISIONS = ("fp32", "bf16")
TRL_TARGETS = {"fp32": ">= 2.5x", "bf16": ">= 4x"}  # issue 34


def _cells(cells: list) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _machine(machine: dict, timed: bool = True) -> tuple[str, str]:
    """(when and how: date, threads, the CPU and its bf16 units -- a VM's host can change between runs, and
    with it every timing; whether the machine was quiet: the load against the cores)."""
    load, cores = machine.get("load_average_1min_at_end"), machine.get("cpu_count", "?")
    cpu = machine.get("cpu_model") or "CPU model not recorded"
    units = "AMX bf16" if machine.get("amx_bf16") else ("AVX-512 bf16, no AMX" if machine.get("avx512_bf16") else "")
    when = (f"{machine.get('date', '?')[:10]}, threads {machine.get('torch_threads', '?')}; {cpu}"
            + (f" ({units})" if units else ""))
    if not timed:
        return when, "not a timing"
    if not isinstance(load, (int, float)):
        return when, "unknown (no load recorded)"
    if machine.get("noisy"):
        return when, f"**no** (noisy: load {load:.1f} on {cores} cores)"
    return when, f"yes (load {load:.1f} on {cores} cores)"


def _load(stem: str) -> dict | None:
    path = RESULTS / f"{stem}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _body(data: dict) -> dict:
    return next((v for v in data.values() if isinstance(v, dict) and "headline" in v), {})


def comparisons(body: dict) -> list[dict]:
    """The ours-vs-TRL pairs a result body holds: its ``pairs``, or the one pair of an older single-pair file."""
    if isinstance(body.get("pairs"), list):
        return body["pairs"]
    work = body.get("work", {})
    if "trl_ratio" not in body or "ours_precision" not in work or "trl_precision" not in work:
        return []
    return [{"ours_precision": work["ours_precision"], "trl_precision": work["trl_precision"],
             "equal_precision": work["ours_precision"] == work["trl_precision"],
             "same_allocator": bool(body.get("trl_malloc")), "alternated": "rounds" in work,
             "trl_ratio": body["trl_ratio"], "trl_ratio_ci95": body.get("trl_ratio_ci95"), "n": body.get("n"),
             "ours_seconds_median": body.get("ours_seconds_median"),
             "trl_seconds_median": body.get("trl_seconds_median"),
             "ours_seconds": body.get("ours_seconds"), "trl_seconds": body.get("trl_seconds"),
             "processes_per_side": work.get("rounds")}]


def _ratio_text(pair: dict) -> str:
    """The ratio with its 95% interval and n: recorded, else bootstrapped from the recorded update times."""
    ci, n, how = pair.get("trl_ratio_ci95"), pair.get("n") or {}, "95%"
    if not ci and pair.get("ours_seconds") and pair.get("trl_seconds"):
        found = ratio_interval(pair["ours_seconds"], pair["trl_seconds"])
        ci, how = [found["low"], found["high"]], "95% bootstrap over updates"
        n = {**found["n"], "processes_per_side": pair.get("processes_per_side")}
    text = f"{pair['trl_ratio']:.2f}x TRL's throughput" + (f" [{how}: {ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    details = []
    ours, trl = pair.get("ours_seconds_median"), pair.get("trl_seconds_median")
    if isinstance(ours, (int, float)) and isinstance(trl, (int, float)):
        details.append(f"TRL {trl:.1f} s / ours {ours:.1f} s per update")
    parts = [f"{v} {k.replace('_', ' ')}" for k, v in n.items() if v is not None]
    details.append("n = " + ", ".join(parts) if parts else "n not recorded")
    floor = pair.get("matmul_floor")
    if floor:  # what our phase's matmuls alone take: the ratio no non-matmul saving can pass
        details.append(f"matmuls are {100 * floor['matmul_share']:.0f}% of our phase, so at most "
                       f"{floor['ratio_ceiling']:.2f}x with these FLOPs and kernels")
    return f"{text} ({'; '.join(details)})"


def _fair(pair: dict, precision: str) -> bool:
    equal = pair.get("ours_precision") == pair.get("trl_precision") == precision
    return equal and bool(pair.get("same_allocator")) and bool(pair.get("alternated"))


def trl_rows() -> tuple[list[str], set[str]]:
    """The TRL comparison: the equal-precision headline rows (or "not measured"), then every other pair as a
    labelled secondary row; and the stems whose rows these replace."""
    found: list[tuple[str, dict, dict]] = []  # (stem, file, pair)
    for path in sorted(RESULTS.glob("ppo_phase*.json")):
        data = json.loads(path.read_text())
        found += [(path.stem, data, pair) for pair in comparisons(_body(data))]
    rows, used = [], {stem for stem, _, _ in found}
    _, default_args = BENCHMARKS["ppo_phase"]
    for precision in EQUAL_PRECISIONS:
        fair = sorted((f for f in found if _fair(f[2], precision)),
                      key=lambda f: f[1].get("machine", {}).get("date", ""))
        what = (f"**Headline**: PPO phase, ours vs TRL 1.12, both {precision} (same allocator settings, alternated in "
                f"one run)")
        if not fair:
            rows.append(_cells([what, "not measured (no equal-precision pair with the same allocator settings in "
                                "benchmarks/results)", TRL_TARGETS[precision], "", "", "",
                                f"`{command_line(default_args)}`"]))
            continue
        stem, data, pair = fair[-1]  # the newest
        work = _body(data).get("work", {})
        target = float(TRL_TARGETS[precision].split()[1].rstrip("x"))
        quoted = work.get("batch") == 16 and work.get("new_tokens") == 24
        rows.append(_cells([f"{what}; batch {work.get('batch')} x {work.get('new_tokens')} tokens",
                            _ratio_text(pair), TRL_TARGETS[precision],
                            "yes" if pair["trl_ratio"] >= target and quoted else "**no**",
                            *_machine(data.get("machine", {})), f"`{data.get('command', '')}`"]))
    for stem, data, pair in found:
        if any(_fair(pair, p) for p in EQUAL_PRECISIONS):
            continue
        why = []
        if not pair.get("equal_precision", pair["ours_precision"] == pair["trl_precision"]):
            why.append(f"mixed precision: ours {pair['ours_precision']} vs TRL {pair['trl_precision']}")
        if not pair.get("same_allocator"):
            why.append("TRL with glibc's malloc defaults, ours with its own settings")
        if not pair.get("alternated"):
            why.append("not alternated in one run")
        rows.append(_cells([f"Secondary, not like for like ({'; '.join(why)}): PPO phase vs TRL 1.12 "
                            f"(`{stem}.json`)", _ratio_text(pair), "(no target: not the headline)", "",
                            *_machine(data.get("machine", {})), f"`{data.get('command', '')}`"]))
    return rows, used


def _row(name: str, stem: str, args: list[str]) -> str:
    data = _load(stem)
    if data is None:
        return _cells([name, "not measured yet", "", "", "", "", f"`{command_line(args)}`"])
    recorded = data.get("command") or (command_line(args) if args else "")
    command = f"`{recorded}`" if recorded else ""  # as it was run
    head = _body(data).get("headline", {"result": f"see `benchmarks/results/{stem}.json`"})
    met = {True: "yes", False: "**no**"}.get(head.get("met"), "")
    when, quiet = _machine(data.get("machine", {}), head.get("timed", True))
    return _cells([head.get("what", name), head.get("result", "see JSON"), head.get("target", ""), met, when, quiet,
                   command])


def table() -> str:
    rows, known = trl_rows()
    lines = [*HEADER, *rows]
    for name, (stem, args) in BENCHMARKS.items():
        if stem not in known and args[0] != "trl_ppo_phase.py":  # its rows (or "not measured") are trl_rows
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
