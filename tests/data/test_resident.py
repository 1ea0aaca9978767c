"""alexctl/data/resident.py: one BatchSource interface for the disk, jpeg and decoded residencies.

All on the CPU with device "cpu", on real shards (the `slice_data` fixture: 110 train photos
at 256 px in 3 shards). The nvJPEG path runs here with stand-ins (alexctl.data.gpu_decode: its stream
synchronise recorded, its decoder torchvision's on the CPU, or one that fails); the real nvJPEG and
pinned-memory paths need CUDA and are skipped here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from alexctl.data import gpu_decode, resident
from alexctl.data.disk import batch_loader
from alexctl.data.loader import epoch_batches, load_split
from alexctl.data.resident import RESIDENCIES, open_source
from alexctl.errors import UserError

MODES = [("disk", 0), ("disk", 2), ("jpeg", 0), ("jpeg", 2), ("decoded", 0), ("decoded", 2)]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def split(slice_data):
    return load_split(slice_data, "train")


@pytest.fixture(scope="module")
def index_lists(split):
    """A shuffled epoch with an uneven last batch (32, 32, 32, 14), then batches that are no permutation."""
    epoch = epoch_batches(len(split), 32, seed=5, epoch=2)
    return epoch + [np.array([7, 7, 109, 0]), np.array([], dtype=np.int64), np.array([3])]


@pytest.fixture(scope="module")
def reference(split, index_lists):
    """Today's path: the DataLoader's batches, decoded in this process."""
    return [
        (images, labels, indices.numpy()) for images, labels, indices in batch_loader(split, index_lists, workers=0)
    ]


def assert_same_batches(got, expected, split):
    assert len(got) == len(expected)
    for (images, labels, indices), (images0, labels0, indices0) in zip(got, expected):
        n = len(indices0)
        assert images.shape == (n, 3, split.image_size, split.image_size) and images.dtype == torch.uint8
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert isinstance(indices, np.ndarray) and indices.dtype == np.int64
        assert np.array_equal(indices, indices0)
        assert torch.equal(labels, labels0) and labels.tolist() == split.labels[indices].tolist()
        assert torch.equal(images, images0)  # identical pixels: libjpeg-turbo everywhere


@pytest.mark.parametrize("residency, workers", MODES)
def test_every_residency_yields_the_disk_paths_batches_and_resumes_at_any_batch(
    split, index_lists, reference, residency, workers
):
    with open_source(split, device=torch.device("cpu"), residency=residency, workers=workers) as source:
        assert source.residency == residency and residency in source.reason
        got = list(source.batches(index_lists))
        assert_same_batches(got, reference, split)
        assert all(images.device.type == "cpu" and labels.device.type == "cpu" for images, labels, _ in got)
        # A resumed epoch passes batches[s:]: exactly the tail, from the same source, any number of times.
        for s in (1, 3):
            assert_same_batches(list(source.batches(index_lists[s:])), reference[s:], split)


def test_auto_picks_by_the_sizes_against_the_budget_and_says_why(split):
    decoded = len(split) * 3 * 256 * 256  # 110 images: 21.6 MB
    encoded = int(split.size.sum())  # their JPEGs, a few MB
    assert encoded < decoded
    cases = [(1 << 40, "decoded"), ((encoded + decoded) // 2, "jpeg"), (encoded // 2, "disk"), (1000, "disk")]
    for budget, expected in cases:
        with open_source(split, device="cpu", memory_budget=budget, workers=2) as source:
            assert source.residency == expected
            assert source.reason.startswith(f"{expected}: ")
            assert f"{decoded / 1e9:.2f} GB" in source.reason and f"{budget / 1e9:.2f} GB" in source.reason
            if expected != "decoded":
                assert f"over the {budget / 1e9:.2f} GB budget" in source.reason
            if expected == "jpeg":
                assert f"as JPEG they take {encoded / 1e9:.2f} GB, within" in source.reason
    with open_source(split, device="cpu") as source:  # the default budget: half the available RAM
        assert source.residency == "decoded" and "of available RAM" in source.reason


def test_a_damaged_jpeg_names_its_shard_and_key_in_every_residency(tmp_path, slice_data):
    data = tmp_path / "d"
    shutil.copytree(slice_data, data)
    split = load_split(data, "train")
    victim = 57
    shard = split.shard_paths[split.shard[victim]]
    with open(shard, "r+b") as f:  # the JPEG's SOI and first marker overwritten: not a JPEG any more
        f.seek(int(split.offset[victim]))
        f.write(b"\0" * 8)
    batches = [np.arange(0, 40), np.arange(40, 110)]
    key = str(split.keys[victim])
    for residency, workers in MODES:
        with pytest.raises(UserError, match=f"{key}.*{shard}") as error:
            with open_source(split, device="cpu", residency=residency, workers=workers) as source:
                list(source.batches(batches))
        assert "Traceback" not in str(error.value)  # one sentence, also from a worker process


def test_a_truncated_shard_names_its_file_and_key(tmp_path, slice_data):
    data = tmp_path / "d"
    shutil.copytree(slice_data, data)
    split = load_split(data, "train")
    last = int(np.argmax(split.offset + (split.shard == split.shard.max()) * 10**12))  # the last JPEG of the last shard
    shard = split.shard_paths[split.shard[last]]
    with open(shard, "r+b") as f:
        f.truncate(int(split.offset[last]) + 100)
    with pytest.raises(UserError, match=f"{split.keys[last]}.*{shard}.*ended early"):
        split.read(last)
    for residency in ("jpeg", "decoded"):  # read when the source opens
        with pytest.raises(UserError, match=f"{split.keys[last]}.*{shard}"):
            open_source(split, device="cpu", residency=residency)


def test_bad_arguments_are_refused(split):
    assert RESIDENCIES == ("auto", "disk", "jpeg", "decoded")
    with pytest.raises(UserError, match="'ram' is not one of auto, disk, jpeg, decoded"):
        open_source(split, device="cpu", residency="ram")
    with pytest.raises(UserError, match="needs a CUDA device"):
        open_source(split, device="cpu", decode="gpu")
    with open_source(split, device="cpu", residency="jpeg") as source:
        with pytest.raises(IndexError, match=r"\[0, 110\)"):
            source.batches([np.array([0, 110])])
    with pytest.raises(ValueError, match="closed"):
        source.batches([np.array([0])])


@needs_cuda
@pytest.mark.parametrize("residency", ["disk", "jpeg", "decoded"])
def test_cuda_residencies(split, index_lists, reference, residency):
    """On CUDA: libjpeg-turbo decoding gives the CPU's pixels exactly; nvJPEG only up to its rounding."""
    with open_source(split, device="cuda", residency=residency, workers=2) as source:
        if residency == "jpeg":
            assert source.jpegs.is_pinned()
        got = [(x.cpu(), y.cpu(), i) for x, y, i in source.batches(index_lists)]
        assert all(x.device.type == "cpu" for x, _, _ in got)
    assert_same_batches(got, reference, split)
    with open_source(split, device="cuda", residency=residency, decode="gpu") as source:
        for (images, labels, indices), (images0, labels0, _) in zip(source.batches(index_lists), reference):
            assert images.is_cuda and torch.equal(labels.cpu(), labels0)
            if len(indices):
                diff = (images.cpu().int() - images0.int()).abs()
                assert diff.float().mean() < 1.0 and diff.max() <= 32  # IDCT and upsampling rounding


