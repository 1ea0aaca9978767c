"""WebDataset shards: the plan that assigns images to shards, the worker that prepares a
chunk of images, and the writer that turns prepared chunks into one shard tar.

Each sample in a shard is `<key>.cls` (the class index as text), `<key>.jpg` (the
size x size JPEG) and `<key>.json` ({"source", "class", "width", "height"}): plain USTAR
members with fixed metadata (mtime 0), so the same input always gives the same bytes,
and any tar or WebDataset reader reads them. Workers lay out their chunk's members
(tarfile), the writer concatenates them: writing a shard costs no per-sample Python work. A shard is complete when its sidecar `shard-NNNNNN.npz` exists: keys, byte
offsets of every `.jpg` (so readers can fetch a sample by range), skipped files and, for
a train split, the statistics accumulators of its images.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexctl import rundir
from alexctl.data.sources import Item, printable, read_bytes
from alexctl.data.stats import StatsAccumulator

CHUNK = 32  # images per worker task: small enough to balance, large enough to amortise IPC


@dataclass(frozen=True)
class PlannedImage:
    key: str
    label: int
    item: Item


@dataclass(frozen=True)
class Plan:
    shards: tuple[tuple[PlannedImage, ...], ...]
    digest: str  # identifies the assignment and the options that shape the shards' bytes


def make_plan(images: list[PlannedImage], shard_size: int, seed: int, shaping_options: dict) -> Plan:
    """A seeded, class-mixed order cut into shards of `shard_size` images."""
    order = np.random.default_rng(seed).permutation(len(images))
    ordered = [images[i] for i in order]
    shards = tuple(tuple(ordered[i : i + shard_size]) for i in range(0, len(ordered), shard_size))
    h = hashlib.sha256(json.dumps(shaping_options, sort_keys=True).encode())
    for im in ordered:
        h.update(f"{im.key}\t{im.label}\n".encode())
    return Plan(shards, h.hexdigest())


def chunk_tasks(
    plan: Plan, shard_index: int, class_wnids: tuple[str, ...], size: int, quality: int, fast: bool, with_stats: bool
) -> list[tuple]:
    images = plan.shards[shard_index]
    return [
        (
            shard_index,
            [(im.key, im.label, class_wnids[im.label], im.item) for im in images[i : i + CHUNK]],
            size,
            quality,
            fast,
            with_stats,
        )
        for i in range(0, len(images), CHUNK)
    ]


def process_chunk(task: tuple) -> tuple:
    """Worker: decode, rescale, crop and encode a chunk of images, and lay them out as tar members.

    Returns (shard_index, tar_fragment, entries, skipped, stats): the fragment holds the
    chunk's samples as complete tar members (headers and padded data, no end-of-archive
    blocks), so the writer only concatenates; entries are (key, label, source, offset,
    length) of each `.jpg` relative to the fragment.
    """
    from alexctl.data import transform  # torch: imported by the workers, not the writer

    shard_index, images, size, quality, fast, with_stats = task
    fragment = io.BytesIO()
    entries, skipped = [], []
    acc = StatsAccumulator.empty(size) if with_stats else None
    tar = tarfile.open(fileobj=fragment, mode="w", format=tarfile.USTAR_FORMAT)
    for key, label, wnid, item in images:
        try:
            prepared = transform.prepare(read_bytes(item), size, fast=fast)
        except transform.UnreadableImage as e:
            skipped.append((printable(item.relpath), str(e)))
            continue
        except OSError as e:
            skipped.append((printable(item.relpath), f"cannot be read: {e.strerror or e}"))
            continue
        jpeg = transform.encode_jpeg(prepared.pixels, quality)
        meta = {"source": printable(item.relpath), "class": wnid, "width": prepared.width, "height": prepared.height}
        # WebDataset's member order within a sample: extensions sorted, as its TarWriter writes them.
        for ext, data in (("cls", str(label).encode()), ("jpg", jpeg), ("json", json.dumps(meta).encode())):
            if ext == "jpg":
                entries.append((key, label, printable(item.relpath), tar.offset + tarfile.BLOCKSIZE, len(jpeg)))
            tar.addfile(_member(f"{key}.{ext}", len(data)), io.BytesIO(data))
        if acc is not None:
            acc.add_image(prepared.pixels)
    stats = None
    if acc is not None:
        stats = acc.to_arrays()
        stats["stats_image_sum"] = stats["stats_image_sum"].astype(np.int32)  # a chunk's sums fit: half the IPC
    return shard_index, fragment.getvalue(), entries, skipped, stats


def build_shard(plan_digest: str, shard_index: int, chunks: list[tuple]) -> tuple[bytes, dict[str, np.ndarray]]:
    """The shard's tar bytes and its sidecar arrays, from its chunks' results in order."""
    parts, keys, labels, sources, offsets, sizes, skipped_paths, skipped_reasons = [], [], [], [], [], [], [], []
    acc, base = None, 0
    for _, fragment, entries, skipped, stats in chunks:
        for key, label, source, offset, length in entries:
            keys.append(key)
            labels.append(label)
            sources.append(source)
            offsets.append(base + offset)
            sizes.append(length)
        parts.append(fragment)
        base += len(fragment)
        skipped_paths += [path for path, _ in skipped]
        skipped_reasons += [reason for _, reason in skipped]
        if stats is not None:
            part = StatsAccumulator.from_arrays(stats)
            if acc is None:
                acc = part
            else:
                acc.merge(part)
    parts.append(_end_of_archive(base))
    data = b"".join(parts)
    sidecar = {
        "plan": np.array(plan_digest),
        "shard": np.array(shard_index, np.int64),
        "keys": np.array(keys, dtype=str),
        "labels": np.array(labels, np.int64),
        "sources": np.array(sources, dtype=str),
        "offsets": np.array(offsets, np.int64),
        "sizes": np.array(sizes, np.int64),
        "skipped_paths": np.array(skipped_paths, dtype=str),
        "skipped_reasons": np.array(skipped_reasons, dtype=str),
        "tar_bytes": np.array(len(data), np.int64),
        "tar_sha256": np.array(hashlib.sha256(data).hexdigest()),
    }
    if acc is not None:
        sidecar.update(acc.to_arrays())
    return data, sidecar


def verify_split(root: Path, manifest: dict) -> list[str]:
    """What does not match a complete split's manifest: each shard's size and SHA-256, and the index (its
    SHA-256 when recorded, its length, and every sample's byte range inside its shard). [] when all match."""
    root = Path(root)
    damaged = _size_mismatches(root, manifest)
    problems = list(damaged.values())
    for shard in manifest["shards"]:
        if shard["path"] not in damaged and rundir.file_sha256(root / shard["path"]) != shard["sha256"]:
            problems.append(f"{shard['path']} does not match its recorded SHA-256 (its bytes changed)")
    index = root / manifest.get("index", "index.npz")
    if index.name in damaged:
        return problems
    if "index_sha256" in manifest and rundir.file_sha256(index) != manifest["index_sha256"]:
        problems.append(f"{index.name} does not match its recorded SHA-256")
    try:
        arrays = read_index(index)
    except ValueError as e:
        return problems + [str(e)]
    return problems + index_problems(index.name, arrays, manifest)


def size_problems(root: Path, manifest: dict) -> list[str]:
    """Shards (and the index, where its size is recorded) that are missing or whose size is not the recorded
    one: cheap, nothing is read."""
    return list(_size_mismatches(Path(root), manifest).values())


def _size_mismatches(root: Path, manifest: dict) -> dict[str, str]:
    """file name -> what is wrong with its size."""
    files = [(shard["path"], shard["bytes"]) for shard in manifest["shards"]]
    files.append((manifest.get("index", "index.npz"), manifest.get("index_bytes")))  # older manifests: presence only
    problems = {}
    for name, recorded in files:
        try:
            size = (root / name).stat().st_size
        except FileNotFoundError:
            problems[name] = f"{name} is missing"
            continue
        if recorded is not None and size != recorded:
            problems[name] = f"{name} has {size} bytes, not the {recorded} recorded"
    return problems


INDEX_KEYS = ("keys", "labels", "shard", "offset", "size")


def read_index(path: Path) -> dict[str, np.ndarray]:
    """A split's index.npz; a ValueError names the file when it is missing, truncated or not an index."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in INDEX_KEYS}
    except Exception as e:  # a truncated file: zipfile, numpy, OSError and KeyError all possible
        raise ValueError(f"{Path(path).name} cannot be read: {type(e).__name__}: {e}") from None


def index_problems(name: str, index: dict[str, np.ndarray], manifest: dict) -> list[str]:
    """Whether the index describes the manifest's samples: one entry per written image, every byte range
    inside its shard, every label a class of the split."""
    sizes = np.array([s["bytes"] for s in manifest["shards"]], np.int64)
    n = manifest["written"]
    if any(len(index[k]) != n for k in INDEX_KEYS):
        lengths = ", ".join(f"{k} {len(index[k])}" for k in INDEX_KEYS)
        return [f"{name} does not describe the {n} samples of the shards ({lengths})"]
    shard, offset, size, labels = (index[k].astype(np.int64) for k in ("shard", "offset", "size", "labels"))
    if n and not ((shard >= 0).all() and (shard < len(sizes)).all()):
        return [f"{name} refers to shards that the manifest does not list"]
    if n and not ((offset >= 0).all() and (size > 0).all() and (offset + size <= sizes[shard]).all()):
        return [f"{name} gives byte ranges outside their shards"]
    if n and not (0 <= labels.min() and labels.max() < manifest["classes"]):
        return [f"{name} holds labels outside 0..{manifest['classes'] - 1}"]
    return []


def _member(name: str, size: int) -> tarfile.TarInfo:
    """Fixed metadata (as webdataset's TarWriter with mtime=0): the same input gives the same bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uname = info.gname = "bigdata"
    return info


def _end_of_archive(length: int) -> bytes:
    """Two zero blocks, then zeros up to a whole record, as tarfile closes an archive."""
    end = length + 2 * tarfile.BLOCKSIZE
    return bytes(2 * tarfile.BLOCKSIZE + (-end) % tarfile.RECORDSIZE)
