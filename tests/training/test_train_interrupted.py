"""`alexctl train` killed and stopped on real photographs, on the CPU: exact resume after SIGKILL mid-epoch,
and under torchrun a signal to one rank stops both, the mid-epoch resume matching an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alexctl import rundir

import zygote
from helpers import TINY, freeze_at, invoke, json_output, start_cli


@pytest.fixture(scope="module")
def data(slice_data) -> Path:
    return slice_data


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_sigkill_mid_epoch_then_rerun_ends_bit_identical(data, tmp_path):
    args = [
        "--data",
        data,
        "--epochs",
        "2",
        "--deterministic",
        "--workers",
        "0",
        "--checkpoint-steps",
        "2",
        *TINY,
        "--batch-size",
        "8",
    ]
    reference = tmp_path / "reference"
    invoke("train", reference, *args, check=True)  # in this process: only the killed run needs one of its own

    run = tmp_path / "killed"
    proc = start_cli("train", run, *args)
    last = run / "checkpoints" / "last.pt"

    stamp = [0]

    def mid_epoch_two():  # a save in the middle of epoch 2 (last.pt is replaced atomically: safe to read)
        if not last.exists() or last.stat().st_mtime_ns == stamp[0]:
            return None
        stamp[0] = last.stat().st_mtime_ns
        saved = torch.load(last, weights_only=False)
        return saved if saved["epoch"] == 1 and saved["progress"]["current"]["step"] > 0 else None

    killed_at = freeze_at(proc, mid_epoch_two)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed_at["epoch"] == 1 and 0 < killed_at["progress"]["current"]["step"] < 14, "killed mid-epoch"
    assert not (run / "run.json").exists()

    resumed = json_output(invoke("train", run, *args, "--json", check=True))
    assert resumed["resumed_from"]["epoch"] == 1 and resumed["resumed_from"]["step"] > 0
    a, b = weights(reference / "checkpoints" / "last.pt"), weights(last)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    strip = ("images_per_second", "train_seconds", "val_seconds", "time")
    rows = [
        [
            {k: v for k, v in json.loads(line).items() if k not in strip}
            for line in (r / "metrics.jsonl").read_text().splitlines()
        ]
        for r in (reference, run)
    ]
    assert rows[0] == rows[1]


def _torchrun(run: Path, data: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "alexctl",
        "train",
        str(run),
        "--data",
        str(data),
        "--epochs",
        "2",
        "--workers",
        "0",
        *TINY,
        "--batch-size",
        "8",
        "--checkpoint-steps",
        "2",
        *extra,
    ]


def _worker_of_rank(parent: int, rank: int, deadline: float) -> int:
    """The pid of torchrun's worker process with RANK=rank."""
    while time.time() < deadline:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        for pid in children:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"no worker of rank {rank} under torchrun")


@pytest.mark.slow
def test_ddp_a_signal_to_one_rank_stops_both_and_the_mid_epoch_resume_matches_an_uninterrupted_run(data, tmp_path):
    """Issue 11's three DDP faults: the ranks agree to stop (SIGTERM reaches rank 1 only, rank 0 stops with it
    at the same step instead of waiting in an all-reduce), every rank saves on the same schedule, and the
    resumed epoch's running sums are those of all ranks: the rerun ends with the same weights and metrics as
    a run that was never stopped."""
    # torchrun starts its ranks with PYTHON_EXEC: the zygote's shim forks them (torchrun itself starts afresh)
    env = {**os.environ, "ALEXCTL_PROGRESS_SECONDS": "1000", "OMP_NUM_THREADS": "1", "PYTHON_EXEC": zygote.python()}
    whole = tmp_path / "whole"
    subprocess.run(_torchrun(whole, data), capture_output=True, text=True, timeout=600, env=env, check=True)

    run = tmp_path / "stopped"
    proc = subprocess.Popen(_torchrun(run, data), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    rank1 = _worker_of_rank(proc.pid, 1, deadline)
    while time.time() < deadline and not (run / "checkpoints" / "last.pt").exists():
        time.sleep(0.02)
    os.kill(rank1, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "stopped by SIGTERM" in stderr and "stopped by a signal on another rank" in stderr, stderr[-3000:]
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    stopped_at = (saved["progress"]["epoch"], saved["progress"]["current"]["step"])
    assert stopped_at[1] > 0, f"the stop should fall mid-epoch, not at {stopped_at}"

    again = subprocess.run(_torchrun(run, data, "--json"), capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json_output(again)
    assert summary["epochs_completed"] == 2 and summary["resumed_from"] == {
        "epoch": stopped_at[0],
        "step": stopped_at[1],
    }
    rows, reference = (rundir.read_jsonl(d / "metrics.jsonl") for d in (run, whole))
    assert [r["samples"] for r in rows] == [110] * 2  # the trainer also checks each sample was seen exactly once
    assert json.loads((run / "config.json").read_text())["runtime"]["world_size"] == 2
    for row, ref in zip(rows, reference):  # the resumed epoch's sums hold both ranks' shares
        assert row["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-6)
        assert row["train_top1_error"] == ref["train_top1_error"] and row["val_top1_error"] == ref["val_top1_error"]
    final, uninterrupted = weights(run / "checkpoints" / "last.pt"), weights(whole / "checkpoints" / "last.pt")
    assert all(torch.equal(final[k], uninterrupted[k]) for k in uninterrupted)
    # TensorBoard's event files come from rank 0 alone: one per torchrun, not one per rank.
    assert [len(list((d / "tensorboard").iterdir())) for d in (whole, run)] == [1, 2]
