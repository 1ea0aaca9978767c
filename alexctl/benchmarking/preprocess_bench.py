"""`alexctl bench --preprocess SOURCE`: preprocess's image path (decode, rescale, crop, encode) against a naive
PIL loop, one process and one thread each, on the same files read from memory (docs/benchmarks.md)."""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexctl.data.sources import read_bytes, scan
from alexctl.data.transform import UnreadableImage, crop_origin, encode_jpeg, prepare, resized_size


def preprocess_bench(source: Path, *, size: int, quality: int, repeats: int) -> dict:
    """alexctl's image path against a naive PIL loop, one process each, on the same files (per core).

    Both read the files from memory (loaded once beforehand), so the figure is decode + rescale +
    crop + encode, what preprocess spends its cores on. PSNR compares the default fast path with
    the exact full-size decode.
    """
    datas = [read_bytes(it) for it in scan(source)]
    torch.set_num_threads(1)

    def ours():
        for data in datas:
            try:
                encode_jpeg(prepare(data, size).pixels, quality)
            except UnreadableImage:
                pass

    def naive():
        for data in datas:
            try:
                _naive_pil(data, size, quality)
            except OSError:
                pass

    ours(), naive()  # warm-up: page cache, libraries, allocators
    timings = {"alexctl": [], "naive PIL loop": []}
    for _ in range(repeats):  # interleaved, so drift in the machine's speed hits both alike
        for name, fn in (("alexctl", ours), ("naive PIL loop", naive)):
            start = time.perf_counter()
            fn()
            timings[name].append(len(datas) / (time.perf_counter() - start))
    psnr = []
    for data in datas:
        try:
            fast, exact = prepare(data, size), prepare(data, size, fast=False)
        except UnreadableImage:
            continue
        mse = np.mean((fast.pixels.astype(np.float64) - exact.pixels) ** 2)
        psnr.append(float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse))
    rows = [
        {
            "name": n,
            "unit": "images/s per core",
            "median": round(statistics.median(r), 1),
            "min": round(min(r), 1),
            "max": round(max(r), 1),
        }
        for n, r in timings.items()
    ]
    # The speed-up pair by pair (each alexctl window against the naive window beside it): robust
    # to the machine's speed drifting during the run.
    pairs = [a / b for a, b in zip(timings["alexctl"], timings["naive PIL loop"])]
    return {
        "source": str(source),
        "images": len(datas),
        "rows": rows,
        "speedup": round(statistics.median(pairs), 2),
        "speedup_min_max": [round(min(pairs), 2), round(max(pairs), 2)],
        "psnr_db_vs_full_decode": {"min": round(min(psnr), 1), "median": round(float(np.median(psnr)), 1)},
        "repeats": repeats,
    }


def _naive_pil(data: bytes, size: int, quality: int) -> bytes:
    """What most preprocessing scripts do: open, convert, resize the shorter side, crop, save."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    new_w, new_h = resized_size(img.width, img.height, size)
    left, top = crop_origin(img.width, img.height, size)
    img = img.resize((new_w, new_h), Image.BILINEAR).crop((left, top, left + size, top + size))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()
