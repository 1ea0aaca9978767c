"""`alexctl eval` (also `alexctl evaluate`): parse the flags, run alexctl.evaluate, print the errors."""

from __future__ import annotations

from pathlib import Path

import typer

from alexctl.cli.options import CHANNELS_LAST, COMPILE, DECODE, DEVICES, JSON, LOADER_WORKERS, PRECISION, emit
from alexctl.console import progress


def command(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="Run directory written by `alexctl train`."),
    data: Path = typer.Option(None, "--data", help="Data directory (default: the one the run trained on)."),
    split: str = typer.Option("val", "--split", help="Split to evaluate."),
    crops: int = typer.Option(10, "--crops", help="10: the paper's four corners, center and reflections; "
                              "1: the center crop alone."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last, or a checkpoint file."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per batch (each gives `crops` patches)."),
    top5: int = typer.Option(0, "--top5", min=0, help="Also write the five most probable classes of the first N images "
                             "(the paper's Figure 4, left, in text)."),
    devices: str = DEVICES,
    precision: str = PRECISION,
    channels_last: str = CHANNELS_LAST,
    compile_model: bool = COMPILE,
    decode: str = DECODE,
    workers: int = LOADER_WORKERS,
    as_json: bool = JSON,
) -> None:
    """Ten-crop top-1/top-5 error of a trained run (the paper's test protocol), and the per-image
    predictions that `alexctl ensemble` averages. Also available as `alexctl evaluate`.

    Examples:

    \b
        alexctl eval runs/seed0
        alexctl eval runs/seed0 --crops 1 --checkpoint last --top5 20
    """
    from alexctl import device
    from alexctl.errors import UserError
    from alexctl.evaluate import evaluate

    if crops not in (1, 10):
        raise UserError(f"--crops {crops}: use 10 (the paper's ten patches) or 1 (the center crop).")
    runtime = device.resolve(devices, precision=precision, channels_last=channels_last, compile=compile_model,
                             decode=decode, workers=workers)
    summary = evaluate(run_dir, data_dir=data, split=split, crops=crops, checkpoint=checkpoint, runtime=runtime,
                       batch_size=batch_size, top5=top5, progress=progress)
    brief = {k: v for k, v in summary.items() if k not in ("per_class_accuracy", "most_confused")}
    lines = [f"{run_dir} on {split} ({summary['num_images']} images, {crops} crop{'s' if crops > 1 else ''}): "
             f"top-1 error {summary['top1_error']:.2%}, top-5 error {summary['top5_error']:.2%}",
             f"  predictions {summary['predictions']}"]
    if top5:
        lines.append(f"  top-5 classes {summary['top5_file']}")
    emit(summary if as_json else brief, as_json, lines)
