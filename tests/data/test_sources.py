"""alexctl/data/sources.py and labels.py: finding images and their labels in every SOURCE form."""

from __future__ import annotations

import io
import os
import re
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from alexctl.data import labels as label_ops
from alexctl.data import sources
from alexctl.data.sources import Item, read_bytes, sample_keys, scan
from alexctl.errors import UserError

from helpers import tar_folder, tar_of_class_tars


def test_folder_tar_and_tar_of_tars_find_the_same_images(imagenette_slice, tmp_path):
    folder = scan(imagenette_slice)
    as_tar = scan(tar_folder(imagenette_slice, tmp_path / "train.tar", prefix="train/"))
    as_tar_of_tars = scan(tar_of_class_tars(imagenette_slice, tmp_path / "ILSVRC2012_img_train.tar"))
    assert len(folder) == 120
    assert [i.relpath for i in folder] == [i.relpath for i in as_tar] == [i.relpath for i in as_tar_of_tars]
    assert {i.folder for i in folder} == {p.name for p in imagenette_slice.iterdir()}
    for a, b, c in zip(folder[::17], as_tar[::17], as_tar_of_tars[::17]):
        assert read_bytes(a) == read_bytes(b) == read_bytes(c)
    assert as_tar[0].where[0] == "range" and as_tar_of_tars[0].where[0] == "range"  # read in place


def test_compressed_tar_is_held_in_memory(imagenette_slice, tmp_path):
    import tarfile

    path = tmp_path / "train.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(imagenette_slice, arcname="train")
    items = scan(path)
    assert len(items) == 120 and items[0].where[0] == "bytes"
    assert read_bytes(items[0]) == (imagenette_slice / items[0].relpath).read_bytes()


def test_hidden_files_and_non_images_are_ignored(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.JPEG").write_bytes(b"1")
    (tmp_path / "a" / "._x.JPEG").write_bytes(b"mac resource fork")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "y.jpg").write_bytes(b"2")
    assert [i.relpath for i in scan(tmp_path)] == ["a/x.JPEG"]


def test_empty_and_missing_sources_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        scan(tmp_path / "nope")
    with pytest.raises(UserError, match="holds no image files"):
        scan(tmp_path)
    (tmp_path / "bad.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(UserError, match="bad.tar"):
        scan(tmp_path / "bad.tar")


def test_keys_are_webdataset_safe_unique_and_stable():
    items = [
        Item(p, ("bytes", b""))
        for p in [
            "n1/a.JPEG",
            "n1/a.b.JPEG",
            "n1/a_b.JPEG",
            "n1/it's.JPEG",
            "n1/with space.jpg",
            "n1/" + "x" * 150 + ".jpg",
        ]
    ]
    keys = sample_keys(items)
    assert keys[0] == "n1/a" and keys[2] == "n1/a_b" and keys[3] == "n1/it's"
    assert len(set(keys)) == len(keys)
    for k in keys:
        assert "." not in k.rsplit("/", 1)[-1]  # WebDataset splits the member name at the first dot
        assert len(k.encode()) <= 90
    assert sample_keys(items) == keys


def test_label_file_forms(tmp_path, synsets):
    classes = label_ops.read_class_file(synsets)
    assert len(classes) == 1000 and classes.wnids[0] == "n01440764"
    resolve = classes.resolver()
    assert resolve.index("n01443537", where="t") == 1
    assert resolve.index("tench", where="t") == 0
    assert resolve.index("Great White Shark", where="t") == 2  # case-insensitive name
    with pytest.raises(UserError, match="not one of the 1000 known classes"):
        resolve.index("unicorn", where="t")

    (tmp_path / "comma.csv").write_text("a.JPEG,n01440764\nb,goldfish\n")
    assert label_ops.read_label_file(tmp_path / "comma.csv") == {"a": "n01440764", "b": "goldfish"}
    (tmp_path / "space.txt").write_text("a.jpg n01440764\nb.png tench, Tinca tinca\n")
    assert label_ops.read_label_file(tmp_path / "space.txt") == {"a": "n01440764", "b": "tench, Tinca tinca"}
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295\n"
        "ILSVRC2012_val_00000001,n01751748 1 2 3 4\n"
    )
    assert label_ops.read_label_file(tmp_path / "LOC_val_solution.csv") == {
        "ILSVRC2012_val_00008726": "n02119789",
        "ILSVRC2012_val_00000001": "n01751748",
    }


