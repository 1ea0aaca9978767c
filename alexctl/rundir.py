"""The only code that reads or writes files in data and run directories.

docs/run-directory.md is the contract; the names below are its single home.
Every file is written to a temporary name in the same folder and moved into place
with os.replace, so a reader (or a Make target) never sees half a file, and a job
killed at any moment (kill -9) leaves only temporaries that the next run removes.
A directory's manifest (`manifest.json` for a data split, `run.json` for a run) is
written last: its presence means the stage is complete.

A directory in use is guarded by an flock on its `.lock` file. The kernel drops the
flock when the holder dies, so a lock left by a killed process is recognised as
stale and taken over; the file's contents (pid, command, progress) are for `status`.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import socket
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexctl.errors import UserError, WorkFailed

TMP_MARK = ".tmp."
SPLITS = ("train", "val")  # the splits a data directory holds


# ---------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Guarded:
    """A directory one command writes at a time: its lock, and the record of its last failure."""

    root: Path

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def failed(self) -> Path:
        return self.root / "failed.json"


@dataclass(frozen=True)
class SplitDir(_Guarded):
    """DATA_DIR/<split>/: WebDataset shards, their sidecars, the index and the manifest."""

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def index(self) -> Path:
        return self.root / "index.npz"

    def shard(self, i: int) -> Path:
        return self.root / f"shard-{i:06d}.tar"

    def shard_sidecar(self, i: int) -> Path:
        """Written after its shard: keys, offsets, skipped files, statistics accumulators."""
        return self.root / f"shard-{i:06d}.npz"

    def shard_paths(self) -> list[Path]:
        return sorted(self.root.glob("shard-*.tar"))


@dataclass(frozen=True)
class DataDir:
    """Written by `alexctl preprocess`; shared by every training run on the same data."""

    root: Path

    @property
    def classes(self) -> Path:
        return self.root / "classes.json"

    @property
    def stats(self) -> Path:
        return self.root / "stats.npz"

    @property
    def stats_summary(self) -> Path:
        return self.root / "stats.json"

    def split(self, name: str) -> SplitDir:
        return SplitDir(self.root / name)

    def split_names(self) -> list[str]:
        """train and val, then any other split folder present (test, ...)."""
        present = []
        if self.root.is_dir():
            present = [
                p.name
                for p in self.root.iterdir()
                if p.is_dir()
                and not p.name.startswith(".")
                and p.name not in SPLITS
                and ((p / "manifest.json").exists() or any(p.glob("shard-*")))
            ]
        return list(SPLITS) + sorted(present)


@dataclass(frozen=True)
class RunDir(_Guarded):
    """Written by `alexctl train` (one per training run) and read by eval, ensemble, report."""

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def manifest(self) -> Path:
        """run.json: written when training completes; a Make target can depend on it."""
        return self.root / "run.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files, written as training goes (alexctl.training.tensorboard)."""
        return self.root / "tensorboard"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def last_summary(self) -> Path:
        """last.json: the epoch and step last.pt resumes from, written after it (read by status)."""
        return self.checkpoints / "last.json"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.pt"

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch-{epoch:04d}.pt"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def eval_lock(self) -> Path:
        """Held by `eval` (and by `ensemble` in its output directory) while it writes eval/."""
        return self.eval_dir / ".lock"

    @property
    def eval_failed(self) -> Path:
        return self.eval_dir / "failed.json"

    def predictions(self, ev: "Evaluation") -> Path:
        """eval/<stem>.npz: arrays keys, labels, probs, classes, names."""
        return self.eval_dir / f"{ev.stem}.npz"

    def eval_metrics(self, ev: "Evaluation") -> Path:
        return self.eval_dir / f"{ev.stem}.json"

    def top5(self, ev: "Evaluation") -> Path:
        return self.eval_dir / f"{ev.stem}-top5.tsv"


@dataclass(frozen=True)
class Evaluation:
    """Which evaluation a run's eval/ file holds, and its name: <split>-<crops>crop[-<checkpoint>][@<data>].

    checkpoint: "" for best.pt (what ensembles and reports read), "last", or a checkpoint file's stem.
    data: "" for the data directory the run trained on; for any other, a name made of that directory's
    name and the first 8 hex digits of the split's identity (`data_name`), so that evaluating on other
    data never replaces the run's own evaluation."""

    split: str = "val"
    crops: int = 10
    checkpoint: str = ""
    data: str = ""

    @property
    def stem(self) -> str:
        stem = f"{self.split}-{self.crops}crop" + (f"-{self.checkpoint}" if self.checkpoint else "")
        return stem + (f"@{self.data}" if self.data else "")


def data_name(data_root: Path, identity: str) -> str:
    """A file-name-safe name for another data directory's split (see Evaluation)."""
    import re

    return (re.sub(r"[^A-Za-z0-9._-]+", "_", Path(data_root).resolve().name) or "data") + "-" + identity[:8]


# ---------------------------------------------------------------- atomic files


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path, what: str = "file") -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist.") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{what} {path} cannot be read: {e}.") from None


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_npz(path: Path, what: str = "file", keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz file; with `keys`, only those are read from disk."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in (z.files if keys is None else keys)}
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist.") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{what} {path} cannot be read ({e}); it is damaged or truncated.") from None


