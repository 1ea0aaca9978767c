"""The GPU check's preflight (issue 17, step 1): in under 30 s, whether this machine can run the rest.

Each check is {"ok": bool, "detail": str, "seconds": float}; one that raises is recorded as failed with
its error, never stopping the others. Without CUDA (`dry`) the GPU pieces run on stand-ins: torchvision's
CPU decoder for nvJPEG, the CPU for bf16, the aot_eager_decomp_partition backend for Inductor.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import time
from collections.abc import Callable

import numpy as np
import torch

from alexctl.data import gpu_decode
from alexctl.data.transform import decode_jpeg
from alexctl.nets.kernels import lrn_triton

DECODE_MEAN_LIMIT = 2.0  # mean |GPU - CPU| per pixel; nvJPEG and libjpeg-turbo round their IDCTs differently


def check(*, image: bytes, dry: bool) -> dict:
    """Every preflight check, each timed; {"checks": {name: {...}}, "seconds": total}."""
    started = time.monotonic()
    cuda = torch.cuda.is_available()
    checks: dict[str, Callable[[], tuple[bool, str]]] = {
        "gpu": lambda: _gpu(cuda, dry),
        "compiler": _compiler,
        "python headers": _headers,
        "GPU JPEG decode vs CPU": lambda: _decode(image, cuda),
        "bf16": lambda: _bf16(cuda),
        "small compile": lambda: _compile(cuda),
    }
    results = {}
    for name, fn in checks.items():
        tick = time.monotonic()
        try:
            ok, detail = fn()
        except Exception as e:  # one broken piece is a row, not the end of the preflight
            ok, detail = False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        results[name] = {"ok": bool(ok), "detail": detail, "seconds": round(time.monotonic() - tick, 2)}
    return {"checks": results, "seconds": round(time.monotonic() - started, 2)}


def _gpu(cuda: bool, dry: bool) -> tuple[bool, str]:
    if not cuda:
        return dry, f"no CUDA device ({platform.machine()} CPU); " + ("a dry run" if dry else "a full check needs one")
    driver = "unknown"
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else driver
    props = torch.cuda.get_device_properties(0)
    return True, (
        f"{props.name}, {props.total_memory / 2**30:.0f} GiB, capability {props.major}.{props.minor}, "
        f"driver {driver}, CUDA {torch.version.cuda}"
    )


def _compiler() -> tuple[bool, str]:
    """The C compiler Triton builds its launcher with, found as the LRN's own probe finds it."""
    cc = lrn_triton.c_compiler()
    return cc is not None, f"C compiler: {cc}" if cc else lrn_triton.compiler_missing()


def _headers() -> tuple[bool, str]:
    return not lrn_triton.headers_missing(), lrn_triton.headers_missing() or str(lrn_triton.python_header())


def _decode(data: bytes, cuda: bool) -> tuple[bool, str]:
    """nvJPEG (alexctl.data.gpu_decode, the data path's own call) against alexctl's CPU decode (libjpeg-turbo)
    of one photograph; without CUDA, torchvision's CPU decoder stands in for nvJPEG."""
    device = torch.device("cuda" if cuda else "cpu")
    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    gpu_decode.synchronize_stream(device)  # as every batched decode of the data path does
    (other,) = gpu_decode.nvjpeg([encoded], device)
    if cuda:
        torch.cuda.synchronize()
    other = other.cpu().permute(1, 2, 0).numpy()
    reference = decode_jpeg(data)
    if other.shape != reference.shape:
        return False, f"shapes differ: {other.shape} on {device}, {reference.shape} on the CPU"
    diff = np.abs(other.astype(np.int16) - reference.astype(np.int16))
    mean = float(diff.mean())
    who = "nvJPEG" if cuda else "torchvision's CPU decoder (stand-in for nvJPEG)"
    return mean <= DECODE_MEAN_LIMIT, (
        f"{who} vs libjpeg-turbo on a {reference.shape[1]}x{reference.shape[0]} photograph: mean |diff| "
        f"{mean:.3f} (limit {DECODE_MEAN_LIMIT}), max {int(diff.max())}"
    )


def _bf16(cuda: bool) -> tuple[bool, str]:
    device = "cuda" if cuda else "cpu"
    supported = torch.cuda.is_bf16_supported() if cuda else True
    a = torch.randn(256, 256, device=device)
    b = torch.randn(256, 256, device=device)
    exact = a @ b
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        low = a @ b
    error = float((low.float() - exact).abs().max() / exact.abs().max())
    return supported and low.dtype == torch.bfloat16 and error < 0.02, (
        f"bf16 autocast on {device}: {low.dtype}, max relative error {error:.4f}"
    )


def _compile(cuda: bool) -> tuple[bool, str]:
    """One small fullgraph compile: Inductor (Triton kernels) on CUDA; a graph-only backend on the CPU stand-in."""
    backend = "inductor" if cuda else "aot_eager_decomp_partition"

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x * 2 + 1).sum(dim=1)

    x = torch.randn(64, 32, device="cuda" if cuda else "cpu")
    tick = time.monotonic()
    got = torch.compile(fn, fullgraph=True, backend=backend)(x)
    seconds = time.monotonic() - tick
    ok = torch.allclose(got, fn(x), rtol=1e-4, atol=1e-4)
    return ok, f"{backend}: {seconds:.1f} s, " + ("matches eager" if ok else "differs from eager")
