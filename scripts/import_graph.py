#!/usr/bin/env python
"""Print rlhf_interp's import graph and check that it is acyclic and one-way.

    python scripts/import_graph.py              # package-level graph, with each unit's layer
    python scripts/import_graph.py --modules    # module-level graph
    python scripts/import_graph.py --check      # exit 1 on a cycle, an upward import or an unknown unit
    python scripts/import_graph.py --fresh      # also import every module alone (see `fresh_imports`)
    python scripts/import_graph.py --write      # rewrite the layout in rlhf_interp/__init__.py and README.md

The graph is read from the source (AST), not by importing: every ``import`` statement counts, also those
inside functions, and the lazy re-export tables of ``__init__`` files (``names_from("module", ...)``) are
followed, so ``from rlhf_interp.edits import Steering`` is an edge to ``rlhf_interp.edits.steering``.

A *unit* is a top-level subpackage or module of rlhf_interp (``bridge``, ``kl``, ``cli`` ...). `LAYERS`
ranks them: a unit may import only units of a lower rank (its own modules aside). That one rule says
"core imports nothing of ours", "reward knows no trainer", "edits and diff know no training" and
"nothing below the CLI knows the CLI".

The package docstring's layout section and the README's layout sentence are this graph's output (`write_layout`),
so they cannot drift from the code: tests/test_import_graph.py fails when they are stale.
"""

from __future__ import annotations

import argparse
import ast
import gc
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "rlhf_interp"

# unit -> rank. A deprecated one-release shim sits half a layer above the package it forwards to.
LAYERS: dict[str, float] = {
    "core": 0, "kl": 0.5,                                 # pure mechanics and math (kl: the short path to core.kl)
    "prompts": 1,                                         # shipped / user prompt files
    "bridge": 2, "models": 2.5, "generation": 2.5,        # name -> bridge, tokenize, capture, generate
    "checkpoints": 3,                                     # HF-format save / list
    "reward": 4, "rewards": 4.5, "reward_model": 4.5, "preference_data": 4.5,
    "edits": 4, "steering": 4.5,                          # edits know no training
    "ppo": 5, "measure": 5, "diff": 5,                    # training; measurements and diffs of models
    "patching": 6, "frontier": 6,                         # analyses built on edits, measure and diff
    "report": 7, "plots": 7.5,                            # tables and figures -> pages
    "cli": 8, "__main__": 9,                              # the command line
    "__init__": 10,                                       # the root facade (lazy re-exports)
}
# Third-party modules imported once before the forks (ours never: that is what an import cycle needs to show). The
# submodules our modules import at their top (transformer_lens.model_bridge alone takes seconds) are here too, or
# every child would import them again. Hand-picked: preloading every top-level import of our modules (markdown,
# plotly, each lazy `from transformers import X`) was measured slower, a bigger parent making every fork dearer.
PRELOAD = ("torch", "numpy", "pandas", "jaxtyping", "tqdm", "yaml", "safetensors", "safetensors.torch", "einops",
           "transformers", "transformers.models.llama.modeling_llama", "transformer_lens",
           "transformer_lens.model_bridge", "transformer_lens.hook_points", "matplotlib", "matplotlib.pyplot",
           "scipy.stats")


# ----------------------------------------------------------------------------------------------
# Reading the source


@lru_cache(maxsize=None)
def _import_nodes_of(text: str) -> tuple[ast.AST, ...]:
    return tuple(n for n in ast.walk(ast.parse(text)) if isinstance(n, (ast.Import, ast.ImportFrom, ast.Call)))


def import_nodes(path: Path) -> tuple[ast.AST, ...]:
    """The file's imports and calls, anywhere in it (what the graph is read from), parsed once per distinct text:
    the checks read every file many times over (the layout test re-parsed all of them ~20 times, 25 s)."""
    return _import_nodes_of(path.read_text())


def discover(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every .py file of the package."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _absolute(name: str, level: int, current: str, modules: dict[str, Path]) -> str:
    if level == 0:
        return name
    base = current.split(".") if _is_package(current, modules) else current.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of ours."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def lazy_tables(modules: dict[str, Path]) -> dict[str, dict[str, str]]:
    """module -> {exported name: module it lives in}, from ``names_from("module", "name", ...)`` calls."""
    tables: dict[str, dict[str, str]] = {}
    for name, path in modules.items():
        table = {}
        for node in import_nodes(path):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "names_from" and node.args
                    and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args)):
                target = node.args[0].value
                if target.startswith("."):
                    target = _absolute(target.lstrip("."), len(target) - len(target.lstrip(".")), name, modules)
                for exported in node.args[1:]:
                    table[exported.value] = target
        if table:
            tables[name] = table
    return tables


