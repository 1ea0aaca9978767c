"""`alexctl stock-recipe train|eval`: torchvision's AlexNet recipe, the baseline (alexctl.benchmarking.stock)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alexctl.cli.options import MODEL, Json, emit

ActionArg = Annotated[
    str,
    typer.Argument(metavar="[train|eval]", help="Train the recipe, or evaluate its final weights."),
]
DataArg = Annotated[
    Path,
    typer.Argument(metavar="DATA_DIR", help="A data directory `alexctl preprocess` made from an image folder."),
]
RunArg = Annotated[
    Path,
    typer.Argument(metavar="RUN_DIR", help="Where the recipe's weights and summary go."),
]
Epochs = Annotated[
    int,
    typer.Option("--epochs", metavar="N", rich_help_panel=MODEL, help="Training epochs."),
]
BatchSize = Annotated[
    int,
    typer.Option("--batch-size", metavar="N", rich_help_panel=MODEL, help="Images per batch."),
]
Workers = Annotated[
    int,
    typer.Option("--workers", metavar="N", help="DataLoader workers (the reference's -j 16)."),
]
Crop = Annotated[
    int,
    typer.Option("--crop", metavar="N", rich_help_panel=MODEL, help="Crop size, pixels."),
]
Resize = Annotated[
    int,
    typer.Option("--resize", metavar="N", rich_help_panel=MODEL, help="Evaluation resize, pixels."),
]
Crops = Annotated[
    int,
    typer.Option("--crops", metavar="[1|10]", help="eval: the center crop or the ten crops."),
]


def command(
    action: ActionArg,
    data: DataArg,
    run: RunArg,
    epochs: Epochs = 90,
    batch_size: BatchSize = 256,
    workers: Workers = 16,
    crop: Crop = 224,
    resize: Resize = 256,
    crops: Crops = 1,
    as_json: Json = False,
) -> None:
    """Train or evaluate torchvision's references/classification recipe for AlexNet on the original
    files of a data directory's train and val splits (the same partition alexctl trains on): PIL
    decode in DataLoader workers, RandomResizedCrop + flip, SGD lr 0.01, fp32 eager.

    Example:

    \b
        alexctl stock-recipe train data/ runs/stock --epochs 3
    """
    from alexctl.benchmarking import stock
    from alexctl.errors import UserError

    if action not in ("train", "eval"):
        raise UserError(f"ACTION {action} is not train or eval.")
    for name, value in (("--epochs", epochs), ("--batch-size", batch_size), ("--crop", crop), ("--resize", resize)):
        if value < 1:
            raise UserError(f"{name} {value} must be at least 1.")
    if crops not in (1, 10):
        raise UserError(f"--crops {crops} is not 1 or 10.")
    common = dict(batch_size=batch_size, workers=max(0, workers), crop=crop, resize=resize)
    if action == "train":
        summary = stock.train(data, run, epochs=epochs, **common)
    else:
        summary = stock.evaluate(data, run, crops=crops, **common)
    lines = [f"{k}: {v}" for k, v in summary.items() if k != "rows"]
    emit(summary, as_json, lines, command="stock-recipe", directory=run)
