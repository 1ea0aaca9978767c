"""`python -m alexctl` for the tests without paying for the interpreter's start each time.

A fresh `python -m alexctl` spends about 2.7 s of CPU importing torch (the CUDA build) before it reads
its first option, and the suite starts dozens of them. Here one server process per test process (the
zygote) imports torch and alexctl's CLI once and then forks a child for each command: the child is a
process of its own as before (its own pid, its own stdin/stdout/stderr, a session of its own when asked,
signals, exit status, interpreter shutdown with atexit handlers), started as `python -m alexctl` starts,
without the imports. The test side is `Forked`, a subprocess.Popen whose child comes from the zygote, so
communicate(), wait(timeout), kill() and the rest behave as they do for any process.

Besides torch and the CLI, the zygote imports what the commands import once they run (PRELOAD: above all
torch._dynamo, 2 s of CPU per `train`), so that no child pays for it.

`popen()` forks only what a fork reproduces faithfully: `python -m alexctl ...` with an environment that
differs from the one the zygote imported torch under only in variables read at run time (RUNTIME,
RUNTIME_NAMES), and
no other user, executable, preexec_fn or extra fds. Anything else starts a real interpreter, and so do
the tests that are about the start itself (the installed script, the import hygiene of a cold start).

The make pipelines start their commands themselves. Given `PY=$(zygote.python())`, a shim, they reach the
zygote too: the shim forks `-m alexctl...` where that is the same as a fresh interpreter (make's own variables
and the command line's overrides aside, and PYTHONPATH entries that can shadow nothing already imported), in
the shim's process group (or a session of its own where the shim has one or sits in another), with its
streams; it passes on the signals it gets, waits, and ends as its child ended, and the child ends if the
shim is killed. It execs the real interpreter for anything else. A forked
child's sys.executable is the shim, so the steps that alexctl's planners start fork too. The shim also forks
`python -u -m alexctl` (torchrun's ranks, given PYTHON_EXEC=<shim>), and `zygote.scripts()` is a folder for a
shell's PATH whose `alexctl` stands for the installed script in the same way.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import io
import json
import os
import re
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ALEXCTL = [sys.executable, "-m", "alexctl"]
# Read at run time (not while torch and alexctl are imported): a child may differ from the zygote in these.
RUNTIME = ("ALEXCTL_", "PYTEST_", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK",
           "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_", "TORCHELASTIC_", "TORCH_NCCL_",  # torchrun's
           "PYTHONSAFEPATH", "COLUMNS", "LINES", "TERM", "NO_COLOR", "FORCE_COLOR",
           "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR",  # the compiler's caches: set by a compile in the test process
           "CUBLAS_WORKSPACE_CONFIG")  # read when CUDA starts; set by an in-process --deterministic run  # fmt: skip
# Read at run time too, these exact names: where a command looks for programs (shutil.which), and what a shell
# exports to whatever it starts.
RUNTIME_NAMES = {"PATH", "PWD", "OLDPWD", "SHLVL", "_", "PYTHON_EXEC"}  # PYTHON_EXEC: torchrun's, for its ranks
# What make puts in a recipe's environment: its own variables and the command line's overrides (OUT=..., named
# in MAKEFLAGS). Nothing reads those while torch and alexctl are imported, unless the name says so.
MAKE = {"MAKEFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "MFLAGS"}
IMPORT_TIME = ("PYTHON", "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "TORCH", "PYTORCH_", "CUDA", "NCCL_", "LD_")
# What the commands import once they run, imported in the zygote too, so that each child need not: above all
# torch._dynamo (2 s of CPU), which `train` imports through torch.optim's dynamo guards and alexctl.device.
# None of these starts a thread, and the variables they read at import are import-time ones (TORCH*,
# TRITON_*, ...): a child that sets those otherwise is refused (import_time_differences). A fresh interpreter
# imports the same modules later, when the command gets to them; the tests of a cold start's imports start
# real interpreters.
PRELOAD = ("torch._dynamo", "alexctl.training.train", "alexctl.inference.evaluate", "alexctl.inference.ensemble",
           "alexctl.inference.classify", "alexctl.inference.export", "alexctl.reporting.report",
           "alexctl.reporting.status", "alexctl.data.preprocess", "alexctl.benchmarking.gpucheck",
           "alexctl.benchmarking.bench")  # fmt: skip
BASE_ENV = dict(os.environ)  # what the zygote is started with: the test process's environment at its start


# ---------------------------------------------------------------- the test side


class Forked(subprocess.Popen):
    """A Popen whose child the zygote forks: the pipes are made here as Popen makes them and handed over
    with the request; the exit status comes back over the request's connection (the child is the
    zygote's, so waitpid here could not see it)."""

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                       creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite,
                       restore_signals, gid, gids, uid, umask, start_new_session, process_group):  # fmt: skip
        try:
            request = {
                "args": [str(a) for a in args[len(ALEXCTL) :]],
                "cwd": os.fspath(cwd) if cwd is not None else os.getcwd(),
                "env": dict(os.environ if env is None else env),
                "session": bool(start_new_session),
                "group": process_group,  # -1: none asked (Popen turns its None into -1)
            }
            fds = [
                p2cread if p2cread != -1 else 0,
                c2pwrite if c2pwrite != -1 else 1,
                errwrite if errwrite != -1 else 2,
            ]
            self._zygote = _zygote().request(request, fds)
            reply = _line(self._zygote)
            if not reply.startswith("pid "):
                raise OSError(f"the zygote could not start alexctl {args}: {reply!r}")
            self.pid = int(reply.split()[1])
        finally:
            self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)

    def _try_wait(self, wait_flags):
        if wait_flags & os.WNOHANG and not select.select([self._zygote], [], [], 0)[0]:
            return (0, 0)
        reply = _line(self._zygote)  # "status N" (N as waitpid gives it), once
        self._zygote.close()
        if not reply.startswith("status "):
            raise OSError(f"the zygote went away before alexctl (pid {self.pid}) ended")
        return (self.pid, int(reply.split()[1]))

    def _internal_poll(self, _deadstate=None, **_):
        if self.returncode is None and self._waitpid_lock.acquire(False):
            try:
                if self.returncode is None and self._zygote.fileno() != -1:
                    pid, status = self._try_wait(os.WNOHANG)
                    if pid == self.pid:
                        self._handle_exitstatus(status)
            except OSError:
                if _deadstate is None:
                    raise
                self.returncode = _deadstate
            finally:
                self._waitpid_lock.release()
        return self.returncode


