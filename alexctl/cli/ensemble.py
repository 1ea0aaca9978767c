"""`alexctl ensemble`: parse the flags, run alexctl.inference.ensemble, print each member's and the ensemble's errors."""

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
    ConvFormOption,
    Crops,
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

MembersArg = Annotated[
    list[Path],
    typer.Argument(
        metavar="RUN_DIR",
        help="Run directories (or earlier ensembles, "
        "which stand for their own members) to average: two models or more.",
    ),
]
Out = Annotated[
    Path,
    typer.Option(
        "--out",
        metavar="DIR",
        rich_help_panel=OUTPUT,
        help="Directory for the ensemble's predictions, metrics and run.json.",
    ),
]
Data = Annotated[
    Path,
    typer.Option(
        "--data",
        metavar="DIR",
        rich_help_panel=DATA,
        show_default=False,
        help="Data directory (default: the one each member trained on).",
    ),
]
Split = Annotated[
    str,
    typer.Option("--split", metavar="SPLIT", rich_help_panel=DATA, help="Split the members predicted."),
]


def command(
    members: MembersArg,
    out: Out,
    data: Data = None,
    split: Split = "val",
    crops: Crops = "10",
    checkpoint: CheckpointName = INF.checkpoint,
    batch_size: BatchSize = INF.batch_size,
    force: Force = False,
    as_json: Json = False,
    devices: Devices = R.devices,
    precision: PrecisionOption = R.precision,
    channels_last: ChannelsLast = R.channels_last,
    decode: DecodeOption = R.decode,
    residency: ResidencyOption = R.residency,
    workers: Workers = R.workers,
    lrn_impl: LrnImplOption = R.lrn_impl,
    conv_form: ConvFormOption = R.conv_form,
) -> None:
    """Average the softmax predictions of several networks (the paper's 5 and 7 CNNs), each model
    weighing the same. Members without predictions for the split and crops are evaluated first.

    Example:

    \b
        alexctl ensemble runs/seed0 runs/seed1 runs/seed2 runs/seed3 runs/seed4 --out runs/ensemble5
    """
    from alexctl import device
    from alexctl.inference.ensemble import ensemble

    inference = InferenceOptions(crops=int(crops), checkpoint=checkpoint, batch_size=batch_size)
    runtime = device.resolve(
        RuntimeOptions(
            devices=devices,
            precision=precision,
            channels_last=channels_last,
            decode=decode,
            residency=residency,
            workers=workers,
            lrn_impl=lrn_impl,
            conv_form=conv_form,
        )
    )
    summary = ensemble(
        members,
        out,
        data_dir=data,
        split=split,
        crops=inference.crops,
        checkpoint_name=inference.member_checkpoint(),
        runtime=runtime,
        batch_size=inference.batch_size,
        force=force,
        progress=progress,
    )
    lines = [f"{'member':<40} {'top-1':>8} {'top-5':>8}"]
    for path, e1, e5 in zip(summary["member_dirs"], summary["member_top1_errors"], summary["member_top5_errors"]):
        lines.append(f"{path[-40:]:<40} {e1:>8.2%} {e5:>8.2%}")
    lines.append(
        f"{'ensemble of ' + str(summary['members']):<40} {summary['top1_error']:>8.2%} "
        f"{summary['top5_error']:>8.2%}   (chance: {error_line(summary['chance_top1_error'], None)} top-1)"
        + ("  [already done: nothing to do; --force redoes it]" if summary["already_done"] else "")
    )
    brief = {k: v for k, v in summary.items() if k not in ("per_class_accuracy", "most_confused")}
    emit(summary if as_json else brief, as_json, lines, command="ensemble", directory=out)
