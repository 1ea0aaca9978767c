"""Reading a preprocessed split for training and evaluation.

Samples are fetched by byte range from the WebDataset shards (the split's index.npz
records where every `.jpg` lies), so an epoch can visit them in any order: each epoch
is a fresh seeded permutation of the whole split, cut into global batches, and DDP rank
r takes every W-th sample of each global batch. Every sample is therefore seen exactly
once per epoch whatever the number of loader workers and ranks, and an epoch resumed at
step s simply starts at batch s.

Where the images live while a command runs (read from disk per batch, held as JPEGs in
memory, or decoded once onto the device) is alexctl.data.resident's `open_source`, which
builds on this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg

from alexctl import rundir
from alexctl.data.labels import ClassList
from alexctl.data.ranges import read_range, read_range_into
from alexctl.data.shards import index_problems, read_index, size_problems
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
        """Sample i's JPEG bytes, read by range from its shard; a short file is a UserError naming both."""
        try:
            return read_range(self.shard_paths[self.shard[i]], int(self.offset[i]), int(self.size[i]))
        except OSError as e:
            raise UserError(f"Cannot read {self.describe(i)}: {e}; run `alexctl preprocess` again.") from None

    def read_into(self, i: int, buffer) -> None:
        """Sample i's JPEG bytes into the writable bytes-like `buffer` of exactly its size; errors as read."""
        try:
            read_range_into(self.shard_paths[self.shard[i]], int(self.offset[i]), buffer)
        except OSError as e:
            raise UserError(f"Cannot read {self.describe(i)}: {e}; run `alexctl preprocess` again.") from None

    def describe(self, i: int) -> str:
        """Sample i for a message: its key and the shard file that holds it."""
        return f"sample {str(self.keys[i])!r} in {self.shard_paths[self.shard[i]]}"

    def decode_into(self, i: int, data, out: np.ndarray) -> None:
        """Decode sample i's JPEG `data` (bytes-like) into `out`, (S, S, 3) uint8, with libjpeg-turbo.

        simplejpeg decodes the same bytes to the same pixels wherever it runs, so every reader
        built on this (worker processes, threads, any residency) yields identical images.
        """
        try:
            decoded = simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
        except ValueError as e:
            raise UserError(
                f"Cannot decode {self.describe(i)} ({e}); the shard is damaged: run `alexctl preprocess` again."
            ) from None
        if decoded.shape != out.shape:
            raise UserError(
                f"{self.describe(i)} is {decoded.shape[1]}x{decoded.shape[0]} pixels, not "
                f"{out.shape[1]}x{out.shape[0]} as the split's manifest says; "
                f"run `alexctl preprocess` again."
            )


def load_split(data_dir: Path, split: str) -> Split:
    """The split `split` of a data directory written by `alexctl preprocess`, checked before anything reads
    it: a UserError (exit 2) names what is missing or damaged (a truncated or altered index.npz, a shard of
    another size than its manifest records, a class list that is not the split's)."""
    data = rundir.DataDir(Path(data_dir))
    split_dir = data.split(split)
    if not split_dir.manifest.exists():
        raise UserError(
            f"{split_dir.root} is not a complete {split} split (no manifest.json): "
            f"run `alexctl preprocess SOURCE {data_dir} --split {split}` first."
        )
    manifest = rundir.read_json(split_dir.manifest, "manifest")
    if not isinstance(manifest, dict) or manifest.get("kind") != "data-split":
        raise UserError(f"{split_dir.manifest} is not the manifest of a split written by `alexctl preprocess`.")
    redo = f"preprocess it again (`alexctl preprocess ... {data_dir} --split {split} --force`)"
    try:
        index = _checked_index(split_dir, manifest)
        classes = ClassList.from_json(rundir.read_json(data.classes, "class list"))
        _check_classes(manifest, classes, data, split, redo)
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
    except (KeyError, TypeError, ValueError) as e:  # a manifest or class list of another form, a damaged index
        raise UserError(f"{split_dir.root} is damaged: {_sentence(e)}; {redo}.") from None


def _check_classes(manifest: dict, classes: ClassList, data: rundir.DataDir, split: str, redo: str) -> None:
    """The split's labels index the data directory's class list (a split copied from another data directory
    would be trained on with the wrong classes)."""
    recorded = manifest.get("class_wnids")  # older manifests record the number of classes only
    if manifest["classes"] != len(classes) or (recorded is not None and tuple(recorded) != classes.wnids):
        order = " in another order" if manifest["classes"] == len(classes) else ""
        raise UserError(
            f"{data.root}: the {split} split has {manifest['classes']} classes{order} but "
            f"{data.classes} lists {len(classes)}: it was preprocessed for another class list; {redo}."
        )


def _checked_index(split_dir: rundir.SplitDir, manifest: dict) -> dict[str, np.ndarray]:
    """index.npz, after checking it (its recorded SHA-256, or for older manifests its lengths and ranges)
    and the shards' sizes against the manifest: cheap, no shard is read. A ValueError says what is wrong."""
    problems = size_problems(split_dir.root, manifest)
    if problems:
        raise ValueError(problems[0])
    index_path = split_dir.root / manifest.get("index", split_dir.index.name)
    if "index_sha256" in manifest and rundir.file_sha256(index_path) != manifest["index_sha256"]:
        raise ValueError(f"{index_path.name} does not match the SHA-256 its manifest records (truncated or altered)")
    index = read_index(index_path)
    problems = index_problems(index_path.name, index, manifest)
    if problems:
        raise ValueError(problems[0])
    return index


def _sentence(e: Exception) -> str:
    if isinstance(e, (KeyError, TypeError)):
        return f"its manifest or class list is not of the form alexctl writes ({type(e).__name__}: {e})"
    return str(e).rstrip(".")


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True) -> list[np.ndarray]:
    """The global batches of one epoch: a permutation seeded by (seed, epoch), cut in order; the last may be short."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def rank_part(batch: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's share of a global batch (every world-th sample)."""
    return batch[rank::world]