def _line(conn: socket.socket) -> str:
    """One line from the zygote, read a byte at a time: nothing of the next line is taken into a buffer
    (select() must still see it)."""
    line = b""
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            break
        line += byte
    return line.decode()


def forkable(args, env: dict | None = None, **kwargs) -> bool:
    """Whether a fork from the zygote is the same as starting `args` afresh."""
    if [str(a) for a in args[: len(ALEXCTL)]] != ALEXCTL or set(kwargs) - {"stdin", "stdout", "stderr", "cwd", "text",
                                                                          "start_new_session"}:  # fmt: skip
        return False
    return not import_time_differences(env)


def import_time_differences(env: dict | None = None) -> list[str]:
    """The variables that `env` (this process's by default) sets otherwise than the zygote's environment and
    that are not known to be read only at run time."""
    env = os.environ if env is None else env
    return sorted(
        k
        for k in set(env) | set(BASE_ENV)
        if env.get(k) != BASE_ENV.get(k) and not k.startswith(RUNTIME) and k not in RUNTIME_NAMES
    )


def popen(args, **kwargs) -> subprocess.Popen:
    """subprocess.Popen(args, ...), the child forked from the zygote where that is the same (forkable)."""
    return (Forked if forkable(args, **kwargs) else subprocess.Popen)(args, **kwargs)


def python() -> str:
    """A `python` for make pipelines (PY=...): `-m alexctl...` is forked by this test process's zygote where a
    fork is the same as a fresh interpreter (shim), anything else runs the real one."""
    return str(_zygote().python)


def scripts() -> str:
    """A folder to put first on a shell's PATH: its `alexctl` is the installed script, forked by this test
    process's zygote where a fork is the same as a fresh start of that script (shim), else that script."""
    return str(_zygote().scripts)


