"""Lazy re-exports (PEP 562) and deprecated import paths, written once for every package ``__init__``.

Why: ``import rlhf_interp`` (or ``rlhf_interp.edits``) should not import torch, transformers and
TransformerLens before a name that needs them is used; the CLI's ``--help`` and pure helpers stay fast.
A package lists where each public name lives; the module is imported on first access.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any, Callable


def lazy_exports(package: str, where: dict[str, str], *, deprecated: str | None = None
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for module ``package`` whose names live in ``where`` (name -> module).

    Module paths starting with ``.`` are relative to ``package``. With ``deprecated`` (the new home, e.g.
    ``"rlhf_interp.bridge"``) every access warns with a DeprecationWarning pointing at the caller's line
    (Python's warning filters show it once per line).
    """

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package if module.startswith(".") else None), name)
        if deprecated is not None:
            warnings.warn(f"{package}.{name} moved to {deprecated}; the old path works for one more release.",
                          DeprecationWarning, stacklevel=2)
        else:
            setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(where) | set(vars(sys.modules[package])))

    return __getattr__, __dir__


def names_from(module: str, *names: str) -> dict[str, str]:
    """``{name: module}`` for several names of one module (to build a ``where`` table)."""
    return {name: module for name in names}
