"""`alexctl status`: one line per stage of each data or run directory."""

from __future__ import annotations

from pathlib import Path

import typer

from alexctl.cli.options import JSON, emit


def command(
    paths: list[Path] = typer.Argument(..., metavar="DIR", help="Data directories, run directories and ensembles."),
    fail_on_error: bool = typer.Option(False, "--fail-on-error", help="Exit 1 if any stage failed or holds a stale lock."),
    as_json: bool = JSON,
) -> None:
    """Which stages are done, running (pid and progress), failed (with the error), stale (a lock
    left by a dead process), partial (the same command finishes it) or missing.

    Example:

    \b
        alexctl status data/ runs/seed0 runs/seed1 runs/ensemble5
    """
    from alexctl.errors import WorkFailed
    from alexctl.status import status

    report = status(paths)
    lines = []
    for entry in report:
        for stage in entry["stages"]:
            lines.append(f"{entry['path']}\t{entry['kind']}\t{stage['stage']}\t{stage['state']}\t{stage['detail']}")
    emit({"directories": report}, as_json, lines)
    bad = [f"{e['path']} ({s['stage']}: {s['state']})" for e in report for s in e["stages"]
           if s["state"] in ("failed", "stale")]
    if fail_on_error and bad:
        raise WorkFailed(f"{len(bad)} stage(s) need attention: {', '.join(bad)}.")
