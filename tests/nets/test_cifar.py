"""The CIFAR-10 path of the paper's Figure 1 and LRN claims: a .tar.gz SOURCE of real 32x32 JPEGs,
--size 32, the four-layer net (--arch cifar) on 24x24 crops, ten 24x24 test crops."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from helpers import SHARED_DATA, invoke, json_output


@pytest.fixture(scope="module")
def cifar_slice(tmp_path_factory):
    """30 real CIFAR-10 training images per class, repacked as a small .tar.gz."""
    out = tmp_path_factory.mktemp("cifar") / "cifar-slice.tar.gz"
    counts: dict[str, int] = {}
    with tarfile.open(SHARED_DATA / "cifar10-jpeg" / "train.tar.gz") as src, tarfile.open(out, "w:gz") as dst:
        for member in src:
            if not member.isfile():
                continue
            cls = member.name.split("/")[-2]
            if counts.get(cls, 0) < 30:
                counts[cls] = counts.get(cls, 0) + 1
                dst.addfile(member, io.BytesIO(src.extractfile(member).read()))
            if len(counts) == 10 and all(v == 30 for v in counts.values()):
                break
    return out


def test_cifar_chain(cifar_slice, tmp_path):
    data = tmp_path / "data"
    train = json_output(
        invoke("preprocess", cifar_slice, data, "--size", "32", "--holdout", "0.2", "--json", check=True)
    )
    invoke("preprocess", cifar_slice, data, "--size", "32", "--split", "val", "--holdout", "0.2", check=True)
    assert train["written"] == 240 and train["classes"] == 10
    run = tmp_path / "run"
    invoke(
        "train",
        run,
        "--data",
        data,
        "--arch",
        "cifar",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--dropout",
        "0",
        "--activation",
        "tanh",
        "--no-lrn",
        "--checkpoint-minutes",
        "0",
        check=True,
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in rows] == [240, 240]
    summary = json_output(invoke("eval", run, "--json", check=True))
    assert summary["crops"] == 10 and summary["num_images"] == 60
    wrong_size = invoke("train", tmp_path / "r2", "--data", data, "--epochs", "1")  # AlexNet needs 256 px images
    assert wrong_size.returncode == 2 and "--size 256" in wrong_size.stderr
