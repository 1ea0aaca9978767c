"""`alexctl predict`: parse the flags, find the images (alexctl.data.image_files), classify them batch by batch
(alexctl.inference.core.classify, the inference path of eval) and print each batch's results as it is done."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from alexctl.cli.options import (
    INF,
    MODEL,
    OUTPUT,
    RUNTIME,
    BatchSize,
    ChannelsLast,
    CheckpointName,
    Compile,
    ConvFormOption,
    Crops,
    Devices,
    Json,
    LrnImplOption,
    PrecisionOption,
    R,
    emit,
    given,
)
from alexctl.config import InferenceOptions, RuntimeOptions

Format = Literal["table", "csv", "jsonl"]
FOLDER_KEPT = 10  # characters a long folder name keeps (with its "…") in a table too narrow for its path


SourcesArg = Annotated[
    list[str],
    typer.Argument(
        metavar="SOURCE",
        show_default=False,
        help="Image files (JPEG, PNG, ...), folders (searched recursively), tars, "
        "or - to read paths from stdin, one a line.",
    ),
]
Run = Annotated[
    Path,
    typer.Option(
        "--run",
        metavar="DIR",
        rich_help_panel=MODEL,
        show_default=False,
        help="A run directory written by `alexctl train`, or an ensemble directory (the "
        "average of its runs' probabilities, as `alexctl ensemble`).",
    ),
]
TopK = Annotated[
    int,
    typer.Option(
        "--top-k", metavar="N", rich_help_panel=OUTPUT, help="How many of the most probable classes to show per image."
    ),
]
OutputFormat = Annotated[
    Format,
    typer.Option(
        "--format",
        rich_help_panel=OUTPUT,
        help="table (for a person), csv (a header, then one row per image) or "
        "jsonl (one JSON object per image), on stdout as each batch is done.",
    ),
]
Workers = Annotated[
    int,
    typer.Option(
        "--workers",
        metavar="N",
        rich_help_panel=RUNTIME,
        help="Threads decoding and resizing the images (-1: all cores but one).",
    ),
]


def command(
    ctx: typer.Context,
    sources: SourcesArg,
    run: Run,
    checkpoint: CheckpointName = INF.checkpoint,
    crops: Crops = "10",
    batch_size: BatchSize = INF.batch_size,
    top_k: TopK = 5,
    output_format: OutputFormat = "table",
    workers: Workers = -1,
    as_json: Json = False,
    devices: Devices = R.devices,
    precision: PrecisionOption = R.precision,
    channels_last: ChannelsLast = R.channels_last,
    compile: Compile = R.compile,
    lrn_impl: LrnImplOption = R.lrn_impl,
    conv_form: ConvFormOption = R.conv_form,
) -> None:
    """Classify images with a trained run or an ensemble, as the paper tests: the shorter side rescaled
    to 256, the central 256x256, the ten 224x224 patches (or the center one) minus the training set's
    mean image, the softmax averaged over them. Prints the most probable classes with their
    probabilities. A file that cannot be read is reported on stderr and skipped; the exit status is
    1 only if no image could be read.

    Examples:

    \b
        alexctl predict photo.jpg --run runs/seed0
        alexctl predict holiday/ photos.tar --run runs/ensemble5 --format csv > predictions.csv
        find shots -name '*.png' | alexctl predict - --run runs/seed0 --crops 1 --format jsonl
    """

    from alexctl import device
    from alexctl.console import log
    from alexctl.data.image_files import find
    from alexctl.errors import UserError, WorkFailed
    from alexctl.inference.classify import load_classifier

    started = time.monotonic()
    inference = InferenceOptions(crops=int(crops), checkpoint=checkpoint, batch_size=batch_size)
    if top_k < 1:
        raise UserError(f"--top-k {top_k} must be at least 1.")
    if as_json and "output_format" in given(ctx):
        raise UserError(f"--json prints one summary object on stdout; leave out --format {output_format} (or --json).")
    if sources.count("-") > 1:
        raise UserError("SOURCE - (the paths on stdin) can be given once.")
    listed = _stdin_paths() if "-" in sources else []
    files, missing = find([Path(s) for s in sources if s != "-"], listed)
    if not files:
        raise UserError(
            "no image file found: "
            + (f"none of the {len(listed)} paths on stdin exists." if listed else "stdin listed no paths.")
        )
    runtime = device.resolve(
        RuntimeOptions(
            devices=devices,
            precision=precision,
            channels_last=channels_last,
            compile=compile,
            lrn_impl=lrn_impl,
            conv_form=conv_form,
        )
    )
    device.configure(runtime)
    classifier = load_classifier(run, inference.checkpoint, runtime)
    k = min(top_k, len(classifier.classes))
    out = None if as_json else _writer(output_format, k, files, classifier.names)
    skipped, results = [], []

    def skip(name: str, reason: str) -> None:
        skipped.append({"image": name, "reason": reason})
        log(f"skipped {name}: {reason}")

    for name, reason in missing:
        skip(name, reason)
    tick = time.monotonic()
    _classify_files(files, classifier, inference, runtime, k, out, results, skip)
    seconds = time.monotonic() - tick
    predicted = len(files) - (len(skipped) - len(missing))
    summary = _summary(run, classifier, inference, k, files, missing, skipped, predicted, seconds, started)
    if as_json:
        summary["results"] = results
    if predicted == 0:
        raise WorkFailed(
            f"none of the {summary['images']} files could be read as an image (see the skipped files above).", summary
        )
    line = (
        f"{predicted} image{'s' if predicted != 1 else ''} classified by {run} ({crops} crop"
        f"{'s' if crops != '1' else ''}, {len(classifier.members)} network"
        f"{'s' if len(classifier.members) != 1 else ''}) in {seconds:.1f} s"
        + (f"; {len(skipped)} skipped" if skipped else "")
    )
    if as_json or output_format == "table":
        emit(summary, as_json, [line], command="predict", directory=run)
    else:
        log(line)  # stdout holds the csv or jsonl rows alone


def _summary(run, classifier, inference, k, files, missing, skipped, predicted, seconds, started) -> dict:
    return {
        "run_dir": str(run),
        "checkpoints": [str(m.checkpoint) for m in classifier.members],
        "members": len(classifier.members),
        "crops": inference.crops,
        "top_k": k,
        "images": len(files) + len(missing),
        "predicted": predicted,
        "skipped": len(skipped),
        "skipped_files": skipped,
        "images_per_second": round(predicted / max(seconds, 1e-9), 2),
        "seconds": round(time.monotonic() - started, 3),
    }


def _classify_files(files, classifier, inference: InferenceOptions, runtime, k: int, out, results: list, skip) -> None:
    """Classify `files` batch by batch: each batch's rows printed by `out` as it is done (or kept in `results`
    for --json); unreadable files reported through `skip`. A stop signal is noticed between batches."""
    import numpy as np

    from alexctl.console import no_progress, progress
    from alexctl.data.image_files import ImageFiles
    from alexctl.inference.classify import classify, top_classes
    from alexctl.stop import StopSignals

    size = inference.batch_size
    batches = [np.arange(i, min(i + size, len(files))) for i in range(0, len(files), size)]
    show = progress if len(files) > size else no_progress  # a handful of images needs no progress lines
    with (
        show("predict", len(files)) as bar,
        ImageFiles(
            files,
            size=classifier.image_size,
            device=runtime.primary,
            workers=runtime.workers,
            skip=lambda i, reason: (skip(files[i].name, reason), bar.advance(1)),
        ) as source,
        StopSignals() as stop,  # a signal is noticed between batches: every printed row is whole
    ):
        for indices, probs in classify(
            classifier, source, batches, crops=inference.crops, runtime=runtime, progress=bar
        ):
            rows = [
                {
                    "image": files[i].name,
                    "top": [
                        {"class": classifier.classes[c], "name": classifier.names[c], "probability": float(p[c])}
                        for c in top
                    ],
                }
                for i, p, top in zip(indices, probs, top_classes(probs, k))
            ]
            if out is None:
                results.extend(rows)
            else:
                out.write(rows)
            done = indices[-1] + 1 if len(indices) else 0
            stop.check(f"after {done} of {len(files)} images; the rows printed are whole: predict the rest again.")


def _stdin_paths() -> list[str]:
    """The paths listed on stdin, one a line (bytes that are not UTF-8 kept as the file system's own)."""
    stream = getattr(sys.stdin, "buffer", None)
    text = os.fsdecode(stream.read()) if stream is not None else sys.stdin.read()
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def _writer(output_format: str, k: int, files, names: list[str]):
    """What prints the rows of each batch as it is done."""
    if output_format == "table":
        return _Table(files, names)
    return _Csv(k) if output_format == "csv" else _JsonLines()


class _Table:
    """Rows of (image, rank, class name, probability), printed per batch under one header, aligned. Paths are
    printed as given: on a terminal too narrow for them, the middles of long folder names give way (fit_path),
    never the file's own name, and what still does not fit wraps; into a file or a pipe, nothing is shortened."""

    def __init__(self, files, names: list[str], width: int | None = None):
        from rich.console import Console

        longest = max(5, *(len(f.name) for f in files))
        self.class_width = min(40, max(5, *(len(n) for n in names)))
        others = self.class_width + 2 + 11 + 6  # the other columns and the gaps between the four
        console = Console(file=sys.stdout, highlight=False)
        if width is None and not console.is_terminal:
            width = longest + others
        width = width or console.width
        self.image_width = min(longest, max(24, width - others))
        self.console = Console(file=sys.stdout, width=max(width, self.image_width + others), highlight=False)
        self.header = True

    def write(self, rows: list[dict]) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, show_header=self.header, pad_edge=False, header_style="bold")
        table.add_column("image", width=self.image_width, overflow="fold")
        table.add_column("#", width=2, justify="right")
        table.add_column("class", width=self.class_width, no_wrap=True, overflow="ellipsis")
        table.add_column("probability", width=11, justify="right")
        for row in rows:
            image = fit_path(row["image"], self.image_width)
            for rank, t in enumerate(row["top"], 1):
                table.add_row(Text(image if rank == 1 else ""), str(rank), Text(t["name"]), f"{t['probability']:.2%}")
        self.console.print(table)
        self.header = False
        sys.stdout.flush()


