"""`alexctl status`: one line per stage of each data or run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alexctl.cli.options import OUTPUT, Json, emit

PathsArg = Annotated[
    list[Path],
    typer.Argument(metavar="DIR", readable=False, help="Data directories, run directories and ensembles."),
]
Verify = Annotated[
    bool,
    typer.Option(
        "--verify",
        rich_help_panel=OUTPUT,
        help="Also check every shard against its recorded SHA-256, the split indexes, and "
        "that every checkpoint loads (reads everything: slow on large data).",
    ),
]
FailOnError = Annotated[
    bool,
    typer.Option(
        "--fail-on-error",
        rich_help_panel=OUTPUT,
        help="Exit 1 if any stage is failed, stale, missing, broken or corrupt.",
    ),
]


def command(
    paths: PathsArg,
    verify: Verify = False,
    fail_on_error: FailOnError = False,
    as_json: Json = False,
) -> None:
    """Which stages are done, running (pid and progress), failed (with the error), stale (a lock
    left by a dead process), partial (the same command finishes it), missing, broken (a record
    that cannot be read) or, with --verify, corrupt.

    Example:

    \b
        alexctl status data/ runs/seed0 runs/seed1 runs/ensemble5
        alexctl status data/ --verify --fail-on-error
    """
    from alexctl.errors import WorkFailed
    from alexctl.reporting.status import NEEDS_ATTENTION, escaped, status, tab_line

    report = status(paths, verify=verify)
    lines = []
    for entry in report:
        for stage in entry["stages"]:
            lines.append(tab_line(entry, stage))
    bad = [
        f"{escaped(e['path'])} ({s['stage']}: {s['state']})"
        for e in report
        for s in e["stages"]
        if s["state"] in NEEDS_ATTENTION
    ]
    summary = {"directories": report, "need_attention": bad}
    if fail_on_error and bad:
        if not as_json:
            emit(summary, False, lines, command="status", directory=None)
        raise WorkFailed(f"{len(bad)} stage(s) need attention: {', '.join(bad)}.", summary=summary)
    emit(summary, as_json, lines, command="status", directory=paths[0] if len(paths) == 1 else None)
