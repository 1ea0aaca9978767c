"""`alexctl report`: the figures exist and show what the run files hold (the conv1 kernels of the
checkpoint, predictions matched by key, neighbours by true Euclidean distance), the page links exactly
them and tabulates the runs' real numbers, and bad input is refused by name."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexctl import device
from alexctl.checkpoint import load_weights
from alexctl.config import RuntimeOptions
from alexctl.data.loader import load_split
from alexctl.nets.build import model_from_checkpoint
from alexctl.nets.kernel_grid import kernel_grid
from alexctl.reporting import figures, report

from helpers import invoke, json_output

CPU = device.resolve(RuntimeOptions(devices="cpu", workers=0))


def _run(*args):
    """`alexctl report ARGS`; the result has exit_code, stdout and stderr."""
    result = invoke("report", *args)
    result.exit_code, result.output = result.returncode, result.stdout + result.stderr
    return result


def _copy_run(run: Path, dest: Path, *, evals: bool = True) -> Path:
    ignore = [".lock"] + ([] if evals else ["eval"])
    return Path(shutil.copytree(run, dest, ignore=shutil.ignore_patterns(*ignore)))


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _table(page: str) -> dict[str, list[str]]:
    """report.md's runs table: run name -> its cells."""
    lines = [ln for ln in page.splitlines() if ln.startswith("| ") and not ln.startswith("| run ")]
    return {cells[0]: cells for cells in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines)}


@pytest.fixture(scope="module")
def ensemble_dir(two_runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report-ens") / "ens"
    invoke("ensemble", *two_runs, "--out", out, check=True)  # evaluates the members first if they need it
    return out


# ---------------------------------------------------------------- the whole command


def test_report_of_two_runs_and_an_ensemble(two_runs, ensemble_dir, slice_data, tmp_path):
    out = tmp_path / "report"
    result = _run(
        *two_runs, ensemble_dir, "--out", out, "--images", "5", "--neighbours", "2", "--max-train", "50", "--json"
    )
    assert result.exit_code == 0, result.output
    summary = json_output(result)
    assert summary["out"] == str(out) and summary["report"] == str(out / "report.md") and summary["runs"] == 3
    expected = ["curves.png", "conv1-seed0.png", "conv1-seed1.png", "top5.png", "neighbours.png"]
    assert [Path(f).name for f in summary["figures"]] == expected
    assert sorted(p.name for p in out.iterdir()) == sorted(expected + ["report.md"])  # no temporaries, no .lock
    for name in expected:
        with Image.open(out / name) as im:
            im.load()
            assert im.format == "PNG" and im.width >= 300 and im.height >= 100, (name, im.size)
    page = (out / "report.md").read_text()
    assert re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page) == expected

    table = _table(page)
    assert list(table) == ["seed0", "seed1", "ens"]
    for run in two_runs:
        rows, cells = _rows(run), table[run.name]
        planned = json.loads((run / "config.json").read_text())["train"]["epochs"]
        best = min(rows, key=lambda r: r["val_top1_error"])
        ten = json.loads((run / "eval" / "val-10crop.json").read_text())
        one = run / "eval" / "val-1crop.json"
        one_crop = (
            [f"{json.loads(one.read_text())[k]:.2%}" for k in ("top1_error", "top5_error")]
            if one.exists()
            else ["—", "—"]
        )
        assert cells[2:] == [
            "train",
            f"{len(rows)}/{planned}",
            f"{best['val_top1_error']:.2%}",
            f"{best['val_top5_error']:.2%}",
            *one_crop,
            f"{ten['top1_error']:.2%}",
            f"{ten['top5_error']:.2%}",
            f"{np.median([r['images_per_second'] for r in rows]):.1f}",
        ]
    ens = json.loads((ensemble_dir / "eval" / "val-10crop.json").read_text())
    assert table["ens"][2:] == [
        "ensemble of 2",
        "—",
        "—",
        "—",
        "—",
        "—",
        f"{ens['top1_error']:.2%}",
        f"{ens['top5_error']:.2%}",
        "—",
    ]
    assert (
        f"`{two_runs[0].resolve()}` ({ens['member_top1_errors'][0]:.2%} / {ens['member_top5_errors'][0]:.2%})" in page
    )
    assert "10-crop predictions of seed0" in page  # the first run with predictions
    assert "the 6 of 50 training images nearest to each in the last hidden layer (fc7" in page
    assert f"Data directory `{slice_data.resolve()}`, split `val`: 10 images, 10 classes." in page
    assert "searched 50 of the 110 training images" in page

    # Re-run into the same folder with the ensemble alone: what it cannot draw is skipped, said, and removed;
    # so is what a killed report left.
    (out / ".top5.png.tmp.12345").write_bytes(b"half a png")
    alone = json_output(_run(ensemble_dir, "--out", out, "--images", "3", "--json"))
    assert [Path(f).name for f in alone["figures"]] == ["top5.png"] and alone["runs"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "top5.png"]
    page = (out / "report.md").read_text()
    assert re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page) == ["top5.png"]
    assert "No training curves" in page and "No conv1 kernels and no nearest neighbours" in page
    assert "10-crop predictions of ens" in page
    assert f"`{slice_data.resolve()}`" in page  # found through the ensemble's members


