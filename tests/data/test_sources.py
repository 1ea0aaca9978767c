"""alexctl/data/sources.py and labels.py: finding images and their labels in every SOURCE form."""

from __future__ import annotations

import numpy as np
import pytest

from alexctl.data import labels as label_ops
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
