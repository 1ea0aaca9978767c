"""`alexctl report`: parse the flags, run alexctl.reporting.report, print where the page and figures are."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alexctl.cli.options import DATA, OUTPUT, RUNTIME, Devices, Json, R, emit

RunDirsArg = Annotated[
    list[str],
    typer.Argument(
        metavar="[LABEL=]RUN_DIR", help="Training runs and/or ensembles, each optionally named LABEL=RUN_DIR."
    ),
]
Out = Annotated[
    Path,
    typer.Option(
        "--out",
        metavar="DIR",
        rich_help_panel=OUTPUT,
        help="Directory for report.md and its PNG figures (overwritten).",
    ),
]
Title = Annotated[
    str,
    typer.Option("--title", metavar="TEXT", rich_help_panel=OUTPUT, help="The page's title."),
]
Reach = Annotated[
    float,
    typer.Option(
        "--reach",
        metavar="E",
        rich_help_panel=OUTPUT,
        show_default=False,
        help="Figure 1: the column 'first epoch with training error <= E', and each run's "
        "epochs to E in a table (claims.md) and a plot (training-error.png); the paper "
        "uses 0.25.",
    ),
]
Baseline = Annotated[
    str,
    typer.Option(
        "--baseline",
        metavar="LABEL",
        rich_help_panel=OUTPUT,
        show_default=False,
        help="Add the table of the paper's claims (claims.md, claims.json): every other "
        "group of runs (runs sharing a LABEL are seeds of one group) against this group, "
        "paired by seed; ten crops against one; each ensemble against its members.",
    ),
]
Data = Annotated[
    Path,
    typer.Option(
        "--data",
        metavar="DIR",
        rich_help_panel=DATA,
        show_default=False,
        help="Data directory (default: the one the first run trained on).",
    ),
]
Split = Annotated[
    str,
    typer.Option(
        "--split",
        metavar="SPLIT",
        rich_help_panel=DATA,
        help="Split whose images, predictions and eval errors are shown.",
    ),
]
Images = Annotated[
    int,
    typer.Option("--images", metavar="N", rich_help_panel=OUTPUT, help="Images in the top-5 figure (0: no figure)."),
]
Neighbours = Annotated[
    int,
    typer.Option(
        "--neighbours",
        metavar="N",
        rich_help_panel=OUTPUT,
        help="Query images in the nearest-neighbour figure (0: no figure).",
    ),
]
MaxTrain = Annotated[
    int,
    typer.Option(
        "--max-train",
        metavar="N",
        rich_help_panel=OUTPUT,
        help="Training images searched for neighbours, spread evenly over the split (0: all of them).",
    ),
]
Workers = Annotated[
    int,
    typer.Option("--workers", metavar="N", rich_help_panel=RUNTIME, help="Data loader processes (0: in this process)."),
]


def command(
    run_dirs: RunDirsArg,
    out: Out,
    title: Title = "AlexNet runs",
    reach: Reach = None,
    baseline: Baseline = None,
    data: Data = None,
    split: Split = "val",
    images: Images = 8,
    neighbours: Neighbours = 4,
    max_train: MaxTrain = 2000,
    devices: Devices = R.devices,
    workers: Workers = 0,
    as_json: Json = False,
) -> None:
    """Figures of trained runs, as the paper draws them, on one Markdown page: training curves, the
    conv1 kernels (Figure 3), top-5 predictions and nearest neighbours in fc7 space (Figure 4), and a
    table of the runs' errors; with --reach, Figure 1 (training error against epochs, and each run's
    epochs to that error); with --baseline, the paper's claims measured against a baseline group.

    Examples:

    \b
        alexctl report runs/seed0 runs/seed1 runs/ensemble5 --out reports/five
        alexctl report ReLU=runs/relu tanh=runs/tanh --reach 0.25 --images 0 --neighbours 0 --out fig1
        alexctl report full=runs/s0 full=runs/s1 no-lrn=runs/nolrn-s0 no-lrn=runs/nolrn-s1 --baseline full --out ab
    """
    from alexctl import device
    from alexctl.config import RuntimeOptions
    from alexctl.errors import UserError
    from alexctl.reporting.report import report

    for name, value in (
        ("--images", images),
        ("--neighbours", neighbours),
        ("--max-train", max_train),
        ("--workers", workers),
    ):
        if value < 0:
            raise UserError(f"{name} {value} must be 0 or more.")
    if reach is not None and not 0 < reach <= 1:
        raise UserError(f"--reach {reach} must be a training error between 0 and 1.")
    runtime = device.resolve(RuntimeOptions(devices=devices, workers=workers))
    summary = report(
        run_dirs,
        out,
        data_dir=data,
        split=split,
        images=images,
        neighbours=neighbours,
        max_train=max_train,
        title=title,
        reach=reach,
        baseline=baseline,
        runtime=runtime,
    )
    lines = [
        f"{summary['report']} ({summary['runs']} runs, {len(summary['figures'])} figures, {summary['seconds']:.1f} s)"
    ] + [f"  {f}" for f in summary["figures"]]
    lines += [f"  claims: {summary['claims']}"] if "claims" in summary else []
    emit(summary, as_json, lines, command="report", directory=out)
