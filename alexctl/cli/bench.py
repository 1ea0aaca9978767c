"""`alexctl bench`: parse the flags, run alexctl.benchmarking.bench, print the table and what it means."""

from __future__ import annotations

from pathlib import Path

import typer

from alexctl.cli.options import DATA, JSON, MODEL, emit, runtime_options, with_runtime


@with_runtime(
    "devices",
    "precision",
    "channels_last",
    "compile",
    "cuda_graphs",
    "decode",
    "residency",
    "workers",
    "lrn_impl",
    "conv_form",
)
def command(
    ctx: typer.Context,
    data: Path = typer.Option(
        None,
        "--data",
        metavar="DIR",
        rich_help_panel=DATA,
        show_default=False,
        help="Data directory to read (default: generate a small one).",
    ),
    preprocess_source: Path = typer.Option(
        None,
        "--preprocess",
        metavar="SOURCE",
        rich_help_panel=DATA,
        show_default=False,
        help="Instead: time preprocess's image path against a naive PIL loop on the images of this SOURCE, per core.",
    ),
    width: float = typer.Option(
        None,
        "--width",
        metavar="X",
        rich_help_panel=MODEL,
        show_default=False,
        help="Network width (default: 1.0, the paper's, on CUDA; 0.125 on the CPU).",
    ),
    batch_size: int = typer.Option(
        None,
        "--batch-size",
        metavar="N",
        rich_help_panel=MODEL,
        show_default=False,
        help="Default 256 on CUDA, 16 on the CPU.",
    ),
    steps: int = typer.Option(
        None,
        "--steps",
        metavar="N",
        rich_help_panel=MODEL,
        show_default=False,
        help="Batches per timed window (default 20 on CUDA, 2 on the CPU).",
    ),
    warmup: int = typer.Option(
        None,
        "--warmup",
        metavar="N",
        rich_help_panel=MODEL,
        show_default=False,
        help="Batches before timing (default 10 on CUDA, 1 on the CPU).",
    ),
    repeats: int = typer.Option(
        3, "--repeats", metavar="N", rich_help_panel=MODEL, help="Timed windows; the median is reported."
    ),
    stock: bool = typer.Option(
        True,
        "--stock/--no-stock",
        rich_help_panel=MODEL,
        help="Also measure the stock torchvision pipeline (the baseline).",
    ),
    as_json: bool = JSON,
    **runtime,
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

    runtime = device.resolve(runtime_options(ctx.params))
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
