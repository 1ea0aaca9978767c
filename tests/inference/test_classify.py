"""`alexctl predict`: the probabilities of eval's inference path on files, folders, tars and paths on stdin;
broken files skipped by name; the csv and jsonl formats; an ensemble directory as the average of its runs.

Tolerances: --json and jsonl round probabilities to 6 decimals, so "the same" is within 1e-6. Against
`alexctl eval`'s saved predictions the images differ by one JPEG round trip (preprocess stores the 256x256
image as a quality-95 JPEG; predict uses the pixels directly): within 1e-3 (1.5e-4 measured), and the same
most probable class.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from alexctl import checkpoint
from alexctl.cli import predict as cli_predict
from alexctl.data import transform
from alexctl.nets.build import model_from_checkpoint

from helpers import invoke, json_output, run_cli

PHOTOS = ("n01440764_tench.JPEG", "n01514859_hen.JPEG", "n01532829_house_finch.JPEG")  # full-size ILSVRC photos


@pytest.fixture(scope="module")
def photos(imagenet_samples, tmp_path_factory):
    """A folder of three real photographs, one of them in a subfolder, and the same folder as a tar."""
    root = tmp_path_factory.mktemp("photos")
    folder = root / "photos"
    for i, name in enumerate(PHOTOS):
        dest = folder / ("sub" if i == 2 else "") / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(imagenet_samples / name, dest)
    with tarfile.open(root / "photos.tar", "w") as tar:
        tar.add(folder, arcname="photos")
    return folder


def direct(run, paths, crops=10) -> np.ndarray:
    """The paper's test transform written out with torchvision, not alexctl's inference core: each file's
    256x256 center minus the run's mean image, its ten 224x224 patches (or the central one), the softmax of
    each, averaged."""
    ckpt = checkpoint.load_weights(run / "checkpoints" / "best.pt")
    net = model_from_checkpoint(ckpt).eval()
    pixels = np.stack([transform.prepare(p.read_bytes(), 256).pixels for p in paths])  # (n, 256, 256, 3) uint8
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() - ckpt["mean_image"]
    patches = TF.ten_crop(images, [224, 224]) if crops == 10 else [TF.center_crop(images, [224, 224])]
    with torch.no_grad():
        return torch.stack([torch.softmax(net(p), 1) for p in patches]).mean(0).numpy()


def by_image(summary: dict, classes: list[str]) -> dict[str, np.ndarray]:
    """{image name: probabilities in class order} from a --json summary asked with --top-k = all classes."""
    out = {}
    for row in summary["results"]:
        probs = np.zeros(len(classes))
        for t in row["top"]:
            probs[classes.index(t["class"])] = t["probability"]
        out[row["image"]] = probs
    return out


def classes_of(run) -> list[str]:
    return checkpoint.classes_of(checkpoint.load_weights(run / "checkpoints" / "best.pt"))


def predict_with_stdin(text: str, *args):
    from typer.testing import CliRunner

    from alexctl.cli import app

    return CliRunner().invoke(app, ["predict", "-", *map(str, args)], input=text)


def test_files_folder_tar_and_stdin_give_the_probabilities_of_eval_path(two_runs, photos):
    run, classes = two_runs[0], classes_of(two_runs[0])
    paths = [photos / PHOTOS[0], photos / PHOTOS[1], photos / "sub" / PHOTOS[2]]
    expected = dict(zip(PHOTOS, direct(run, paths)))
    asked = {
        "files": invoke("predict", *paths, "--run", run, "--top-k", 99, "--json", "--batch-size", 2, check=True),
        "folder": invoke("predict", photos, "--run", run, "--top-k", 99, "--json", check=True),
        "tar": invoke("predict", photos.parent / "photos.tar", "--run", run, "--top-k", 99, "--json", check=True),
        "stdin": predict_with_stdin("".join(f"{p}\n" for p in paths), "--run", run, "--top-k", 99, "--json"),
    }
    for how, result in asked.items():
        assert getattr(result, "returncode", getattr(result, "exit_code", None)) == 0, (how, result.stderr)
        summary = json_output(result)
        assert summary["predicted"] == 3 and summary["skipped"] == 0 and summary["top_k"] == len(classes), how
        got = by_image(summary, classes)
        assert len(got) == 3, how
        for name, probs in got.items():
            assert name.endswith(PHOTOS), (how, name)
            assert np.allclose(probs, expected[name.rsplit("/", 1)[-1]], atol=1e-6), (how, name)
    tar_names = [r["image"] for r in json_output(asked["tar"])["results"]]
    assert tar_names[0] == f"{photos.parent / 'photos.tar'}:photos/{PHOTOS[0]}"
    one = json_output(invoke("predict", paths[0], "--run", run, "--crops", 1, "--top-k", 99, "--json", check=True))
    assert np.allclose(by_image(one, classes)[str(paths[0])], direct(run, paths[:1], crops=1)[0], atol=1e-6)


def test_predict_agrees_with_eval_on_the_val_split_photos(two_runs, imagenette_slice):
    run = two_runs[0]
    invoke("eval", run, check=True)  # eval/val-10crop.npz (nothing to do if already evaluated)
    saved = np.load(run / "eval" / "val-10crop.npz")
    files = [next(imagenette_slice.glob(f"{key}.*")) for key in saved["keys"]]
    summary = json_output(invoke("predict", *files, "--run", run, "--top-k", 99, "--json", check=True))
    got = by_image(summary, saved["classes"].tolist())
    probs = np.stack([got[str(f)] for f in files])
    # The same ten crops and mean image; the images differ by preprocess's quality-95 JPEG round trip.
    assert np.abs(probs - saved["probs"]).max() < 1e-3
    assert (probs.argmax(1) == saved["probs"].argmax(1)).all()


def test_broken_and_non_image_files_are_skipped_by_name(two_runs, imagenet_samples, tmp_path):
    run = two_runs[0]
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(imagenet_samples / PHOTOS[0], folder / "good.JPEG")
    (folder / "broken.jpg").write_bytes((imagenet_samples / PHOTOS[1]).read_bytes()[:2000])  # cut short
    (folder / "letter.png").write_text("not a picture\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("a file named on the command line is tried whatever its name\n")
    result = invoke("predict", folder, notes, "--run", run, "--json")
    assert result.returncode == 0, result.stderr
    summary = json_output(result)
    assert summary["images"] == 4 and summary["predicted"] == 1 and summary["skipped"] == 3
    reasons = {s["image"]: s["reason"] for s in summary["skipped_files"]}
    assert set(reasons) == {str(folder / "broken.jpg"), str(folder / "letter.png"), str(notes)}
    assert "decoded" in reasons[str(folder / "broken.jpg")] and "not an image" in reasons[str(notes)]
    for name in reasons:
        assert f"skipped {name}: " in result.stderr
    assert [r["image"] for r in summary["results"]] == [str(folder / "good.JPEG")]
    # Nothing readable: exit 1, with the summary; nothing found at all: exit 2, naming the culprit.
    nothing = invoke("predict", folder / "broken.jpg", notes, "--run", run, "--json")
    assert nothing.returncode == 1 and json_output(nothing)["skipped"] == 2
    assert invoke("predict", tmp_path / "absent.jpg", "--run", run).returncode == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = invoke("predict", empty, "--run", run)
    assert refused.returncode == 2 and str(empty) in refused.stderr
    listed = predict_with_stdin(f"{tmp_path / 'gone.jpg'}\n{folder / 'good.JPEG'}\n", "--run", run, "--json")
    assert listed.exit_code == 0 and json_output(listed)["skipped_files"][0]["reason"] == "does not exist"
    assert invoke("predict", folder, "--run", tmp_path / "no-run").returncode == 2


def test_csv_jsonl_and_table_formats(two_runs, photos):
    run = two_runs[1]
    rows = list(
        csv.DictReader(
            io.StringIO(invoke("predict", photos, "--run", run, "--format", "csv", "--top-k", 3, check=True).stdout)
        )
    )
    assert len(rows) == 3 and list(rows[0]) == ["image"] + [
        f"{f}_{r}" for r in (1, 2, 3) for f in ("class", "name", "probability")
    ]
    lines = invoke("predict", photos, "--run", run, "--format", "jsonl", "--top-k", 3, check=True).stdout.splitlines()
    objects = [json.loads(line) for line in lines]
    assert [o["image"] for o in objects] == [r["image"] for r in rows]
    for row, obj in zip(rows, objects):
        probs = [float(row[f"probability_{r}"]) for r in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert [t["class"] for t in obj["top"]] == [row[f"class_{r}"] for r in (1, 2, 3)]
        assert np.allclose([t["probability"] for t in obj["top"]], probs, atol=1e-6)
    table = invoke("predict", photos / PHOTOS[0], "--run", run, check=True).stdout
    assert PHOTOS[0] in table and "probability" in table and "1 image classified" in table
    both = invoke("predict", photos, "--run", run, "--format", "csv", "--json")
    assert both.returncode == 2 and "--format csv" in both.stderr


def test_an_ensemble_directory_averages_its_runs(two_runs, photos, tmp_path):
    ensemble = tmp_path / "ens"
    invoke("ensemble", *two_runs, "--out", ensemble, check=True)
    classes = classes_of(two_runs[0])
    members = [
        by_image(json_output(invoke("predict", photos, "--run", r, "--top-k", 99, "--json", check=True)), classes)
        for r in two_runs
    ]
    summary = json_output(invoke("predict", photos, "--run", ensemble, "--top-k", 99, "--json", check=True))
    assert summary["members"] == 2 and len(summary["checkpoints"]) == 2
    for name, probs in by_image(summary, classes).items():
        assert np.allclose(probs, (members[0][name] + members[1][name]) / 2, atol=1e-6), name
    refused = invoke("predict", photos, "--run", ensemble, "--checkpoint", str(two_runs[0] / "checkpoints" / "best.pt"))
    assert refused.returncode == 2 and "--checkpoint" in refused.stderr


@pytest.mark.slow
def test_paths_on_stdin_of_a_real_process_stream_csv(two_runs, photos):
    import subprocess
    import sys

    paths = "".join(f"{p}\n" for p in sorted(photos.rglob("*.JPEG")))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "alexctl",
            "predict",
            "-",
            "--run",
            str(two_runs[0]),
            "--format",
            "csv",
            "--batch-size",
            "1",
        ],
        input=paths,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and lines[0].startswith("image,class_1,name_1,probability_1")
    assert "3 images classified" in proc.stderr
    assert run_cli("predict", "-", "-", "--run", two_runs[0]).returncode == 2


def test_the_table_prints_paths_as_given_and_never_cuts_a_file_name(two_runs, photos, tmp_path, capsys):
    deep = tmp_path / ("imagenette-validation-photographs-" * 3) / "val" / "n01440764"
    deep.mkdir(parents=True)
    shutil.copyfile(photos / PHOTOS[0], deep / "ILSVRC2012_val_00009111.JPEG")
    path = str(deep / "ILSVRC2012_val_00009111.JPEG")
    assert len(path) > 120
    table = invoke("predict", path, "--run", two_runs[1], check=True).stdout  # not a terminal: whole
    assert table.splitlines()[1].startswith(path + " ")
    # On an 80-column terminal the long folder name gives way in its middle; the wnid and file name stay.
    path = "data/" + "imagenette-validation-photographs-" * 3 + "/val/n01440764/ILSVRC2012_val_00009111.JPEG"
    short = cli_predict.fit_path(path, 60)
    assert short == "data/imagen…aphs-/val/n01440764/ILSVRC2012_val_00009111.JPEG"  # 102 -> 12 characters
    assert len(short) == 60 and cli_predict.fit_path(path, len(path)) == path
    assert cli_predict.fit_path("ILSVRC2012_val_00009111.JPEG", 5) == "ILSVRC2012_val_00009111.JPEG"
    folded = cli_predict.fit_path("/" + "/".join(["abcdefghijklmnopqrstuvwxyz"] * 6) + "/photo.JPEG", 20)
    assert folded.endswith("/photo.JPEG") and all(len(part) == 10 for part in folded.split("/")[1:-1])
    for width in (100, 70):  # the shortened path fits in 100 columns; in 70 it wraps, whole
        printer = cli_predict._Table([type("F", (), {"name": path})], ["tench, Tinca tinca"], width=width)
        printer.write([{"image": path, "top": [{"name": "tench, Tinca tinca", "probability": 0.5}]}])
        printed = capsys.readouterr().out.splitlines()[1:]
        assert all(len(line) <= width for line in printed) and "50.00%" in printed[0]
        shown = "".join(line[: printer.image_width].strip() for line in printed)
        assert shown == cli_predict.fit_path(path, printer.image_width) and shown.endswith("00009111.JPEG")
        assert len(printed) == (1 if width == 100 else 2)  # 70 - 37 = 33 image columns: two lines