def module_edges(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """module -> modules of ours it imports (statements anywhere in the file, plus lazy re-export targets)."""
    modules = modules or discover()
    tables = lazy_tables(modules)
    edges: dict[str, set[str]] = {m: set() for m in modules}

    def resolve(target: str, attr: str | None) -> str | None:
        if attr is not None:
            if f"{target}.{attr}" in modules:
                return f"{target}.{attr}"
            if target in modules and _is_package(target, modules) and attr in tables.get(target, {}):
                return _known(tables[target][attr], modules)  # a package's lazy re-export: its real home
        return _known(target, modules)

    for name, path in modules.items():
        for node in import_nodes(path):
            found: list[str | None] = []
            if isinstance(node, ast.Import):
                found = [resolve(a.name, None) for a in node.names if a.name.startswith(PACKAGE)]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node.module or "", node.level, name, modules)
                if base.split(".")[0] == PACKAGE:
                    found = [resolve(base, a.name) for a in node.names]
            for target in found:
                if target is not None and target != name:
                    edges[name].add(target)
        for target in tables.get(name, {}).values():
            known = _known(target, modules)
            if known is not None and known != name:
                edges[name].add(known)
    return edges


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def unit_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for src, targets in edges.items():
        out[unit_of(src)]
        for t in targets:
            if unit_of(t) != unit_of(src):
                out[unit_of(src)].add(unit_of(t))
    return dict(out)


