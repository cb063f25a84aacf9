"""Real child processes without paying the imports each time: a fork server for tests that start many.

Some tests start training and CLI processes to kill them (SIGKILL, Ctrl-C, SIGTERM), to run two at once, or to
compare runs made in separate processes. A fresh interpreter spends ~6 s of CPU importing torch, transformers and
the library before a second of such work. `ForkServer` is one interpreter that imports a given list of modules
once (imports only: it loads no model, runs no torch op, starts no thread), then forks one child per `spawn`.

A child is a real process (its own pid; signals sent to it are real signals; a SIGKILL skips every cleanup) in
the state a fresh ``python -c CODE ARGV...`` would be in after importing the same modules: CODE runs as
``__main__`` with that ``sys.argv`` and ``sys.path[0] == ''``, with the extra environment variables set, stdin
empty, stdout and stderr in files; it exits as the interpreter would (``sys.exit`` codes; an uncaught exception
prints its traceback and exits 1; an uncaught KeyboardInterrupt ends it by SIGINT; atexit handlers run).

What the preload may hold: only modules CODE imports itself before it patches anything. A patch made after a
module was imported is not seen by a ``from x import f`` that module already ran; so preloading more than CODE's
own first imports could hide a patch that a fresh process would see (tests that patch to kill or to refuse).
The environment variables read at import time (``OMP_NUM_THREADS`` ...) are the server's, given at its start.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path


class Child:
    """One forked child: `pid`, `send_signal`, `wait`, `communicate`, `returncode` (negative: killed by that
    signal), `stdout_text` (what it printed so far)."""

    def __init__(self, server: "ForkServer", pid: int, out: Path, err: Path):
        self.server, self.pid, self.out, self.err = server, pid, out, err
        self.returncode: int | None = None

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server._ask({"op": "poll", "pid": self.pid})["status"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            try:
                self.returncode = self.server._ask({"op": "wait", "pid": self.pid}, timeout)["status"]
            except TimeoutError:
                os.kill(self.pid, signal.SIGKILL)  # the server then reaps it and answers the wait
                self.returncode = self.server._read(None)["status"]
                raise
        return self.returncode

    def stdout_text(self) -> str:
        return self.out.read_text(errors="replace")

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.stdout_text(), self.err.read_text(errors="replace")

    def wait_for_line(self, word: str, timeout: float = 600) -> None:
        """Until the child prints a line containing ``word`` (or it exits: then an AssertionError with its stderr)."""
        deadline = time.monotonic() + timeout
        while word not in self.stdout_text():
            if self.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {word!r} from the child (exit {self.returncode}):\n"
                                     f"{self.err.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)


class ForkServer:
    """One interpreter that imports ``preload`` and forks a `Child` per `spawn` (a context manager).
    ``env``: environment variables of the server and so of every child (set before any import; None removes one)."""

    def __init__(self, preload: list[str], logs: Path, env: dict[str, str | None] | None = None):
        self.logs = Path(logs)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._count = 0
        self._stderr = open(self.logs / "server.err", "wb")
        self._proc = subprocess.Popen([sys.executable, __file__, json.dumps(preload)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0,
                                      env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None})

    def spawn(self, code: str, *argv, env: dict[str, str] | None = None) -> Child:
        """Like ``subprocess.Popen([python, "-c", code, *argv], env=server's + env)``."""
        self._count += 1
        out, err = self.logs / f"{self._count}.out", self.logs / f"{self._count}.err"
        out.touch()
        err.touch()
        pid = self._ask({"op": "spawn", "code": code, "argv": [str(a) for a in argv], "env": env or {},
                         "out": str(out), "err": str(err)})["pid"]
        return Child(self, pid, out, err)

    def run(self, code: str, *argv, env: dict[str, str] | None = None, timeout: float = 900) -> Child:
        """`spawn`, then wait for it to end."""
        child = self.spawn(code, *argv, env=env)
        child.wait(timeout)
        return child

    def _ask(self, request: dict, timeout: float | None = None) -> dict:
        try:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
        except BrokenPipeError:
            pass  # the server is gone: `_read` says so with its stderr
        return self._read(timeout)

    def _read(self, timeout: float | None) -> dict:
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"the fork server did not answer within {timeout} s")
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the fork server died:\n" + (self.logs / "server.err").read_text()[-3000:])
        return json.loads(line)

    def close(self) -> None:
        """End the server; it first kills (SIGKILL) and reaps any child still running."""
        self._proc.stdin.close()
        self._proc.wait(timeout=60)
        self._stderr.close()

    def __enter__(self) -> "ForkServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# The server process


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _child(request: dict) -> None:
    """In the forked child: become ``python -c CODE ARGV...``; never returns."""
    import atexit
    import traceback

    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request["out"]), (2, request["err"])):
        target = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    os.environ.update(request["env"])
    sys.argv = ["-c", *request["argv"]]
    sys.path[0] = ""  # as for `python -c`
    code = 0
    try:
        exec(compile(request["code"], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:  # noqa: BLE001 - what the interpreter does with any uncaught exception
        traceback.print_exc()
        code = 1
    try:
        import threading

        threading._shutdown()  # as the interpreter does at exit: wait for non-daemon threads, then atexit
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
    if code == -signal.SIGINT:  # as the interpreter ends on an uncaught KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


def _serve(preload: list[str]) -> None:
    import gc
    import importlib

    answers = os.fdopen(os.dup(1), "w")  # one JSON answer a line; fd 1 is stderr from here
    os.dup2(2, 1)
    for name in preload:
        importlib.import_module(name)
    gc.freeze()  # the children's garbage collections leave the preloaded objects' pages shared
    running: set[int] = set()
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "spawn":
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request)
            running.add(pid)
            answer = {"pid": pid}
        else:
            pid, status = os.waitpid(request["pid"], os.WNOHANG if request["op"] == "poll" else 0)
            answer = {"status": os.waitstatus_to_exitcode(status) if pid else None}
            running.discard(pid)
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    for pid in running:  # the test is over (or failed): no child outlives it
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
