"""Everything a command prints to a person: log lines and progress, always on stderr.

stdout is reserved for the `--json` summary, so that `alexctl X --json | jq` works.
On a terminal, progress is a rich bar with rate and ETA; elsewhere (cron, Make, CI)
it is a plain line every ALEXCTL_PROGRESS_SECONDS seconds (default 30) and one at the end.
Library code reports progress through the small `Progress` protocol below and never
imports rich itself.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from typing import Protocol


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM", "") != "dumb"


def log(message: str) -> None:
    """One line for a person, on stderr."""
    print(f"alexctl: {message}", file=sys.stderr, flush=True)


class Progress(Protocol):
    def advance(self, n: int = 1) -> None: ...

    def note(self, text: str) -> None: ...


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass


SILENT: Progress = _Silent()

# A function (description, total) -> context manager yielding a Progress: `progress` below
# for commands, `no_progress` for library calls and tests.
ProgressFactory = Callable[[str, "int | None"], ContextManager[Progress]]


@contextmanager
def no_progress(description: str, total: int | None, unit: str = "img") -> Iterator[Progress]:
    yield SILENT


class _PlainLines:
    """Periodic log lines for logs that are read later (cron mail, Make output, CI)."""

    def __init__(self, description: str, total: int | None, unit: str, every: float):
        self.description, self.total, self.unit, self.every = description, total, unit, every
        self.done = 0
        self.text = ""
        self.start = self.last = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._print(now)

    def note(self, text: str) -> None:
        self.text = text

    def finish(self) -> None:
        self._print(time.monotonic())

    def _print(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.description}: {self.done}"]
        if self.total:
            parts[0] += f"/{self.total} {self.unit} ({100.0 * self.done / self.total:.1f}%)"
            if rate > 0 and self.done < self.total:
                parts.append(f"ETA {_clock((self.total - self.done) / rate)}")
        else:
            parts[0] += f" {self.unit}"
        parts.append(f"{rate:,.1f} {self.unit}/s")
        if self.text:
            parts.append(self.text)
        log(", ".join(parts))


class _RichBar:
    def __init__(self, bar, task):
        self.bar, self.task = bar, task

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task, n)

    def note(self, text: str) -> None:
        self.bar.update(self.task, note=text)


@contextmanager
def progress(description: str, total: int | None, unit: str = "img") -> Iterator[Progress]:
    """A progress reporter: a rich bar on a terminal, periodic plain lines otherwise."""
    if stderr_is_terminal():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _speed_column(unit),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
        ]
        with RichProgress(*columns, console=Console(stderr=True), transient=False) as bar:
            task = bar.add_task(description, total=total, note="")
            yield _RichBar(bar, task)
        return
    every = float(os.environ.get("ALEXCTL_PROGRESS_SECONDS", "30"))
    reporter = _PlainLines(description, total, unit, every)
    yield reporter
    reporter.finish()


def _speed_column(unit: str):
    """A rich column with the rate in `unit`/s (rich's own shows nothing before the first sample)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class SpeedColumn(ProgressColumn):
        def render(self, task):
            return Text(f"{(task.speed or 0.0):,.1f} {unit}/s")

    return SpeedColumn()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
