"""`alexctl demo-data`: generate the demo image set (alexctl.data.demo) beside DIR, then move it into place.

The images are written to a hidden sibling of DIR and renamed into place at the end, so a killed
run leaves no half dataset at DIR. Over an earlier run (--force) the old synsets.txt goes first
and the new one comes last: DIR/synsets.txt marks a complete set, and a Make rule can depend on it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated

import typer

from alexctl.cli.options import DATA, OUTPUT, Json, emit
from alexctl.data import demo
from alexctl.errors import UserError
from alexctl.rundir import TMP_MARK

OutDirArg = Annotated[
    Path,
    typer.Argument(metavar="DIR", help="Folder to write: DIR/<class>/<class>_0000.JPEG and DIR/synsets.txt."),
]
Classes = Annotated[
    int,
    typer.Option(
        "--classes",
        metavar="N",
        rich_help_panel=DATA,
        help=f"How many classes (shapes and textures, 2 to {demo.MAX_CLASSES}), in a fixed order.",
    ),
]
PerClass = Annotated[
    int,
    typer.Option("--per-class", metavar="N", rich_help_panel=DATA, help="Images per class."),
]
Seed = Annotated[
    int,
    typer.Option("--seed", metavar="N", rich_help_panel=DATA, help="The same seed writes the same bytes."),
]
Force = Annotated[
    bool,
    typer.Option(
        "--force",
        rich_help_panel=OUTPUT,
        help="Write into a non-empty DIR, replacing what an earlier demo-data run wrote there "
        "(class folders, synsets.txt) and keeping anything else.",
    ),
]


def command(
    out_dir: OutDirArg,
    classes: Classes = 6,
    per_class: PerClass = 120,
    seed: Seed = 0,
    force: Force = False,
    as_json: Json = False,
) -> None:
    """Write a small labelled set of generated JPEGs (one shape or texture per class, random colours,
    many image sizes, some grayscale) for trying the whole pipeline without downloading ImageNet.

    Example:

    \b
        alexctl demo-data demo/images
        alexctl preprocess demo/images demo/data --names demo/images/synsets.txt --holdout 0.2
    """
    if not 2 <= classes <= demo.MAX_CLASSES:
        raise UserError(f"--classes {classes} must be between 2 and {demo.MAX_CLASSES}.")
    if per_class < 1 or seed < 0:
        raise UserError(
            f"--per-class {per_class} must be at least 1." if per_class < 1 else f"--seed {seed} must be 0 or more."
        )
    _check_target(out_dir, force)
    target = out_dir.resolve()  # `demo-data .` too has a parent to stage in
    _check_writable(out_dir, target.parent)
    staging = target.parent / f".{target.name}{TMP_MARK}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        summary = demo.make_demo_dataset(staging, classes=classes, per_class=per_class, seed=seed)
        _move_into_place(staging, target, summary["class_names"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary["out_dir"] = str(out_dir)
    emit(
        summary,
        as_json,
        [
            f"{summary['images']} images in {classes} classes ({', '.join(summary['class_names'])}), "
            f"{summary['grayscale']} grayscale, {summary['bytes'] / 1e6:.1f} MB in {out_dir}",
            f"  class names: {out_dir / demo.SYNSETS}",
        ],
        command="demo-data",
        directory=out_dir,
    )


def _check_target(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"DIR {out_dir} exists and is not a directory.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise UserError(f"DIR {out_dir} is not empty; pass --force to replace an earlier demo-data run's files there.")


def _check_writable(out_dir: Path, parent: Path) -> None:
    """DIR's folder exists or can be made, and takes a new folder (the set is staged there): checked before
    any image is drawn."""
    probe = parent / f".{out_dir.name}{TMP_MARK}probe-{os.getpid()}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe.mkdir()
        probe.rmdir()
    except FileExistsError as e:  # a file where a folder should be
        raise UserError(f"DIR {out_dir} cannot be made: {e.filename} is a file, not a folder.") from None
    except OSError as e:
        raise UserError(f"DIR {out_dir} cannot be made: {e.strerror or e} ({e.filename}).") from None


def _move_into_place(staging: Path, out_dir: Path, folders: list[str]) -> None:
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    if not out_dir.exists():
        os.rename(staging, out_dir)  # one rename: all of the set or none of it
        return
    # --force over an earlier run (anything else in DIR stays). Every demo class folder goes, not
    # only this run's, so a smaller --classes leaves no stale class behind; the old ones are parked
    # in the staging folder, which the caller removes.
    (out_dir / demo.SYNSETS).unlink(missing_ok=True)
    for folder in demo.class_folders():
        if (out_dir / folder).exists():
            os.rename(out_dir / folder, staging / f".old-{folder}")
    for folder in folders:
        os.rename(staging / folder, out_dir / folder)
    os.rename(staging / demo.SYNSETS, out_dir / demo.SYNSETS)
