"""MkDocs hook (``mkdocs.yml``: ``hooks``): the pages generated at build time, so none can go stale.

- ``tour.md``: `examples/tour.py` (the notebook's paired source) as a markdown page, via jupytext;
- ``api/*.md``: one page per package, one entry per public name. "Public" = the package's ``__all__`` (the
  names its ``__init__`` exports); each object is documented once, on the page of the package it is defined
  in, and the other packages that re-export it link there (a cross-reference that must resolve: a name
  whose documentation cannot be found fails the strict build).

``mkdocs build --strict`` (what ``tests/test_docs.py`` runs) turns every warning into an error.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (page, package, title, intro). The order decides which page documents an object several packages export:
# the first whose package contains the module that defines it.
API_PAGES: list[tuple[str, str, str]] = [
    ("api/bridge.md", "rlhf_interp.bridge", "Models: loading, tokens, generation, activations"),
    ("api/edits.md", "rlhf_interp.edits", "Edits: steering, ablations, vectors"),
    ("api/measure.md", "rlhf_interp.measure", "Measuring an edit: KL shift, reward, sweeps"),
    ("api/diff.md", "rlhf_interp.diff", "Model diffing"),
    ("api/patching.md", "rlhf_interp.patching", "Causal patching"),
    ("api/frontier.md", "rlhf_interp.frontier", "The equal-KL frontier"),
    ("api/ppo.md", "rlhf_interp.ppo", "PPO with a KL penalty"),
    ("api/reward.md", "rlhf_interp.reward", "Rewards and reward models"),
    ("api/kl.md", "rlhf_interp.core.kl", "KL, entropy and the KL estimators"),
    ("api/report.md", "rlhf_interp.report", "Reports"),
    ("api/plots.md", "rlhf_interp.report.plots", "Figures"),
    ("api/prompts.md", "rlhf_interp.prompts", "Prompts"),
    ("api/checkpoints.md", "rlhf_interp.checkpoints", "Checkpoints"),
]
TOP = "rlhf_interp"


def public_names(package: str) -> list[str]:
    """The package's ``__all__``; for a module without one, the functions and classes it defines."""
    module = importlib.import_module(package)
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    real = getattr(module, "__name__", package)
    return [n for n, obj in vars(module).items() if not n.startswith("_")
            and (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == real]


def home(package: str, name: str) -> str:
    """The dotted path of the module that defines ``package.name`` (where griffe finds its source)."""
    module = importlib.import_module(package)
    obj = getattr(module, name)
    defined = getattr(obj, "__module__", None) if (inspect.isclass(obj) or inspect.isroutine(obj)) else None
    if defined and defined.startswith(TOP):
        return defined
    # a constant: follow the package's lazy table (``_WHERE``) and ``from X import NAME`` re-exports to the
    # module that assigns it
    where = getattr(module, "_WHERE", {}).get(name)
    if where:
        return home(importlib.util.resolve_name(where, package), name)
    current = getattr(module, "__name__", package)
    source = inspect.getsource(importlib.import_module(current))
    if re.search(rf"^{name}\s*[:=]", source, re.M):
        return current
    for found in re.finditer(r"^from\s+([\w.]+)\s+import\s+(\([^)]*\)|[^\n]*)", source, re.M):
        if re.search(rf"\b{name}\b", found.group(2)):
            return home(importlib.util.resolve_name(found.group(1), current), name)
    return current


def _owner(path: str, pages: dict[str, tuple[str, list[str]]]) -> str | None:
    """The page documenting the object at ``path`` (module.name)."""
    module, name = path.rsplit(".", 1)
    real = {page: importlib.import_module(pkg).__name__ for page, (pkg, _) in pages.items()}
    for page, (package, names) in pages.items():
        if name in names and (module == real[page] or module.startswith(real[page] + ".")):
            return page
    for page, (package, names) in pages.items():
        if name in names:
            return page
    return None


def api_pages() -> dict[str, str]:
    """Page path -> markdown, for every API page and the index."""
    pages = {page: (package, public_names(package)) for page, package, _ in API_PAGES}
    titles = {page: title for page, _, title in API_PAGES}
    documented: dict[str, str] = {}   # dotted path -> page
    out: dict[str, str] = {}
    for page, (package, names) in pages.items():
        lines = [f"# `{package}`: {titles[page]}", "", f"::: {importlib.import_module(package).__name__}",
                 "    options:", "      members: false", "      show_root_heading: false", ""]
        elsewhere = []
        for name in names:
            path = f"{home(package, name)}.{name}"
            owner = _owner(path, pages)
            if owner == page and path not in documented:
                documented[path] = page
                lines += [f"::: {path}", "    options:", "      show_root_heading: true",
                          "      heading_level: 2", ""]
            else:
                elsewhere.append(f"[`{name}`][{path}]")
        if elsewhere:
            lines += ["## Re-exported here", "", "Documented with the package that defines them: "
                      + ", ".join(elsewhere) + ".", ""]
        out[page] = "\n".join(lines)
    top = importlib.import_module(TOP)
    rows = [f"| [`{name}`][{home(TOP, name)}.{name}] | `{home(TOP, name)}` |" for name in top.__all__]
    out["api/index.md"] = "\n".join([
        "# API reference", "",
        "Every public name, by package: a package's public names are the ones its `__init__` exports "
        "(`__all__`); anything else is internal and may change. Packages import lazily, so "
        "`import rlhf_interp` stays light.", "",
        *[f"- [`{package}`]({Path(page).name}): {titles[page]}" for page, package, _ in API_PAGES], "",
        f"## `{TOP}`: the names exported at the top level", "", f"::: {TOP}", "    options:",
        "      members: false", "      show_root_heading: false", "",
        "| name | defined in |", "| --- | --- |", *rows, ""])
    return out


def tour_page() -> str:
    """The tour notebook's paired source as markdown (prose cells as text, code cells as code blocks)."""
    import jupytext

    notebook = jupytext.read(ROOT / "examples" / "tour.py")
    text = jupytext.writes(notebook, fmt="md")
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)   # jupytext's YAML header
    return ("!!! note \"Run it\"\n    Open `examples/tour.ipynb` in JupyterLab or VS Code and run all, or run it top to "
            "bottom from a shell: `python examples/run_tour.py` (see `examples/README.md`). This page shows the code "
            "and what to look at; the outputs appear when you run it.\n\n" + text)


def on_files(files, config):
    for path, content in {"tour.md": tour_page(), **api_pages()}.items():
        files.append(File.generated(config, path, content=content))
    return files