def test_human_output_names_the_page(two_runs, tmp_path):
    result = _run(two_runs[0], "--out", tmp_path / "r", "--images", "0", "--neighbours", "0")
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "r" / "report.md") in result.stdout and "conv1-seed0.png" in result.stdout
    assert "## Data" not in (tmp_path / "r" / "report.md").read_text()  # no image figure, no data read


def test_bad_inputs_exit_2_naming_the_culprit(two_runs, tmp_path):
    (tmp_path / "notarun").mkdir()
    (tmp_path / "empty-data").mkdir()
    out = tmp_path / "out"
    cases = [
        ((tmp_path / "notarun", "--out", out), [str(tmp_path / "notarun"), "neither a training run"]),
        ((tmp_path / "missing", "--out", out), [str(tmp_path / "missing"), "does not exist"]),
        ((two_runs[0], two_runs[0], "--out", out), [str(two_runs[0]), "twice"]),
        ((two_runs[0], "--out", two_runs[0]), ["--out", str(two_runs[0])]),
        ((two_runs[0], "--out", out, "--data", tmp_path / "empty-data"), [str(tmp_path / "empty-data")]),
        ((two_runs[0], "--out", out, "--split", "test"), ["test"]),
    ]
    for args, culprits in cases:
        result = _run(*args)
        assert result.exit_code == 2, (args, result.output)
        line = result.stderr.strip()
        assert line.startswith("alexctl: error: ") and "\n" not in line, line
        assert all(c in line for c in culprits), (culprits, line)
    assert not out.exists()
    assert not (two_runs[0] / "report.md").exists()


# ---------------------------------------------------------------- conv1 kernels (Figure 3)


def _mark() -> torch.Tensor:
    """(3, 11, 11) in {0, 1}, the same under no flip or transpose: red left band, green bottom band, blue checks."""
    i, j = torch.meshgrid(torch.arange(11), torch.arange(11), indexing="ij")
    return torch.stack([(j < 4), (i >= 7), (i + j) % 2 == 1]).float()


def _find(image: np.ndarray, pattern: np.ndarray) -> list[tuple[int, int, int]]:
    """Every (zoom, y, x) where `pattern` (k, k, 3) enlarged `zoom` times by nearest lies exactly in `image`."""
    hits = []
    for zoom in range(1, 16):
        big = pattern.repeat(zoom, 0).repeat(zoom, 1)
        h, w = big.shape[:2]
        ys, xs = np.nonzero((image[: image.shape[0] - h + 1, : image.shape[1] - w + 1] == big[0, 0]).all(-1))
        hits += [(zoom, y, x) for y, x in zip(ys, xs) if np.array_equal(image[y : y + h, x : x + w], big)]
    return hits


