"""Where a split's images live while a command runs, and batches of them on the device.

`open_source(split, device=...)` returns a BatchSource; `source.batches(index_arrays)`
yields, for each array in order, uint8 (n, 3, S, S) images and int64 (n,) labels on the
device, and the indices as numpy int64. One interface, three residencies:

  disk     samples read from the shards by byte range per batch and decoded in DataLoader
           worker processes (libjpeg-turbo), or by nvJPEG on the device (decode="gpu");
           pinned batches and non-blocking copies on CUDA. Memory: a few batches.
  jpeg     the split's JPEG bytes read once into host memory, one flat uint8 buffer plus
           offsets (pinned on CUDA); each batch decoded by nvJPEG on the device
           (decode="gpu") or by libjpeg-turbo threads in this process, one batch ahead.
           ILSVRC-2012 train at 256 px is ~25 GB of JPEGs.
  decoded  every image decoded once into one uint8 (N, S, S, 3) tensor on the device
           (airbench's way); a batch is one index_select there. Imagenette ~1.9 GB,
           ILSVRC-2012 val ~9.8 GB, CIFAR-10 ~150 MB.
  auto     decoded if the decoded images fit the memory budget, else jpeg if the JPEGs
           fit, else disk; `reason` says which and why, in GB.

Pixels: libjpeg-turbo (simplejpeg) decodes the same bytes to the same pixels wherever it
runs, so with decode="cpu" every residency yields identical batches (tested). nvJPEG
(decode="gpu", CUDA only) may differ from libjpeg-turbo by rounding in its IDCT and
chroma upsampling; it waits for the current stream before each batch and falls back to
libjpeg-turbo if it fails on sound JPEGs (alexctl.data.gpu_decode). Order, and "every sample exactly once per epoch", are the caller's: a
source yields exactly the batches it is given, in order, so a resumed epoch passes
batches[s:]. A read or decode error is a UserError naming the shard file and the key.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import numpy as np
import torch

from alexctl import rundir
from alexctl.data.disk import Batches, jpeg_views, loader
from alexctl.data.gpu_decode import decode_batch
from alexctl.data.loader import Split
from alexctl.errors import UserError

RESIDENCIES = ("auto", "disk", "jpeg", "decoded")
DECODERS = ("cpu", "gpu")  # libjpeg-turbo (simplejpeg) or nvJPEG (torchvision.io.decode_jpeg on CUDA)
# Default budgets for "auto". On CUDA the decoded images may take 60% of the device memory free
# when the source opens: the paper's net at batch 256 in bf16 needs a few GB of the rest.
DEVICE_FRACTION = 0.6
# Host memory (JPEGs, and decoded images on the CPU): half the available RAM, shared by the
# processes of this host (LOCAL_WORLD_SIZE under torchrun), each of which holds its own copy.
HOST_FRACTION = 0.5
DECODE_CHUNK = 1024  # images decoded per step when decoding a split once (host staging on CUDA: 200 MB at 256 px)

Batch = tuple[torch.Tensor, torch.Tensor, np.ndarray]


def open_source(
    split: Split,
    *,
    device: torch.device | str,
    residency: str = "auto",
    workers: int = 0,
    decode: str = "cpu",
    memory_budget: int | None = None,
) -> BatchSource:
    """The split's batches on `device`, held as `residency` says (see the module docstring).

    workers: decoders at once: DataLoader worker processes for disk (0: decode in this
    process), libjpeg-turbo threads of this process for jpeg and decoded (0 counts as 1).
    decode: "cpu" (libjpeg-turbo) or "gpu" (nvJPEG on the CUDA device).
    memory_budget: bytes "auto" may keep resident (decoded images on the device, JPEGs in
    host memory); default DEVICE_FRACTION of free CUDA memory for decoded images on CUDA and
    HOST_FRACTION of the available RAM otherwise.
    """
    device = torch.device(device)
    if residency not in RESIDENCIES:
        raise UserError(f"Residency {residency!r} is not one of {', '.join(RESIDENCIES)}.")
    if decode not in DECODERS:
        raise UserError(f"Decoder {decode!r} is not one of {', '.join(DECODERS)}.")
    if decode == "gpu" and device.type != "cuda":
        raise UserError(f"Decoding on the GPU (nvJPEG) needs a CUDA device, not {device}.")
    chosen, reason = choose_residency(
        split, device, residency=residency, workers=workers, decode=decode, memory_budget=memory_budget
    )
    kind = {"decoded": _DecodedSource, "jpeg": _JpegSource, "disk": _DiskSource}[chosen]
    return kind(split, device, reason, workers, decode)


def choose_residency(
    split: Split, device: torch.device, *, residency: str, workers: int, decode: str, memory_budget: int | None
) -> tuple[str, str]:
    """(residency, reason): "auto" resolved by the sizes of the split against the budgets."""
    n, size = len(split), split.image_size
    decoded, encoded = n * 3 * size * size, int(split.size.sum())
    how = {
        "decoded": f"decoded once by {_decoder(decode, 'decoded', workers, device)} into one uint8 tensor on {device}",
        "jpeg": f"held in {'pinned ' if device.type == 'cuda' else ''}host memory and decoded per batch by "
        f"{_decoder(decode, 'jpeg', workers, device)}",
        "disk": f"read from the shards per batch and decoded by {_decoder(decode, 'disk', workers, device)}",
    }
    if residency != "auto":
        return (
            residency,
            f"{residency}, as asked: the {n:,} images ({_gb(encoded)} as JPEG, {_gb(decoded)} decoded) "
            f"are {how[residency]}.",
        )
    device_budget, device_note, host_budget, host_note = _budgets(device, memory_budget)
    if decoded <= device_budget:
        return "decoded", (
            f"decoded: the {n:,} images take {_gb(decoded)} decoded, within the {_gb(device_budget)} "
            f"budget ({device_note}), so they are {how['decoded']}."
        )
    over = f"decoded the {n:,} images would take {_gb(decoded)}, over the {_gb(device_budget)} budget ({device_note})"
    if encoded <= host_budget:
        return "jpeg", (
            f"jpeg: {over}; as JPEG they take {_gb(encoded)}, within {_gb(host_budget)} ({host_note}), "
            f"so they are {how['jpeg']}."
        )
    return "disk", (
        f"disk: {over}, and as JPEG they take {_gb(encoded)}, over {_gb(host_budget)} ({host_note}), "
        f"so they are {how['disk']}."
    )


class BatchSource:
    """Batches of one split on one device, whatever the residency. Use as a context manager, or close().

    From open to close it holds the split's shared readers lock (rundir.split_readers), so that
    `preprocess --force` cannot rewrite the shards under it, and it opens only a split that is not being
    rewritten and is still the one `load_split` read."""

    residency: str  # "disk", "jpeg" or "decoded"
    reason: str  # one sentence: what was picked and why, for logs and config.json

    def __init__(self, split: Split, device: torch.device, reason: str, workers: int, decode: str):
        self.split, self.device, self.reason, self.workers, self.decode = split, device, reason, workers, decode
        self.closed = False
        self._readers = ExitStack()
        self._readers.enter_context(rundir.split_readers(split.root))
        try:
            _check_unchanged(split)
        except BaseException:
            self._readers.close()
            raise

    def batches(self, batches: list[np.ndarray]) -> Iterator[Batch]:
        """For each index array, in order: uint8 (n, 3, S, S) images on the device, int64 (n,) labels on the
        device, the indices (n,) as numpy int64."""
        if self.closed:
            raise ValueError("This BatchSource is closed.")
        checked = [self._check(b) for b in batches]  # before anything is read: an index error names its batch
        return self._batches(checked)

    def close(self) -> None:
        self.closed = True
        self._readers.close()  # releases the readers lock

    def __enter__(self) -> BatchSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _batches(self, batches: list[np.ndarray]) -> Iterator[Batch]:
        raise NotImplementedError

    def _check(self, batch) -> np.ndarray:
        indices = np.asarray(batch, dtype=np.int64)
        n = len(self.split)
        if indices.ndim != 1:
            raise IndexError(f"A batch must be a 1-D array of sample indices, not one of shape {indices.shape}.")
        if len(indices) and not (0 <= indices.min() and indices.max() < n):
            raise IndexError(
                f"A batch's sample indices must lie in [0, {n}), not in [{indices.min()}, {indices.max()}]."
            )
        return indices


class _DiskSource(BatchSource):
    residency = "disk"

    def _batches(self, batches: list[np.ndarray]) -> Iterator[Batch]:
        cuda = self.device.type == "cuda"
        dataset = Batches(self.split, batches, self.decode, errors_as_values=True)
        items = loader(dataset, workers=self.workers, pin_memory=cuda and self.decode == "cpu")
        for item, indices in zip(items, batches):
            if isinstance(item, UserError):  # from a worker, as a value: its sentence, not a wrapped traceback
                raise item
            if self.decode == "gpu":
                jpegs, offsets, labels, _ = item
                images = decode_batch(self.split, indices, jpeg_views(jpegs, offsets), self.device)
            else:
                images, labels, _ = item
                images = images.to(self.device, non_blocking=True)
            yield images, labels.to(self.device, non_blocking=True), indices


class _ResidentSource(BatchSource):
    """What jpeg and decoded share: labels on the device, a libjpeg-turbo thread pool."""

    def __init__(self, split: Split, device: torch.device, reason: str, workers: int, decode: str):
        super().__init__(split, device, reason, workers, decode)
        self.labels = torch.from_numpy(split.labels.astype(np.int64)).to(device)  # (N,) int64
        self.threads = max(1, workers)
        self.pool = ThreadPoolExecutor(self.threads, "alexctl-decode") if decode == "cpu" else None
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        """Read (and for decoded, decode) the split into memory."""
        raise NotImplementedError

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.labels = self.pool = None
        super().close()

    def _decode_on_cpu(self, indices: np.ndarray, data_of, out: np.ndarray, slots: np.ndarray | None = None) -> list:
        """Start decoding sample indices[k] into out[slots[k]] (default out[k]), (S, S, 3) uint8 each, in the
        pool; the futures to wait on (a decode error is raised by their result())."""
        slots = np.arange(len(indices)) if slots is None else slots

        def work(part: slice) -> None:
            for i, slot in zip(indices[part], slots[part]):
                self.split.decode_into(i, data_of(i), out[slot])

        bounds = np.linspace(0, len(indices), min(self.threads, max(1, len(indices))) + 1).astype(int)
        return [self.pool.submit(work, slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]


class _JpegSource(_ResidentSource):
    residency = "jpeg"

    jpegs: torch.Tensor | None = None  # (total bytes,) uint8: every JPEG of the split, back to back
    registered = False

    def _load(self) -> None:
        split = self.split
        self.starts = np.concatenate([[0], np.cumsum(split.size.astype(np.int64))])  # (N + 1,) byte offsets
        self.jpegs = torch.empty(int(self.starts[-1]), dtype=torch.uint8)
        flat = self.jpegs.numpy()
        for i in np.lexsort((split.offset, split.shard)):  # shard by shard, in file order
            split.read_into(i, flat[self.starts[i] : self.starts[i + 1]])
        if self.device.type == "cuda" and len(self.jpegs):
            # Page-locked in place, so uploads need no staging copy. Not torch.empty(pin_memory=True):
            # PyTorch's pinned allocator rounds sizes up to a power of two (25 GB would take 32 GB).
            _check_cuda(
                torch.cuda.cudart().cudaHostRegister(self.jpegs.data_ptr(), len(self.jpegs), 1),
                f"page-locking the split's {_gb(len(self.jpegs))} of JPEGs",
            )
            self.registered = True

    def close(self) -> None:
        if self.registered:
            torch.cuda.synchronize(self.device)  # no copy from the buffer may still be running
            _check_cuda(torch.cuda.cudart().cudaHostUnregister(self.jpegs.data_ptr()), "unlocking the JPEGs")
            self.registered = False
        self.jpegs = None
        super().close()

    def _batches(self, batches: list[np.ndarray]) -> Iterator[Batch]:
        if self.decode == "gpu":
            for indices in batches:
                datas = [self.jpegs[self.starts[i] : self.starts[i + 1]] for i in indices]
                yield decode_batch(self.split, indices, datas, self.device), self._labels(indices), indices
            return
        # Decode batch b + 1 in the pool while the caller works on batch b.
        flat, pending = self.jpegs.numpy(), None
        for indices in batches:
            started = self._start(indices, flat)
            if pending is not None:
                yield self._finish(*pending)
            pending = started
        if pending is not None:
            yield self._finish(*pending)

    def _start(self, indices: np.ndarray, flat: np.ndarray):
        size = self.split.image_size
        out = torch.empty((len(indices), size, size, 3), dtype=torch.uint8, pin_memory=self.device.type == "cuda")
        futures = self._decode_on_cpu(indices, lambda i: flat[self.starts[i] : self.starts[i + 1]], out.numpy())
        return indices, out, futures

    def _finish(self, indices: np.ndarray, out: torch.Tensor, futures: list) -> Batch:
        for future in futures:
            future.result()  # a decode error is raised here
        # (n, S, S, 3) in memory, seen as (n, 3, S, S): channels-last, as the disk path's batches.
        images = out.permute(0, 3, 1, 2).to(self.device, non_blocking=True)
        return images, self._labels(indices), indices

    def _labels(self, indices: np.ndarray) -> torch.Tensor:
        return self.labels.index_select(0, torch.from_numpy(indices).to(self.device, non_blocking=True))


class _DecodedSource(_ResidentSource):
    residency = "decoded"

    pixels: torch.Tensor | None = None  # (N, S, S, 3) uint8 on the device

    def _load(self) -> None:
        split, device = self.split, self.device
        n, size = len(split), split.image_size
        # (N, S, S, 3) uint8: every image, channels-last (a batch is then one contiguous copy per image).
        self.pixels = torch.empty((n, size, size, 3), dtype=torch.uint8, device=device)
        order = np.lexsort((split.offset, split.shard))  # shard by shard, in file order
        if device.type == "cpu":
            for future in self._decode_on_cpu(order, split.read, self.pixels.numpy(), slots=order):
                future.result()  # straight into place, each sample at its own index
        else:
            self._decode_to_device(order)
        if self.pool is not None:  # no idle threads left behind (a DataLoader may fork this process later)
            self.pool.shutdown()
            self.pool = None

    def _decode_to_device(self, order: np.ndarray) -> None:
        split, device, size = self.split, self.device, self.split.image_size
        for start in range(0, len(order), DECODE_CHUNK):
            chunk = order[start : start + DECODE_CHUNK]
            if self.decode == "gpu":
                datas = [torch.frombuffer(bytearray(split.read(i)), dtype=torch.uint8) for i in chunk]
                images = decode_batch(split, chunk, datas, device).permute(0, 2, 3, 1)
            else:
                staged = torch.empty((len(chunk), size, size, 3), dtype=torch.uint8, pin_memory=True)
                for future in self._decode_on_cpu(chunk, split.read, staged.numpy()):
                    future.result()
                images = staged.to(device, non_blocking=True)
            self.pixels.index_copy_(0, torch.from_numpy(chunk).to(device), images)
        torch.cuda.synchronize(device)  # decoded when the source opens: a decode error surfaces here

    def close(self) -> None:
        self.pixels = None
        super().close()

    def _batches(self, batches: list[np.ndarray]) -> Iterator[Batch]:
        for indices in batches:
            index = torch.from_numpy(indices).to(self.device, non_blocking=True)  # moved once, used twice
            yield self.pixels.index_select(0, index).permute(0, 3, 1, 2), self.labels.index_select(0, index), indices


def _check_unchanged(split: Split) -> None:
    """The split on disk is still the one `split` describes: `preprocess --force` may have rewritten it between
    load_split and taking the readers lock."""
    manifest = rundir.SplitDir(split.root).manifest
    if not manifest.exists():  # a Split not read from a data directory (tests), or one removed meanwhile
        if (split.root / "index.npz").exists() or any(split.root.glob("shard-*.tar")):
            raise UserError(
                f"{split.root} is being rewritten (no manifest.json any more); run the command again "
                "when `alexctl preprocess` has finished."
            )
        return
    identity = rundir.read_json(manifest, "manifest").get("identity")
    if identity != split.identity:
        raise UserError(
            f"{split.root} was rewritten by `alexctl preprocess --force` after it was read; run the command again."
        )


def _check_cuda(error, doing: str) -> None:
    if int(error) != 0:
        raise RuntimeError(f"CUDA error {int(error)} while {doing}.")


def _budgets(device: torch.device, memory_budget: int | None) -> tuple[int, str, int, str]:
    """(device budget, why, host budget, why) in bytes."""
    if memory_budget is not None:
        return memory_budget, "as given", memory_budget, "as given"
    available, processes = available_memory(), max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    host = int(available * HOST_FRACTION / processes)
    host_note = f"{HOST_FRACTION:.0%} of the {_gb(available)} of available RAM" + (
        f", shared by {processes} processes on this host" if processes > 1 else ""
    )
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        device_note = f"{DEVICE_FRACTION:.0%} of the {_gb(free)} free on {device}"
        return int(free * DEVICE_FRACTION), device_note, host, host_note
    return host, host_note, host, host_note


def available_memory() -> int:
    """Bytes of RAM this process could still use: MemAvailable, capped by a cgroup v2 limit if there is one."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(0, available)


def _decoder(decode: str, residency: str, workers: int, device: torch.device) -> str:
    if decode == "gpu":
        return f"nvJPEG on {device}"
    if residency == "disk":
        return f"libjpeg-turbo in {workers} worker processes" if workers else "libjpeg-turbo in this process"
    threads = max(1, workers)
    return f"{threads} libjpeg-turbo thread{'s' if threads > 1 else ''}"


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB"
