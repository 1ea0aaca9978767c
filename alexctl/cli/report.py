"""`alexctl report`: parse the flags, run alexctl.report, print where the page and figures are."""

from __future__ import annotations

from pathlib import Path

import typer

from alexctl.cli.options import DEVICES, JSON, emit


def command(
    run_dirs: list[Path] = typer.Argument(..., help="Training run directories and/or ensemble directories."),
    out: Path = typer.Option(..., "--out", help="Directory for report.md and its PNG figures (overwritten)."),
    data: Path = typer.Option(None, "--data", help="Data directory (default: the one the first run trained on)."),
    split: str = typer.Option("val", "--split", help="Split whose images, predictions and eval errors are shown."),
    images: int = typer.Option(8, "--images", min=0, help="Images in the top-5 figure (0: no figure)."),
    neighbours: int = typer.Option(4, "--neighbours", min=0, help="Query images in the nearest-neighbour figure "
                                   "(0: no figure)."),
    max_train: int = typer.Option(2000, "--max-train", min=0, help="Training images searched for neighbours, spread "
                                  "evenly over the split (0: all of them)."),
    devices: str = DEVICES,
    workers: int = typer.Option(0, "--workers", min=0, help="Data loader processes (0: in this process)."),
    as_json: bool = JSON,
) -> None:
    """Figures of trained runs, as the paper draws them, on one Markdown page: training curves, the
    conv1 kernels (Figure 3), top-5 predictions and nearest neighbours in fc7 space (Figure 4), and a
    table of the runs' errors.

    Example:

        alexctl report runs/seed0 runs/seed1 runs/ensemble5 --out reports/five
    """
    from alexctl import device
    from alexctl.report import report

    runtime = device.resolve(devices, workers=workers)
    summary = report(run_dirs, out, data_dir=data, split=split, images=images, neighbours=neighbours,
                     max_train=max_train, runtime=runtime)
    lines = [f"{summary['report']} ({summary['runs']} runs, {len(summary['figures'])} figures, "
             f"{summary['seconds']:.1f} s)"] + [f"  {f}" for f in summary["figures"]]
    emit(summary, as_json, lines)
