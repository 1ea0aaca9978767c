"""Locks on data and run directories: one writer per directory, readers of a split, and the parts of a split.

A directory in use is guarded by an flock on its `.lock` file. The kernel drops the flock when the holder
dies, so a lock left by a killed process is recognised as stale and taken over; the file's contents (pid,
command, progress) are for `status`. alexctl.rundir, the one home of the directories' layout, names them.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alexctl.errors import UserError

STAMP = "%Y-%m-%dT%H:%M:%S%z"  # the time stamps of lock records and of every file alexctl writes


def now() -> str:
    return time.strftime(STAMP)


class DirectoryLock:
    """One writer per directory. A second one gets a UserError (exit 2) naming the holder.

    `remove=True` deletes the lock file on a clean exit, for a folder that is a command's output and should
    hold nothing else (report's). Safe against a process that opened the file just before: a holder checks
    that the path still names the file it locked, and starts again if it was removed meanwhile."""

    def __init__(self, path: Path, command: str, *, remove: bool = False):
        self.path, self.command, self.remove = path, command, remove
        self.fd: int | None = None
        self.took_over_stale = False
        self.failure: str | None = None  # why the work failed, when failed.json could not say it (a full disk)

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
                    f"{self.path.parent} is in use by another alexctl process "
                    f"(pid {holder.get('pid', '?')}, `{holder.get('command', '?')}` since {holder.get('started', '?')}); "
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
        if self.failure is not None:  # the record keeps it: rewritten in place, it needs no more room on a full disk
            try:
                self.update(error=self.failure[:1000])
            except OSError:
                pass
        else:
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


@contextmanager
def parts_lock(root: Path, *, whole: bool) -> Iterator[None]:
    """`preprocess` of a whole split holds the split's `.parts` file exclusively, each `--part I/N` shared: the
    parts of a split run side by side, but never beside a whole-split preprocess of the same folder (the two
    would write each other's shards, and both report the split complete). Held after the writer's own lock."""
    root = Path(root)
    fd = os.open(root / ".parts", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if whole else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            others = sorted(root.glob(".lock-part-*")) if whole else [root / ".lock"]
            holder = next((lock_holder(p) for p in others if lock_state(p) == "held"), None) or {}
            raise UserError(
                f"{root} is being written by another alexctl process (pid {holder.get('pid', '?')}, "
                f"`{holder.get('command', '?')}`); a whole-split preprocess and a --part preprocess of the same "
                "split cannot run together: wait for it to finish."
            ) from None
        yield
    finally:
        os.close(fd)  # releases the flock
