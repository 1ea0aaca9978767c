"""Options that several commands share (declared once, as types), how a command learns which options were typed,
and the one way every command prints its summary."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from alexctl import __version__
from alexctl.config import (
    CheckpointOptions,
    ConvForm,
    Decode,
    InferenceOptions,
    LrnImpl,
    Precision,
    Residency,
    RuntimeOptions,
    Switch,
)

DATA, MODEL, OPTIMISATION, CHECKPOINTS, INFERENCE, RUNTIME, OUTPUT = (
    "Data",
    "Model",
    "Optimisation",
    "Checkpoints",
    "Inference",
    "Runtime",
    "Output",
)

# Each option that several commands take is declared once, here, as a type: `devices: Devices = R.devices`.
# A command lists the ones it takes and builds its settings (alexctl.config) from them, so a reader and a
# type checker can follow every option from the flag to the code that uses it.
Json = Annotated[
    bool,
    typer.Option(
        "--json",
        rich_help_panel=OUTPUT,
        help="Print one JSON object (the summary, or the error) on stdout and nothing else.",
    ),
]
Force = Annotated[bool, typer.Option("--force", rich_help_panel=OUTPUT, help="Redo work that is already complete.")]

# ---------------------------------------------------------------- where and how the network runs (alexctl.device)
R = RuntimeOptions()  # the defaults
Devices = Annotated[
    str,
    typer.Option(
        "--devices",
        metavar="DEVICES",
        rich_help_panel=RUNTIME,
        help="auto, cpu, cuda:0, or two devices for the paper's two-column split (cuda:0,cuda:1). "
        "Under torchrun: rank 0's devices.",
    ),
]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        "--precision",
        rich_help_panel=RUNTIME,
        help="auto (bf16 autocast with TF32 on CUDA, fp32 on the CPU), fp32 or bf16.",
    ),
]
ChannelsLast = Annotated[
    Switch,
    typer.Option(
        "--channels-last", rich_help_panel=RUNTIME, help="Channels-last memory layout: auto (on for CUDA), on or off."
    ),
]
Compile = Annotated[
    bool,
    typer.Option(
        "--compile/--no-compile",
        rich_help_panel=RUNTIME,
        help="torch.compile the training step's forward and loss, and evaluation's forward.",
    ),
]
CudaGraphs = Annotated[
    bool,
    typer.Option(
        "--cuda-graphs/--no-cuda-graphs",
        rich_help_panel=RUNTIME,
        help="With --compile on CUDA: replay the compiled step as CUDA graphs (mode reduce-overhead).",
    ),
]
DecodeOption = Annotated[
    Decode,
    typer.Option(
        "--decode",
        rich_help_panel=RUNTIME,
        help="JPEG decoding: auto (gpu on CUDA, else cpu), cpu (libjpeg-turbo: loader "
        "workers or threads) or gpu (nvJPEG, in batches on the device).",
    ),
]
ResidencyOption = Annotated[
    Residency,
    typer.Option(
        "--residency",
        rich_help_panel=RUNTIME,
        help="Where a split is held while it is read: auto (picked by size, and said), "
        "disk (shards, loader workers), jpeg (encoded bytes in memory, decoded on the "
        "device), decoded (pixels on the device).",
    ),
]
Workers = Annotated[
    int,
    typer.Option(
        "--workers",
        metavar="N",
        rich_help_panel=RUNTIME,
        help="Data loader processes (-1: auto, 0: in this process).",
    ),
]
LrnImplOption = Annotated[
    LrnImpl,
    typer.Option(
        "--lrn-impl",
        rich_help_panel=RUNTIME,
        help="How LRN is computed: auto (Triton on CUDA, else torch), reference, torch, "
        "triton. The same function either way.",
    ),
]
ConvFormOption = Annotated[
    ConvForm,
    typer.Option(
        "--conv-form",
        rich_help_panel=RUNTIME,
        help="Form of the grouped convolutions: auto (measured on CUDA), groups, split, "
        "blockdiag. The same function and weights either way.",
    ),
]
Deterministic = Annotated[
    bool,
    typer.Option(
        "--deterministic",
        rich_help_panel=RUNTIME,
        help="Deterministic kernels: a resumed run ends bit-identical on the CPU.",
    ),
]

# ---------------------------------------------------------------- how a trained network is run (eval, ensemble, ...)
INF = InferenceOptions()  # the defaults
CropChoice = Literal["10", "1"]  # typer offers string choices; InferenceOptions takes the number
Crops = Annotated[
    CropChoice,
    typer.Option(
        "--crops",
        rich_help_panel=INFERENCE,
        help="10: the paper's four corners, center and reflections; 1: the center crop alone.",
    ),
]
CheckpointName = Annotated[
    str,
    typer.Option(
        "--checkpoint",
        metavar="NAME",
        rich_help_panel=INFERENCE,
        help="best, last, or a checkpoint file (an ensemble and its members: best or last).",
    ),
]
BatchSize = Annotated[
    int,
    typer.Option(
        "--batch-size", metavar="N", rich_help_panel=INFERENCE, help="Images per batch (each gives `crops` patches)."
    ),
]

# ---------------------------------------------------------------- when train writes checkpoints
C = CheckpointOptions()  # the defaults
Keep = Annotated[
    int,
    typer.Option(
        "--keep", metavar="N", rich_help_panel=CHECKPOINTS, help="Epoch checkpoints kept besides last.pt and best.pt."
    ),
]
CheckpointMinutes = Annotated[
    float,
    typer.Option(
        "--checkpoint-minutes",
        metavar="X",
        rich_help_panel=CHECKPOINTS,
        help="Save last.pt mid-epoch this often (0: off).",
    ),
]
CheckpointSteps = Annotated[
    int,
    typer.Option(
        "--checkpoint-steps", metavar="N", rich_help_panel=CHECKPOINTS, help="Save last.pt every N steps (0: off)."
    ),
]
CheckpointEpochs = Annotated[
    int,
    typer.Option(
        "--checkpoint-epochs",
        metavar="N",
        rich_help_panel=CHECKPOINTS,
        help="Write the epoch-end checkpoints (epoch-N.pt, best.pt, last.pt) every N epochs and "
        "after the last; the metrics every epoch. For short epochs on a fast GPU.",
    ),
]


def given(ctx: typer.Context) -> dict[str, Any]:
    """The options typed on the command line (not defaults), by parameter name."""
    return {
        name: value
        for name, value in ctx.params.items()
        if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"
    }


def emit(
    summary: dict[str, Any], as_json: bool, lines: list[str], *, command: str, directory: Path | str | None
) -> None:
    """The command's result: one JSON object with --json, else a few lines for a person (stdout).

    Every JSON object has the same keys for the same things: `command`, `alexctl_version`, `dir` (the
    directory the command wrote or read first), `ok`; fractions are rounded to 6 decimals."""
    if as_json:
        payload = {
            "command": command,
            "alexctl_version": __version__,
            "dir": str(directory) if directory is not None else None,
            "ok": True,
            **summary,
        }
        sys.stdout.write(json.dumps(_rounded(payload), default=_jsonable) + "\n")
    else:
        for line in lines:
            print(line)
    sys.stdout.flush()


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 6)  # JSON has no NaN
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def _jsonable(value: Any):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def error_line(value: float | None, chance: float | None) -> str:
    """An error rate for a person, with chance beside it: "37.38% (chance 90.00%)"."""
    if value is None:
        return "n/a"
    return f"{value:.2%}" + (f" (chance {chance:.2%})" if chance is not None else "")
