"""Every code block of the README runs, so the README cannot drift from the API and the CLI.

Blocks run in order, each in a fresh process and its own scratch directory (``configs/`` and ``analyses/`` linked
in): ``python`` blocks as a script, shell blocks (``bash`` or unlabelled) line by line with bash, ``json`` blocks
parsed. The command-line examples continue each other, and so do the Python ones: every ``runs/NAME`` an earlier
block of the same kind wrote is linked in (the CLI's ``runs/rm`` is not the Python example's). Markers in the README, on the line before a block, say what happens instead:

- ``<!-- readme-test: skip: REASON -->``: not run, for the reason given (long training, other tools' outputs);
- ``<!-- readme-test: replace "OLD" "NEW" ... -->``: run with each OLD replaced by NEW (e.g. a smaller config;
  ``\\"`` is a quote inside OLD or NEW).

In shell lines, ``[optional]`` parts of a synopsis are dropped.

Processes: a fresh interpreter spends ~7 s importing torch, transformers and transformer_lens (and ~3 s tearing
them down), most of a small block's time. So the Python blocks and the shell's plain ``rlhf-interp ARGS`` and
``python SCRIPT.py ARGS`` lines run in children of one fork server that imported the toolkit once
(tests/fork_server.py, `run_forked`): each child is a real process with the command's own argv, working directory,
environment, stdout/stderr and exit code, and ends as the interpreter does (``sys.exit(main())`` for the console
script, ``runpy`` as ``__main__`` for a script). Lines with anything for the shell to do (``&&``, pipes, ``$``,
globs) run in bash. `test_forked_commands_pass_on_exit_codes_output_and_timeouts` starts the installed
``rlhf-interp`` script itself.

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
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fork_server import ForkServer

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
                pairs = [re.sub(r"\\(.)", r"\1", text) for text in re.findall(r'"((?:[^"\\]|\\.)*)"', directive)]
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


SHELL_WORK = re.compile(r"[$`*?~|&;<>()]|\{[^{}]*,")   # a line with any of these runs in bash


def direct_argv(command: str) -> list[str] | None:
    """``rlhf-interp ARGS`` or ``python SCRIPT.py ARGS`` as argv when the shell has nothing to do on the line but
    split it (no operators, expansions or globs; quotes as bash reads them), else None."""
    if SHELL_WORK.search(command):
        return None
    argv = shlex.split(command)
    if argv and argv[0] == "rlhf-interp":
        return argv
    if len(argv) >= 2 and argv[0] == "python" and argv[1].endswith(".py"):
        return argv[1:]
    return None


def toolkit_modules() -> list[str]:
    """Every module of the package: what the fork server imports once. The blocks import from all of it and patch
    nothing, so a preload beyond a fresh process's own first imports hides nothing here (tests/fork_server.py)."""
    package = ROOT / "rlhf_interp"
    names = (".".join(p.relative_to(ROOT).with_suffix("").parts) for p in sorted(package.rglob("*.py")))
    return [n.removesuffix(".__init__") for n in names if not n.endswith("__main__")]


# ``python -c`` code that becomes the console script (sys.exit(main()), its bin directory first on sys.path) or
# ``python SCRIPT.py`` (runpy as __main__, the script's real directory first), in the directory argv[1] names.
_CONSOLE_SCRIPT = ("import os, sys; os.chdir(sys.argv[1]); del sys.argv[:2]; "
                   "sys.path[0] = os.path.dirname(sys.argv[0]); from rlhf_interp.cli import main; sys.exit(main())")
_PYTHON_SCRIPT = ("import os, runpy, sys; os.chdir(sys.argv[1]); del sys.argv[:2]; "
                  "sys.path[0] = os.path.dirname(os.path.realpath(sys.argv[0])); "
                  "runpy.run_path(sys.argv[0], run_name='__main__')")


