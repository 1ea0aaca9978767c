"""Options that several commands share, and the one way every command prints its summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

JSON = typer.Option(False, "--json", help="Print one JSON object (the summary) on stdout and nothing else.")


def workers_option(default_help: str = "all cores"):
    return typer.Option(0, "--workers", min=0, help=f"Worker processes (0: {default_help}).")


def emit(summary: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    """The command's result: one JSON object with --json, else a few lines for a person (stdout)."""
    if as_json:
        sys.stdout.write(json.dumps(summary, default=_jsonable) + "\n")
    else:
        for line in lines:
            print(line)
    sys.stdout.flush()


def _jsonable(value: Any):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# Where and how the network runs (alexctl.device); shared by train, eval, ensemble, report and bench.
DEVICES = typer.Option("auto", "--devices", help="auto, cpu, cuda:0, or two devices for the paper's two-column "
                       "split (cuda:0,cuda:1). Under torchrun: rank 0's devices.")
PRECISION = typer.Option("auto", "--precision", help="auto (bf16 on CUDA, fp32 on the CPU), fp32 or bf16.")
CHANNELS_LAST = typer.Option("auto", "--channels-last", help="auto (on for CUDA), on or off.")
COMPILE = typer.Option(False, "--compile/--no-compile", help="torch.compile the network.")
DECODE = typer.Option("auto", "--decode", help="JPEG decoding: auto (cpu), cpu (loader workers) or gpu (nvJPEG).")
LOADER_WORKERS = typer.Option(-1, "--workers", min=-1, help="Data loader processes (-1: auto, 0: in this process).")
