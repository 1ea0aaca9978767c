"""`alexctl ensemble`: parse the flags, run alexctl.ensemble, print each member's and the ensemble's errors."""

from __future__ import annotations

from pathlib import Path

import typer

from alexctl.cli.options import CHANNELS_LAST, DECODE, DEVICES, JSON, LOADER_WORKERS, PRECISION, emit
from alexctl.console import progress


def command(
    members: list[Path] = typer.Argument(..., metavar="RUN_DIR", help="Run directories (or earlier ensembles) to average: two or more."),
    out: Path = typer.Option(..., "--out", help="Directory for the ensemble's predictions, metrics and run.json."),
    split: str = typer.Option("val", "--split", help="Split the members predicted."),
    crops: int = typer.Option(10, "--crops", help="Which of the members' predictions: 10 or 1 crops."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best or last, for members evaluated now."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="For members evaluated now."),
    devices: str = DEVICES,
    precision: str = PRECISION,
    channels_last: str = CHANNELS_LAST,
    decode: str = DECODE,
    workers: int = LOADER_WORKERS,
    as_json: bool = JSON,
) -> None:
    """Average the softmax predictions of several networks (the paper's 5 and 7 CNNs). Members
    without predictions for the split and crops are evaluated first.

    Example:

    \b
        alexctl ensemble runs/seed0 runs/seed1 runs/seed2 runs/seed3 runs/seed4 --out runs/ensemble5
    """
    from alexctl import device
    from alexctl.ensemble import ensemble
    from alexctl.errors import UserError

    if crops not in (1, 10):
        raise UserError(f"--crops {crops}: use 10 or 1.")
    runtime = device.resolve(devices, precision=precision, channels_last=channels_last, decode=decode, workers=workers)
    summary = ensemble(members, out, split=split, crops=crops, checkpoint=checkpoint, runtime=runtime,
                       batch_size=batch_size, progress=progress)
    lines = [f"{'member':<40} {'top-1':>8} {'top-5':>8}"]
    for path, e1, e5 in zip(summary["member_dirs"], summary["member_top1_errors"], summary["member_top5_errors"]):
        lines.append(f"{path[-40:]:<40} {e1:>8.2%} {e5:>8.2%}")
    lines.append(f"{'ensemble of ' + str(summary['members']):<40} {summary['top1_error']:>8.2%} {summary['top5_error']:>8.2%}")
    brief = {k: v for k, v in summary.items() if k not in ("per_class_accuracy", "most_confused")}
    emit(summary if as_json else brief, as_json, lines)
