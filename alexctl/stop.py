"""Stopping on request: SIGTERM and SIGINT ask a long command to stop at its next safe point.

A scheduler's SIGTERM, systemd, `timeout` or Ctrl-C must not leave half-written files or a
traceback: the handler only records the request; the command checks it between units of work
(a training step, a shard, a batch), saves what it has, and exits 1 with one sentence.
"""

from __future__ import annotations

import signal
import threading

from alexctl.errors import WorkFailed

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """A context manager that catches SIGTERM and SIGINT while it is active (main thread only)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._on_signal) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        self.received = signum

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def check(self, where: str) -> None:
        """Raise WorkFailed ("stopped by SIGTERM <where>") if a stop was requested."""
        if self.received is not None:
            raise WorkFailed(f"stopped by {self.name} {where}")


def ignore_in_worker() -> None:
    """For worker processes: Ctrl-C reaches the whole process group, and the parent decides what to do about
    it (SIGTERM keeps its default: it is how a pool ends its workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