def run(args, *, timeout: float | None = None, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(args, capture_output=True, ...) through popen()."""
    with popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


class _Client:
    """This test process's zygote, started on first use and ended with the process (it reads the end of
    its stdin)."""

    def __init__(self):
        self.path = Path(tempfile.mkdtemp(prefix="alexctl-zygote-")) / "socket"
        self.server = subprocess.Popen(
            [sys.executable, __file__, str(self.path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=BASE_ENV
        )
        if self.server.stdout.readline() != b"ready\n":
            raise RuntimeError(f"the zygote did not start (exit {self.server.wait()})")
        self.python = self._shim(self.path.parent / "python")  # python()
        self.scripts = self.path.parent / "bin"  # scripts()
        self.scripts.mkdir()
        self._shim(self.scripts / "alexctl", script=str(Path(sys.executable).with_name("alexctl")))

    def _shim(self, path: Path, script: str | None = None) -> Path:
        """An executable at `path` that runs shim() (without site: it starts in milliseconds)."""
        tests = os.path.dirname(os.path.abspath(__file__))
        path.write_text(
            f"#!{sys.executable} -S\nimport sys\nsys.path.insert(0, {tests!r})\nimport zygote\n"
            f"zygote.shim({str(self.path)!r}, {sys.executable!r}, script={script!r})\n"
        )
        path.chmod(0o755)
        return path

    def request(self, request: dict, fds: list[int]) -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(self.path))
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], fds)
        return conn


_client: _Client | None = None
_lock = threading.Lock()


def _zygote() -> _Client:
    global _client
    with _lock:
        if _client is None or _client.server.poll() is not None:
            _client = _Client()
        return _client


# ---------------------------------------------------------------- the zygote


def serve(path: str) -> dict:
    """Fork a child per request until stdin ends; return (in a child only) the request it is to run."""
    import torch  # noqa: F401 (what every command imports first: the cost the children share)

    import alexctl.cli  # noqa: F401

    for name in PRELOAD:
        importlib.import_module(name)
    gc.freeze()  # the imported objects out of the collector's way: a child's collections neither walk nor copy them

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, the request's connection)
    while True:
        ready = select.select([sys.stdin, listener, *children], [], [])[0]
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 1):  # the test process ended
            for pid, _ in children.values():
                os.kill(pid, 9)
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)  # socket, shim: not left in /tmp
            os._exit(0)
        for pidfd in [fd for fd in ready if isinstance(fd, int)]:
            pid, conn = children.pop(pidfd)
            _, status = os.waitpid(pid, 0)
            os.close(pidfd)
            with contextlib.suppress(OSError):  # the test may have stopped listening
                conn.sendall(f"status {status}\n".encode())
            conn.close()
        if listener in ready:
            conn, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            request = json.loads(message)
            refusal = _refusal(request) if request.get("check") else None
            if refusal:  # a shim's request that a fork would not reproduce: it starts a real interpreter
                conn.sendall(f"refuse {refusal}\n".encode())
                conn.close()
                for fd in fds:
                    os.close(fd)
                continue
            pid = os.fork()
            if pid == 0:  # the child: in its session or group before the test learns its pid, as Popen does
                if request["session"] or request.get("sid", os.getsid(0)) != os.getsid(0):
                    os.setsid()  # asked, or the shim's group is in another session, where it cannot go
                elif request["group"] >= 0:
                    os.setpgid(0, request["group"])
                if "shim" in request:
                    _die_with(request["shim"])
                conn.sendall(f"pid {os.getpid()}\n".encode())
                listener.close()
                conn.close()
                for pidfd, (_, other) in children.items():
                    os.close(pidfd)
                    other.close()
                for target, fd in enumerate(fds):
                    os.dup2(fd, target)
                    os.close(fd)
                return request
            for fd in fds:
                os.close(fd)
            children[os.pidfd_open(pid)] = (pid, conn)


def _pythonpath(value: str, cwd: str) -> list[str]:
    """PYTHONPATH's entries as absolute paths (an empty entry is the working directory)."""
    return [os.path.join(cwd, entry) for entry in value.split(os.pathsep)] if value else []


def _refusal(request: dict) -> str | None:
    """Why forking the shim's request would not be the same as the fresh interpreter it asked for (None: it is).
    Besides the environment, PYTHONPATH may name the tree alexctl was imported from, and folders that hold no
    module of a name this process has imported (a fresh interpreter could import nothing else from them)."""
    env = request["env"]
    make = set(re.findall(r"(?:^|\s)([A-Za-z_]\w*)=", env.get("MAKEFLAGS", ""))) | MAKE  # make's own, and its overrides
    differences = [
        name
        for name in import_time_differences({k: v for k, v in env.items() if k != "PYTHONPATH"})
        if name not in make or name.startswith(IMPORT_TIME)
    ]
    if "PYTHONPATH" in env and "PYTHONPATH" not in BASE_ENV:
        tree = Path(importlib.import_module("alexctl").__file__).resolve().parents[1]
        imported = {name.split(".")[0] for name in sys.modules}
        for entry in map(Path, _pythonpath(env["PYTHONPATH"], request["cwd"])):
            if entry.resolve() != tree and entry.is_dir():
                names = {name.split(".")[0] for name in os.listdir(entry)}
                differences += [f"PYTHONPATH's {entry}: {n}" for n in sorted(names & imported)]
    elif env.get("PYTHONPATH") != BASE_ENV.get("PYTHONPATH"):
        differences.append("PYTHONPATH")
    return ", ".join(differences) or None


