"""Where and how the network runs: devices, precision, memory layout, compilation,
JPEG decoding, and the torch.distributed process group under torchrun.

Every CUDA choice falls back cleanly on a machine without one: `auto` means the
fast setting on CUDA and the plain one on the CPU. The defaults on CUDA (bf16,
channels-last) follow the measurements quoted in docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from alexctl.errors import UserError


@dataclass(frozen=True)
class Runtime:
    devices: tuple[torch.device, ...]  # one: grouped convolutions; two: one column per device (section 3.2)
    precision: str  # "fp32" or "bf16"
    channels_last: bool
    compile: bool
    decode: str  # "cpu" (loader workers) or "gpu" (nvJPEG)
    workers: int  # DataLoader worker processes
    deterministic: bool
    rank: int = 0
    world: int = 1

    @property
    def primary(self) -> torch.device:
        return self.devices[0]

    @property
    def is_cuda(self) -> bool:
        return self.primary.type == "cuda"

    def describe(self) -> dict:
        return {"devices": [str(d) for d in self.devices], "precision": self.precision,
                "channels_last": self.channels_last, "compile": self.compile, "decode": self.decode,
                "workers": self.workers, "deterministic": self.deterministic, "world_size": self.world}


def resolve(devices: str = "auto", *, precision: str = "auto", channels_last: str = "auto", compile: bool = False,
            decode: str = "auto", workers: int = -1, deterministic: bool = False) -> Runtime:
    """Turn the command-line choices into a Runtime for this process (and this torchrun rank)."""
    rank, world, local_rank = distributed_env()
    chosen = _devices(devices, local_rank)
    cuda = chosen[0].type == "cuda"
    if precision == "auto":
        precision = "bf16" if cuda else "fp32"
    if precision not in ("fp32", "bf16"):
        raise UserError(f"--precision {precision!r} is not one of auto, fp32, bf16.")
    layout = {"auto": cuda, "on": True, "off": False}.get(channels_last)
    if layout is None:
        raise UserError(f"--channels-last {channels_last!r} is not one of auto, on, off.")
    if decode == "auto":
        decode = "cpu"
    if decode not in ("cpu", "gpu"):
        raise UserError(f"--decode {decode!r} is not one of auto, cpu, gpu.")
    if decode == "gpu" and not cuda:
        raise UserError("--decode gpu needs a CUDA device (see --devices).")
    if workers < 0:
        # All cores but one per process: decoding a 256x256 JPEG takes ~0.6 ms of a core, so a GPU
        # training at 20,000 images/s needs a dozen of them (or --decode gpu).
        workers = max(1, (os.cpu_count() or 2) // max(world, 1) - 1)
    return Runtime(tuple(chosen), precision, layout, compile, decode, workers, deterministic, rank, world)


def _devices(spec: str, local_rank: int) -> list[torch.device]:
    if spec == "auto":
        return [torch.device(f"cuda:{local_rank}")] if torch.cuda.is_available() else [torch.device("cpu")]
    try:
        chosen = [torch.device(s.strip()) for s in spec.split(",") if s.strip()]
    except RuntimeError:
        raise UserError(f"--devices {spec!r} is not a list of device names such as cuda:0,cuda:1 or cpu.") from None
    if not 1 <= len(chosen) <= 2:
        raise UserError(f"--devices {spec!r} names {len(chosen)} devices; give one or two.")
    if any(d.type == "cuda" for d in chosen):
        if not torch.cuda.is_available():
            raise UserError(f"--devices {spec!r} asks for CUDA, but torch sees no CUDA device here.")
        # Under torchrun, the list names rank 0's devices; rank r uses the next ones along.
        shifted = []
        for d in chosen:
            index = (d.index or 0) + local_rank * len(chosen)
            if index >= torch.cuda.device_count():
                raise UserError(f"--devices {spec!r}: device cuda:{index} does not exist "
                                f"(this machine has {torch.cuda.device_count()}).")
            shifted.append(torch.device("cuda", index))
        chosen = shifted
    return chosen


def distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(runtime: Runtime) -> None:
    if runtime.world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if runtime.is_cuda else "gloo"
        if runtime.is_cuda:
            torch.cuda.set_device(runtime.primary)
        torch.distributed.init_process_group(backend)


def configure(runtime: Runtime) -> None:
    """Process-wide switches: determinism and the fast matrix paths."""
    if runtime.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif runtime.is_cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(runtime: Runtime):
    if runtime.precision == "bf16":
        return torch.autocast(runtime.primary.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(runtime: Runtime) -> None:
    if runtime.is_cuda:
        for d in runtime.devices:
            torch.cuda.synchronize(d)
