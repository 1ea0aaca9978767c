"""`alexctl ensemble`: parse the flags, run alexctl.inference.ensemble, print each member's and the ensemble's errors."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from alexctl.cli.options import DATA, FORCE, JSON, OUTPUT, emit, error_line, runtime_options, with_runtime
from alexctl.console import progress


@with_runtime("devices", "precision", "channels_last", "decode", "residency", "workers", "lrn_impl", "conv_form")
def command(
    ctx: typer.Context,
    members: list[Path] = typer.Argument(
        ...,
        metavar="RUN_DIR",
        help="Run directories (or earlier ensembles, "
        "which stand for their own members) to average: two models or more.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        metavar="DIR",
        rich_help_panel=OUTPUT,
        help="Directory for the ensemble's predictions, metrics and run.json.",
    ),
    data: Path = typer.Option(
        None,
        "--data",
        metavar="DIR",
        rich_help_panel=DATA,
        show_default=False,
        help="Data directory (default: the one each member trained on).",
    ),
    split: str = typer.Option(
        "val", "--split", metavar="SPLIT", rich_help_panel=DATA, help="Split the members predicted."
    ),
    crops: Literal["10", "1"] = typer.Option(
        "10", "--crops", rich_help_panel=DATA, help="Which of the members' predictions: 10 or 1 crops."
    ),
    checkpoint: Literal["best", "last"] = typer.Option(
        "best", "--checkpoint", rich_help_panel=DATA, help="Each member's best or last checkpoint."
    ),
    batch_size: int = typer.Option(
        64, "--batch-size", metavar="N", rich_help_panel=DATA, help="For members evaluated now."
    ),
    force: bool = FORCE,
    as_json: bool = JSON,
    **runtime,
) -> None:
    """Average the softmax predictions of several networks (the paper's 5 and 7 CNNs), each model
    weighing the same. Members without predictions for the split and crops are evaluated first.

    Example:

    \b
        alexctl ensemble runs/seed0 runs/seed1 runs/seed2 runs/seed3 runs/seed4 --out runs/ensemble5
    """
    from alexctl import device
    from alexctl.errors import UserError
    from alexctl.inference.ensemble import ensemble

    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size} must be at least 1.")
    runtime = device.resolve(runtime_options(ctx.params))
    summary = ensemble(
        members,
        out,
        data_dir=data,
        split=split,
        crops=int(crops),
        checkpoint_name=checkpoint,
        runtime=runtime,
        batch_size=batch_size,
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
