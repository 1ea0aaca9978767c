"""`alexctl eval` (also `alexctl evaluate`): parse the flags, run alexctl.inference.evaluate, print the errors."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from alexctl.cli.options import DATA, FORCE, JSON, OUTPUT, emit, error_line, runtime_options, with_runtime
from alexctl.console import progress

Crops = Literal["10", "1"]


@with_runtime(
    "devices",
    "precision",
    "channels_last",
    "compile",
    "cuda_graphs",
    "decode",
    "residency",
    "workers",
    "lrn_impl",
    "conv_form",
)
def command(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="Run directory written by `alexctl train`."),
    data: Path = typer.Option(
        None,
        "--data",
        metavar="DIR",
        rich_help_panel=DATA,
        show_default=False,
        help="Data directory (default: the one the run trained on). Another one's results "
        "are kept apart: eval/<split>-<crops>crop@<data>-<identity>.json.",
    ),
    split: str = typer.Option("val", "--split", metavar="SPLIT", rich_help_panel=DATA, help="Split to evaluate."),
    crops: Crops = typer.Option(
        "10",
        "--crops",
        rich_help_panel=DATA,
        help="10: the paper's four corners, center and reflections; 1: the center crop alone.",
    ),
    checkpoint: str = typer.Option(
        "best", "--checkpoint", metavar="NAME", rich_help_panel=DATA, help="best, last, or a checkpoint file."
    ),
    batch_size: int = typer.Option(
        64, "--batch-size", metavar="N", rich_help_panel=DATA, help="Images per batch (each gives `crops` patches)."
    ),
    top5: int = typer.Option(
        0,
        "--top5",
        metavar="N",
        rich_help_panel=OUTPUT,
        help="Also write the five most probable classes of the first N images (the paper's Figure 4, left, in text).",
    ),
    force: bool = FORCE,
    as_json: bool = JSON,
    **runtime,
) -> None:
    """Ten-crop top-1/top-5 error of a trained run (the paper's test protocol), and the per-image
    predictions that `alexctl ensemble` averages. The same checkpoint on the same data is evaluated
    once: asked again, eval says so and does nothing (--force redoes it). Also `alexctl evaluate`.

    Examples:

    \b
        alexctl eval runs/seed0
        alexctl eval runs/seed0 --crops 1 --checkpoint last --top5 20
        alexctl eval runs/seed0 --data other-data/ --split val
    """
    from alexctl import device
    from alexctl.errors import UserError
    from alexctl.inference.evaluate import evaluate

    if batch_size < 1 or top5 < 0:
        raise UserError(
            f"--batch-size {batch_size} must be at least 1." if batch_size < 1 else f"--top5 {top5} must be 0 or more."
        )
    runtime = device.resolve(runtime_options(ctx.params))
    summary = evaluate(
        run_dir,
        data_dir=data,
        split=split,
        crops=int(crops),
        checkpoint_name=checkpoint,
        runtime=runtime,
        batch_size=batch_size,
        top5=top5,
        force=force,
        progress=progress,
    )
    brief = {k: v for k, v in summary.items() if k not in ("per_class_accuracy", "most_confused")}
    state = " (already evaluated: nothing to do; --force redoes it)" if summary["already_done"] else ""
    which = f"{checkpoint} checkpoint" if checkpoint in ("best", "last") else f"checkpoint {summary['checkpoint']}"
    epoch = summary.get("checkpoint_epoch")
    lines = [
        f"{run_dir}, {which}{f' (epoch {epoch})' if epoch is not None else ''}, on {split} "
        f"({summary['num_images']} images, {crops} crop{'s' if crops != '1' else ''})"
        f"{state}: top-1 error {error_line(summary['top1_error'], summary['chance_top1_error'])}, top-5 error "
        f"{error_line(summary['top5_error'], summary['chance_top5_error'])}",
        f"  predictions {summary['predictions']}",
    ]
    if summary.get("top5_file"):
        lines.append(f"  top-5 classes {summary['top5_file']}")
    emit(summary if as_json else brief, as_json, lines, command="eval", directory=run_dir)
