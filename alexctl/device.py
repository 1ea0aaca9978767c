"""Where and how the network runs: devices, precision, memory layout, kernels, compilation, and
the torch.distributed process group under torchrun. One place puts a model on the runtime.

Every CUDA choice falls back cleanly on a machine without one: `auto` means the fast setting
on CUDA and the plain one on the CPU. On CUDA the defaults are bf16 autocast with TF32 matrix
products and channels-last memory (docs/paper.md says so; docs/benchmarks.md measures them).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from alexctl.config import RuntimeOptions
from alexctl.errors import UserError, WorkFailed

EXAMPLE_BATCH = 128  # the batch the grouped convolutions' forms are timed on (conv_form auto, CUDA)


@dataclass(frozen=True)
class Runtime:
    devices: tuple[torch.device, ...]  # one: grouped convolutions; two: one column per device (section 3.2)
    precision: str  # "fp32" or "bf16"
    channels_last: bool
    compile: bool
    cuda_graphs: bool  # with compile on CUDA: torch.compile mode "reduce-overhead"
    decode: str  # "cpu" (loader workers) or "gpu" (nvJPEG)
    residency: str  # "auto", "disk", "jpeg" or "decoded" (alexctl.data.loader)
    workers: int  # DataLoader worker processes
    deterministic: bool
    lrn_impl: str = "auto"  # alexctl.nets.kernels.lrn
    conv_form: str = "auto"  # alexctl.nets.kernels.conv
    rank: int = 0
    world: int = 1

    @property
    def primary(self) -> torch.device:
        return self.devices[0]

    @property
    def is_cuda(self) -> bool:
        return self.primary.type == "cuda"

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def dtype(self) -> torch.dtype:
        """What the network's input is cast to by the augmentation (autocast does the rest)."""
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def describe(self) -> dict:
        described = {
            "devices": [str(d) for d in self.devices],
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "cuda_graphs": self.cuda_graphs,
            "decode": self.decode,
            "residency": self.residency,
            "workers": self.workers,
            "deterministic": self.deterministic,
            "lrn_impl": self.lrn_impl,
            "conv_form": self.conv_form,
            "world_size": self.world,
        }
        return {**described, **versions(self)}


def resolve(options: RuntimeOptions = RuntimeOptions()) -> Runtime:
    """Turn the runtime settings into a Runtime for this process (and this torchrun rank)."""
    rank, world, local_rank = distributed_env()
    chosen = _devices(options.devices, local_rank)
    cuda = chosen[0].type == "cuda"
    precision = ("bf16" if cuda else "fp32") if options.precision == "auto" else options.precision
    layout = {"auto": cuda, "on": True, "off": False}[options.channels_last]
    # auto: nvJPEG on CUDA (batches of JPEGs decoded on the device: 26,000/s on an H100 against ~550/s per
    # CPU core, gpu-notes.md), libjpeg-turbo on the CPU.
    decode = ("gpu" if cuda else "cpu") if options.decode == "auto" else options.decode
    if decode == "gpu" and not cuda:
        raise UserError("--decode gpu needs a CUDA device (see --devices).")
    workers = options.workers
    if workers < 0:
        # All cores but one per process: decoding a 256x256 JPEG takes ~0.6 ms of a core, so a GPU
        # training at 20,000 images/s needs a dozen of them (or a resident split).
        workers = max(1, (os.cpu_count() or 2) // max(world, 1) - 1)
    if options.cuda_graphs and not (cuda and options.compile):
        raise UserError("--cuda-graphs needs --compile and a CUDA device.")
    return Runtime(
        tuple(chosen),
        precision,
        layout,
        options.compile,
        options.cuda_graphs,
        decode,
        options.residency,
        workers,
        options.deterministic,
        options.lrn_impl,
        options.conv_form,
        rank,
        world,
    )


def versions(runtime: Runtime | None = None) -> dict:
    """torch, CUDA and the device's name: recorded with every run (config.json) and benchmark."""
    cuda = runtime is not None and runtime.is_cuda
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device_name": torch.cuda.get_device_name(runtime.primary) if cuda else _cpu_name(),
    }


def _cpu_name() -> str:
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _devices(spec: str, local_rank: int) -> list[torch.device]:
    if spec == "auto":
        return [torch.device(f"cuda:{local_rank}")] if torch.cuda.is_available() else [torch.device("cpu")]
    try:
        chosen = [torch.device(s.strip()) for s in spec.split(",") if s.strip()]
    except RuntimeError:
        raise UserError(f"--devices {spec!r} is not a list of device names such as cuda:0,cuda:1 or cpu.") from None
    if not 1 <= len(chosen) <= 2:
        raise UserError(f"--devices {spec!r} names {len(chosen)} devices; give one or two.")
    if any(d.type not in ("cpu", "cuda") for d in chosen):
        raise UserError(f"--devices {spec!r}: alexctl runs on cpu and cuda devices.")
    if any(d.type == "cuda" for d in chosen):
        if not torch.cuda.is_available():
            raise UserError(f"--devices {spec!r} asks for CUDA, but torch sees no CUDA device here.")
        # Under torchrun, the list names rank 0's devices; rank r uses the next ones along.
        shifted = []
        for d in chosen:
            index = (d.index or 0) + local_rank * len(chosen)
            if index >= torch.cuda.device_count():
                raise UserError(
                    f"--devices {spec!r}: device cuda:{index} does not exist "
                    f"(this machine has {torch.cuda.device_count()})."
                )
            shifted.append(torch.device("cuda", index))
        chosen = shifted
    return chosen