def test_devkit_ground_truth_maps_ilsvrc_ids_through_meta_mat(tmp_path):
    import scipy.io

    # The devkit's meta.mat: a struct array of synsets (ILSVRC2012_ID, WNID, words, gloss, num_children, ...);
    # leaves (num_children == 0) are the 1000 classes. Two leaves and one inner node suffice here.
    dtype = [
        ("ILSVRC2012_ID", "O"),
        ("WNID", "O"),
        ("words", "O"),
        ("gloss", "O"),
        ("num_children", "O"),
        ("children", "O"),
        ("wordnet_height", "O"),
        ("num_train_images", "O"),
    ]
    rows = [
        (1, "n01751748", "sea snake", "", 0, np.zeros(0), 0, 1300),
        (2, "n09193705", "alp", "", 0, np.zeros(0), 0, 1300),
        (1001, "n00001740", "entity", "", 2, np.array([1, 2]), 18, 0),
    ]
    synsets = np.array(rows, dtype=dtype)
    (tmp_path / "devkit" / "data").mkdir(parents=True)
    scipy.io.savemat(tmp_path / "devkit" / "data" / "meta.mat", {"synsets": synsets})
    truth = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text("2\n1\n2\n")
    with pytest.raises(UserError, match="--devkit"):
        label_ops.read_label_file(truth)
    assert label_ops.read_label_file(truth, tmp_path / "devkit") == {
        "ILSVRC2012_val_00000001": "n09193705",
        "ILSVRC2012_val_00000002": "n01751748",
        "ILSVRC2012_val_00000003": "n09193705",
    }
    truth.write_text("7\n")
    with pytest.raises(UserError, match="ILSVRC2012_ID 7"):
        label_ops.read_label_file(truth, tmp_path / "devkit")


# ---------------------------------------------------------------- what is not read (issue 19)


def _read_within(item: Item, seconds: float = 10) -> BaseException | bytes:
    """read_bytes(item) in a thread, which must end: a FIFO opened for reading waits for a writer forever."""
    done: list = []

    def read():
        try:
            done.append(read_bytes(item))
        except BaseException as e:
            done.append(e)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(seconds)
    assert done, f"reading {item.relpath} did not end in {seconds} s"
    return done[0]


