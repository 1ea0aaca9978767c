"""Arbitrary image files as a batch source, for `alexctl predict`: the paper's test-time input
(rescale the shorter side to 256, cut the central 256x256: alexctl.data.transform.prepare) made from
JPEG/PNG files, folders and tars, in the interface of a preprocessed split's BatchSource.

    find(SOURCEs) -> [ImageFile]   files as given, folders (recursively) and tars through
                                   alexctl.data.sources.scan; paths listed on stdin
    ImageFiles(files).batches([index arrays]) -> (uint8 (n, 3, S, S) on the device, labels -1, indices)

A file that cannot be read or decoded is skipped, never fatal: `skip(i, reason)` is called and
the batch comes without it (a batch whose files are all broken is not yielded). As for preprocess,
only regular files are read, none past sources.MAX_IMAGE_BYTES, and no image is decoded past
transform.MAX_PIXELS: a FIFO, /dev/zero or a pixel bomb is skipped by name like a broken file. Images are
decoded by a pool of threads (libjpeg-turbo and torch's resize release the GIL), one batch
ahead of the caller, so memory holds two batches whatever the number of files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alexctl.data import sources, transform
from alexctl.errors import UserError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")

Batch = tuple[torch.Tensor, torch.Tensor, np.ndarray]


@dataclass(frozen=True)
class ImageFile:
    """One image to classify: `name` is what the user sees (the path, or TAR:PATH-IN-TAR)."""

    name: str
    item: sources.Item


def find(arguments: list[Path], listed: list[str] = ()) -> tuple[list[ImageFile], list[tuple[str, str]]]:
    """(images, missing): every image in the SOURCE `arguments` (files, folders, tars; in the order given,
    a folder's or tar's images sorted by path) and in the `listed` paths (read from stdin). An argument that
    does not exist is a UserError; a listed path that does not exist is returned in `missing` with its reason,
    as a broken file is skipped."""
    found: list[ImageFile] = []
    for path in arguments:
        if not path.exists():
            raise UserError(f"SOURCE {sources.printable(str(path))} does not exist.")
        found.extend(_images_in(path))
    missing = []
    for line in listed:
        path = Path(line)
        if path.exists():
            found.extend(_images_in(path))
        else:
            missing.append((sources.printable(line), "does not exist"))
    return found, missing


def _images_in(path: Path) -> list[ImageFile]:
    shown = sources.printable(str(path))
    if path.is_dir():
        return [ImageFile(sources.printable(it.where[1]), it) for it in sources.scan(path)]
    if path.name.lower().endswith(TAR_SUFFIXES):
        return [ImageFile(f"{shown}:{sources.printable(it.relpath)}", it) for it in sources.scan(path)]
    # A file named on the command line is tried whatever its extension: decoding says whether it is an image. Every
    # format a folder's scan finds (labels.IMAGE_EXTENSIONS, .heic and .avif included) is decoded the same way.
    return [ImageFile(shown, sources.Item(path.name, ("file", str(path))))]


class ImageFiles:
    """`files` prepared at `size` x `size` on `device` in batches; use as a context manager, or close()."""

    def __init__(
        self,
        files: list[ImageFile],
        *,
        size: int,
        device: torch.device | str,
        workers: int = 1,
        skip: Callable[[int, str], None] = lambda i, reason: None,
    ):
        self.files, self.size, self.device, self.skip = files, size, torch.device(device), skip
        self.pool = ThreadPoolExecutor(max(1, workers), "alexctl-images")

    def __len__(self) -> int:
        return len(self.files)

    def batches(self, batches: list[np.ndarray]) -> Iterator[Batch]:
        """For each index array, in order: the readable images among them as uint8 (n, 3, S, S) on the device,
        int64 (n,) labels (all -1: files have none), their indices (n,) as numpy int64."""
        pending = None
        for indices in batches:
            started = (np.asarray(indices, np.int64), [self.pool.submit(self._prepared, int(i)) for i in indices])
            if pending is not None:
                yield from self._finish(*pending)
            pending = started  # batch b + 1 decodes while the caller works on batch b
        if pending is not None:
            yield from self._finish(*pending)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ImageFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _prepared(self, i: int) -> np.ndarray | str:
        """File i as (S, S, 3) uint8 pixels, or the reason it is skipped."""
        try:
            return transform.prepare(sources.read_bytes(self.files[i].item), self.size).pixels
        except transform.UnreadableImage as e:
            return str(e)
        except OSError as e:
            return f"cannot be read: {e.strerror or e}"

    def _finish(self, indices: np.ndarray, futures: list[Future]) -> Iterator[Batch]:
        kept, pixels = [], []
        for i, future in zip(indices, futures):
            result = future.result()
            if isinstance(result, str):
                self.skip(int(i), result)
            else:
                kept.append(i)
                pixels.append(result)
        if not kept:
            return
        # (n, S, S, 3) in memory, seen as (n, 3, S, S): channels-last, as a split's batches are.
        images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).to(self.device, non_blocking=True)
        labels = torch.full((len(kept),), -1, dtype=torch.int64, device=self.device)
        yield images, labels, np.asarray(kept, np.int64)
