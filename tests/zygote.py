"""`python -m alexctl` for the tests without paying for the interpreter's start each time.

A fresh `python -m alexctl` spends about 2.7 s of CPU importing torch (the CUDA build) before it reads
its first option, and the suite starts dozens of them. Here one server process per test process (the
zygote) imports torch and alexctl's CLI once and then forks a child for each command: the child is a
process of its own as before (its own pid, its own stdin/stdout/stderr, a session of its own when asked,
signals, exit status, interpreter shutdown with atexit handlers), started as `python -m alexctl` starts,
without the imports. The test side is `Forked`, a subprocess.Popen whose child comes from the zygote, so
communicate(), wait(timeout), kill() and the rest behave as they do for any process.

`popen()` forks only what a fork reproduces faithfully: `python -m alexctl ...` with an environment that
differs from the one the zygote imported torch under only in variables read at run time (RUNTIME), and
no other user, executable, preexec_fn or extra fds. Anything else starts a real interpreter, and so do
the tests that are about the start itself (the installed script, the import hygiene of a cold start).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import runpy
import select
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ALEXCTL = [sys.executable, "-m", "alexctl"]
# Read at run time (not while torch and alexctl are imported): a child may differ from the zygote in these.
RUNTIME = ("ALEXCTL_", "PYTEST_", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK",
           "LOCAL_WORLD_SIZE", "PYTHONSAFEPATH", "COLUMNS", "LINES", "TERM", "NO_COLOR", "FORCE_COLOR",
           "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR",  # the compiler's caches: set by a compile in the test process
           "CUBLAS_WORKSPACE_CONFIG")  # read when CUDA starts; set by an in-process --deterministic run  # fmt: skip
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
    return sorted(k for k in set(env) | set(BASE_ENV) if env.get(k) != BASE_ENV.get(k) and not k.startswith(RUNTIME))


def popen(args, **kwargs) -> subprocess.Popen:
    """subprocess.Popen(args, ...), the child forked from the zygote where that is the same (forkable)."""
    return (Forked if forkable(args, **kwargs) else subprocess.Popen)(args, **kwargs)


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
            with contextlib.suppress(OSError):  # its socket and folder (tempfile.mkdtemp), not left in /tmp
                os.unlink(path)
                os.rmdir(os.path.dirname(path))
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
            pid = os.fork()
            if pid == 0:  # the child: in its session or group before the test learns its pid, as Popen does
                if request["session"]:
                    os.setsid()
                elif request["group"] >= 0:
                    os.setpgid(0, request["group"])
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


def start(request: dict) -> None:
    """In the child: become `python -m alexctl ARGS` in the request's directory and environment."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0:1] = [] if os.environ.get("PYTHONSAFEPATH") else [os.getcwd()]  # as `python -m` does
    sys.argv = ["-m", *request["args"]]
    runpy._run_module_as_main("alexctl")  # what `python -m alexctl` runs; its SystemExit ends this process


if __name__ == "__main__":
    start(serve(sys.argv[1]))
