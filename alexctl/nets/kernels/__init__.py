"""Fast implementations of the network's layers, each with a pure-torch reference to test it against."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_ms(fn: Callable[[], object], device: torch.device | str, *, warmup: int = 3, repeats: int = 10) -> float:
    """Median wall time of fn() in milliseconds over `repeats` calls after `warmup` calls, the device
    synchronised around each call (a CUDA launch returns before the kernels run)."""
    device = torch.device(device)
    sync = getattr(torch, device.type).synchronize if device.type != "cpu" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3
