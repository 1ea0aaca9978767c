"""alexctl/data/loader.py: epoch order, rank shares, reading samples by byte range."""

from __future__ import annotations

import numpy as np
import pytest
import webdataset as wds

from alexctl.data.disk import batch_loader
from alexctl.data.loader import epoch_batches, load_split, rank_part
from alexctl.data.ranges import read_range, read_range_into
from alexctl.errors import UserError

from helpers import invoke


@pytest.fixture(scope="module")
def split(tmp_path_factory, imagenette_slice):
    data = tmp_path_factory.mktemp("loader") / "d"
    invoke("preprocess", imagenette_slice, data, "--shard-size", "25", check=True)
    return load_split(data, "train")


def test_each_epoch_is_a_seeded_permutation_cut_into_batches():
    batches = epoch_batches(103, 16, seed=3, epoch=1)
    assert [len(b) for b in batches] == [16] * 6 + [7]
    assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    again = epoch_batches(103, 16, seed=3, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(epoch_batches(103, 16, seed=3, epoch=2)))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(epoch_batches(103, 16, seed=4, epoch=1)))


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_ranks_share_every_sample_exactly_once(world):
    batches = epoch_batches(101, 16, seed=0, epoch=5)
    counts = np.zeros(101, int)
    for b in batches:
        for rank in range(world):
            counts[rank_part(b, rank, world)] += 1
    assert (counts == 1).all()


def test_samples_read_by_range_equal_what_webdataset_reads(split):
    from_wds = {}
    for sample in wds.WebDataset(split.shard_paths, shardshuffle=False):
        from_wds[sample["__key__"]] = (sample["jpg"], int(sample["cls"]))
    assert len(from_wds) == len(split) == 120
    for i in range(0, len(split), 7):
        jpeg, label = from_wds[split.keys[i]]
        assert split.read(i) == jpeg and split.labels[i] == label


def test_read_into_fills_a_buffer_with_the_same_bytes_and_describe_names_the_shard(split):
    for i in (0, 26, 119):
        buffer = bytearray(int(split.size[i]))
        split.read_into(i, buffer)
        assert bytes(buffer) == split.read(i)
        assert split.describe(i) == f"sample {str(split.keys[i])!r} in {split.shard_paths[split.shard[i]]}"


def test_a_range_past_the_end_of_a_file_names_the_file(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(bytes(range(10)))
    assert read_range(str(path), 2, 3) == bytes([2, 3, 4])
    buffer = bytearray(4)
    read_range_into(str(path), 6, buffer)
    assert buffer == bytes([6, 7, 8, 9])
    with pytest.raises(OSError, match=f"{path} ended early .wanted 5 bytes at 8, got 2"):
        read_range(str(path), 8, 5)
    with pytest.raises(OSError, match=f"{path} ended early .wanted 4 bytes at 7, got 3"):
        read_range_into(str(path), 7, buffer)


def test_loader_with_workers_returns_every_batch_in_order_decoded(split):
    batches = epoch_batches(len(split), 32, seed=0, epoch=1)
    seen = []
    for images, labels, indices in batch_loader(split, batches, workers=2):
        assert images.shape == (len(indices), 3, 256, 256) and str(images.dtype) == "torch.uint8"
        assert labels.tolist() == split.labels[indices.numpy()].tolist()
        seen.append(indices.numpy())
    assert all(np.array_equal(a, b) for a, b in zip(seen, batches))


def test_an_incomplete_split_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="alexctl preprocess"):
        load_split(tmp_path, "val")
