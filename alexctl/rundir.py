"""The only code that reads or writes files in data and run directories.

docs/run-directory.md is the contract; the names below are its single home.
Every file is written to a temporary name in the same folder and moved into place
with os.replace, so a reader (or a Make target) never sees half a file, and a job
killed at any moment (kill -9) leaves only temporaries that the next run removes.
A directory's manifest (`manifest.json` for a data split, `run.json` for a run) is
written last: its presence means the stage is complete.

A directory in use is guarded by an flock on its `.lock` file (alexctl.locks, whose
locks are named here for their callers).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexctl.errors import UserError, WorkFailed
from alexctl.locks import (  # re-exported ("X as X"): callers take every file and lock of a directory from here
    DirectoryLock as DirectoryLock,
)
from alexctl.locks import lock_holder as lock_holder
from alexctl.locks import lock_state as lock_state
from alexctl.locks import now as now
from alexctl.locks import parts_lock as parts_lock
from alexctl.locks import split_readers as split_readers

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
    """`data` as the file `path`, whole or not at all. A failed write (a full disk) removes its temporary file,
    which would otherwise keep the space, and names `path` (Python's write errors name no file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a foreign file's pickle protocol: the error below says enough
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist.") from None
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise UserError(f"{what} {path} cannot be read: {str(e).splitlines()[0]}.") from None
        # torch's text advises loading it with weights_only=False, which would run the file's code: not said here
        raise UserError(
            f"{what} {path} holds pickled objects other than tensors and plain values, which could run code; "
            "it is refused, and nothing in it was run."
        ) from None
    except Exception as e:  # a truncated or foreign file: torch raises several types
        raise UserError(f"{what} {path} cannot be read: {(str(e).splitlines() or [type(e).__name__])[0]}.") from None


def rewrite_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


def append_jsonl(path: Path, row: dict) -> None:
    """Append one line. A line cut short by a kill is dropped by read_jsonl."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None


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


def remove_own_temporaries(folder: Path) -> None:
    """Remove the temporary files this process left under `folder` (its work failed): they may hold the space
    a full disk needs for the failure's record, and no rerun should find them."""
    if Path(folder).is_dir():
        for p in Path(folder).rglob(f".*{TMP_MARK}{os.getpid()}"):
            p.unlink(missing_ok=True)


def remove_temporaries(folder: Path) -> int:
    """Remove what killed writers left behind. Call only while holding the folder's lock."""
    removed = 0
    if folder.is_dir():
        for p in folder.rglob(f".*{TMP_MARK}*"):
            p.unlink(missing_ok=True)
            removed += 1
    return removed


def record_failure(path: Path, command: str, error: str) -> None:
    write_json(path, {"command": command, "error": error, "time": now(), "pid": os.getpid()})


@contextmanager
def failures_recorded(
    path: Path, command: str, *, enabled: bool = True, lock: DirectoryLock | None = None
) -> Iterator[None]:
    """Record in `path` (failed.json, which `alexctl status` reads) why the work inside failed: a
    WorkFailed, a stop signal, or an unexpected error (disk full, a bug), after removing the temporary files
    this process left in the folder. Bad input (UserError) is the caller's mistake, not the directory's
    state, and is not recorded. Where failed.json cannot be written (a disk full to the last page), the
    directory's `lock` keeps the failure in its record, which status reads."""
    try:
        yield
    except UserError:
        raise
    except BaseException as e:
        if enabled:
            try:
                remove_own_temporaries(Path(path).parent)
                record_failure(path, command, describe_failure(e))
            except OSError:
                if lock is not None:
                    lock.failure = describe_failure(e)
        raise


def describe_failure(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted (SIGINT)"
    if isinstance(e, OSError) and e.filename:
        return f"{e.strerror or type(e).__name__}: {e.filename}"
    if isinstance(e, MemoryError):  # its message is often empty, or a worker's whole traceback
        return "out of memory" + (f": {str(e).splitlines()[0]}" if str(e).strip() else "")
    return str(e) if isinstance(e, WorkFailed) else f"{type(e).__name__}: {e}"


def clear_failure(path: Path) -> None:
    Path(path).unlink(missing_ok=True)