def shim(socket_path: str, real: str, script: str | None = None) -> None:
    """`python ARGS` for the make pipelines and for alexctl's own children (the pipelines' PY, the child's
    sys.executable): `-m alexctl...` forked by the zygote where that is the same as a fresh interpreter, in
    this process's group and with its streams, directory and environment; this process waits for it, passes
    it the signals it gets and ends as it ended. Anything else becomes the real interpreter (exec).
    With `script` (the installed `alexctl`), this process stands for that script: `alexctl ARGS`."""
    args = sys.argv[1:]
    unbuffered = args[:1] == ["-u"]  # python -u -m ...: how torchrun starts its ranks
    rest = args[unbuffered:]
    if script:
        start = {"args": args, "script": script}
    elif rest[:1] == ["-m"] and len(rest) > 1 and rest[1].split(".")[0] == "alexctl":
        start = {"args": rest[2:], "module": rest[1], "executable": sys.argv[0], "unbuffered": unbuffered}
    else:
        start = None
    fallback = [script, *args] if script else [real, *args]
    if start and os.path.exists(socket_path):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        leader = os.getsid(0) == os.getpid()  # started in a session of its own: so is the child
        request = {**start, "cwd": os.getcwd(), "env": dict(os.environ), "session": leader,
                   "group": -1 if leader else os.getpgrp(), "sid": os.getsid(0), "check": True,
                   "shim": os.getpid()}  # fmt: skip
        child, early = [], []  # the child's pid once known; the signals that came before it was
        passed = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
        for sig in passed:
            signal.signal(sig, lambda number, _: _forward(child[0], number) if child else early.append(number))
        try:
            conn.connect(socket_path)
            socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
            reply = _line(conn)
        except OSError:  # a standard stream closed, the zygote gone: a real interpreter
            reply = ""
        if reply.startswith("pid "):
            child.append(int(reply.split()[1]))
            for number in early:
                _forward(child[0], number)
            code = os.waitstatus_to_exitcode(int(_line(conn).split()[1]))
            if code < 0:  # ended by a signal: so does this process
                signal.signal(-code, signal.SIG_DFL)
                os.kill(os.getpid(), -code)
            os._exit(code)
        conn.close()
        for sig in passed:
            signal.signal(sig, signal.SIG_DFL)
        for number in early:  # what they would have done to the interpreter starting
            os.kill(os.getpid(), number)
    os.execv(fallback[0], fallback)


def _die_with(shim: int) -> None:
    """In a shim's child: end when the shim is killed (SIGKILL cannot be passed on, and the child may sit in
    another session than the shim's group: a killpg of that group would miss it)."""
    try:
        pidfd = os.pidfd_open(shim)
    except ProcessLookupError:
        os._exit(128 + signal.SIGKILL)
    threading.Thread(target=lambda: select.select([pidfd], [], []) and os.kill(os.getpid(), signal.SIGKILL),
                     daemon=True, name="shim-watch").start()  # fmt: skip


def _forward(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have ended already
        os.kill(pid, number)


def start(request: dict) -> None:
    """In the child: become `python -m alexctl ARGS` (or the installed script `alexctl ARGS`) in the request's
    directory and environment."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request.get("unbuffered"):  # -u: stdout and stderr written through, as a fresh `python -u` has them
        for name in ("stdout", "stderr"):
            old = getattr(sys, name)
            raw = io.FileIO(old.fileno(), "w", closefd=False)
            setattr(sys, name, io.TextIOWrapper(raw, encoding=old.encoding, errors=old.errors, write_through=True))
    script = request.get("script")
    first = os.path.dirname(os.path.realpath(script)) if script else os.getcwd()  # as Python does
    # the script's folder or the working directory (not with PYTHONSAFEPATH), then PYTHONPATH's entries, where a
    # fresh interpreter puts them (_refusal allowed them)
    pythonpath = _pythonpath(os.environ.get("PYTHONPATH", ""), os.getcwd())
    sys.path[0:1] = ([] if os.environ.get("PYTHONSAFEPATH") else [first]) + pythonpath
    sys.executable = request.get("executable", sys.executable)  # a shim's path: alexctl's own children fork too
    if script:
        sys.argv = [script, *request["args"]]
        runpy.run_path(script, run_name="__main__")  # its sys.exit(main()) ends the child
    sys.argv = ["-m", *request["args"]]
    runpy._run_module_as_main(request.get("module", "alexctl"))  # what `python -m` runs; its SystemExit ends it


if __name__ == "__main__":
    start(serve(sys.argv[1]))