def run_forked(server: ForkServer, argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """``rlhf-interp ARGS`` or ``SCRIPT.py ARGS`` run in ``cwd`` by a child of ``server``: its exit code and output,
    as `subprocess.run` with ``capture_output`` gives them (past ``timeout`` it is killed: exit code -9)."""
    if argv[0] == "rlhf-interp":
        child = server.spawn(_CONSOLE_SCRIPT, cwd, Path(sys.executable).parent / "rlhf-interp", *argv[1:])
    else:
        child = server.spawn(_PYTHON_SCRIPT, cwd, *argv)
    try:
        child.wait(timeout)
    except TimeoutError:
        pass   # killed and reaped: returncode -9
    out, err = child.communicate()
    return subprocess.CompletedProcess(argv, child.returncode, out, err)


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
        env["RLHF_INTERP_CACHE"] = str(work / "cache")   # read when a model loads, not at import
    with ForkServer(toolkit_modules(), work / "forks", env=env) as server:   # imports while the stand-in is written
        if not EMBEDDED:
            write_stand_in(work / "cache" / "models" / "smollm2-135m")
        run = run_forked(server, ["rlhf-interp", "train", "configs/tiny.yaml", "--no-progress", "--out",
                                  "runs/periods", "--set", "model=smollm2-135m", "--set", "max_new_tokens=6"],
                         work, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        (work / "texts.txt").write_text("One. Two. Three.\nnone at all\n")
        # per kind of block: runs/NAME -> the directory the first block to write it wrote
        runs = {kind: {"periods": work / "runs" / "periods"} for kind in ("python", "shell")}
        yield work, env, runs, server


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
    work, env, all_runs, server = sandbox
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
        run = run_forked(server, ["block.py"], folder, timeout=900)
        assert run.returncode == 0, f"README line {block.line} (python):\n{run.stderr[-4000:]}"
    else:
        assert block.lang in ("", "bash", "sh", "shell"), f"README line {block.line}: no runner for {block.lang!r}"
        for command in shell_commands(code):
            argv = direct_argv(command)
            run = (run_forked(server, argv, folder, timeout=900) if argv is not None else
                   subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True,
                                  timeout=900))
            assert run.returncode == 0, (f"README line {block.line}: `{command}` exited {run.returncode}:\n"
                                         f"{(run.stderr or run.stdout)[-4000:]}")
    record_runs(folder, runs)


def test_shell_commands_drop_comments_and_optional_parts():
    code = 'rlhf-interp diff --base a --tuned b --out d [--prompts FILE] \\\n   [--trajectory]   # comment\n# only\n'
    assert shell_commands(code) == ["rlhf-interp diff --base a --tuned b --out d"]
    assert shlex.split(shell_commands("x --set 'k={\"c\": \".\"}'  # c")[0]) == ["x", "--set", 'k={"c": "."}']


def test_only_lines_the_shell_just_splits_skip_bash():
    assert direct_argv("""rlhf-interp train c.yaml --set 'k={"c": "."}' --set "r={}" """) == [
        "rlhf-interp", "train", "c.yaml", "--set", 'k={"c": "."}', "--set", "r={}"]
    assert direct_argv("python analyses/x.py --help") == ["analyses/x.py", "--help"]
    for line in ("pip install -e . && python -m pytest", "rlhf-interp train a | tee b", "python x.py $HOME",
                 "rlhf-interp x runs/s{0,1}", "python -m pytest", "accelerate launch -m rlhf_interp.cli train c"):
        assert direct_argv(line) is None, line


def test_forked_commands_pass_on_exit_codes_output_and_timeouts(sandbox, tmp_path):
    """A block fails when its command does: a forked command ends with the code and output a process would."""
    server = sandbox[3]
    (tmp_path / "exits.py").write_text("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)\n")
    (tmp_path / "raises.py").write_text("raise ValueError('boom')\n")
    (tmp_path / "hangs.py").write_text("import time\ntime.sleep(60)\n")
    run = run_forked(server, ["exits.py"], tmp_path, timeout=60)
    assert (run.returncode, run.stdout, run.stderr) == (3, "out\n", "err\n")
    run = run_forked(server, ["raises.py"], tmp_path, timeout=60)
    assert run.returncode == 1 and "ValueError: boom" in run.stderr
    run = run_forked(server, ["rlhf-interp", "steer", "--coefs", "x"], tmp_path, timeout=60)
    assert run.returncode == 2 and "rlhf-interp steer: error" in run.stderr
    assert run_forked(server, ["hangs.py"], tmp_path, timeout=1).returncode == -signal.SIGKILL
    # the installed console script the forked children stand in for
    script = subprocess.run([str(Path(sys.executable).parent / "rlhf-interp"), "--help"], cwd=tmp_path,
                            env=sandbox[1], capture_output=True, text=True, timeout=120)
    assert script.returncode == 0 and "reward-model" in script.stdout, script.stderr