def test_only_regular_files_are_read_and_none_past_the_cap(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    os.mkfifo(tmp_path / "a" / "pipe.JPEG")
    (tmp_path / "a" / "zero.JPEG").symlink_to("/dev/zero")
    (tmp_path / "a" / "big.png").write_bytes(bytes(2000))
    (tmp_path / "a" / "ok.png").write_bytes(bytes(1000))
    items = {it.name: it for it in scan(tmp_path)}
    assert sorted(items) == ["big.png", "ok.png", "pipe.JPEG", "zero.JPEG"]  # found, so skipped by name
    monkeypatch.setattr(sources, "MAX_IMAGE_BYTES", 1000)
    reasons = {name: _read_within(item) for name, item in items.items()}
    assert reasons["ok.png"] == bytes(1000)
    for name, words in [("pipe.JPEG", "a FIFO"), ("zero.JPEG", "a character device"), ("big.png", "2,000 bytes")]:
        assert isinstance(reasons[name], sources.NotRead) and words in str(reasons[name]), reasons[name]
    os.mkfifo(tmp_path / "in.tar")
    with pytest.raises(UserError, match="neither a folder nor a regular file"):
        scan(tmp_path / "in.tar")


def _tar_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_links_are_followed_within_the_tar_and_never_out_of_it(tmp_path, mode):
    members = [
        (_info("t/a/x.JPEG"), b"x-bytes"),
        (_info("t/a/blob"), b"blob-bytes"),  # not an image name: read only through a link, in a plain tar
        (_info("t/b/hard.JPEG", tarfile.LNKTYPE, "t/a/x.JPEG"), None),
        (_info("t/b/soft.JPEG", tarfile.SYMTYPE, "../a/x.JPEG"), None),
        (_info("t/b/chain.JPEG", tarfile.SYMTYPE, "soft.JPEG"), None),
        (_info("t/b/later.JPEG", tarfile.SYMTYPE, "../c/z.JPEG"), None),  # its target comes after it
        (_info("t/b/to-blob.JPEG", tarfile.SYMTYPE, "../a/blob"), None),
        (_info("t/b/out.JPEG", tarfile.SYMTYPE, "../../../etc/passwd"), None),
        (_info("t/b/abs.JPEG", tarfile.SYMTYPE, "/etc/passwd"), None),
        (_info("t/b/gone.JPEG", tarfile.SYMTYPE, "nowhere.JPEG"), None),
        (_info("t/b/loop.JPEG", tarfile.SYMTYPE, "loop.JPEG"), None),
        (_info("t/b/pipe.JPEG", tarfile.FIFOTYPE), None),
        (_info("t/c/z.JPEG"), b"z-bytes"),
    ]
    items = {it.relpath: it for it in scan(_tar_with(tmp_path / f"t.{mode}", members, mode))}
    assert len(items) == 12  # every image name, "t/" stepped into
    read = {name: _read_within(item) for name, item in items.items()}
    assert read["b/hard.JPEG"] == read["b/soft.JPEG"] == read["b/chain.JPEG"] == b"x-bytes"
    assert read["b/later.JPEG"] == b"z-bytes"
    if mode == "w":
        assert read["b/to-blob.JPEG"] == b"blob-bytes"
    else:  # a compressed tar keeps only its images' bytes
        assert "does not hold as an image" in str(read["b/to-blob.JPEG"])
    expected = {
        "b/out.JPEG": "outside the tar",
        "b/abs.JPEG": "outside the tar",
        "b/gone.JPEG": "does not hold",
        "b/loop.JPEG": "a loop of symbolic links",
        "b/pipe.JPEG": "a FIFO",
    }
    for name, words in expected.items():
        assert isinstance(read[name], sources.NotRead) and words in str(read[name]), (name, read[name])


@pytest.mark.parametrize("name", ["../../x/y.JPEG", "t/../../y.JPEG", "/abs/n1/y.JPEG"])
def test_a_tar_member_named_outside_the_archive_refuses_the_tar(tmp_path, name):
    tar = _tar_with(tmp_path / "t.tar", [(_info("t/a/x.JPEG"), b"x"), (_info(name), b"y")])
    with pytest.raises(UserError, match=f"t.tar holds a member named '{re.escape(name)}', outside"):
        scan(tar)


def test_a_compressed_tar_member_past_the_cap_is_skipped_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_IMAGE_BYTES", 1000)
    path = _tar_with(tmp_path / "t.tar.gz", [(_info("a/x.JPEG"), b"x"), (_info("b/big.JPEG"), bytes(5000))], "w:gz")
    reads = []
    real = tarfile.ExFileObject.read
    monkeypatch.setattr(tarfile.ExFileObject, "read", lambda self, *a: reads.append(a) or real(self, *a))
    items = {it.relpath: it for it in scan(path)}
    assert items["b/big.JPEG"].where == ("skip", "5,000 bytes, more than the 0 MiB read for one image")
    assert items["a/x.JPEG"].where == ("bytes", b"x") and len(reads) == 1  # the small member's read only