def fit_path(path: str, width: int) -> str:
    """`path` in at most `width` characters where it can be: the longest folder names lose their middles
    (to "…", down to FOLDER_KEPT characters each), the file name never; unchanged when it fits."""
    folder, slash, name = path.rpartition("/")
    if len(path) <= width or not slash:
        return path
    parts = folder.split("/")
    lengths = [len(p) for p in parts]
    excess = len(path) - width
    while excess > 0:
        i = max(range(len(parts)), key=lengths.__getitem__)
        if lengths[i] <= FOLDER_KEPT:
            break  # every folder is as short as it goes: the column wraps the rest
        runner_up = max((n for j, n in enumerate(lengths) if j != i), default=0)
        cut = min(excess, max(1, lengths[i] - max(runner_up, FOLDER_KEPT)))
        lengths[i] -= cut
        excess -= cut
    return "/".join(_middle_out(p, n) for p, n in zip(parts, lengths)) + "/" + name


def _middle_out(text: str, length: int) -> str:
    """`text` in `length` characters: its start and end around "…"."""
    if length >= len(text):
        return text
    front = length // 2
    return text[:front] + "…" + text[len(text) - (length - 1 - front) :]


class _Csv:
    """A header, then one row per image: image, then class, name, probability for each of the k."""

    def __init__(self, k: int):
        self.writer = csv.writer(sys.stdout, lineterminator="\n")
        self.writer.writerow(
            ["image"] + [f"{field}_{r}" for r in range(1, k + 1) for field in ("class", "name", "probability")]
        )

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            self.writer.writerow(
                [row["image"]] + [v for t in row["top"] for v in (t["class"], t["name"], f"{t['probability']:.6f}")]
            )
        sys.stdout.flush()


class _JsonLines:
    """One object per image: {"image": ..., "top": [{"class", "name", "probability"}, ...]}."""

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            top = [{**t, "probability": round(t["probability"], 6)} for t in row["top"]]
            sys.stdout.write(json.dumps({"image": row["image"], "top": top}) + "\n")
        sys.stdout.flush()
