"""alexctl/data/demo.py and `alexctl demo-data`: the generated set is deterministic, looks like
ImageNet to preprocess (sizes, aspect ratios, grayscale), and its classes differ by pattern, not colour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from alexctl.cli import _Commands, demo_data
from alexctl.data import demo
from alexctl.data.labels import read_class_file
from alexctl.errors import UserError

CLASSES, PER_CLASS = 6, 60


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("demo") / "images"
    return root, demo.make_demo_dataset(root, classes=CLASSES, per_class=PER_CLASS, seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = _files(_write(tmp_path / "a", seed=1))
    assert a == _files(_write(tmp_path / "b", seed=1))
    c = _files(_write(tmp_path / "c", seed=2))
    assert a.keys() == c.keys()
    images = [k for k in a if k.endswith(".JPEG")]
    assert all(a[k] != c[k] for k in images)


def test_an_image_does_not_depend_on_how_many_are_written(tmp_path):
    small = _files(_write(tmp_path / "small", classes=2, per_class=2))
    large = _files(_write(tmp_path / "large", classes=3, per_class=4))
    images = [k for k in small if k.endswith(".JPEG")]
    assert len(images) == 4 and all(small[k] == large[k] for k in images)


def _write(root: Path, *, classes: int = 2, per_class: int = 3, seed: int = 0) -> Path:
    demo.make_demo_dataset(root, classes=classes, per_class=per_class, seed=seed)
    return root


# ---------------------------------------------------------------- layout


def test_layout_summary_and_synsets(dataset):
    root, summary = dataset
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert folders == demo.class_folders(CLASSES) == summary["class_names"]
    assert folders[0] == "d0_circle"
    for folder in folders:
        names = sorted(p.name for p in (root / folder).iterdir())
        assert names == [f"{folder}_{i:04d}.JPEG" for i in range(PER_CLASS)]
    assert summary["images"] == CLASSES * PER_CLASS and summary["classes"] == CLASSES
    classes = read_class_file(root / "synsets.txt")  # the form `preprocess --names` reads
    assert list(classes.wnids) == folders
    assert list(classes.names) == summary["names"] and len(set(classes.names)) == CLASSES


def test_files_vary_like_imagenet(dataset):
    root, summary = dataset
    sizes, modes, tables = [], [], set()
    for path in sorted(root.rglob("*.JPEG")):
        with Image.open(path) as im:
            assert im.format == "JPEG"
            im.load()  # decodes the whole file
            sizes.append(im.size)
            modes.append(im.mode)
            tables.add(tuple(im.quantization[0]))
    w, h = np.array(sizes).T
    assert (w > h).sum() > 50 and (h > w).sum() > 50  # landscape and portrait
    assert len({round(a, 2) for a in w / h}) > 100  # many aspect ratios
    assert np.minimum(w, h).min() < 64 and np.maximum(w, h).max() > 800  # a few tiny, a few large
    assert np.maximum(w, h).max() <= 1200 and np.max(np.maximum(w, h) / np.minimum(w, h)) <= 2.51
    assert set(modes) == {"RGB", "L"}
    assert modes.count("L") == summary["grayscale"] == CLASSES * PER_CLASS // 20
    assert len(tables) > 10  # JPEG quality varies


def test_class_count_out_of_range_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--classes 11"):
        demo.make_demo_dataset(tmp_path, classes=demo.MAX_CLASSES + 1)


# ---------------------------------------------------------------- learnable by pattern, not by colour


def test_classes_share_colours_but_differ_in_pattern(dataset):
    root, _ = dataset
    crops = [[_center_crop(p) for p in sorted((root / f).glob("*.JPEG"))] for f in demo.class_folders(CLASSES)]
    colour = [np.stack([np.asarray(c, np.float64).reshape(-1, 3).mean(0) for c in cls]) for cls in crops]
    pattern = [np.stack([_pattern_features(c) for c in cls]) for cls in crops]
    means = np.stack([c.mean(0) for c in colour])  # (classes, 3) mean RGB of each class
    # Within 30 of each other, while the images' own means spread over ~45..210 (5th to 95th percentile).
    assert np.abs(means[:, None] - means[None]).max() < 30
    chance = 1 / CLASSES
    assert _nearest_centroid_accuracy(colour) < chance + 0.15
    assert _nearest_centroid_accuracy(pattern) > 0.6


def _center_crop(path: Path, size: int = 64) -> Image.Image:
    """What preprocess keeps (the central square), small."""
    with Image.open(path) as im:
        w, h = im.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        return im.convert("RGB").crop(box).resize((size, size), Image.BILINEAR)


def _pattern_features(img: Image.Image) -> np.ndarray:
    """Colour-blind features: gradient orientations (as they fall, and sorted, which ignores the
    rotation), the FFT's energy per frequency band, and the edge density, of the contrast-normalised gray image."""
    g = np.asarray(img.convert("L"), np.float64)
    g = (g - g.mean()) / (g.std() + 1e-6)
    gy, gx = np.gradient(g)
    magnitude = np.hypot(gx, gy)
    orientation = np.histogram(np.arctan2(gy, gx) % np.pi, bins=12, range=(0, np.pi), weights=magnitude)[0]
    orientation /= orientation.sum() + 1e-9
    power = np.abs(np.fft.fftshift(np.fft.fft2(g))) ** 2
    radius = np.hypot(*(np.indices(g.shape) - g.shape[0] // 2))
    bands = np.histogram(radius, bins=8, range=(1, g.shape[0] // 2), weights=power)[0]
    return np.concatenate([orientation, np.sort(orientation), bands / bands.sum(), [magnitude.mean()]])


def _nearest_centroid_accuracy(per_class: list[np.ndarray]) -> float:
    """Fit class centroids (standardised features) on the first two thirds of each class, score the rest."""
    cut = len(per_class[0]) * 2 // 3
    train = np.concatenate([x[:cut] for x in per_class])
    mu, sd = train.mean(0), train.std(0) + 1e-9
    centroids = np.stack([((x[:cut] - mu) / sd).mean(0) for x in per_class])
    correct = total = 0
    for c, x in enumerate(per_class):
        distance = ((((x[cut:] - mu) / sd)[:, None, :] - centroids[None]) ** 2).sum(-1)
        correct += int((distance.argmin(1) == c).sum())
        total += len(x) - cut
    return correct / total


# ---------------------------------------------------------------- the command


def _app() -> typer.Typer:
    app = typer.Typer(cls=_Commands)  # alexctl's error handling: UserError -> exit 2

    @app.callback()
    def _root() -> None:  # a group, so that the command runs as `demo-data`
        pass

    app.command("demo-data")(demo_data.command)
    return app


def _run(*args: str):
    return CliRunner().invoke(_app(), ["demo-data", *args])


def test_command_writes_the_set_and_nothing_beside_it(tmp_path):
    out = tmp_path / "images"
    result = _run(str(out), "--classes", "2", "--per-class", "3")
    assert result.exit_code == 0, result.output
    assert len(list(out.rglob("*.JPEG"))) == 6 and (out / "synsets.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # the staging folder is gone
    assert str(out) in result.stdout


def test_command_refuses_a_non_empty_dir_then_force_replaces_only_its_own_files(tmp_path):
    out = tmp_path / "images"
    assert _run(str(out), "--classes", "3", "--per-class", "2").exit_code == 0
    (out / "README").write_text("mine")
    result = _run(str(out), "--classes", "2", "--per-class", "2")
    assert result.exit_code == 2
    assert str(out) in result.stderr and "--force" in result.stderr
    result = _run(str(out), "--classes", "2", "--per-class", "4", "--force")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["README", "d0_circle", "d1_square", "synsets.txt"]
    assert len(list(out.rglob("*.JPEG"))) == 8 and (out / "README").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_command_into_an_existing_empty_dir(tmp_path):
    out = tmp_path / "images"
    out.mkdir()
    assert _run(str(out), "--classes", "2", "--per-class", "1").exit_code == 0
    assert len(list(out.rglob("*.JPEG"))) == 2


def test_command_json_prints_one_object(tmp_path):
    out = tmp_path / "images"
    result = _run(str(out), "--classes", "2", "--per-class", "2", "--seed", "5", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["out_dir"] == str(out) and summary["images"] == 4 and summary["seed"] == 5
    assert summary["class_names"] == ["d0_circle", "d1_square"]


def test_interrupted_command_leaves_no_half_set(tmp_path, monkeypatch):
    real = demo.make_demo_dataset

    def interrupted(staging, **kwargs):
        real(staging, **kwargs)  # everything written, then killed before the move
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "make_demo_dataset", interrupted)
    out = tmp_path / "images"
    result = _run(str(out), "--classes", "2", "--per-class", "1")
    assert result.exit_code == 130
    assert list(tmp_path.iterdir()) == []


def test_command_rejects_too_many_classes(tmp_path):
    result = _run(str(tmp_path / "images"), "--classes", str(demo.MAX_CLASSES + 1))
    assert result.exit_code == 2 and not (tmp_path / "images").exists()
