"""The disk residency's reading: batches read from the shards by byte range in DataLoader worker processes.

Item b of `Batches` is batch b, decoded in the worker by libjpeg-turbo (decode="cpu"), or left as JPEG bytes
for nvJPEG on the device (decode="gpu"). The bytes travel as one flat uint8 buffer and its offsets, never as a
tensor per image: each tensor crosses the process boundary as its own shared-memory file descriptor, and 256
per batch with 2 workers exhausted `ulimit -n 1024` (../shared/spec/gpu-notes.md, "First contact").
"""

from __future__ import annotations

import numpy as np
import torch

from alexctl.data.loader import Split
from alexctl.errors import UserError


class Batches(torch.utils.data.Dataset):
    """Item b is batch b: (images, labels, indices) with decode "cpu", (jpegs, offsets, labels, indices) with "gpu".

    images: (n, 3, S, S) uint8, channels-last. jpegs: (total bytes,) uint8, the batch's JPEGs back to back;
    offsets: (n + 1,) int64, JPEG k is jpegs[offsets[k]:offsets[k + 1]] (see `jpeg_views`).
    errors_as_values: a UserError is returned as the item rather than raised, so that the reader gets its
    one sentence back from a worker process instead of a wrapped traceback.
    """

    def __init__(self, split: Split, batches: list[np.ndarray], decode: str, errors_as_values: bool = False):
        self.split, self.batches, self.decode, self.errors_as_values = split, batches, decode, errors_as_values

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int):
        try:
            return self._batch(b)
        except UserError as e:
            if self.errors_as_values:
                return e
            raise

    def _batch(self, b: int):
        indices = self.batches[b]
        labels = torch.from_numpy(self.split.labels[indices])
        if self.decode == "gpu":
            offsets = np.concatenate([[0], np.cumsum(self.split.size[indices].astype(np.int64))])
            jpegs = np.empty(int(offsets[-1]), np.uint8)
            for k, i in enumerate(indices):
                self.split.read_into(i, jpegs[offsets[k] : offsets[k + 1]])
            return torch.from_numpy(jpegs), torch.from_numpy(offsets), labels, torch.from_numpy(indices)
        size = self.split.image_size
        out = np.empty((len(indices), size, size, 3), np.uint8)
        for k, i in enumerate(indices):
            self.split.decode_into(i, self.split.read(i), out[k])
        # (N, S, S, 3) in memory, seen as (N, 3, S, S): channels-last, no copy.
        return torch.from_numpy(out).permute(0, 3, 1, 2), labels, torch.from_numpy(indices)


def jpeg_views(jpegs: torch.Tensor, offsets: torch.Tensor) -> list[torch.Tensor]:
    """A "gpu" item's flat buffer as one 1-D uint8 view per JPEG (no copy), as nvJPEG takes them."""
    bounds = offsets.tolist()
    return [jpegs[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def batch_loader(
    split: Split,
    batches: list[np.ndarray],
    *,
    workers: int,
    decode: str = "cpu",
    pin_memory: bool = False,
    prefetch: int = 4,
):
    """An iterable of Batches' items, in order (see Batches)."""
    return loader(
        Batches(split, batches, decode), workers=workers, pin_memory=pin_memory and decode == "cpu", prefetch=prefetch
    )


def loader(dataset: Batches, *, workers: int, pin_memory: bool, prefetch: int = 4):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch if workers > 0 else None,
        persistent_workers=False,
    )