def save_torch(path: Path, obj: Any) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_torch(path: Path, what: str = "checkpoint") -> Any:
    """A file written by save_torch: tensors and plain values only (weights_only: no pickled code runs)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist.") from None
    except Exception as e:  # a truncated or foreign file: torch raises several types
        raise UserError(f"{what} {path} cannot be read: {e}.") from None


def rewrite_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


def append_jsonl(path: Path, row: dict) -> None:
    """Append one line. A line cut short by a kill is dropped by read_jsonl."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # the last line of a killed writer
    return rows


def file_sha256(path: Path) -> str:
    """The file's SHA-256 (hex): what identifies a checkpoint or a shard whatever its name or time stamp."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_writable(folder: Path, what: str) -> None:
    """Create `folder` if needed and make sure this process can write files there: checked before hours
    of work, not after. A UserError names the folder and the reason."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = _temporary(folder / ".write-test")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"{what} {folder} cannot be written: {e.strerror or e}.") from None


def remove_temporaries(folder: Path) -> int:
    """Remove what killed writers left behind. Call only while holding the folder's lock."""
    removed = 0
    if folder.is_dir():
        for p in folder.rglob(f".*{TMP_MARK}*"):
            p.unlink(missing_ok=True)
            removed += 1
    return removed


# ---------------------------------------------------------------- locks


class DirectoryLock:
    """One writer per directory. A second one gets a UserError (exit 2) naming the holder.

    `remove=True` deletes the lock file on a clean exit, for a folder that is a command's output and should
    hold nothing else (report's). Safe against a process that opened the file just before: a holder checks
    that the path still names the file it locked, and starts again if it was removed meanwhile."""

    def __init__(self, path: Path, command: str, *, remove: bool = False):
        self.path, self.command, self.remove = path, command, remove
        self.fd: int | None = None
        self.took_over_stale = False

    def __enter__(self) -> "DirectoryLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = lock_holder(self.path) or {}
                os.close(fd)
                raise UserError(
                    f"{self.path.parent} is in use by another alexctl process (pid {holder.get('pid', '?')}, "
                    f"`{holder.get('command', '?')}` since {holder.get('started', '?')}); "
                    "wait for it to finish or stop it first."
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # removed by its last holder between our open and our flock: lock the new one
        self.fd = fd
        self.took_over_stale = os.fstat(fd).st_size > 0  # a dead holder's record is still there
        self.update()
        return self

    def update(self, **progress: Any) -> None:
        """Rewrite the record in place (not replaced: the flock is on this inode)."""
        assert self.fd is not None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "started": getattr(self, "_started", None) or now(),
            "updated": now(),
            **progress,
        }
        self._started = record["started"]
        data = json.dumps(record).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def __exit__(self, *exc) -> None:
        assert self.fd is not None
        os.ftruncate(self.fd, 0)  # an empty lock file means a clean exit
        if self.remove:
            self.path.unlink(missing_ok=True)  # still locked: a waiting process sees the file gone and retries
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


@contextmanager
def split_readers(root: Path, *, exclusive: bool = False) -> Iterator[None]:
    """Readers of a split (training, evaluation) hold a shared flock on its `.readers` file while they
    read; `preprocess --force` takes it exclusively, so that it never rewrites shards under a reader and a
    reader never starts on a split being rewritten. A split that cannot be written (a read-only copy)
    cannot be rewritten either, and is read without the lock."""
    path = Path(root) / ".readers"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield
            return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{root} is being read by a training run or an evaluation; --force would change it under them: wait "
                "for them to finish, or write another DATA_DIR."
                if exclusive
                else f"{root} is being rewritten by `alexctl preprocess --force`; wait for it to finish."
            ) from None
        yield
    finally:
        os.close(fd)  # releases the flock


def lock_holder(path: Path) -> dict | None:
    """The record in a lock file, or None if it is empty or unreadable."""
    try:
        text = Path(path).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def lock_state(path: Path) -> str:
    """'free' (no lock or cleanly released), 'held' (a live process holds it) or 'stale' (its holder died)."""
    if not Path(path).exists():
        return "free"
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return "held"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return "stale" if os.fstat(fd).st_size > 0 else "free"
    finally:
        os.close(fd)


def record_failure(path: Path, command: str, error: str) -> None:
    write_json(path, {"command": command, "error": error, "time": now(), "pid": os.getpid()})


@contextmanager
def failures_recorded(path: Path, command: str, *, enabled: bool = True) -> Iterator[None]:
    """Record in `path` (failed.json, which `alexctl status` reads) why the work inside failed: a
    WorkFailed, a stop signal, or an unexpected error (disk full, a bug). Bad input (UserError) is the
    caller's mistake, not the directory's state, and is not recorded. Recording is best effort: a
    directory that cannot be written cannot hold the record either."""
    try:
        yield
    except UserError:
        raise
    except BaseException as e:
        if enabled:
            try:
                record_failure(path, command, describe_failure(e))
            except OSError:
                pass
        raise


def describe_failure(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted (SIGINT)"
    if isinstance(e, OSError) and e.filename:
        return f"{e.strerror or type(e).__name__}: {e.filename}"
    return str(e) if isinstance(e, WorkFailed) else f"{type(e).__name__}: {e}"


def clear_failure(path: Path) -> None:
    Path(path).unlink(missing_ok=True)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