def test_conv1_figure_shows_the_checkpoints_kernels_in_column_blocks(two_runs, tmp_path):
    run = _copy_run(two_runs[0], tmp_path / "marked", evals=False)
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    weight = ckpt["model"]["conv1.weight"]  # (12, 3, 11, 11) at width 0.125: six kernels per column
    assert weight.shape == (12, 3, 11, 11)
    # Kernel 7 is the second of column 2. Tiny and offset: only a per-kernel min..max brings it back to 0/1.
    weight[7] = _mark() * 1e-3 + 0.3
    torch.save(ckpt, run / "checkpoints" / "best.pt")
    assert _run(run, "--out", tmp_path / "r", "--images", "0", "--neighbours", "0").exit_code == 0
    image = np.asarray(Image.open(tmp_path / "r" / "conv1-marked.png").convert("RGB"))
    pattern = (_mark().permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    hits = _find(image, pattern)
    assert len(hits) == 1, hits
    zoom, y, x = hits[0]
    assert y > image.shape[0] / 2  # the lower block: column 2
    cell = image.shape[1] / 6  # six kernels in a row
    assert int(x // cell) == 1 and 40 <= 11 * zoom <= 70  # second in its row, enlarged to be visible


def test_kernel_grid_for_any_width_one_column_and_the_cifar_net():
    torch.manual_seed(0)
    cifar = torch.randn(64, 3, 5, 5)
    cifar[3] = 0.25  # a constant kernel has no pattern: mid-grey
    grid = kernel_grid(cifar, columns=1, padding=2)
    zoom = ((grid.shape[2] - 2) / 16 - 2) / 5  # sixteen kernels a row: W = 16 (5 zoom + 2) + 2
    assert zoom == int(zoom) and 40 <= 5 * zoom <= 70
    cell = int(5 * zoom + 2)
    assert grid.shape == (3, 4 * cell + 2, 16 * cell + 2)  # one block of four rows
    assert grid.min() == 0 and grid.max() == 1
    k3 = grid[:, 2 : 2 + cell - 2, 2 + 3 * cell : 2 + 4 * cell - 2]
    assert torch.all(k3 == 0.5)
    first = grid[:, 2 : 2 + cell - 2, 2:cell]  # kernel 0, per-kernel min..max, enlarged by nearest
    expected = (cifar[0] - cifar[0].min()) / (cifar[0].max() - cifar[0].min())
    assert torch.allclose(first[:, :: int(zoom), :: int(zoom)], expected, atol=1e-6)
    paper = kernel_grid(torch.randn(96, 3, 11, 11), columns=2)
    one_block = kernel_grid(torch.randn(48, 3, 11, 11), columns=1)
    assert paper.shape[2] == one_block.shape[2] and paper.shape[1] > 2 * one_block.shape[1]  # two blocks and a gap


# ---------------------------------------------------------------- nearest neighbours (Figure 4, right)


def test_nearest_neighbours_are_the_euclidean_nearest_and_an_image_is_its_own(two_runs, slice_data):
    ckpt = load_weights(two_runs[0] / "checkpoints" / "best.pt")
    net = model_from_checkpoint(ckpt)
    train, val = load_split(slice_data, "train"), load_split(slice_data, "val")
    subset = report.spread(len(train), 40)
    assert len(subset) == 40 and subset[0] == 0 and subset[-1] == len(train) - 1
    ((indices, features),) = list(report.fc7_features(net, train, ckpt["mean_image"], subset, CPU))
    assert np.array_equal(indices, subset) and features.shape == (40, net.hidden_units)
    batches = [(indices[i : i + 7], features[i : i + 7]) for i in range(0, 40, 7)]  # the top-k merges across batches
    found, distances = report.nearest_neighbours(features[[3, 20]], batches, 6)
    assert found[:, 0].tolist() == [subset[3], subset[20]] and distances[:, 0].tolist() == [0.0, 0.0]
    ((_, query),) = list(report.fc7_features(net, val, ckpt["mean_image"], np.arange(4), CPU))
    found, distances = report.nearest_neighbours(query, batches, 6)
    brute = np.linalg.norm(query.double().numpy()[:, None] - features.double().numpy()[None], axis=-1)
    assert np.array_equal(found, subset[np.argsort(brute, axis=1, kind="stable")[:, :6]])
    assert np.allclose(distances, np.sort(brute, axis=1)[:, :6], rtol=1e-12)
    assert (np.diff(distances, axis=1) >= 0).all() and (distances > 0).all()


# ---------------------------------------------------------------- top-5 predictions (Figure 4, left)


def test_saved_predictions_are_matched_by_key_not_by_position(two_runs, ensemble_dir, slice_data, tmp_path):
    run = _copy_run(two_runs[1], tmp_path / "shuffled")
    saved = dict(np.load(run / "eval" / "val-10crop.npz"))
    np.savez(
        run / "eval" / "val-10crop.npz",
        **{k: v[::-1] if k in ("keys", "labels", "probs") else v for k, v in saved.items()},
    )
    data, chosen = load_split(slice_data, "val"), np.array([0, 4, 9])
    runs = report.load_runs([ensemble_dir, run], "val")
    probs, source = report._predictions(runs[1:], "val", data, chosen, None, CPU)
    row = {k: i for i, k in enumerate(saved["keys"].tolist())}
    assert np.array_equal(probs, saved["probs"][[row[k] for k in data.keys[chosen].tolist()]])
    assert "10-crop predictions of shuffled" in source
    probs, source = report._predictions(runs, "val", data, chosen, None, CPU)  # the ensemble comes first
    assert np.array_equal(probs, np.load(ensemble_dir / "eval" / "val-10crop.npz")["probs"][chosen])


def test_without_eval_files_the_first_checkpoint_predicts_the_center_crop(two_runs, tmp_path):
    run = _copy_run(two_runs[0], tmp_path / "fresh", evals=False)
    result = _run(run, "--out", tmp_path / "r", "--images", "4", "--neighbours", "0", "--json")
    assert result.exit_code == 0, result.output
    assert [Path(f).name for f in json_output(result)["figures"]] == ["curves.png", "conv1-fresh.png", "top5.png"]
    assert "center-crop predictions computed for this report" in (tmp_path / "r" / "report.md").read_text()
    # The same numbers as `alexctl eval --crops 1` writes, for the images the figure shows.
    data = load_split(json.loads((run / "config.json").read_text())["data"]["dir"], "val")
    chosen = report.spread(len(data), 4)
    first = report.load_runs([run], "val")[0]
    probs, _ = report._predictions(
        [first], "val", data, chosen, (first, load_weights(run / "checkpoints" / "best.pt")), CPU
    )
    invoke("eval", run, "--crops", "1", check=True)
    assert np.allclose(probs, np.load(run / "eval" / "val-1crop.npz")["probs"][chosen], atol=1e-6)


# ---------------------------------------------------------------- training curves


def test_lr_cuts_and_their_marks_on_the_curves():
    rows = [
        {
            "epoch": e,
            "lr": lr,
            "lr_reduced_after": e == 2,
            "train_loss": 1.0,
            "val_loss": 1.0,
            "train_top1_error": 0.5,
            "val_top1_error": 0.5,
            "val_top5_error": 0.2,
        }
        for e, lr in [(1, 0.01), (2, 0.01), (3, 0.001), (4, 0.001), (5, 0.0001)]
    ]
    rows[3]["lr_reduced_after"] = False  # epoch 4 -> 5 changed lr without the flag (an older log): still a cut
    assert figures.lr_cuts(rows) == [2, 4]
    assert figures.lr_cuts(rows[:2]) == [2] and figures.lr_cuts(rows[:1]) == []
    fig = figures.plot_curves([report.Run(Path("a"), "train", rows, name="a")])
    for ax in fig.axes:
        marks = sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--")
        assert marks == [2.5, 4.5]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["val", "train", "lr / 10"]
    # A run whose rate never changed has no dashed line, and so no legend entry for one.
    constant = figures.plot_curves(
        [report.Run(Path("b"), "train", [{**r, "lr": 0.01, "lr_reduced_after": False} for r in rows], name="b")]
    )
    assert not [line for ax in constant.axes for line in ax.lines if line.get_linestyle() == "--"]
    assert [t.get_text() for t in constant.axes[0].get_legend().get_texts()] == ["val", "train"]
