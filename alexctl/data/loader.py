"""Reading a preprocessed split for training and evaluation.

Samples are fetched by byte range from the WebDataset shards (the split's index.npz
records where every `.jpg` lies), so an epoch can visit them in any order: each epoch
is a fresh seeded permutation of the whole split, cut into global batches, and DDP rank
r takes every W-th sample of each global batch. Every sample is therefore seen exactly
once per epoch whatever the number of loader workers and ranks, and an epoch resumed at
step s simply starts at batch s.

Decoding (JPEG -> uint8 (N, 3, S, S)) happens in DataLoader worker processes with
libjpeg-turbo, or on the GPU with nvJPEG (`decode="gpu"`); augmentation then runs on
the training device (alexctl.data.augment).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
import torch

from alexctl import rundir
from alexctl.data.labels import ClassList
from alexctl.errors import UserError


@dataclass
class Split:
    """One preprocessed split: where each sample lies, its label, and the split's identity."""

    root: Path
    keys: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int64
    shard: np.ndarray  # (N,) index into shard_paths
    offset: np.ndarray  # (N,) byte offset of the sample's .jpg in its shard
    size: np.ndarray  # (N,) byte length of the .jpg
    shard_paths: list[str]
    image_size: int
    classes: ClassList  # index -> wnid and name (DATA_DIR/classes.json)
    identity: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, i: int) -> bytes:
        path = self.shard_paths[self.shard[i]]
        fd = _fds.get(path)
        if fd is None:
            fd = _fds[path] = os.open(path, os.O_RDONLY)
        return os.pread(fd, int(self.size[i]), int(self.offset[i]))


_fds: dict[str, int] = {}  # per process; pread needs no shared file position, so forked workers may share them


def load_split(data_dir: Path, split: str) -> Split:
    """The split `split` of a data directory written by `alexctl preprocess`, or a UserError saying what is missing."""
    split_dir = rundir.DataDir(Path(data_dir)).split(split)
    if not split_dir.manifest.exists():
        raise UserError(f"{split_dir.root} is not a complete {split} split (no manifest.json): "
                        f"run `alexctl preprocess SOURCE {data_dir} --split {split}` first.")
    manifest = rundir.read_json(split_dir.manifest, "manifest")
    index = rundir.load_npz(split_dir.index, "split index")
    classes = ClassList.from_json(rundir.read_json(rundir.DataDir(Path(data_dir)).classes, "class list"))
    return Split(
        root=split_dir.root,
        keys=index["keys"],
        labels=index["labels"].astype(np.int64),
        shard=index["shard"],
        offset=index["offset"],
        size=index["size"],
        shard_paths=[str(split_dir.root / s["path"]) for s in manifest["shards"]],
        image_size=int(manifest["options"]["size"]),
        classes=classes,
        identity=manifest["identity"],
    )


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True) -> list[np.ndarray]:
    """The global batches of one epoch: a permutation seeded by (seed, epoch), cut in order; the last may be short."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def rank_part(batch: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's share of a global batch (every world-th sample)."""
    return batch[rank::world]


class _Batches(torch.utils.data.Dataset):
    """Item b is batch b: (images, labels, indices); images decoded here unless decode == "gpu"."""

    def __init__(self, split: Split, batches: list[np.ndarray], decode: str):
        self.split, self.batches, self.decode = split, batches, decode

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int):
        indices = self.batches[b]
        labels = torch.from_numpy(self.split.labels[indices])
        datas = [self.split.read(i) for i in indices]
        if self.decode == "gpu":
            return [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas], labels, torch.from_numpy(indices)
        size = self.split.image_size
        out = np.empty((len(indices), size, size, 3), np.uint8)
        for k, data in enumerate(datas):
            simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out[k])
        # (N, S, S, 3) in memory, seen as (N, 3, S, S): channels-last, no copy.
        return torch.from_numpy(out).permute(0, 3, 1, 2), labels, torch.from_numpy(indices)


def batch_loader(split: Split, batches: list[np.ndarray], *, workers: int, decode: str = "cpu",
                 pin_memory: bool = False, prefetch: int = 4):
    """An iterable of (images uint8 (n, 3, S, S) or a list of JPEG byte tensors, labels, indices), in order."""
    return torch.utils.data.DataLoader(
        _Batches(split, batches, decode), batch_size=None, shuffle=False, num_workers=workers,
        pin_memory=pin_memory and decode == "cpu", prefetch_factor=prefetch if workers > 0 else None,
        persistent_workers=False,
    )


def to_device(images, device: torch.device) -> torch.Tensor:
    """A loader batch on the training device as uint8 (n, 3, S, S); JPEGs are decoded there by nvJPEG."""
    if isinstance(images, list):
        from torchvision.io import decode_jpeg

        return torch.stack(decode_jpeg(images, device=device))
    return images.to(device, non_blocking=True)
