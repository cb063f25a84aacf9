"""The docs site (mkdocs.yml) builds offline in strict mode: every page, every API entry, every cross-reference.

``mkdocs build --strict`` turns each warning into an error: a docstring reference to a name that is not
documented, a missing page in the nav, a link to a page that does not exist. The API pages are generated from
each package's ``__all__`` by ``scripts/docs_hooks.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for _module in ("mkdocs", "mkdocstrings", "material", "jupytext"):
    pytest.importorskip(_module, reason=f"{_module} is in the dev extra: pip install -e '.[dev]'")

PAGES = ["index.html", "tour/index.html", "kl/index.html", "algorithms/index.html", "scaling/index.html",
         "architecture/index.html",
         "api/index.html", "api/bridge/index.html", "api/edits/index.html", "api/measure/index.html",
         "api/diff/index.html", "api/patching/index.html", "api/frontier/index.html", "api/ppo/index.html",
         "api/reward/index.html", "api/kl/index.html", "api/report/index.html", "api/plots/index.html",
         "api/prompts/index.html", "api/checkpoints/index.html"]


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_docs_site_builds_in_strict_mode(tmp_path):
    run = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert run.returncode == 0, run.stderr[-4000:]
    for page in PAGES:
        assert (tmp_path / "site" / page).exists(), page
    edits = (tmp_path / "site" / "api/edits/index.html").read_text()
    for public in ("Steering", "Ablation", "SteeringVector", "finetuning_direction"):
        assert f'id="rlhf_interp.edits.' in edits and public in edits, public
    # private helpers stay out
    assert "_vector_for" not in edits and "_validate" not in edits
    tour = (tmp_path / "site" / "tour/index.html").read_text()
    assert "diff_models" in tour and "frontier_figure" in tour


def test_a_broken_reference_fails_the_build(tmp_path):
    """The same plugins and strictness on a one-page site whose only link points at a name that does not exist."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("See [load_model][rlhf_interp.bridge.loading.no_such_function].\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"site_name: t\ndocs_dir: {docs}\nstrict: true\ntheme: {{name: material, font: false}}\n"
                      f"plugins: [autorefs, {{mkdocstrings: {{handlers: {{python: {{paths: [{ROOT}]}}}}}}}}]\n")
    run = _build(config, tmp_path / "site")
    assert run.returncode != 0
    assert "no_such_function" in run.stderr
