"""`alexctl bench`: parse the flags, run alexctl.benchmarking.bench, print the table and what it means."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alexctl.cli.options import (
    DATA,
    MODEL,
    ChannelsLast,
    Compile,
    ConvFormOption,
    CudaGraphs,
    DecodeOption,
    Devices,
    Json,
    LrnImplOption,
    PrecisionOption,
    R,
    ResidencyOption,
    Workers,
    emit,
)
from alexctl.config import RuntimeOptions

Data = Annotated[
    Path,
    typer.Option(
        "--data",
        metavar="DIR",
        rich_help_panel=DATA,
        show_default=False,
        help="Data directory to read (default: generate a small one).",
    ),
]
PreprocessSource = Annotated[
    Path,
    typer.Option(
        "--preprocess",
        metavar="SOURCE",
        rich_help_panel=DATA,
        show_default=False,
        help="Instead: time preprocess's image path against a naive PIL loop on the images of this SOURCE, per core.",
    ),
]
Width = Annotated[
    float,
    typer.Option(
        "--width",
        metavar="X",
        rich_help_panel=MODEL,
        show_default=False,
        help="Network width (default: 1.0, the paper's, on CUDA; 0.125 on the CPU).",
    ),
]
BatchSize = Annotated[
    int,
    typer.Option(
        "--batch-size",
        metavar="N",
        rich_help_panel=MODEL,
        show_default=False,
        help="Default 256 on CUDA, 16 on the CPU.",
    ),
]
Steps = Annotated[
    int,
    typer.Option(
        "--steps",
        metavar="N",
        rich_help_panel=MODEL,
        show_default=False,
        help="Batches per timed window (default 20 on CUDA, 2 on the CPU).",
    ),
]
Warmup = Annotated[
    int,
    typer.Option(
        "--warmup",
        metavar="N",
        rich_help_panel=MODEL,
        show_default=False,
        help="Batches before timing (default 10 on CUDA, 1 on the CPU).",
    ),
]
Repeats = Annotated[
    int,
    typer.Option("--repeats", metavar="N", rich_help_panel=MODEL, help="Timed windows; the median is reported."),
]
Stock = Annotated[
    bool,
    typer.Option(
        "--stock/--no-stock", rich_help_panel=MODEL, help="Also measure the stock torchvision pipeline (the baseline)."
    ),
]


def command(
    ctx: typer.Context,
    data: Data = None,
    preprocess_source: PreprocessSource = None,
    width: Width = None,
    batch_size: BatchSize = None,
    steps: Steps = None,
    warmup: Warmup = None,
    repeats: Repeats = 3,
    stock: Stock = True,
    as_json: Json = False,
    devices: Devices = R.devices,
    precision: PrecisionOption = R.precision,
    channels_last: ChannelsLast = R.channels_last,
    compile: Compile = R.compile,
    cuda_graphs: CudaGraphs = R.cuda_graphs,
    decode: DecodeOption = R.decode,
    residency: ResidencyOption = R.residency,
    workers: Workers = R.workers,
    lrn_impl: LrnImplOption = R.lrn_impl,
    conv_form: ConvFormOption = R.conv_form,
) -> None:
    """Measure, in one run on the same images, the data path alone, the network on synthetic input,
    end-to-end training, ten-crop evaluation and the stock torchvision pipeline, and say which stage
    bounds training: run it first on a new machine. Progress goes to stderr as each figure is taken.

    Examples:

    \b
        alexctl bench --data data/
        alexctl bench --data data/ --residency decoded --compile
        alexctl bench --preprocess ../shared/data/imagenet-samples
    """
    from alexctl import device
    from alexctl.errors import UserError

    for name, value, low in (
        ("--batch-size", batch_size, 1),
        ("--steps", steps, 1),
        ("--warmup", warmup, 0),
        ("--repeats", repeats, 1),
    ):
        if value is not None and value < low:
            raise UserError(f"{name} {value} must be at least {low}.")
    if width is not None and not width > 0:
        raise UserError(f"--width {width} must be above 0.")
    if preprocess_source is not None:
        from alexctl.benchmarking.preprocess_bench import preprocess_bench

        result = preprocess_bench(preprocess_source, size=256, quality=95, repeats=max(repeats, 3))
        lines = [
            f"{r['name']:<20} {r['median']:>10.1f} {r['unit']} (min {r['min']}, max {r['max']})" for r in result["rows"]
        ]
        lines.append(
            f"speed-up {result['speedup']}x (median of pairs; min {result['speedup_min_max'][0]}, max "
            f"{result['speedup_min_max'][1]}); PSNR against the full-size decode: min "
            f"{result['psnr_db_vs_full_decode']['min']} dB, median "
            f"{result['psnr_db_vs_full_decode']['median']} dB ({result['images']} images)"
        )
        emit(result, as_json, lines, command="bench", directory=preprocess_source)
        return
    from alexctl.benchmarking.bench import bench

    runtime = device.resolve(
        RuntimeOptions(
            devices=devices,
            precision=precision,
            channels_last=channels_last,
            compile=compile,
            cuda_graphs=cuda_graphs,
            decode=decode,
            residency=residency,
            workers=workers,
            lrn_impl=lrn_impl,
            conv_form=conv_form,
        )
    )
    cuda = runtime.is_cuda
    result = bench(
        data,
        runtime=runtime,
        width=width if width is not None else (1.0 if cuda else 0.125),
        batch_size=batch_size or (256 if cuda else 16),
        steps=steps or (20 if cuda else 2),
        warmup=warmup if warmup is not None else (10 if cuda else 1),
        repeats=repeats,
        stock=stock,
    )
    lines = [
        f"{result['device']}, torch {result['torch']}, batch {result['model']['batch_size']}, "
        f"width {result['model']['width']}, {result['runtime']['precision']}; {result['residency']}"
    ]
    lines += [
        f"{r['name']:<62} {r['median']:>10.1f} {r['unit']:<9} (min {r['min']}, max {r['max']})" for r in result["rows"]
    ]
    lines += [f"{k.replace('_', ' ')}: {v}" for k, v in result["ratios"].items()]
    lines.append(result["reading"])
    emit(result, as_json, lines, command="bench", directory=data)
