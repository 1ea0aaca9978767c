"""`alexctl bench`: parse the flags, run alexctl.bench, print the table."""

from __future__ import annotations

from pathlib import Path

import typer

from alexctl.cli.options import CHANNELS_LAST, COMPILE, DECODE, DEVICES, JSON, LOADER_WORKERS, PRECISION, emit


def command(
    data: Path = typer.Option(None, "--data", help="Data directory to read (default: generate a small one)."),
    preprocess_source: Path = typer.Option(None, "--preprocess", help="Instead: time preprocess's image path against a "
                                           "naive PIL loop on the images of this SOURCE, per core."),
    width: float = typer.Option(None, "--width", help="Network width (default: 1.0, the paper's, on CUDA; 0.125 on the CPU)."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Default 256 on CUDA, 16 on the CPU."),
    steps: int = typer.Option(None, "--steps", min=1, help="Batches per timed window (default 20 on CUDA, 2 on the CPU)."),
    warmup: int = typer.Option(None, "--warmup", min=0, help="Batches before timing (default 10 on CUDA, 1 on the CPU)."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed windows; the median is reported."),
    devices: str = DEVICES,
    precision: str = PRECISION,
    channels_last: str = CHANNELS_LAST,
    compile_model: bool = COMPILE,
    decode: str = DECODE,
    workers: int = LOADER_WORKERS,
    as_json: bool = JSON,
) -> None:
    """Measure, in one run on the same images, the data path alone, the network on synthetic input,
    end-to-end training, ten-crop evaluation and the stock torchvision pipeline, with ratios: run it
    first on a new machine to see whether the disk, the CPU or the GPU is the bottleneck.

    Examples:

    \\b
        alexctl bench --data data/
        alexctl bench --preprocess ../shared/data/imagenet-samples
    """
    from alexctl import device

    if preprocess_source is not None:
        from alexctl.bench import preprocess_bench

        result = preprocess_bench(preprocess_source, size=256, quality=95, repeats=max(repeats, 3))
        lines = [f"{r['name']:<20} {r['median']:>10.1f} {r['unit']} (min {r['min']}, max {r['max']})" for r in result["rows"]]
        lines.append(f"speed-up {result['speedup']}x (median of pairs; min {result['speedup_min_max'][0]}, max "
                     f"{result['speedup_min_max'][1]}); PSNR against the full-size decode: min "
                     f"{result['psnr_db_vs_full_decode']['min']} dB, median {result['psnr_db_vs_full_decode']['median']} dB "
                     f"({result['images']} images)")
        emit(result, as_json, lines)
        return
    from alexctl.bench import bench

    runtime = device.resolve(devices, precision=precision, channels_last=channels_last, compile=compile_model,
                             decode=decode, workers=workers)
    cuda = runtime.is_cuda
    result = bench(data, runtime=runtime, width=width if width is not None else (1.0 if cuda else 0.125),
                   batch_size=batch_size or (256 if cuda else 16), steps=steps or (20 if cuda else 2),
                   warmup=warmup if warmup is not None else (10 if cuda else 1), repeats=repeats)
    lines = [f"{result['device']}, torch {result['torch']}, batch {result['model']['batch_size']}, "
             f"width {result['model']['width']}, {result['runtime']['precision']}"]
    lines += [f"{r['name']:<62} {r['median']:>10.1f} {r['unit']:<9} (min {r['min']}, max {r['max']})"
              for r in result["rows"]]
    lines += [f"{k.replace('_', ' ')}: {v}" for k, v in result["ratios"].items()]
    emit(result, as_json, lines)
