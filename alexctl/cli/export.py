"""`alexctl export`: parse the flags, run alexctl.inference.export, say what was written and how to load it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alexctl.cli.options import INF, OUTPUT, CheckpointName, Crops, Json, emit
from alexctl.config import InferenceOptions

RunDirArg = Annotated[
    Path,
    typer.Argument(metavar="RUN_DIR", help="Run directory written by `alexctl train`."),
]
Out = Annotated[
    Path,
    typer.Option(
        "--out",
        metavar="DIR",
        rich_help_panel=OUTPUT,
        show_default=False,
        help="Folder to write: the model files, classes.json and (last) manifest.json.",
    ),
]
Formats = Annotated[
    str,
    typer.Option(
        "--format",
        metavar="FORMATS",
        rich_help_panel=OUTPUT,
        help="pt2: a torch.export program (torch.export.load); onnx: ONNX (needs the "
        "export extra: pip install 'alexctl[export]'); state-dict: the weights, class list, "
        "mean image and model config (torch.load). Comma-separated, or all.",
    ),
]
Force = Annotated[
    bool,
    typer.Option(
        "--force", rich_help_panel=OUTPUT, help="Write into a non-empty --out, replacing an earlier export's files."
    ),
]


def command(
    run_dir: RunDirArg,
    out: Out,
    formats: Formats = "all",
    checkpoint: CheckpointName = INF.checkpoint,
    crops: Crops = "10",
    force: Force = False,
    as_json: Json = False,
) -> None:
    """Write a trained network in forms other tools load without alexctl, each with the test-time
    processing inside: input uint8 (N, 3, 256, 256) RGB, already rescaled to 256 on the shorter side
    and center-cropped to 256x256 (as `alexctl preprocess` stores images); the training set's mean
    image is subtracted, the ten 224x224 crops (or the center one) taken, and the output is (N,
    classes) softmax probabilities averaged over the crops, in float32. Each form is loaded back and
    checked against alexctl's own probabilities before the manifest is written.

    Examples:

    \b
        alexctl export runs/seed0 --out models/seed0
        alexctl export runs/seed0 --out models/seed0-onnx --format onnx --crops 1
        alexctl export runs/seed0 --out models/seed0 --checkpoint last --force --json
    """
    from alexctl.inference.export import FORMATS, export

    chosen = FORMATS if formats.strip() == "all" else tuple(f.strip() for f in formats.split(",") if f.strip())
    inference = InferenceOptions(crops=int(crops), checkpoint=checkpoint)
    summary = export(
        run_dir, out, formats=chosen, crops=inference.crops, checkpoint_name=inference.checkpoint, force=force
    )
    lines = [
        f"{run_dir} ({Path(summary['checkpoint']).name}, epoch {summary['checkpoint_epoch']}) exported to {out}, "
        f"{summary['crops']} crop{'s' if summary['crops'] > 1 else ''} inside, in "
        f"{summary['seconds']:.1f} s:"
    ]
    for form, about in summary["forms"].items():
        lines.append(
            f"  {about['file']:<14} {form:<10} {about['bytes'] / 1e6:8.1f} MB   "
            f"max difference {about['max_abs_difference']:.1e}   load: {about['load']}"
        )
    lines.append(
        f"  input uint8 {tuple(summary['input']['shape'])}, output float32 {tuple(summary['output']['shape'])}"
        f"; classes in {out / 'classes.json'}"
    )
    emit(summary, as_json, lines, command="export", directory=out)