def distributed(net: torch.nn.Module, runtime: Runtime) -> torch.nn.Module:
    """The net wrapped for data-parallel training under torchrun (DDP), or the net itself with one process."""
    if runtime.world == 1:
        return net
    ids = [runtime.primary] if len(runtime.devices) == 1 and runtime.is_cuda else None
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)


def forward_of(net: torch.nn.Module, runtime: Runtime):
    """What evaluation calls for a forward pass: the net, compiled if the runtime asks."""
    return compiled(net, runtime)


def compiled(fn, runtime: Runtime, *, fullgraph: bool = False, backend: str | None = None):
    """`fn` compiled as the runtime asks (torch.compile; CUDA graphs with --cuda-graphs), or `fn` itself.
    `backend`: Inductor by default; tests pass "aot_eager_decomp_partition" to check a graph on the CPU."""
    if not runtime.compile:
        return fn
    mode = "reduce-overhead" if runtime.cuda_graphs else None
    return torch.compile(fn, fullgraph=fullgraph, mode=mode, **({"backend": backend} if backend else {}))


def reading(runtime: Runtime, *, residency: str | None = None) -> dict:
    """How a split is read on this runtime: alexctl.data.resident.open_source's keyword arguments. A command
    that reads a few images of a large split (report, bench windows) asks for the disk residency."""
    return {
        "device": runtime.primary,
        "residency": residency or runtime.residency,
        "workers": runtime.workers,
        "decode": runtime.decode,
    }


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


# ---------------------------------------------------------------- torch.distributed


def distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


@contextlib.contextmanager
def process_group(runtime: Runtime) -> Iterator[None]:
    """Under torchrun: torch.distributed's process group (gloo on the CPU, NCCL on GPUs) for the block, destroyed
    on the way out, whether the block succeeded or raised, and with it its threads. Left to the interpreter's
    exit, a gloo worker thread that releases a collective's tensors needs the interpreter and aborts the process
    ("terminate called without an active exception", exit -6 after the documented error line:
    pytorch/pytorch#190489). With one process: nothing."""
    if runtime.world == 1 or torch.distributed.is_initialized():
        yield
        return
    if runtime.is_cuda:
        torch.cuda.set_device(runtime.primary)
    # Imported after the group is made, torch._dynamo (which DDP and torch.compile import) keeps a reference to
    # it that destroy_process_group cannot drop, and the group's threads run to the exit (torch 2.14.1); imported
    # before, nothing is kept. Heavy, and needed here only: imported here.
    importlib.import_module("torch._dynamo")

    torch.distributed.init_process_group("nccl" if runtime.is_cuda else "gloo")
    try:
        yield
    except BaseException as error:
        _release_locals(error)
        raise
    finally:
        torch.distributed.destroy_process_group()


def _release_locals(error: BaseException) -> None:
    """Clear the local variables of the finished frames that `error`'s traceback keeps (and those of the errors
    it was raised from or while handling). One of them is the DDP wrapper, which holds the process group: kept,
    the group's threads outlive destroy_process_group. The traceback itself (files, lines) stays whole."""
    pending, seen = [error], set()
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)  # frames still running (this one's callers) are skipped
        pending += [error.__cause__, error.__context__]


def all_reduce(values: list[float], runtime: Runtime, op: str = "sum") -> list[float]:
    """The element-wise sum (or max) of `values` over the ranks; the values themselves with one process."""
    if runtime.world == 1:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=runtime.primary)
    torch.distributed.all_reduce(
        t, op=torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
    )
    return t.tolist()


def all_reduce_array(values: np.ndarray, runtime: Runtime) -> np.ndarray:
    if runtime.world == 1:
        return values
    t = torch.from_numpy(values).to(runtime.primary)
    torch.distributed.all_reduce(t)
    return t.cpu().numpy()


def any_rank(flag: bool, runtime: Runtime) -> bool:
    """True on every rank if it is true on any: the ranks agree (to save, to stop) at the same step."""
    return bool(all_reduce([float(flag)], runtime, op="max")[0])


def gathered(value, runtime: Runtime) -> list:
    """`value` (a small picklable object) of every rank, in rank order; [value] with one process."""
    if runtime.world == 1:
        return [value]
    out: list = [None] * runtime.world
    torch.distributed.all_gather_object(out, value)
    return out


# What gloo and NCCL say when the process at the other end of a collective is gone (killed, out of memory, its
# node lost): seen on the CPU with gloo as "[.../gloo/transport/tcp/pair.cc:545] Read error ...: Connection reset
# by peer" and "Connection closed by peer".
LOST_PEER = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Read error",
    "Write error",
    "Broken pipe",
    "NCCL communicator was aborted",
    "remote process exited or there was a network error",
)


@contextlib.contextmanager
def peers_watched(runtime: Runtime) -> Iterator[None]:
    """Under torchrun: a collective that fails because another rank's process ended raises WorkFailed in one
    sentence ("rank 1 stopped (lost connection); ...") instead of the backend's internal error."""
    try:
        yield
    except RuntimeError as e:  # torch.distributed.DistBackendError is one
        if runtime.world == 1 or not any(sign in str(e) for sign in LOST_PEER):
            raise
        peer = f"rank {1 - runtime.rank}" if runtime.world == 2 else f"another rank than this one ({runtime.rank})"
        raise WorkFailed(f"{peer} stopped (lost connection); run the same command again to resume.") from None
