"""Reading byte ranges of files: a tar member of a SOURCE, a sample's JPEG in a shard.

One descriptor per file per process, opened on first use and kept: reads use pread, which
needs no shared file position, so threads and forked DataLoader workers may share them.
"""

from __future__ import annotations

import os


def read_range(path: str, offset: int, size: int) -> bytes:
    """`size` bytes of `path` from `offset`, or an OSError naming the file if it ends early."""
    data = os.pread(_descriptor(path), size, offset)
    if len(data) != size:
        raise OSError(f"{path} ended early (wanted {size} bytes at {offset}, got {len(data)})")
    return data


def read_range_into(path: str, offset: int, buffer) -> None:
    """Fill the writable bytes-like `buffer` from `path` at `offset` (no intermediate copy), or raise as read_range."""
    view = memoryview(buffer).cast("B")
    got = os.preadv(_descriptor(path), [view], offset)
    while 0 < got < len(view):  # a short read that is not the end of the file: read the rest
        more = os.preadv(_descriptor(path), [view[got:]], offset + got)
        if more == 0:
            break
        got += more
    if got != len(view):
        raise OSError(f"{path} ended early (wanted {len(view)} bytes at {offset}, got {got})")


def _descriptor(path: str) -> int:
    fd = _fds.get(path)
    if fd is None:
        opened = os.open(path, os.O_RDONLY)
        fd = _fds.setdefault(path, opened)  # atomic: two threads opening at once keep one descriptor
        if fd != opened:
            os.close(opened)
    return fd


_fds: dict[str, int] = {}  # path -> descriptor, per process