# ---------------------------------------------------------------- the nvJPEG path, with stand-ins on the CPU
# The sources are built directly (open_source refuses decode="gpu" without CUDA); gpu_decode.nvjpeg is the real
# function on device "cpu" (torchvision's libjpeg-turbo), recording what it is given.


@pytest.fixture
def stand_in(monkeypatch):
    """gpu_decode with a recording stream synchronise and decoder; nvJPEG not yet given up anywhere."""
    calls = []
    real = gpu_decode.nvjpeg

    def decoder(datas, device):
        calls.append(("decode", len(datas)))
        return real(datas, device)

    monkeypatch.setattr(gpu_decode, "_given_up", {})
    monkeypatch.setattr(gpu_decode, "synchronize_stream", lambda device: calls.append(("sync", str(device))))
    monkeypatch.setattr(gpu_decode, "nvjpeg", decoder)
    return calls


@pytest.mark.parametrize(
    "kind, workers", [(resident._DiskSource, 0), (resident._DiskSource, 2), (resident._JpegSource, 0)]
)
def test_every_batched_gpu_decode_waits_for_the_stream_first(split, index_lists, reference, stand_in, kind, workers):
    with kind(split, torch.device("cpu"), "stand-in", workers, "gpu") as source:
        got = list(source.batches(index_lists))
    sizes = [len(b) for b in index_lists if len(b)]  # an empty batch decodes nothing
    assert stand_in == [call for n in sizes for call in (("sync", "cpu"), ("decode", n))]
    for (images, labels, indices), (images0, labels0, indices0) in zip(got, reference):
        assert np.array_equal(indices, indices0) and torch.equal(labels, labels0)
        assert images.shape == images0.shape and images.dtype == torch.uint8
        if len(indices):
            assert (images.int() - images0.int()).abs().float().mean() < 1.0  # another libjpeg-turbo build


