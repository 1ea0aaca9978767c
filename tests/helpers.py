"""Helpers the tests share (fixtures are in conftest.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import zygote

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ALEXCTL_SHARED_DATA", ROOT.parent / "shared" / "data"))
# A training run a CPU affords in seconds: the paper's net at 1/8 width, batches of 16, no timed checkpoints.
TINY = ["--width", "0.125", "--batch-size", "16", "--checkpoint-minutes", "0"]


def extract_imagenette_slice(out: Path, per_class: int, skip: int = 0) -> Path:
    """`per_class` images of each of Imagenette's 10 classes as an ImageFolder tree under out/train."""
    counts: dict[str, int] = {}
    for part in ("train-1of2.tar", "train-2of2.tar"):
        if part == "train-2of2.tar" and not (SHARED_DATA / "imagenette-224" / part).exists():
            break  # a GPU machine carries one part (.data/, `alexctl gpu-check`'s cuda-tests); per_class fits in it
        with tarfile.open(SHARED_DATA / "imagenette-224" / part) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parts = member.name.split("/")
                wnid = parts[-2]
                n = counts.get(wnid, 0)
                counts[wnid] = n + 1
                if skip <= n < skip + per_class:
                    dest = out / "train" / wnid / parts[-1]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(tar.extractfile(member).read())
    return out / "train"


def run_cli(
    *args: str, check: bool = False, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m alexctl ARGS` as a separate process, as a shell or Make would (forked from the zygote,
    tests/zygote.py, where that is the same)."""
    full_env = {**os.environ, "ALEXCTL_PROGRESS_SECONDS": "1000", **(env or {})}
    proc = zygote.run([*zygote.ALEXCTL, *map(str, args)], text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"alexctl {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def start_cli(*args: str) -> subprocess.Popen:
    """`python -m alexctl ARGS` started in a session of its own (its process group: it and any workers it
    starts), for freeze_at."""
    env = {**os.environ, "ALEXCTL_PROGRESS_SECONDS": "1000"}
    return zygote.popen(
        [*zygote.ALEXCTL, *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


def freeze_at(proc: subprocess.Popen, moment: Callable[[], object], *, slice_s: float = 0.02, timeout: float = 300):
    """Run `proc` (from start_cli) in slices of `slice_s` seconds, its whole process group frozen (SIGSTOP)
    between them, until moment() returns something true; return that, with the process still frozen. A poll
    beside a running process can miss a moment that lasts milliseconds (and a loaded machine makes it
    likelier); a frozen process cannot run past one. Kill it, or os.killpg(..., SIGCONT) to let it go on."""
    group = os.getpgid(proc.pid)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            os.killpg(group, signal.SIGSTOP)
            found = moment()
            if found:
                return found
            if proc.poll() is not None:
                raise AssertionError(f"the process ended (exit {proc.returncode}) before the moment came")
            os.killpg(group, signal.SIGCONT)
            time.sleep(slice_s)
        raise AssertionError(f"the moment did not come in {timeout} s")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):  # never leave a frozen process group behind
            os.killpg(group, signal.SIGKILL)
        proc.wait()
        raise


def make(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    """`make ARGS` (a pipeline under pipelines/, say) in `cwd`, as a user runs it."""
    env = {**os.environ, "ALEXCTL_PROGRESS_SECONDS": "1000"}
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=900
    )


def json_output(proc: subprocess.CompletedProcess) -> dict:
    """The --json contract: stdout is exactly one JSON object."""
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"stdout must be one JSON object, got: {proc.stdout!r}"
    return json.loads(lines[0])


def tar_folder(folder: Path, out: Path, prefix: str = "") -> Path:
    """Pack a folder into an uncompressed tar (sorted, so the bytes are reproducible)."""
    with tarfile.open(out, "w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=prefix + path.relative_to(folder).as_posix())
    return out


def tar_of_class_tars(image_folder: Path, out: Path) -> Path:
    """The ILSVRC2012_img_train.tar form: one <wnid>.tar per class inside an outer tar."""
    with tarfile.open(out, "w") as outer:
        for class_dir in sorted(p for p in image_folder.iterdir() if p.is_dir()):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as inner:
                for path in sorted(class_dir.iterdir()):
                    inner.add(path, arcname=path.name)
            info = tarfile.TarInfo(f"{class_dir.name}.tar")
            info.size = len(buffer.getvalue())
            outer.addfile(info, io.BytesIO(buffer.getvalue()))
    return out


class Result:
    """What a finished command left: the fields of subprocess.CompletedProcess."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def invoke(*args, check: bool = False) -> Result:
    """Run `alexctl ARGS` in this process (typer's CliRunner): the CLI's parsing, errors and exit
    codes, without paying for a new interpreter. Use run_cli where a real process matters."""
    from typer.testing import CliRunner

    from alexctl.cli import app

    result = CliRunner(env={"ALEXCTL_PROGRESS_SECONDS": "1000"}).invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    out = Result(result.exit_code, result.stdout, result.stderr)
    if check and out.returncode != 0:
        raise AssertionError(f"alexctl {' '.join(map(str, args))} exited {out.returncode}:\n{out.stderr}")
    return out
