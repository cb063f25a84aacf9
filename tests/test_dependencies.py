"""Every import the package, its scripts and its tests make is declared, and every module imports.

Why: a package that happens to be on the developer's machine hides a missing declaration (scipy and orjson
once did: a fresh venv failed 7 tests while CI was green). These tests read the code's own imports and
``pyproject.toml``'s declarations, so the next undeclared import fails here, not on a user's machine.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata as metadata
import importlib.util
import pkgutil
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("rlhf_interp", "analyses", "benchmarks", "tests", "scripts", "examples")
# Our own modules imported by scripts and tests by their bare names (sys.path holds their folder).
LOCAL_NAMES = {"rlhf_interp"} | {p.stem for d in ("analyses", "benchmarks", "tests", "examples")
                                 for p in (ROOT / d).glob("*.py")}
# Needed by a library call rather than an import: each must be declared too.
IMPLICIT = {
    "scipy": "pandas' Series.corr(method='spearman') and the statistics in rlhf_interp.core",
    "tabulate": "pandas' DataFrame.to_markdown in every report",
    "gguf": "transformers' GGUF loader for the embedded model",
}
# Extras a user opts into; code importing them does so lazily, behind a clear message.
OPTIONAL_EXTRAS = {"bench", "tensorboard", "wandb", "docs"}


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].strip().lower().replace("_", "-")


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_requirement_name(s) for s in project["dependencies"]}
    extras = {name: {_requirement_name(s) for s in specs}
              for name, specs in project.get("optional-dependencies", {}).items()}
    return runtime, extras


def _imported_top_names() -> dict[str, set[str]]:
    """Top-level names imported anywhere (module level or inside functions), with the files importing them."""
    names: dict[str, set[str]] = {}
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found = [node.module]
                else:
                    continue
                for name in found:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in LOCAL_NAMES:
                        names.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return names


def _distribution_of(top: str) -> str:
    dists = metadata.packages_distributions().get(top)
    if not dists:
        pytest.fail(f"`import {top}` (in {sorted(_imported_top_names()[top])[:3]}) resolves to no installed "
                    f"distribution: install it and declare it in pyproject.toml")
    return dists[0].lower().replace("_", "-")


def test_every_import_is_declared_directly():
    """An import satisfied only through another package's dependencies is a missing declaration."""
    runtime, extras = _declared()
    declared = runtime | set().union(*extras.values())
    missing = {}
    for top, files in sorted(_imported_top_names().items()):
        if importlib.util.find_spec(top) is None:
            # Not installed: it must belong to an opt-in extra (the code imports it lazily).
            in_extra = [name for name, reqs in extras.items() if top.lower().replace("_", "-") in reqs]
            if not (set(in_extra) & OPTIONAL_EXTRAS):
                missing[top] = sorted(files)[:3]
            continue
        if _distribution_of(top) not in declared:
            missing[top] = sorted(files)[:3]
    for name, why in IMPLICIT.items():
        if name not in runtime:
            missing[name] = [why]
    assert not missing, ("imported but not declared in pyproject.toml (add each to `dependencies`, or to an "
                         f"extra if only optional code imports it lazily): {missing}")


def test_test_and_dev_imports_are_in_the_dev_extra():
    """What the README's test command installs (``.[dev]``) covers every import of the tests."""
    runtime, extras = _declared()
    have = runtime | extras.get("dev", set())
    missing = {}
    for top, files in _imported_top_names().items():
        test_files = [f for f in files if f.startswith(("tests/", "examples/"))]
        if test_files and importlib.util.find_spec(top) is not None and _distribution_of(top) not in have:
            missing[top] = test_files[:3]
    assert not missing, f"the tests import these, but `pip install -e .[dev]` does not install them: {missing}"


def _package_modules() -> list[str]:
    import rlhf_interp

    # `__main__` modules run the CLI when imported; their one import (`rlhf_interp.cli`) is covered anyway.
    return sorted(m.name for m in pkgutil.walk_packages(rlhf_interp.__path__, "rlhf_interp.")
                  if not m.name.endswith("__main__"))


@pytest.mark.parametrize("module", _package_modules())
def test_every_package_module_imports(module):
    importlib.import_module(module)


def _scripts() -> list[Path]:
    return sorted(p for d in ("analyses", "benchmarks", "scripts") for p in (ROOT / d).glob("*.py"))


@pytest.mark.parametrize("script", _scripts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_script_imports(script, monkeypatch):
    """Importing a script runs its module-level imports (not its ``main``): a missing package fails here."""
    monkeypatch.syspath_prepend(str(script.parent))
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    name = f"_script_{script.parent.name}_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