def test_a_failing_gpu_decoder_falls_back_to_the_cpu_with_one_warning(split, index_lists, reference, monkeypatch):
    monkeypatch.setattr(gpu_decode, "_given_up", {})
    monkeypatch.setattr(gpu_decode, "synchronize_stream", lambda device: None)
    tries = []

    def broken(datas, device):
        tries.append(len(datas))
        raise RuntimeError("nvjpegDecodeBatched failed: NVJPEG_STATUS_EXECUTION_FAILED\n(more detail)")

    monkeypatch.setattr(gpu_decode, "nvjpeg", broken)
    with pytest.warns(RuntimeWarning) as caught:
        with resident._DiskSource(split, torch.device("cpu"), "stand-in", 2, "gpu") as source:
            got = list(source.batches(index_lists))
        with resident._JpegSource(split, torch.device("cpu"), "stand-in", 0, "gpu") as source:  # given up already
            got_jpeg = list(source.batches(index_lists))
    assert tries == [32]  # tried once; every later batch of the process went straight to the CPU
    assert_same_batches(got, reference, split)  # libjpeg-turbo's pixels exactly
    assert_same_batches(got_jpeg, reference, split)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "NVJPEG_STATUS_EXECUTION_FAILED" in message and "more detail" not in message
    assert "CPU" in message and "preprocess" not in message


def test_a_damaged_jpeg_on_the_gpu_path_still_names_its_shard(tmp_path, slice_data, monkeypatch):
    data = tmp_path / "d"
    shutil.copytree(slice_data, data)
    split = load_split(data, "train")
    shard = split.shard_paths[split.shard[57]]
    with open(shard, "r+b") as f:
        f.seek(int(split.offset[57]))
        f.write(b"\0" * 8)
    monkeypatch.setattr(gpu_decode, "_given_up", {})
    monkeypatch.setattr(gpu_decode, "synchronize_stream", lambda device: None)
    with resident._DiskSource(split, torch.device("cpu"), "stand-in", 0, "gpu") as source:
        with pytest.raises(UserError, match=f"{split.keys[57]}.*{shard}.*preprocess"):
            list(source.batches([np.arange(40, 80)]))
    assert gpu_decode._given_up == {}  # the JPEG was at fault, not nvJPEG


OPEN_FILES_SCRIPT = """
import resource, sys
import numpy as np, torch
from alexctl.data import gpu_decode, resident
from alexctl.data.loader import load_split

resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))
split = load_split(sys.argv[1], "train")
S = split.image_size
gpu_decode.synchronize_stream = lambda device: None
gpu_decode.nvjpeg = lambda datas, device: [torch.zeros((3, S, S), dtype=torch.uint8) for _ in datas]  # not timed
batches = [np.arange(b, b + 256) % len(split) for b in range(0, 4 * 256, 256)]  # 4 batches of 256 JPEGs
with resident._DiskSource(split, torch.device("cpu"), "stand-in", 2, "gpu") as source:
    n = sum(len(images) for images, _, _ in source.batches(batches))
print("images", n)
"""


def test_gpu_decode_from_disk_fits_in_512_open_files(slice_data):
    """2 workers with batches of 256 JPEGs: as a tensor per JPEG, one shared-memory descriptor each, the
    workers fail with "Too many open files" and the reader waits for ever (seen with the old code: a hang)."""
    result = subprocess.run(
        [sys.executable, "-c", OPEN_FILES_SCRIPT, str(slice_data)], capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["images", str(4 * 256)]
