"""`alexctl preprocess`: parse the flags, run alexctl.data.preprocess, print the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from alexctl.cli.options import DATA, OUTPUT, RUNTIME, Force, Json, emit
from alexctl.config import PreprocessOptions
from alexctl.console import progress

_D = PreprocessOptions()
Split = Literal["train", "val", "test"]


SourcesArg = Annotated[
    list[Path],
    typer.Argument(
        metavar="SOURCE",
        show_default=False,
        help="One or more: ImageFolder tree, flat folder (with --labels), .tar, or tar of per-class tars.",
    ),
]
DataDirArg = Annotated[
    Path,
    typer.Argument(metavar="DATA_DIR", help="Data directory to write (shared by training runs)."),
]
SplitOption = Annotated[
    Split,
    typer.Option("--split", rich_help_panel=DATA, help="Which split to write; train also writes the statistics."),
]
Labels = Annotated[
    Path,
    typer.Option(
        "--labels",
        metavar="FILE",
        rich_help_panel=DATA,
        show_default=False,
        help="Labels for a flat folder: `name,label`, `name label`, LOC_val_solution.csv, or "
        "ILSVRC2012_validation_ground_truth.txt (with --devkit).",
    ),
]
Classes = Annotated[
    Path,
    typer.Option(
        "--classes",
        metavar="FILE|RUN_DIR",
        rich_help_panel=DATA,
        show_default=False,
        help="The class set and order: `wnid<TAB>name` lines (e.g. ILSVRC's 1000 synsets), "
        "or a trained run (its class list), to evaluate that run on new images.",
    ),
]
Names = Annotated[
    Path,
    typer.Option(
        "--names",
        metavar="FILE",
        rich_help_panel=DATA,
        show_default=False,
        help="`wnid<TAB>name` lines naming the classes, without changing them.",
    ),
]
Devkit = Annotated[
    Path,
    typer.Option(
        "--devkit",
        metavar="DIR",
        rich_help_panel=DATA,
        show_default=False,
        help="ILSVRC2012 devkit folder (its data/meta.mat maps ILSVRC IDs to wnids).",
    ),
]
Size = Annotated[
    int,
    typer.Option(
        "--size",
        metavar="N",
        rich_help_panel=DATA,
        help="Shorter side rescaled to this, then the central square (paper: 256).",
    ),
]
Quality = Annotated[
    int,
    typer.Option("--quality", metavar="N", rich_help_panel=DATA, help="JPEG quality of the shard images (1-100)."),
]
ShardSize = Annotated[
    int,
    typer.Option("--shard-size", metavar="N", rich_help_panel=DATA, help="Images per shard."),
]
Seed = Annotated[
    int,
    typer.Option("--seed", metavar="N", rich_help_panel=DATA, help="Seed of the class-mixed order across shards."),
]
Holdout = Annotated[
    float,
    typer.Option(
        "--holdout",
        metavar="F",
        rich_help_panel=DATA,
        help="Hold this fraction (0-0.9) of every class out of train; --split val then takes exactly it.",
    ),
]
HoldoutSeed = Annotated[
    int,
    typer.Option("--holdout-seed", metavar="N", rich_help_panel=DATA, help="Which images are held out."),
]
ExactDecode = Annotated[
    bool,
    typer.Option(
        "--exact-decode",
        rich_help_panel=DATA,
        help="Decode every JPEG at full size with the accurate IDCT (slower; the "
        "default's PSNR against it is >= 35 dB).",
    ),
]
Workers = Annotated[
    int,
    typer.Option("--workers", metavar="N", rich_help_panel=RUNTIME, help="Worker processes (0: all cores)."),
]
Part = Annotated[
    str,
    typer.Option(
        "--part",
        metavar="I/N",
        rich_help_panel=RUNTIME,
        show_default=False,
        help="Do a deterministic 1/N of the shards (N machines or cron jobs); the split is "
        "merged when its last shard is done.",
    ),
]
Verify = Annotated[
    bool,
    typer.Option(
        "--verify",
        rich_help_panel=OUTPUT,
        help="Check a complete split's shards against their recorded SHA-256 and its index "
        "against the manifest, and say which shard or sample is damaged.",
    ),
]
Strict = Annotated[
    bool,
    typer.Option("--strict", rich_help_panel=OUTPUT, help="Exit 1 if any file was skipped."),
]


def command(
    sources: SourcesArg,
    data_dir: DataDirArg,
    split: SplitOption = "train",
    labels: Labels = None,
    classes: Classes = None,
    names: Names = None,
    devkit: Devkit = None,
    size: Size = _D.size,
    quality: Quality = _D.quality,
    shard_size: ShardSize = _D.shard_size,
    seed: Seed = _D.seed,
    holdout: Holdout = _D.holdout,
    holdout_seed: HoldoutSeed = _D.holdout_seed,
    exact_decode: ExactDecode = False,
    workers: Workers = 0,
    part: Part = None,
    force: Force = False,
    verify: Verify = False,
    strict: Strict = False,
    as_json: Json = False,
) -> None:
    """Rescale images to 256 on the shorter side, cut the central 256x256, write WebDataset shards
    and (train split) the mean image and RGB PCA statistics.

    Examples:

    \b
        alexctl preprocess ILSVRC2012_img_train.tar data/ --classes synsets.txt
        alexctl preprocess val/ data/ --split val --labels LOC_val_solution.csv
        alexctl preprocess train-1of2.tar train-2of2.tar data/ --holdout 0.1
        alexctl preprocess train-1of2.tar train-2of2.tar data/ --split val --holdout 0.1
    """
    from alexctl.data.preprocess import Inputs, default_workers, parse_part, preprocess
    from alexctl.errors import UserError

    if workers < 0:
        raise UserError(f"--workers {workers} must be 0 (all cores) or more.")
    options = PreprocessOptions(
        size=size,
        quality=quality,
        shard_size=shard_size,
        seed=seed,
        holdout=holdout,
        holdout_seed=holdout_seed,
        fast_decode=not exact_decode,
    )
    if verify:
        from alexctl.data.preprocess import verify as verify_split

        result = verify_split(data_dir, split)
        emit(result, as_json, [f"{split}: {result['detail']}"], command="preprocess", directory=data_dir)
        return
    summary = preprocess(
        Inputs(tuple(sources), labels, classes, names, devkit),
        data_dir,
        split,
        options,
        workers=workers or default_workers(),
        part=parse_part(part) if part else None,
        force=force,
        strict=strict,
        progress=progress,
    )
    state = (
        "already complete" if summary.get("already_complete") else ("complete" if summary["complete"] else "partial")
    )
    lines = [
        f"{split}: {summary['written']} written, {len(summary['skipped'])} skipped of {summary['found']} "
        f"found, {len(summary['shards'])} shards ({state}) in {summary['data_dir']}"
    ]
    lines += [f"  skipped {s['path']}: {s['reason']}" for s in summary["skipped"][:20]]
    if summary["images_per_second"]:
        lines.append(f"  {summary['images_per_second']} images/s over {summary['seconds']:.1f} s")
    if summary["stats"]:
        lines.append(f"  statistics: {summary['stats']}")
    emit(summary, as_json, lines, command="preprocess", directory=data_dir)
