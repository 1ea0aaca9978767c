"""alexctl/training/tensorboard.py: the event files a run writes, read back with TensorBoard's own reader,
hold exactly metrics.jsonl's values and last.pt's kernels, once per step, through a mid-epoch stop, a resume
and a resume from an older checkpoint (whose later points must be purged, not doubled)."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from alexctl.data.loader import epoch_batches
from alexctl.nets.kernel_grid import kernel_grid
from alexctl.stop import StopSignals
from alexctl.training import tensorboard
from alexctl.training.resume import Progress

from helpers import invoke

# 110 training images in batches of 16: 7 steps an epoch.
ARGS = ["--epochs", "3", "--width", "0.125", "--batch-size", "16", "--checkpoint-minutes", "0", "--deterministic"]
STEPS = 7


def board(run: Path) -> EventAccumulator:
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def check_curves(run: Path) -> None:
    """Every tag's points: one per step, the epoch tags equal to metrics.jsonl, the kernels those of last.pt."""
    events = board(run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for tag, key in tensorboard.EPOCH_TAGS.items():
        points = events.Scalars(tag)
        assert [p.step for p in points] == [7, 14, 21], tag  # once each: nothing doubled by the resumes
        np.testing.assert_allclose([p.value for p in points], [r[key] for r in rows], rtol=1e-6, err_msg=tag)
    for tag in tensorboard.STEP_TAGS:  # every 2nd step of each epoch (STEP_EVERY patched to 2)
        assert [p.step for p in events.Scalars(tag)] == [2, 4, 6, 9, 11, 13, 16, 18, 20], tag
    so_far = {p.step: p.value for p in events.Scalars("loss/train_epoch_so_far")}
    assert 0 < so_far[20] < 10 and so_far[20] != so_far[18]
    pictures = events.Images(tensorboard.KERNELS_TAG)
    assert [p.step for p in pictures] == [0, 7, 14, 21]  # the initial weights, epoch 1, every 2nd, the last
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]["conv1.weight"]
    drawn = np.asarray(Image.open(io.BytesIO(pictures[-1].encoded_image_string)).convert("RGB"), np.float32)
    expected = kernel_grid(last, columns=2).permute(1, 2, 0).numpy() * 255
    assert drawn.shape == expected.shape and np.abs(drawn - expected).max() <= 1  # uint8, truncated
    first = np.asarray(Image.open(io.BytesIO(pictures[0].encoded_image_string)).convert("RGB"), np.float32)
    assert np.abs(first - drawn).max() > 10  # the kernels trained: the pictures differ


def test_curves_continue_through_a_stop_and_resumes_without_duplicates(slice_data, tmp_path, monkeypatch):
    monkeypatch.setattr(tensorboard, "STEP_EVERY", 2)
    monkeypatch.setattr(tensorboard, "KERNELS_EVERY", 2)
    run = tmp_path / "runs" / "a"
    # A stop asked for at global step 10 (epoch 2, step 3): last.pt is saved there and training exits 1.
    asked = iter(range(1000))
    monkeypatch.setattr(StopSignals, "requested", property(lambda self: next(asked) >= 9))
    stopped = invoke("train", run, "--data", slice_data, *ARGS)
    assert stopped.returncode == 1 and "stopped by" in stopped.stderr
    assert {p.step for p in board(run).Scalars("loss/train")} == {7}
    monkeypatch.undo()
    monkeypatch.setattr(tensorboard, "STEP_EVERY", 2)
    monkeypatch.setattr(tensorboard, "KERNELS_EVERY", 2)
    older = shutil.copytree(run / "checkpoints", tmp_path / "older")  # last.pt at epoch 2 step 3

    resumed = invoke("train", run, *ARGS, check=True)
    assert resumed.stderr.splitlines()[0].startswith(f"alexctl: {run}: resuming at epoch 2 from step 3 of 3, 110 ")
    check_curves(run)
    assert len(list((run / "tensorboard").iterdir())) == 2  # one event file per process
    # A crash that lost every checkpoint after step 10 (e.g. a restore from a backup): the points the first
    # resume wrote after step 10 are purged by the next resume's writer, and written again.
    shutil.rmtree(run / "checkpoints")
    shutil.copytree(older, run / "checkpoints")
    resumed = invoke("train", run, *ARGS, "--json", check=True)
    assert json.loads(resumed.stdout)["resumed_from"] == {"epoch": 1, "step": 3}
    check_curves(run)
    # The finished run started again writes nothing (no empty event file).
    invoke("train", run, *ARGS, check=True)
    assert len(list((run / "tensorboard").iterdir())) == 3


def test_without_tensorboard_training_says_so_once_and_other_ranks_write_nothing(tmp_path, monkeypatch, capsys):
    net = torch.nn.Module()
    net.conv1 = torch.nn.Conv2d(3, 4, 3)
    args = {"steps_per_epoch": 3, "columns": 1}
    row = {"epoch": 1, **{key: 0.5 for key in tensorboard.EPOCH_TAGS.values()}}
    with tensorboard.Board(tmp_path / "rank1", enabled=False, **args) as quiet:  # DDP: only rank 0 writes
        quiet.start(Progress(), net)
        quiet.end_of_epoch(row, final=True)
    assert not (tmp_path / "rank1").exists() and capsys.readouterr().err == ""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with tensorboard.Board(tmp_path / "absent", enabled=True, **args) as absent:
        absent.start(Progress(), net)
        absent.watch(lambda step, flush: None, 1)(3, lambda: None)
        absent.end_of_epoch(row, final=True)
    assert capsys.readouterr().err == f"alexctl: {tensorboard.MISSING}\n"  # once, however much is written
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize(("images", "batch", "steps"), [(110, 16, 7), (112, 16, 7), (1, 128, 1)])
def test_steps_per_epoch_is_the_number_of_batches(images, batch, steps):
    assert tensorboard.steps_per_epoch(images, batch) == steps == len(epoch_batches(images, batch, seed=0, epoch=1))