# ----------------------------------------------------------------------------------------------
# Checks


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def statement_edges(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """Like `module_edges` but without the lazy re-export tables (those run only when a name is used)."""
    modules = modules or discover()
    lazy = {m: {_known(t, modules) for t in table.values()} for m, table in lazy_tables(modules).items()}
    edges = module_edges(modules)
    # keep a lazy target only when a statement imports it too
    out = {}
    for name, targets in edges.items():
        out[name] = {t for t in targets if t not in lazy.get(name, set()) or _imports_directly(modules[name], t)}
    return out


def _imports_directly(path: Path, target: str) -> bool:
    for node in import_nodes(path):
        if isinstance(node, ast.Import) and any(a.name == target for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module == target or any(f"{node.module}.{a.name}" == target for a in node.names)):
            return True
    return False


def problems(modules: dict[str, Path] | None = None) -> list[str]:
    """Every violation: unknown units, upward or sideways imports between units, cycles."""
    modules = modules or discover()
    edges = module_edges(modules)
    units = unit_edges(edges)
    out = [f"unit {u!r} has no layer: add it to LAYERS in scripts/import_graph.py" for u in sorted(units)
           if u not in LAYERS]
    for src, targets in sorted(units.items()):
        for t in sorted(targets):
            if src in LAYERS and t in LAYERS and LAYERS[t] >= LAYERS[src]:
                via = sorted(f"{a} -> {b}" for a, bs in edges.items() for b in bs
                             if unit_of(a) == src and unit_of(b) == t)
                out.append(f"{src} (layer {LAYERS[src]}) imports {t} (layer {LAYERS[t]}): a unit imports only "
                           f"lower layers ({'; '.join(via[:3])})")
    for graph, what in ((units, "units"), (statement_edges(modules), "modules")):
        cycle = find_cycle(graph)
        if cycle:
            out.append(f"import cycle between {what}: {' -> '.join(cycle)}")
    return out


# ----------------------------------------------------------------------------------------------
# The layout, written where people read it

LAYOUT_INTRO = ("Layout, written from the import graph by ``python scripts/import_graph.py --write`` (each unit by layer,\n"
                "with the units it imports; a unit imports only lower layers)::")
README_START = "<!-- layout: written by `python scripts/import_graph.py --write` -->"
README_END = "<!-- /layout -->"
_FACADES = ("__init__", "__main__")  # the root facade and `python -m`: not layers of the package


def layout_rows(modules: dict[str, Path] | None = None) -> list[tuple[float, str, list[str]]]:
    """``(layer, unit, units it imports)`` for every unit of the package, lowest layer first."""
    modules = modules or discover()
    units = unit_edges(module_edges(modules))
    order = lambda u: (LAYERS.get(u, 99), u)  # noqa: E731
    return [(LAYERS.get(u, 99), u, sorted(units[u], key=order)) for u in sorted(units, key=order) if u not in _FACADES]


def docstring_layout(modules: dict[str, Path] | None = None) -> str:
    """The package docstring's layout section: `LAYOUT_INTRO`, then one indented line per unit."""
    rows = layout_rows(modules)
    width = max(len(u) for _, u, _ in rows)
    lines = [f"    {f'[{layer:g}]':>4} {unit:<{width}}  -> {', '.join(deps) or '(nothing of ours)'}"
             for layer, unit, deps in rows]
    return LAYOUT_INTRO + "\n\n" + "\n".join(lines) + "\n"


def readme_layout(modules: dict[str, Path] | None = None) -> str:
    """The README's layout sentence: the layers from the bottom up, units of one layer joined by '/'."""
    layers: dict[float, list[str]] = defaultdict(list)
    for layer, unit, _ in layout_rows(modules):
        layers[layer].append(f"`{unit}`")
    chain = " -> ".join("/".join(units) for _, units in sorted(layers.items()))
    return (f"The package layout (one job per subpackage, imports only go down: {chain}) is printed by "
            f"`python scripts/import_graph.py`.")


def _with_docstring_layout(text: str, layout: str) -> str:
    pattern = re.compile(re.escape(LAYOUT_INTRO) + r"\n\n(?:    .*\n)+")
    if not pattern.search(text):
        raise ValueError(f"rlhf_interp/__init__.py's docstring has no section starting {LAYOUT_INTRO[:40]!r}...")
    return pattern.sub(lambda _: layout, text, count=1)


def _with_readme_layout(text: str, sentence: str) -> str:
    pattern = re.compile(re.escape(README_START) + r"\n.*?\n" + re.escape(README_END), flags=re.S)
    if not pattern.search(text):
        raise ValueError(f"README.md has no {README_START} ... {README_END} block.")
    return pattern.sub(lambda _: f"{README_START}\n{sentence}\n{README_END}", text, count=1)


def write_layout(root: Path = ROOT, *, check: bool = False) -> list[Path]:
    """Rewrite the layout in ``rlhf_interp/__init__.py`` and ``README.md`` from the graph; the files that changed.
    ``check``: write nothing, return the files that are stale."""
    modules = discover(root)
    targets = {root / PACKAGE / "__init__.py": lambda t: _with_docstring_layout(t, docstring_layout(modules)),
               root / "README.md": lambda t: _with_readme_layout(t, readme_layout(modules))}
    stale = []
    for path, rewrite in targets.items():
        text = path.read_text(encoding="utf-8")
        new = rewrite(text)
        if new != text:
            stale.append(path)
            if not check:
                path.write_text(new, encoding="utf-8")
    return stale


# ----------------------------------------------------------------------------------------------
# Importing each module alone


def _preload() -> None:
    for lib in PRELOAD:
        try:
            importlib.import_module(lib)
        except ImportError:  # an optional library: the child importing it reports that
            pass


def _use_compiled(modules: dict[str, Path]) -> None:
    """Compile our source once, here: the import system's ``get_code`` returns it to every child. Without this,
    each child compiles every module it imports (under ``PYTHONDONTWRITEBYTECODE``, or with no writable
    ``__pycache__``, no child's compiling is kept; the whole package compiles in ~0.25 s of CPU)."""
    from importlib.machinery import SourceFileLoader

    codes = {}
    for path in modules.values():
        try:
            codes[os.path.realpath(path)] = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        except (SyntaxError, ValueError):  # the child compiles it again and reports the error
            pass
    real = SourceFileLoader.get_code

    def get_code(self, fullname):
        code = codes.get(os.path.realpath(self.path))
        return code if code is not None else real(self, fullname)

    SourceFileLoader.get_code = get_code


def _import_alone(module: str, extra_path: str | None = None) -> str | None:
    """In a forked child with none of our modules loaded: import ``module``; the error text or None."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        code = 0
        try:
            if extra_path:
                sys.path.insert(0, extra_path)
            __import__(module)
        except BaseException:  # noqa: BLE001 - report anything, including SystemExit
            os.write(write, traceback.format_exc().encode()[-4000:])
            code = 1
        os.close(write)
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as handle:
        message = handle.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return message or f"exit status {status}"


class FreshImporter:
    """A fork server for `fresh_imports`: one interpreter imports the third-party libraries (`PRELOAD`) and
    compiles our source (seconds, once), then forks one child per module, which imports that module
    with none of rlhf_interp loaded. Keep one open to check several lists of modules for the preload's price once.

        with FreshImporter() as importer:
            failed = importer.run(["rlhf_interp.core.io"])
    """

    def __init__(self) -> None:
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen([sys.executable, __file__, "--_fork-imports"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, text=True, cwd=ROOT)

    def run(self, modules: list[str], extra_path: str | None = None) -> dict[str, str]:
        """``{module: error}`` for each of ``modules`` that fails to import alone; ``extra_path`` goes first on
        the children's ``sys.path``."""
        try:
            self._proc.stdin.write(json.dumps({"modules": modules, "path": extra_path}) + "\n")
            self._proc.stdin.flush()
            answer = self._proc.stdout.readline()
        except BrokenPipeError:
            answer = ""
        if not answer:
            self._stderr.seek(0)
            raise RuntimeError(f"import checker crashed:\n{self._stderr.read().decode(errors='replace')[-4000:]}")
        return json.loads(answer)

    def close(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            self._proc.stdin.close()
        self._proc.wait(timeout=60)
        self._stderr.close()

    def __enter__(self) -> "FreshImporter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def fresh_imports(modules: list[str] | None = None, *, subprocess_each: bool = False,
                  extra_path: str | None = None, importer: FreshImporter | None = None) -> dict[str, str]:
    """Import every module alone; ``{module: error}`` for those that fail.

    Default: a `FreshImporter` (``importer``, or a new one for this call) forks once per module from an
    interpreter that has imported the third-party libraries, so each module is imported with none of rlhf_interp
    loaded (what an import cycle needs to show) without paying torch's import time per module.
    ``subprocess_each``: a new interpreter per module (slow; the strictest form). ``extra_path`` is put first on
    the path.
    """
    if modules is None:  # a `__main__` module runs the command line when imported: not a module to import
        modules = [m for m in sorted(discover()) if not m.endswith("__main__")]
    if subprocess_each:
        env = dict(os.environ)
        if extra_path:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
        failed = {}
        for m in modules:
            run = subprocess.run([sys.executable, "-c", f"import {m}"], capture_output=True, text=True, cwd=ROOT,
                                 env=env)
            if run.returncode:
                failed[m] = run.stderr[-4000:]
        return failed
    if importer is not None:
        return importer.run(modules, extra_path)
    with FreshImporter() as own:
        return own.run(modules, extra_path)


def _fork_imports_main() -> None:
    """The fork server: one JSON request a line on stdin, ``{"modules": [...], "path": ...}``; one JSON answer a
    line, ``{module: error}``, on what was stdout (fd 1 is stderr from here, so a module's prints cannot mix in)."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    modules = discover()
    _preload()
    loaded = [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]
    assert not loaded, f"the preload imported our code: {loaded}"
    _use_compiled(modules)
    gc.freeze()  # the children's garbage collections leave the preloaded objects (and their pages) alone
    for line in sys.stdin:
        request = json.loads(line)
        failed = {m: err for m in request["modules"] if (err := _import_alone(m, request["path"]))}
        answers.write(json.dumps(failed) + "\n")
        answers.flush()
    sys.exit(0)


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", action="store_true", help="print the module-level graph")
    parser.add_argument("--check", action="store_true", help="exit 1 on any violation")
    parser.add_argument("--fresh", action="store_true", help="also import every module alone")
    parser.add_argument("--write", action="store_true",
                        help="rewrite the layout in rlhf_interp/__init__.py's docstring and README.md from the graph")
    parser.add_argument("--_fork-imports", dest="fork_imports", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fork_imports:
        _fork_imports_main()
    modules = discover()
    edges = module_edges(modules)
    if args.write:
        changed = write_layout()
        print("rewrote " + ", ".join(str(p.relative_to(ROOT)) for p in changed) if changed else "layout up to date")
    if args.modules:
        for src in sorted(edges):
            print(f"{src} -> {', '.join(sorted(edges[src])) or '(nothing of ours)'}")
    else:
        units = unit_edges(edges)
        for unit in sorted(units, key=lambda u: (LAYERS.get(u, 99), u)):
            targets = sorted(units[unit], key=lambda u: (LAYERS.get(u, 99), u))
            print(f"[{LAYERS.get(unit, '?'):>4}] {unit:<16} -> {', '.join(targets) or '(nothing of ours)'}")
    found = problems(modules)
    if args.fresh:
        found += [f"importing {m} alone fails:\n{err}" for m, err in fresh_imports().items()]
    sys.stdout.flush()
    for p in found:
        print(f"PROBLEM: {p}", file=sys.stderr)
    if not found:
        print(f"ok: {len(modules)} modules, no cycle, every import goes down a layer")
    return 1 if (found and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
