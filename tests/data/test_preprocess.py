"""`alexctl preprocess` end to end on real photographs: forms of input, statistics, determinism,
kill -9 and rerun, --part, and the shards read back with plain webdataset."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from alexctl.data import transform
from alexctl.data.stats import StatsAccumulator, finish

from helpers import freeze_at, invoke, json_output, start_cli, tar_folder, tar_of_class_tars


def digest_tree(folder: Path) -> dict[str, str]:
    """sha256 of every shard, sidecar, index and statistics file (manifests hold timings)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".tar", ".npz") or path.name in ("classes.json", "stats.json"):
            out[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def samples_data(tmp_path_factory, imagenet_samples, synsets):
    """All 268 ILSVRC-2012 sample photos, flat, labelled from their names, in the 1000-class order."""
    tmp = tmp_path_factory.mktemp("samples")
    labels = tmp / "labels.txt"
    labels.write_text("".join(f"{p.name},{p.name.split('_')[0]}\n" for p in sorted(imagenet_samples.iterdir())))
    data = tmp / "data"
    proc = invoke(
        "preprocess",
        imagenet_samples,
        data,
        "--labels",
        labels,
        "--classes",
        synsets,
        "--shard-size",
        "50",
        "--json",
        check=True,
    )
    return data, json_output(proc)


def test_every_ilsvrc_sample_is_written(samples_data, imagenet_samples):
    data, summary = samples_data
    assert summary["found"] == 268 and summary["written"] == 268 and summary["skipped"] == []
    assert summary["classes"] == 1000 and len(summary["shards"]) == 6
    index = np.load(data / "train" / "index.npz")
    keys = set(index["keys"].tolist())
    assert "n01440764_tench" in keys
    assert any("'" in k for k in keys), "the file name with an apostrophe"
    grays = [p for p in imagenet_samples.iterdir() if Image.open(p).mode == "L"]
    assert len(grays) == 23
    manifest = json.loads((data / "train" / "manifest.json").read_text())
    assert manifest["written"] + len(manifest["skipped"]) == manifest["found"]
    assert sum(manifest["class_counts"]) == 268 and max(manifest["class_counts"]) == 1


def test_statistics_equal_a_direct_computation(samples_data, imagenet_samples):
    data, _ = samples_data
    acc = StatsAccumulator.empty(256)
    for path in sorted(imagenet_samples.iterdir()):
        pixels = transform.prepare(path.read_bytes(), 256).pixels
        acc.add_image(pixels)
    direct = finish(acc)
    stored = np.load(data / "stats.npz")
    for key in ("mean_image", "channel_mean", "channel_std", "covariance", "eigenvalues", "eigenvectors"):
        assert np.array_equal(stored[key], direct[key]), key
    # and the statistics themselves against plain numpy on the pixels, two-pass (not the accumulator's formula)
    pixels = np.stack([transform.prepare(p.read_bytes(), 256).pixels for p in sorted(imagenet_samples.iterdir())])
    mean_image = pixels.mean(0, dtype=np.float64)
    assert mean_image.shape == (256, 256, 3) and 60 < mean_image.mean() < 160
    np.testing.assert_allclose(stored["mean_image"], mean_image, rtol=1e-12)
    channel_mean = mean_image.mean((0, 1))
    np.testing.assert_allclose(stored["channel_mean"], channel_mean, rtol=1e-12)
    scatter = sum((image.reshape(-1, 3) - channel_mean).T @ (image.reshape(-1, 3) - channel_mean) for image in pixels)
    covariance = scatter / (268 * 256 * 256)
    np.testing.assert_allclose(stored["covariance"], covariance, rtol=1e-9)
    np.testing.assert_allclose(stored["channel_std"], np.sqrt(np.diag(covariance)), rtol=1e-9)
    values, vectors = np.linalg.eigh(covariance)  # ascending
    np.testing.assert_allclose(stored["eigenvalues"], values[::-1], rtol=1e-9)  # largest first
    for i in range(3):  # the same axes (an eigenvector's sign is arbitrary), each one of the covariance's
        assert abs(stored["eigenvectors"][:, i] @ vectors[:, 2 - i]) == pytest.approx(1, abs=1e-9)
        np.testing.assert_allclose(
            covariance @ stored["eigenvectors"][:, i], values[2 - i] * stored["eigenvectors"][:, i], atol=1e-6
        )


def test_shards_read_back_with_plain_webdataset(samples_data):
    data, summary = samples_data
    index = np.load(data / "train" / "index.npz")
    labels_by_key = dict(zip(index["keys"].tolist(), index["labels"].tolist()))
    dataset = (
        wds.WebDataset(summary["shards"], shardshuffle=False).decode("rgb8").to_tuple("__key__", "jpg", "cls", "json")
    )
    seen = 0
    for key, rgb, cls, meta in dataset:
        assert rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8
        assert cls == labels_by_key[key]
        assert meta["class"] == key.split("_")[0]
        seen += 1
    assert seen == 268
    # The index's byte ranges are the .jpg members: what training reads without tar parsing.
    shard = Path(summary["shards"][0])
    raw = shard.read_bytes()
    first = index["shard"] == 0
    for offset, size in zip(index["offset"][first][:5], index["size"][first][:5]):
        assert raw[offset : offset + 2] == b"\xff\xd8" and raw[offset + size - 2 : offset + size] == b"\xff\xd9"


def test_shards_are_class_mixed(samples_data):
    data, _ = samples_data
    index = np.load(data / "train" / "index.npz")
    labels = index["labels"]
    assert not np.all(np.diff(labels) > 0), "samples must not be in class order"


@pytest.fixture(scope="module")
def broken_source(tmp_path_factory, imagenet_samples):
    """Two classes of real photos plus every kind of odd file the issue names."""
    root = tmp_path_factory.mktemp("broken") / "src"
    photos = sorted(imagenet_samples.iterdir())
    for cls, chunk in (("n01", photos[:6]), ("n02", photos[6:12])):
        (root / cls).mkdir(parents=True)
        for p in chunk:
            (root / cls / p.name.replace("'", "")).write_bytes(p.read_bytes())
    tench = (imagenet_samples / "n01440764_tench.JPEG").read_bytes()
    (root / "n01" / "truncated.JPEG").write_bytes(tench[: len(tench) // 3])
    (root / "n01" / "text.JPEG").write_text("I am not a photograph")
    rgb = Image.open(io.BytesIO(tench)).convert("RGB")
    buffer = io.BytesIO()
    rgb.convert("CMYK").save(buffer, "JPEG")
    (root / "n02" / "cmyk.JPEG").write_bytes(buffer.getvalue())
    buffer = io.BytesIO()
    rgb.save(buffer, "PNG")
    (root / "n02" / "png_inside.JPEG").write_bytes(buffer.getvalue())
    Image.new("RGB", (1, 1), (200, 10, 10)).save(root / "n02" / "one_pixel.jpg")
    Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (40, 12))).save(root / "n01" / "panorama.jpg")
    return root


def test_odd_files_are_written_or_skipped_with_a_reason(broken_source, tmp_path):
    proc = invoke("preprocess", broken_source, tmp_path / "d", "--shard-size", "4", "--json", check=True)
    summary = json_output(proc)
    assert summary["found"] == 18
    assert summary["written"] + len(summary["skipped"]) == summary["found"]
    skipped = {s["path"]: s["reason"] for s in summary["skipped"]}
    assert set(skipped) == {"n01/truncated.JPEG", "n01/text.JPEG"}
    assert "not an image" in skipped["n01/text.JPEG"]
    assert "truncated" in skipped["n01/truncated.JPEG"] or "decoded" in skipped["n01/truncated.JPEG"]
    keys = np.load(tmp_path / "d" / "train" / "index.npz")["keys"].tolist()
    for name in ("n02/cmyk", "n02/png_inside", "n02/one_pixel", "n01/panorama"):
        assert name in keys
    # --strict turns the skips into exit status 1, and no manifest claims the split complete.
    strict = invoke("preprocess", broken_source, tmp_path / "s", "--shard-size", "4", "--strict")
    assert strict.returncode == 1
    assert "2 of 18 images could not be used" in strict.stderr and "Traceback" not in strict.stderr
    assert not (tmp_path / "s" / "train" / "manifest.json").exists()


def test_every_source_form_gives_identical_shards(imagenette_slice, tmp_path):
    forms = {
        "folder": imagenette_slice,
        "tar": tar_folder(imagenette_slice, tmp_path / "train.tar", prefix="train/"),
        "tar_of_tars": tar_of_class_tars(imagenette_slice, tmp_path / "ILSVRC2012_img_train.tar"),
    }
    digests = {}
    for name, source in forms.items():
        invoke("preprocess", source, tmp_path / name, "--shard-size", "32", "--workers", "2", check=True)
        digests[name] = digest_tree(tmp_path / name)
    assert digests["folder"] == digests["tar"] == digests["tar_of_tars"]
    assert len([k for k in digests["folder"] if k.endswith(".tar")]) == 4


def test_determinism_across_worker_counts_and_parts(imagenette_slice, tmp_path):
    invoke("preprocess", imagenette_slice, tmp_path / "one", "--shard-size", "16", "--workers", "1", check=True)
    invoke("preprocess", imagenette_slice, tmp_path / "two", "--shard-size", "16", "--workers", "2", check=True)
    for i in range(3):
        proc = invoke(
            "preprocess",
            imagenette_slice,
            tmp_path / "parts",
            "--shard-size",
            "16",
            "--part",
            f"{i}/3",
            "--json",
            check=True,
        )
        summary = json_output(proc)
        assert summary["complete"] == (i == 2)  # the last part finds every shard done and merges
        assert summary["written"] + len(summary["skipped"]) == summary["found"]
    one = digest_tree(tmp_path / "one")
    assert one == digest_tree(tmp_path / "two") == digest_tree(tmp_path / "parts")
    a = json.loads((tmp_path / "one" / "train" / "manifest.json").read_text())
    b = json.loads((tmp_path / "parts" / "train" / "manifest.json").read_text())
    for key in ("seconds", "created"):
        a.pop(key), b.pop(key)
    assert a == b


def test_killed_run_leaves_nothing_complete_and_the_rerun_finishes(imagenette_slice, tmp_path):
    reference = tmp_path / "reference"
    invoke("preprocess", imagenette_slice, reference, "--shard-size", "8", check=True)
    data = tmp_path / "killed"
    proc = start_cli("preprocess", imagenette_slice, data, "--shard-size", "8", "--workers", "1")
    freeze_at(proc, lambda: list((data / "train").glob("shard-000003.npz")))  # 4 of 15 shards written
    os.kill(proc.pid, signal.SIGKILL)  # kill -9 of the command; its worker, frozen too, goes on as it would
    os.killpg(proc.pid, signal.SIGCONT)
    proc.wait()
    assert not (data / "train" / "manifest.json").exists()
    assert not (data / "stats.npz").exists()
    done = len(list((data / "train").glob("shard-*.npz")))
    assert 4 <= done < 15
    rerun = json_output(invoke("preprocess", imagenette_slice, data, "--shard-size", "8", "--json", check=True))
    assert rerun["complete"] and rerun["processed_now"] == 120 - 8 * done
    assert not list((data / "train").glob(".*.tmp.*")), "temporaries of the killed run are gone"
    assert digest_tree(data) == digest_tree(reference)


def test_holdout_gives_disjoint_train_and_val_that_cover_the_source(imagenette_slice, tmp_path):
    data = tmp_path / "d"
    invoke("preprocess", imagenette_slice, data, "--holdout", "0.25", check=True)
    invoke("preprocess", imagenette_slice, data, "--split", "val", "--holdout", "0.25", check=True)
    train = np.load(data / "train" / "index.npz")
    val = np.load(data / "val" / "index.npz")
    assert len(train["keys"]) == 90 and len(val["keys"]) == 30
    assert not set(train["keys"].tolist()) & set(val["keys"].tolist())
    assert np.bincount(val["labels"], minlength=10).tolist() == [3] * 10
    assert not (data / "val" / "stats.npz").exists()
    val_manifest = json.loads((data / "val" / "manifest.json").read_text())
    assert val_manifest["stats"] is None
    # A val split from the same SOURCE that is not exactly the held-out part would overlap train.
    for other in (["--holdout", "0.1"], ["--holdout", "0.25", "--holdout-seed", "3"], []):
        leak = invoke("preprocess", imagenette_slice, tmp_path / "d", "--split", "val", "--force", *other)
        assert leak.returncode == 2 and "overlap the training images" in leak.stderr, other
    same = tmp_path / "same"
    invoke("preprocess", imagenette_slice, same, check=True)
    itself = invoke("preprocess", imagenette_slice, same, "--split", "val")
    assert itself.returncode == 2 and "the training images themselves" in itself.stderr


def test_a_completed_split_is_not_redone_unless_forced(imagenette_slice, tmp_path):
    data = tmp_path / "d"
    invoke("preprocess", imagenette_slice, data, check=True)
    before = digest_tree(data)
    again = json_output(invoke("preprocess", imagenette_slice, data, "--json", check=True))
    assert again["already_complete"] and again["processed_now"] == 0 and again["written"] == 120
    changed = invoke("preprocess", imagenette_slice, data, "--size", "128")
    assert changed.returncode == 2 and "--force" in changed.stderr and "size" in changed.stderr
    forced = json_output(invoke("preprocess", imagenette_slice, data, "--size", "128", "--force", "--json", check=True))
    assert forced["processed_now"] == 120
    assert np.load(data / "stats.npz")["mean_image"].shape == (128, 128, 3)
    assert digest_tree(data) != before


def test_val_split_uses_the_train_classes_and_refuses_unknown_labels(imagenette_slice, tmp_path, imagenet_samples):
    data = tmp_path / "d"
    no_train = invoke("preprocess", imagenette_slice, data, "--split", "val")
    assert no_train.returncode == 2 and "classes.json" in no_train.stderr
    invoke("preprocess", imagenette_slice, data, check=True)
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted(imagenet_samples.iterdir())[:3]:
        (flat / p.name).write_bytes(p.read_bytes())
    unlabelled = invoke("preprocess", flat, data, "--split", "val")
    assert unlabelled.returncode == 2 and "--labels" in unlabelled.stderr
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"{p.name},{p.name.split('_')[0]}\n" for p in sorted(flat.iterdir())))
    unknown = invoke("preprocess", flat, data, "--split", "val", "--labels", labels)
    assert unknown.returncode == 2 and "is not one of the 10 known classes" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1 and "Traceback" not in unknown.stderr
    labels.write_text("".join(f"{p.name},tench\n" for p in sorted(flat.iterdir())))
    names = tmp_path / "names.txt"
    names.write_text("n01440764\ttench\n")
    ok = json_output(
        invoke("preprocess", flat, data, "--split", "val", "--labels", labels, "--names", names, "--json", check=True)
    )
    assert ok["written"] == 3


def test_one_writer_per_split(imagenette_slice, tmp_path):
    from alexctl.rundir import DirectoryLock

    data = tmp_path / "d"
    with DirectoryLock(data / "train" / ".lock", "test holder"):
        busy = invoke("preprocess", imagenette_slice, data)
    assert busy.returncode == 2 and "in use by another alexctl process" in busy.stderr
    assert f"pid {os.getpid()}" in busy.stderr
    invoke("preprocess", imagenette_slice, data, check=True)  # released: free again


def test_real_imagenette_tar_read_in_place(shared_data, tmp_path):
    """The published tar as SOURCE, read by byte range: one part of eight shards of 600 images."""
    proc = invoke(
        "preprocess",
        shared_data / "imagenette-224" / "train-1of2.tar",
        tmp_path / "d",
        "--shard-size",
        "600",
        "--part",
        "7/8",
        "--json",
        check=True,
    )
    summary = json_output(proc)
    assert summary["found"] == 4710 - 7 * 600 and summary["written"] == summary["found"]
    assert not summary["complete"] and summary["stats"] is None
