"""Shared fixtures: the real photographs in ../shared/data, read in place.

The suite needs them: if ../shared/data is missing it stops at once with an error
(set ALEXCTL_SHARED_DATA to use another copy), it never skips.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from badinput import public  # noqa: F401 (a fixture of the bad-input corpus, shared by its two files)
from helpers import SHARED_DATA, extract_imagenette_slice


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: runs only with CUDA (`alexctl gpu-check`'s cuda-tests step: -m cuda)")
    if not (SHARED_DATA / "imagenette-224" / "train-1of2.tar").is_file():
        raise pytest.UsageError(
            f"the real test images are missing: {SHARED_DATA} (../shared/data beside the repository) "
            "must hold imagenette-224/, imagenet-samples/ and synsets.txt; set ALEXCTL_SHARED_DATA to another copy."
        )


def pytest_collection_modifyitems(config, items):
    """A test that skips without CUDA is marked `cuda`: the GPU check runs exactly these (pytest -m cuda)."""
    for item in items:
        if any("needs a CUDA device" in str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif")):
            item.add_marker(pytest.mark.cuda)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def imagenet_samples() -> Path:
    """268 full-size ILSVRC-2012 photographs, flat: <wnid>_<class name>.JPEG."""
    return SHARED_DATA / "imagenet-samples"


@pytest.fixture(scope="session")
def synsets() -> Path:
    return SHARED_DATA / "synsets.txt"


@pytest.fixture(scope="session")
def imagenette_slice(tmp_path_factory) -> Path:
    """12 real Imagenette photos per class (120), as an ImageFolder tree."""
    return extract_imagenette_slice(tmp_path_factory.mktemp("imagenette"), per_class=12)


@pytest.fixture(scope="session")
def slice_data(tmp_path_factory, imagenette_slice) -> Path:
    """The 120-photo slice preprocessed: 110 train, 10 val (one per class)."""
    from helpers import invoke

    out = tmp_path_factory.mktemp("slice-data") / "d"
    invoke("preprocess", imagenette_slice, out, "--holdout", "0.1", "--shard-size", "40", check=True)
    invoke("preprocess", imagenette_slice, out, "--split", "val", "--holdout", "0.1", check=True)
    return out


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory, slice_data) -> list[Path]:
    """Two tiny networks (different seeds) trained for one epoch on the slice."""
    from helpers import invoke

    root = tmp_path_factory.mktemp("runs")
    runs = []
    for seed in (0, 1):
        run = root / f"seed{seed}"
        invoke(
            "train",
            run,
            "--data",
            slice_data,
            "--epochs",
            "1",
            "--seed",
            seed,
            "--width",
            "0.125",
            "--batch-size",
            "16",
            "--checkpoint-minutes",
            "0",
            check=True,
        )
        runs.append(run)
    return runs
