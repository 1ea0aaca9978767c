"""Options that several commands share, how a command learns which options were typed, and the
one way every command prints its summary."""

from __future__ import annotations

import inspect
import json
import math
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import typer

from alexctl import __version__
from alexctl.config import CheckpointOptions, ConvForm, Decode, LrnImpl, Precision, Residency, RuntimeOptions, Switch

DATA, MODEL, OPTIMISATION, CHECKPOINTS, RUNTIME, OUTPUT = (
    "Data",
    "Model",
    "Optimisation",
    "Checkpoints",
    "Runtime",
    "Output",
)

JSON = typer.Option(
    False,
    "--json",
    rich_help_panel=OUTPUT,
    help="Print one JSON object (the summary, or the error) on stdout and nothing else.",
)
FORCE = typer.Option(False, "--force", rich_help_panel=OUTPUT, help="Redo work that is already complete.")

_R = RuntimeOptions()
# Where and how the network runs (alexctl.device); shared by train, eval, ensemble, predict, report and bench.
DEVICES = typer.Option(
    _R.devices,
    "--devices",
    metavar="DEVICES",
    rich_help_panel=RUNTIME,
    help="auto, cpu, cuda:0, or two devices for the paper's two-column split (cuda:0,cuda:1). "
    "Under torchrun: rank 0's devices.",
)
PRECISION: Precision = typer.Option(
    _R.precision,
    "--precision",
    rich_help_panel=RUNTIME,
    help="auto (bf16 autocast with TF32 on CUDA, fp32 on the CPU), fp32 or bf16.",
)
CHANNELS_LAST: Switch = typer.Option(
    _R.channels_last,
    "--channels-last",
    rich_help_panel=RUNTIME,
    help="Channels-last memory layout: auto (on for CUDA), on or off.",
)
COMPILE = typer.Option(
    _R.compile,
    "--compile/--no-compile",
    rich_help_panel=RUNTIME,
    help="torch.compile the training step's forward and loss, and evaluation's forward.",
)
CUDA_GRAPHS = typer.Option(
    _R.cuda_graphs,
    "--cuda-graphs/--no-cuda-graphs",
    rich_help_panel=RUNTIME,
    help="With --compile on CUDA: replay the compiled step as CUDA graphs (mode reduce-overhead).",
)
DECODE: Decode = typer.Option(
    _R.decode,
    "--decode",
    rich_help_panel=RUNTIME,
    help="JPEG decoding: auto (gpu on CUDA, else cpu), cpu (libjpeg-turbo: loader "
    "workers or threads) or gpu (nvJPEG, in batches on the device).",
)
RESIDENCY: Residency = typer.Option(
    _R.residency,
    "--residency",
    rich_help_panel=RUNTIME,
    help="Where a split is held while it is read: auto (picked by size, and said), "
    "disk (shards, loader workers), jpeg (encoded bytes in memory, decoded on the "
    "device), decoded (pixels on the device).",
)
LOADER_WORKERS = typer.Option(
    _R.workers,
    "--workers",
    metavar="N",
    rich_help_panel=RUNTIME,
    help="Data loader processes (-1: auto, 0: in this process).",
)
LRN_IMPL: LrnImpl = typer.Option(
    _R.lrn_impl,
    "--lrn-impl",
    rich_help_panel=RUNTIME,
    help="How LRN is computed: auto (Triton on CUDA, else torch), reference, torch, "
    "triton. The same function either way.",
)
CONV_FORM: ConvForm = typer.Option(
    _R.conv_form,
    "--conv-form",
    rich_help_panel=RUNTIME,
    help="Form of the grouped convolutions: auto (measured on CUDA), groups, split, "
    "blockdiag. The same function and weights either way.",
)
DETERMINISTIC = typer.Option(
    _R.deterministic,
    "--deterministic",
    rich_help_panel=RUNTIME,
    help="Deterministic kernels: a resumed run ends bit-identical on the CPU.",
)

# name: (annotation, option). The runtime settings (config.RuntimeOptions) as command-line options.
RUNTIME_OPTIONS = {
    "devices": (str, DEVICES),
    "precision": (Precision, PRECISION),
    "channels_last": (Switch, CHANNELS_LAST),
    "compile": (bool, COMPILE),
    "cuda_graphs": (bool, CUDA_GRAPHS),
    "decode": (Decode, DECODE),
    "residency": (Residency, RESIDENCY),
    "workers": (int, LOADER_WORKERS),
    "lrn_impl": (LrnImpl, LRN_IMPL),
    "conv_form": (ConvForm, CONV_FORM),
    "deterministic": (bool, DETERMINISTIC),
}


def with_runtime(*names: str):
    """Add the runtime options `names` (all of them by default) to a command. They are declared once, here:
    the command takes them as **runtime and builds its RuntimeOptions with runtime_options(ctx.params)."""

    def decorate(command):
        signature = inspect.signature(command)
        kept = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        added = []
        for name in names or tuple(RUNTIME_OPTIONS):
            annotation, option = RUNTIME_OPTIONS[name]
            added.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
            command.__annotations__[name] = annotation
        command.__signature__ = signature.replace(parameters=kept + added)
        return command

    return decorate


_C = CheckpointOptions()
KEEP = typer.Option(
    _C.keep,
    "--keep",
    metavar="N",
    rich_help_panel=CHECKPOINTS,
    help="Epoch checkpoints kept besides last.pt and best.pt.",
)
CHECKPOINT_MINUTES = typer.Option(
    _C.checkpoint_minutes,
    "--checkpoint-minutes",
    metavar="X",
    rich_help_panel=CHECKPOINTS,
    help="Save last.pt mid-epoch this often (0: off).",
)
CHECKPOINT_STEPS = typer.Option(
    _C.checkpoint_steps,
    "--checkpoint-steps",
    metavar="N",
    rich_help_panel=CHECKPOINTS,
    help="Save last.pt every N steps (0: off).",
)
CHECKPOINT_EPOCHS = typer.Option(
    _C.checkpoint_epochs,
    "--checkpoint-epochs",
    metavar="N",
    rich_help_panel=CHECKPOINTS,
    help="Write the epoch-end checkpoints (epoch-N.pt, best.pt, last.pt) every N epochs and "
    "after the last; the metrics every epoch. For short epochs on a fast GPU.",
)


def given(ctx: typer.Context) -> dict[str, Any]:
    """The options typed on the command line (not defaults), by parameter name."""
    return {
        name: value
        for name, value in ctx.params.items()
        if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"
    }


def pick(cls, params: dict[str, Any]):
    """The settings dataclass `cls` built from the parameters of the same names (validated on creation)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in params.items() if k in names})


def runtime_options(params: dict[str, Any]) -> RuntimeOptions:
    return pick(RuntimeOptions, params)


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
