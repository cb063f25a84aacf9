"""Every code block of the README runs, so the README cannot drift from the API and the CLI.

Blocks run in order, each in a fresh process and its own scratch directory (``configs/`` and ``analyses/`` linked
in): ``python`` blocks as a script, shell blocks (``bash`` or unlabelled) line by line with bash, ``json`` blocks
parsed. The command-line examples continue each other, and so do the Python ones: every ``runs/NAME`` an earlier
block of the same kind wrote is linked in (the CLI's ``runs/rm`` is not the Python example's). Markers in the README, on the line before a block, say what happens instead:

- ``<!-- readme-test: skip: REASON -->``: not run, for the reason given (long training, other tools' outputs);
- ``<!-- readme-test: replace "OLD" "NEW" ... -->``: run with each OLD replaced by NEW (e.g. a smaller config).

In shell lines, ``[optional]`` parts of a synopsis are dropped.

The one switch: the embedded model. By default ``RLHF_INTERP_CACHE`` points at the scratch directory, where
``smollm2-135m`` is a tiny random model of SmolLM2-135M's shape (30 layers, 9 heads, 3 KV heads, the real
tokenizer; d_model 72), so every block that names the embedded model (or uses it by default) runs in seconds.
``RLHF_INTERP_README_MODEL=embedded python -m pytest tests/test_readme.py`` runs them on the real one (slow).
The README's ``runs/periods`` (its main PPO run) is stood in for by a 2-phase run of ``configs/tiny.yaml`` on
that model.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->", re.S)
EMBEDDED = os.environ.get("RLHF_INTERP_README_MODEL", "tiny") == "embedded"


@dataclass
class Block:
    line: int          # of the opening fence, 1-based
    lang: str
    code: str
    skip: str | None = None
    replace: list[tuple[str, str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        first = next((s for s in self.code.splitlines() if s.strip()), "")[:40]
        return f"{self.lang or 'shell'}-{re.sub(r'[^A-Za-z0-9_.]+', '_', first).strip('_')}"   # no line: it moves

    def source(self) -> str:
        code = self.code
        for old, new in self.replace:
            assert old in code, f"README line {self.line}: replace marker's {old!r} is not in the block"
            code = code.replace(old, new)
        return code


def readme_blocks(text: str) -> list[Block]:
    """Fenced blocks with their markers (a marker applies to the block right after it)."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```\s*(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, lang = i, fence.group(1).lower()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        block = Block(start + 1, lang, "\n".join(lines[start + 1:end]) + "\n")
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.search(before)
        if marker:
            directive = marker.group(1)
            if directive.startswith("skip"):
                block.skip = directive.partition(":")[2].strip() or "marked skip"
            elif directive.startswith("replace"):
                pairs = re.findall(r'"((?:[^"\\]|\\.)*)"', directive)
                assert len(pairs) % 2 == 0, f"README line {start + 1}: replace needs OLD NEW pairs"
                block.replace = list(zip(pairs[::2], pairs[1::2]))
            else:
                raise AssertionError(f"README line {start + 1}: unknown readme-test marker {directive!r}")
        blocks.append(block)
        i = end + 1
    return blocks


BLOCKS = readme_blocks(README.read_text())


def shell_commands(code: str) -> list[str]:
    """Commands of a shell block: continuation lines joined, comments and ``[optional]`` parts dropped."""
    commands, current = [], ""
    for raw in code.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        current += line
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        current = re.sub(r"\s\[[^\]]*\]", "", current).strip()
        if current:
            commands.append(current)
        current = ""
    return commands


def write_stand_in(directory: Path) -> None:
    """A tiny random Llama of SmolLM2-135M's shape and tokenizer, saved as the cached embedded model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhf_interp.bridge import build_tiny_model, load_tokenizer

    config = LlamaConfig(**{**build_tiny_model().config.to_dict(), "num_hidden_layers": 30, "hidden_size": 72,
                            "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 8,
                            "intermediate_size": 144, "tie_word_embeddings": True})
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.config.name_or_path = "smollm2-135m"
    model.save_pretrained(directory)
    load_tokenizer().save_pretrained(directory)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """The scratch directory every block runs in, and the environment it runs with."""
    work = tmp_path_factory.mktemp("readme")
    for name in ("configs", "analyses"):
        (work / name).symlink_to(ROOT / name)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(ROOT)}
    if not EMBEDDED:
        env["RLHF_INTERP_CACHE"] = str(work / "cache")
        write_stand_in(work / "cache" / "models" / "smollm2-135m")
    run = subprocess.run([sys.executable, "-m", "rlhf_interp.cli", "train", "configs/tiny.yaml", "--no-progress",
                          "--out", "runs/periods", "--set", "model=smollm2-135m", "--set", "max_new_tokens=6"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (work / "texts.txt").write_text("One. Two. Three.\nnone at all\n")
    # per kind of block: runs/NAME -> the directory the first block to write it wrote
    runs = {kind: {"periods": work / "runs" / "periods"} for kind in ("python", "shell")}
    return work, env, runs


def block_directory(work: Path, block: Block, runs: dict[str, Path]) -> Path:
    """A fresh directory for one block: configs, analyses, texts.txt and the earlier blocks' runs linked in."""
    folder = work / f"block_{block.line}"
    (folder / "runs").mkdir(parents=True)
    for name in ("configs", "analyses", "texts.txt"):
        (folder / name).symlink_to(work / name)
    for name, path in runs.items():
        (folder / "runs" / name).symlink_to(path)
    return folder


def record_runs(folder: Path, runs: dict[str, Path]) -> None:
    for path in sorted((folder / "runs").iterdir()):
        if not path.is_symlink() and path.is_dir():
            runs.setdefault(path.name, path)


def test_readme_has_blocks_and_every_skip_says_why():
    assert len(BLOCKS) >= 10
    runnable = [b for b in BLOCKS if b.skip is None]
    assert len([b for b in runnable if b.lang == "python"]) >= 3, "the README's Python examples are not run"
    for block in BLOCKS:
        assert block.skip is None or len(block.skip) > 10, f"README line {block.line}: say why it is skipped"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs(block: Block, sandbox):
    if block.skip is not None:
        pytest.skip(f"README line {block.line}: {block.skip}")
    work, env, all_runs = sandbox
    runs = all_runs["python" if block.lang == "python" else "shell"]
    code = block.source()
    if block.lang == "json":
        for line in code.splitlines():
            if line.strip():
                json.loads(line)
        return
    folder = block_directory(work, block, runs)
    if block.lang == "python":
        (folder / "block.py").write_text(code)
        run = subprocess.run([sys.executable, "block.py"], cwd=folder, env=env, capture_output=True, text=True,
                             timeout=900)
        assert run.returncode == 0, f"README line {block.line} (python):\n{run.stderr[-4000:]}"
    else:
        assert block.lang in ("", "bash", "sh", "shell"), f"README line {block.line}: no runner for {block.lang!r}"
        for command in shell_commands(code):
            run = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True,
                                 timeout=900)
            assert run.returncode == 0, (f"README line {block.line}: `{command}` exited {run.returncode}:\n"
                                         f"{(run.stderr or run.stdout)[-4000:]}")
    record_runs(folder, runs)


def test_shell_commands_drop_comments_and_optional_parts():
    code = 'rlhf-interp diff --base a --tuned b --out d [--prompts FILE] \\\n   [--trajectory]   # comment\n# only\n'
    assert shell_commands(code) == ["rlhf-interp diff --base a --tuned b --out d"]
    assert shlex.split(shell_commands("x --set 'k={\"c\": \".\"}'  # c")[0]) == ["x", "--set", 'k={"c": "."}']
