"""`alexctl eval` (also `alexctl evaluate`): parse the flags, run alexctl.inference.evaluate, print the errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alexctl.cli.options import (
    DATA,
    INF,
    OUTPUT,
    BatchSize,
    ChannelsLast,
    CheckpointName,
    Compile,
    ConvFormOption,
    Crops,
    CudaGraphs,
    DecodeOption,
    Devices,
    Force,
    Json,
    LrnImplOption,
    PrecisionOption,
    R,
    ResidencyOption,
    Workers,
    emit,
    error_line,
)
from alexctl.config import InferenceOptions, RuntimeOptions
from alexctl.console import progress

RunDirArg = Annotated[
    Path,
    typer.Argument(metavar="RUN_DIR", help="Run directory written by `alexctl train`."),
]
Data = Annotated[
    Path,
    typer.Option(
        "--data",
        metavar="DIR",
        rich_help_panel=DATA,
        show_default=False,
        help="Data directory (default: the one the run trained on). Another one's results "
        "are kept apart: eval/<split>-<crops>crop@<data>-<identity>.json.",
    ),
]
Split = Annotated[
    str,
    typer.Option("--split", metavar="SPLIT", rich_help_panel=DATA, help="Split to evaluate."),
]
Top5 = Annotated[
    int,
    typer.Option(
        "--top5",
        metavar="N",
        rich_help_panel=OUTPUT,
        help="Also write the five most probable classes of the first N images (the paper's Figure 4, left, in text).",
    ),
]


def command(
    run_dir: RunDirArg,
    data: Data = None,
    split: Split = "val",
    crops: Crops = "10",
    checkpoint: CheckpointName = INF.checkpoint,
    batch_size: BatchSize = INF.batch_size,
    top5: Top5 = 0,
    force: Force = False,
    as_json: Json = False,
    devices: Devices = R.devices,
    precision: PrecisionOption = R.precision,
    channels_last: ChannelsLast = R.channels_last,
    compile: Compile = R.compile,
    cuda_graphs: CudaGraphs = R.cuda_graphs,
    decode: DecodeOption = R.decode,
    residency: ResidencyOption = R.residency,
    workers: Workers = R.workers,
    lrn_impl: LrnImplOption = R.lrn_impl,
    conv_form: ConvFormOption = R.conv_form,
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

    inference = InferenceOptions(crops=int(crops), checkpoint=checkpoint, batch_size=batch_size)
    if top5 < 0:
        raise UserError(f"--top5 {top5} must be 0 or more.")
    runtime = device.resolve(
        RuntimeOptions(
            devices=devices,
            precision=precision,
            channels_last=channels_last,
            compile=compile,
            cuda_graphs=cuda_graphs,
            decode=decode,
            residency=residency,
            workers=workers,
            lrn_impl=lrn_impl,
            conv_form=conv_form,
        )
    )
    summary = evaluate(
        run_dir,
        data_dir=data,
        split=split,
        crops=inference.crops,
        checkpoint_name=inference.checkpoint,
        runtime=runtime,
        batch_size=inference.batch_size,
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
