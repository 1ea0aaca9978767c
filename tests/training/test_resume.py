"""alexctl/resume.py: what a run directory holds between invocations, and how a resume restores it: the
progress in last.pt, metrics.jsonl in agreement with it after any crash, the config.json checks."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from alexctl import rundir
from alexctl.checkpoint import load_resume
from alexctl.config import ModelConfig, RuntimeOptions, TrainConfig, to_dict
from alexctl.errors import UserError
from alexctl.nets.build import runtime_model
from alexctl.training.resume import EpochSums, Progress, check_run_dir, prepare_run_dir, resume, saved_state

from helpers import invoke, json_output

TINY = ["--width", "0.125", "--batch-size", "16", "--checkpoint-minutes", "0"]


def test_progress_round_trips_through_a_checkpoint_dict():
    state = Progress(3, 0.4, 0.1, 2, [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}], EpochSums(5, 1.5, 7, 80, 2.0))
    again = Progress.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state


def _objects(run_dir):
    from alexctl import device
    from alexctl.schedule import parse_schedule
    from alexctl.training.optim import build_optimizer

    runtime = device.resolve(RuntimeOptions(devices="cpu", workers=0))
    net = runtime_model(ModelConfig(width=0.125), 10, runtime)
    return rundir.RunDir(run_dir), net, build_optimizer(net), parse_schedule("plateau", 0.01), runtime


def _resume(run_dir):
    run, net, optimizer, schedule, runtime = _objects(run_dir)
    return resume(run, saved_state(run), net, optimizer, schedule, runtime)


def test_metrics_agree_with_last_pt_after_a_crash_anywhere(slice_data, tmp_path):
    run = tmp_path / "run"
    invoke("train", run, "--data", slice_data, "--epochs", "2", *TINY, check=True)
    rows = rundir.read_jsonl(run / "metrics.jsonl")
    # A crash after last.pt but before the row was appended: the resume restores the row from last.pt.
    rundir.rewrite_jsonl(run / "metrics.jsonl", rows[:1])
    state = _resume(run)
    assert state.epoch == 2 and rundir.read_jsonl(run / "metrics.jsonl") == rows
    # Rows beyond what last.pt covers (a crash before last.pt was written): dropped, the epoch is redone.
    rundir.rewrite_jsonl(run / "metrics.jsonl", rows + [{**rows[-1], "epoch": 3}])
    _resume(run)
    assert rundir.read_jsonl(run / "metrics.jsonl") == rows
    # No last.pt at all (killed in epoch 1 before any save): rows left by that start are dropped.
    fresh = tmp_path / "fresh"
    shutil.copytree(run, fresh, ignore=shutil.ignore_patterns("checkpoints", ".lock"))
    assert _resume(fresh).epoch == 0
    assert rundir.read_jsonl(fresh / "metrics.jsonl") == []


def test_a_format_1_checkpoint_still_resumes(slice_data, tmp_path):
    run = tmp_path / "run"
    invoke("train", run, "--data", slice_data, "--epochs", "1", *TINY, check=True)
    ckpt = load_resume(run / "checkpoints" / "last.pt")
    progress = ckpt.pop("progress")  # what alexctl 0.1.0 wrote: separate keys, rows only in metrics.jsonl
    old = {
        **ckpt,
        "format": 1,
        "best": {"top1": progress["best_top1"], "top5": progress["best_top5"], "epoch": progress["best_epoch"]},
        "current": progress["current"],
        "metrics_rows": 1,
    }
    rundir.save_torch(run / "checkpoints" / "last.pt", old)
    state = _resume(run)
    assert state.epoch == 1 and state.rows == rundir.read_jsonl(run / "metrics.jsonl") and len(state.rows) == 1
    done = json_output(invoke("train", run, "--epochs", "2", "--json", check=True))
    assert done["epochs_completed"] == 2


def test_config_json_keeps_a_run_to_one_thing(slice_data, tmp_path):
    run = tmp_path / "run"
    invoke("train", run, "--data", slice_data, "--epochs", "2", *TINY, check=True)
    saved = json.loads((run / "config.json").read_text())
    record = {**saved, "train": to_dict(TrainConfig(**{**saved["train"], "epochs": 1}))}
    with pytest.raises(UserError, match="has already trained 2 epochs; --epochs 1"):
        check_run_dir(rundir.RunDir(run), record)
    further = {**saved, "train": {**saved["train"], "epochs": 5}, "command": ["alexctl", "train", "..."]}
    prepare_run_dir(rundir.RunDir(run), further)
    after = json.loads((run / "config.json").read_text())
    assert after["train"]["epochs"] == 5 and after["epochs_changed"][0]["from"] == 2
    assert after["epochs_changed"][0]["to"] == 5 and after["created"] == saved["created"]
    assert saved["runtime"]["torch"] == torch.__version__ and "device_name" in saved["runtime"]
