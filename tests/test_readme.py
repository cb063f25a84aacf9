"""Every code block of the README runs, so the README cannot drift from the API and the CLI.

Blocks run in order, each in a fresh process and its own scratch directory (``configs/`` and ``analyses/`` linked
in): ``python`` blocks as a script, shell blocks (``bash`` or unlabelled) line by line with bash, ``json`` blocks
parsed. The command-line examples continue each other, and so do the Python ones: every ``runs/NAME`` an earlier
block of the same kind wrote is linked in (the CLI's ``runs/rm`` is not the Python example's). Markers in the README, on the line before a block, say what happens instead:

- ``<!-- readme-test: skip: REASON -->``: not run, for the reason given (long training, other tools' outputs);
- ``<!-- readme-test: replace "OLD" "NEW" ... -->``: run with each OLD replaced by NEW (e.g. a smaller config;
  ``\\"`` is a quote inside OLD or NEW).

In shell lines, ``[optional]`` parts of a synopsis are dropped.

Processes: a fresh interpreter spends ~7 s importing torch, transformers and transformer_lens, most of a small
block's time. So the Python blocks and the shell's plain ``rlhf-interp ARGS`` and ``python SCRIPT.py ARGS`` lines
run in a child forked from one interpreter that imported the toolkit once (`Launcher`): each child still gets the
command's own argv, working directory, environment, stdout/stderr and exit code, and a fresh copy of the
interpreter, and ends as the interpreter does (``sys.exit(main())`` for the console script, ``runpy`` as
``__main__`` for a script). Lines with anything for the shell to do (``&&``, pipes, ``$``, globs) run in bash.
`test_launcher_passes_on_exit_codes_output_and_timeouts` starts the installed ``rlhf-interp`` script itself.

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
import runpy
import shlex
import signal
import subprocess
import sys
import time
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


def serve() -> None:
    """The launcher's process: import the toolkit and its libraries, then per request (a JSON line on stdin) fork
    a child that runs it (`_child`, which never returns); answer its exit code (a JSON line on stdout)."""
    import gc
    import importlib
    import pkgutil

    import rlhf_interp
    from rlhf_interp.cli import build_parser

    build_parser()
    for module in pkgutil.walk_packages(rlhf_interp.__path__, "rlhf_interp."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    base_path = [p for p in sys.path if p not in ("", str(Path(__file__).resolve().parent))]
    gc.freeze()   # the children's collections skip (and do not copy) the imported objects
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                _child(request, base_path)   # ends the process
            finally:
                os._exit(70)   # never back into this loop, whatever failed before the command started
        deadline = time.monotonic() + request["timeout"]
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.05)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)


def _child(request: dict, base_path: list[str]) -> None:
    """Become the command: its directory, streams, argv and sys.path (the script's directory first, as python
    puts it; the console script's bin directory for ``rlhf-interp``), run it, and end as the interpreter ends a
    program (`_end`)."""
    os.chdir(request["cwd"])
    written = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for fd, name, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], written),
                            (2, request["stderr"], written)):
        opened = os.open(name, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    argv = request["argv"]
    try:
        if argv[0] == "rlhf-interp":   # what the console script does: sys.exit(main())
            script = Path(sys.executable).parent / "rlhf-interp"
            sys.argv, sys.path[:] = [str(script), *argv[1:]], [str(script.parent), *base_path]
            from rlhf_interp.cli import main

            sys.exit(main())
        sys.argv, sys.path[:] = list(argv), [os.path.dirname(os.path.realpath(argv[0])), *base_path]
        runpy.run_path(argv[0], run_name="__main__")
        code = 0
    except SystemExit as stop:   # the interpreter's reading of sys.exit's argument
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if not isinstance(stop.code, int) and stop.code is not None:
            print(stop.code, file=sys.stderr)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    _end(code)


def _end(code: int) -> None:
    """Exit as the interpreter does at the end of a program (non-daemon threads joined, atexit handlers run,
    unreachable objects collected so an unclosed file is flushed, streams flushed) but without tearing down the
    thousands of modules the launcher imported: that alone took 3 s a child."""
    import atexit
    import gc
    import threading

    threading._shutdown()
    atexit._run_exitfuncs()
    gc.collect()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code & 0xFF)


class Launcher:
    """Runs commands in children of one process that has imported the toolkit (see `serve`)."""

    def __init__(self, cwd: Path, env: dict[str, str]):
        tests = str(Path(__file__).resolve().parent)
        self.logs = cwd / "logs"
        self.logs.mkdir()
        self.count = 0
        self.process = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {tests!r}); "
                                         f"import test_readme; test_readme.serve()"],
                                        cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ready(self) -> None:
        line = self.process.stdout.readline()
        assert line and json.loads(line).get("ready"), "the README launcher did not start (see stderr above)"

    def run(self, argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        """``argv`` run in ``cwd``: its exit code and output, as `subprocess.run` with ``capture_output`` gives them
        (a timeout kills it: exit code -9)."""
        self.count += 1
        out, err = self.logs / f"{self.count}.out", self.logs / f"{self.count}.err"
        request = {"argv": argv, "cwd": str(cwd), "stdout": str(out), "stderr": str(err), "timeout": timeout}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, "the README launcher died"
        return subprocess.CompletedProcess(argv, json.loads(line)["code"], out.read_text(), err.read_text())

    def close(self) -> None:
        """Stop the launcher (it holds nothing to save: a slow interpreter shutdown is not waited for)."""
        self.process.kill()
        self.process.wait(timeout=60)


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
    launcher = Launcher(work, env)
    launcher.ready()
    run = launcher.run(["rlhf-interp", "train", "configs/tiny.yaml", "--no-progress", "--out", "runs/periods",
                        "--set", "model=smollm2-135m", "--set", "max_new_tokens=6"], work, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (work / "texts.txt").write_text("One. Two. Three.\nnone at all\n")
    # per kind of block: runs/NAME -> the directory the first block to write it wrote
    runs = {kind: {"periods": work / "runs" / "periods"} for kind in ("python", "shell")}
    yield work, env, runs, launcher
    launcher.close()


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
    work, env, all_runs, launcher = sandbox
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
        run = launcher.run(["block.py"], folder, timeout=900)
        assert run.returncode == 0, f"README line {block.line} (python):\n{run.stderr[-4000:]}"
    else:
        assert block.lang in ("", "bash", "sh", "shell"), f"README line {block.line}: no runner for {block.lang!r}"
        for command in shell_commands(code):
            argv = direct_argv(command)
            run = (launcher.run(argv, folder, timeout=900) if argv is not None else
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


def test_launcher_passes_on_exit_codes_output_and_timeouts(sandbox, tmp_path):
    """A block fails when its command does: the launcher's children end with the code and output a process would."""
    launcher = sandbox[3]
    (tmp_path / "exits.py").write_text("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)\n")
    (tmp_path / "raises.py").write_text("raise ValueError('boom')\n")
    (tmp_path / "hangs.py").write_text("import time\ntime.sleep(60)\n")
    run = launcher.run(["exits.py"], tmp_path, timeout=60)
    assert (run.returncode, run.stdout, run.stderr) == (3, "out\n", "err\n")
    run = launcher.run(["raises.py"], tmp_path, timeout=60)
    assert run.returncode == 1 and "ValueError: boom" in run.stderr
    run = launcher.run(["rlhf-interp", "steer", "--coefs", "x"], tmp_path, timeout=60)
    assert run.returncode == 2 and "rlhf-interp steer: error" in run.stderr
    assert launcher.run(["hangs.py"], tmp_path, timeout=1).returncode == -signal.SIGKILL
    # the installed console script the launcher stands in for
    script = subprocess.run([str(Path(sys.executable).parent / "rlhf-interp"), "--help"], cwd=tmp_path,
                            env=sandbox[1], capture_output=True, text=True, timeout=120)
    assert script.returncode == 0 and "reward-model" in script.stdout, script.stderr
