"""tests/zygote.py: a command forked from the zygote is a process as `python -m alexctl` makes one (its own
pid and session, the request's directory, environment and standard streams, its exit status and signals),
and what a fork would not reproduce starts a real interpreter; the shim (the pipelines' PY) forks what it may
and execs the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import zygote
from helpers import ROOT


def test_a_forked_command_has_the_requested_directory_streams_environment_and_status(tmp_path):
    env = {**zygote.BASE_ENV, "ALEXCTL_PROGRESS_SECONDS": "1000"}  # as the suite's first test sees it
    proc = zygote.popen(
        [*zygote.ALEXCTL, "demo-data", "images", "--classes", "2", "--per-class", "1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    )
    assert isinstance(proc, zygote.Forked) and os.getpgid(proc.pid) == proc.pid  # a session of its own
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0 and stdout.startswith("{"), stdout + stderr
    assert len(list((tmp_path / "images").rglob("*.JPEG"))) == 2  # written where it was started
    bad = zygote.run([*zygote.ALEXCTL, "eval", str(tmp_path / "nothing")], text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("alexctl: error: ") and "nothing" in bad.stderr


def test_a_signal_ends_a_forked_command_as_it_ends_a_process(tmp_path):
    proc = zygote.popen(
        [*zygote.ALEXCTL, "demo-data", str(tmp_path / "images"), "--per-class", "500"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    time.sleep(0.5)
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def test_what_a_fork_would_not_reproduce_starts_a_real_interpreter():
    python = [*zygote.ALEXCTL, "--version"]
    assert zygote.forkable(python, env={**zygote.BASE_ENV, "ALEXCTL_PROGRESS_SECONDS": "1", "PYTEST_X": "y"})
    assert not zygote.forkable(python, env={**zygote.BASE_ENV, "OMP_NUM_THREADS": "7"})  # read as torch loads
    assert not zygote.forkable(python, env={**zygote.BASE_ENV, "PYTHONPATH": "/elsewhere"})
    assert not zygote.forkable([sys.executable, "-c", "pass"]) and not zygote.forkable(python, pass_fds=(3,))
    assert type(zygote.popen([sys.executable, "-c", "pass"])) is subprocess.Popen


def _zygote_children() -> list[int]:
    """The pids of the processes the zygote has forked and that still run."""
    server = zygote._zygote().server.pid
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = (Path("/proc") / entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == server:
                children.append(int(entry))
    return children


def test_the_shim_forks_alexctl_in_its_own_group_passes_signals_and_execs_anything_else(tmp_path):
    shim = zygote.python()
    real = subprocess.run([shim, "-c", "import os, sys; print(os.getpid(), sys.executable)"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert real.returncode == 0 and real.stdout.split()[1] == sys.executable  # exec'd: the real interpreter
    before = set(_zygote_children())
    proc = subprocess.Popen([shim, "-m", "alexctl", "demo-data", str(tmp_path / "images"), "--per-class", "500"],
                            stderr=subprocess.PIPE, text=True, process_group=0)  # fmt: skip
    deadline = time.monotonic() + 60
    while not set(_zygote_children()) - before and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    (child,) = set(_zygote_children()) - before  # forked by the zygote, not a fresh interpreter
    assert os.getpgid(child) == proc.pid  # in the shim's process group: make's signals reach it
    time.sleep(1)  # at work
    proc.send_signal(signal.SIGTERM)  # passed on to the child; the shim ends as it ended
    proc.wait(timeout=60)
    assert child not in _zygote_children()  # the shim ended after its child, not before
    stderr = proc.stderr.read()
    fresh = subprocess.Popen([sys.executable, "-m", "alexctl", "demo-data", str(tmp_path / "again"), "--per-class", "500"],
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(1)
    fresh.send_signal(signal.SIGTERM)
    _, fresh_stderr = fresh.communicate(timeout=60)
    assert (proc.returncode, stderr) == (fresh.returncode, fresh_stderr)  # as a fresh interpreter ends


def test_a_child_of_a_killed_shim_ends_too(tmp_path):
    """SIGKILL cannot be passed on: the child sees its shim end and ends (a timeout's killpg reaches no further)."""
    before = set(_zygote_children())
    proc = subprocess.Popen([zygote.python(), "-m", "alexctl", "demo-data", str(tmp_path), "--per-class", "500"],
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not set(_zygote_children()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    (child,) = set(_zygote_children()) - before
    proc.kill()
    proc.wait(timeout=60)
    deadline = time.monotonic() + 5  # not the 20 s and more that the command itself still needs
    while child in _zygote_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child not in _zygote_children()


def test_the_shim_is_refused_what_a_fresh_interpreter_would_do_otherwise(tmp_path):
    def request(**env) -> dict:
        base = {"cwd": str(tmp_path), "session": False, "sid": os.getsid(0)}
        return {**base, "env": {**zygote.BASE_ENV, **env}}

    overrides = {"MAKEFLAGS": "s -- OUT=/x PART=/y", "MAKELEVEL": "1", "OUT": "/x", "PART": "/y"}
    assert zygote._refusal(request(**overrides)) is None  # make's variables are read by no import
    assert zygote._refusal(request(**overrides, SOMETHING="z")) == "SOMETHING"
    threads = {"MAKEFLAGS": "s -- OMP_NUM_THREADS=3", "OMP_NUM_THREADS": "3"}
    assert zygote._refusal(request(**threads)) == "OMP_NUM_THREADS"  # read as torch loads, whoever sets it
    assert zygote._refusal(request(PYTHONPATH=str(ROOT))) is None  # the tree alexctl came from
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "json.py").write_text("")
    (shadow / "newmodule.py").write_text("")
    assert "json" in zygote._refusal(request(PYTHONPATH=f"{shadow}:{ROOT}"))  # would shadow an imported module
    (shadow / "json.py").unlink()
    assert zygote._refusal(request(PYTHONPATH=str(shadow))) is None  # only new modules: found in the fork too
    shell = {"PATH": "/elsewhere:/usr/bin", "PWD": "/", "SHLVL": "2", "_": "/usr/bin/env"}  # what bash exports
    torchrun = {"TORCHELASTIC_RUN_ID": "x", "GROUP_RANK": "0", "ROLE_NAME": "default", "PYTHON_EXEC": "/p"}
    assert zygote._refusal(request(**shell, **torchrun)) is None
    assert zygote._refusal(request(__KMP_REGISTERED_LIB_1="x")) == "__KMP_REGISTERED_LIB_1"  # `_` is a name only


def test_the_script_shim_is_the_installed_alexctl_forked_and_execs_it_where_a_fork_differs(tmp_path):
    shim, installed = Path(zygote.scripts()) / "alexctl", Path(sys.executable).with_name("alexctl")
    env = {**zygote.BASE_ENV, "ALEXCTL_PROGRESS_SECONDS": "1000"}
    ends = [
        subprocess.run([str(s), "eval", "nothing"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        for s in (shim, installed)
    ]
    assert ends[0].returncode == 2 and "nothing" in ends[0].stderr  # the same sentence and status from both
    assert (ends[0].returncode, ends[0].stdout, ends[0].stderr) == (ends[1].returncode, ends[1].stdout, ends[1].stderr)
    before = set(_zygote_children())
    proc = subprocess.Popen([shim, "demo-data", str(tmp_path / "images"), "--per-class", "500"], env=env,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not set(_zygote_children()) - before and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    (child,) = set(_zygote_children()) - before  # forked by the zygote
    assert Path(f"/proc/{child}/cwd").resolve() == Path.cwd().resolve()
    proc.send_signal(signal.SIGTERM)  # passed on (demo-data has no handler: the fresh script ends by it too)
    assert proc.wait(timeout=60) == -signal.SIGTERM and child not in _zygote_children()
    threads = {**env, "OMP_NUM_THREADS": "3"}  # read as torch loads: the installed script itself runs
    version = [subprocess.run([str(s), "--version"], env=threads, capture_output=True, text=True, timeout=60).stdout
               for s in (shim, installed)]  # fmt: skip
    assert version[0] == version[1] and version[0].strip()


def test_the_shim_forks_python_u_as_torchrun_starts_its_ranks(tmp_path):
    before = set(_zygote_children())
    proc = subprocess.Popen([zygote.python(), "-u", "-m", "alexctl", "demo-data", str(tmp_path), "--per-class", "500"],
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not set(_zygote_children()) - before and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    (child,) = set(_zygote_children()) - before
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM and child not in _zygote_children()
    ends = [subprocess.run([p, "-u", "-m", "alexctl", "eval", "nothing"], capture_output=True, text=True, timeout=60)
            for p in (zygote.python(), sys.executable)]  # fmt: skip
    assert ends[0].returncode == 2 and (ends[0].stdout, ends[0].stderr) == (ends[1].stdout, ends[1].stderr)
