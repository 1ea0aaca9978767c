"""tests/zygote.py: a command forked from the zygote is a process as `python -m alexctl` makes one (its own
pid and session, the request's directory, environment and standard streams, its exit status and signals),
and what a fork would not reproduce starts a real interpreter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import zygote


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
