"""The bad-input corpus, part 3: faults of issue 19 -- settings that are not finite, --config files of another
shape, a loss that diverges, a full disk, a whole-split and a --part preprocess together, predictions made by an
older checkpoint, a run directory whose name holds a newline, SIGTERM to predict and export, loader workers out
of memory, and torchrun ranks that disagree or lose a peer. Every case passes through badinput.outcome, as in
parts 1 and 2.

A full disk is a real one where this process may mount a small tmpfs (root, as on cpu-2); elsewhere the same
writes fail with ENOSPC past a byte budget, raised from rundir's one write path (`small_disk`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from alexctl import rundir
from alexctl.data import shards
from alexctl.errors import WorkFailed

import zygote
from badinput import (
    ALEXCTL,
    copy_tree,
    environment,
    finish,
    outcome,
    stage_state,
    start,
    status_shows,
    wait_for,
)
from helpers import invoke

TINY = ("--epochs", "1", "--width", "0.125", "--batch-size", "8", "--checkpoint-minutes", "0")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _temporaries(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob(f"*{rundir.TMP_MARK}*")]


# ---------------------------------------------------------------- settings that are not finite (issue 19.5)

NOT_FINITE = [  # (case, command and arguments from (tmp, data), words)
    ("weight-decay-nan", lambda t, d: ["train", t / "run", "--data", d, "--weight-decay", "nan"], ["--weight-decay"]),
    ("lr-inf", lambda t, d: ["train", t / "run", "--data", d, "--lr", "inf"], ["--lr"]),
    ("momentum-nan", lambda t, d: ["train", t / "run", "--data", d, "--momentum", "nan"], ["--momentum"]),
    ("dropout-nan", lambda t, d: ["train", t / "run", "--data", d, "--dropout", "nan"], ["--dropout"]),
    ("checkpoint-minutes-nan", lambda t, d: ["train", t / "run", "--data", d, "--checkpoint-minutes", "nan"], []),
    (
        "config-lighting-std-inf",
        lambda t, d: ["train", t / "run", "--data", d, "--config", _write(t / "c.toml", "lighting_std = inf\n")],
        ["--lighting-std"],
    ),
    ("holdout-nan", lambda t, d: ["preprocess", t / "src", t / "out", "--holdout", "nan"], ["--holdout"]),
]


@pytest.mark.parametrize("case,arguments,words", NOT_FINITE, ids=[c[0] for c in NOT_FINITE])
def test_a_setting_that_is_not_a_finite_number_is_refused(case, arguments, words, tmp_path, slice_data):
    (tmp_path / "src" / "a").mkdir(parents=True)
    args = arguments(tmp_path, slice_data)
    result = invoke(*args[:2], *(TINY if args[0] == "train" else ()), *args[2:])  # the case's options last: they count
    words = words or ["--checkpoint-minutes"]
    outcome(result, 2, *words, "not a finite number", case=f"{args[0]}/{case}", command=args[0])
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- --config files of another shape (issue 19.13)

CONFIG_FILES = [  # (case, file name, text, words)
    ("json-nested-deep", "c.json", '{"lr": ' + "[" * 5000 + "]" * 5000 + "}", ["c.json", "too deep"]),
    ("toml-nested-deep", "c.toml", "lr = " + "[" * 5000 + "]" * 5000 + "\n", ["c.toml", "too deep"]),
    ("run-config-model-a-list", "c.json", '{"kind": "train-config", "model": [1]}', ["c.json", "'model'"]),
    ("run-config-data-a-string", "c.json", '{"kind": "train-config", "data": "x"}', ["c.json", "'data'"]),
    ("data-a-number", "c.toml", "data = 5\n", ["c.toml", "data"]),
    ("table-in-a-table", "c.toml", "[model]\n[model.lrn]\nx = 1\n", ["c.toml", "model.lrn"]),
]


@pytest.mark.parametrize("case,name,text,words", CONFIG_FILES, ids=[c[0] for c in CONFIG_FILES])
def test_a_config_file_of_another_shape_is_refused_naming_the_file_and_key(case, name, text, words, tmp_path):
    config = _write(tmp_path / name, text)
    result = invoke("train", tmp_path / "run", "--config", config)
    outcome(result, 2, *words, case=f"train/config-{case}", command="train")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- a loss that diverges (issue 19.5)


def test_a_loss_that_turns_nan_stops_training_recorded_and_nothing_of_it_saved(tmp_path, slice_data):
    run = tmp_path / "run"
    result = invoke("train", run, "--data", slice_data, *TINY, "--subset", "16", "--lr", "1e20")
    visible = status_shows(run, "train")
    outcome(result, 1, "training loss became nan", "--lr", case="train/loss-diverges", command="train", visible=visible)
    assert not (run / "run.json").exists() and not (run / "checkpoints" / "best.pt").exists()
    assert rundir.read_jsonl(run / "metrics.jsonl") == []


# ---------------------------------------------------------------- a full disk (issue 19.11)


class SmallDisk:
    """A folder on a filesystem with `leave(n)` bytes free: a tmpfs, or a byte budget on rundir's writes."""

    def __init__(self, root: Path, mounted: bool, monkeypatch):
        self.root, self.mounted, self.monkeypatch = root, mounted, monkeypatch

    def leave(self, free: int) -> None:
        if self.mounted:
            filler = self.root / "filler"
            stat = os.statvfs(self.root)
            with open(filler, "wb") as f:
                f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - free))
            return
        budget = [free]
        real_open = open

        def budgeted_open(path, mode="r", *args, **kwargs):  # rundir's writes, as a full disk fails them
            f = real_open(path, mode, *args, **kwargs)
            if "w" not in mode or self.root not in Path(path).parents:
                return f
            real_write = f.write

            def write(data):
                if len(data) > budget[0]:
                    real_write(data[: budget[0]])
                    budget[0] = 0
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                budget[0] -= len(data)
                return real_write(data)

            f.write = write
            return f

        self.monkeypatch.setattr(rundir, "open", budgeted_open, raising=False)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    root = tmp_path / "disk"
    root.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(root)], capture_output=True
        ).returncode
        == 0
    )
    yield SmallDisk(root, mounted, monkeypatch)
    if mounted:
        subprocess.run(["umount", "-l", str(root)], check=True)


def _full(result, disk: SmallDisk, named: Path, directory: Path, stage: str, case: str, command: str) -> None:
    """The documented outcome of a full disk: exit 1 naming a path in `named`, no temporary file left, and the
    failure in `status` of `directory`."""
    visible = status_shows(directory, stage)
    outcome(
        result,
        1,
        "No space left on device",
        str(named),
        case=case,
        command=command,
        visible=visible,
    )
    assert not _temporaries(disk.root), _temporaries(disk.root)


def test_preprocess_on_a_full_disk_names_the_shard_and_records_the_failure(small_disk, imagenette_slice):
    small_disk.leave(400_000)  # a few shards of 10 photos
    data = small_disk.root / "data"
    result = invoke("preprocess", imagenette_slice, data, "--shard-size", "10", "--workers", "1")
    _full(result, small_disk, data / "train", data, "preprocess train", "preprocess/disk-full", "preprocess")
    assert "shard-" in result.stderr


def test_train_on_a_full_disk_names_the_checkpoint_and_records_the_failure(small_disk, slice_data):
    small_disk.leave(600_000)  # config.json, not the first checkpoint (~3 MB)
    run = small_disk.root / "run"
    result = invoke("train", run, "--data", slice_data, *TINY, "--subset", "16")
    _full(result, small_disk, run / "checkpoints", run, "train", "train/disk-full", "train")


def test_eval_on_a_full_disk_names_the_file_and_records_the_failure(small_disk, two_runs):
    run = copy_tree(two_runs[0], small_disk.root / "run")
    shutil.rmtree(run / "eval", ignore_errors=True)
    (run / "eval").mkdir()
    small_disk.leave(4096)  # one page, which the lock record takes: no room for failed.json, the lock keeps it
    result = invoke("eval", run, "--crops", "1")
    _full(result, small_disk, run / "eval", run, "eval", "eval/disk-full", "eval")


# ---------------------------------------------------------------- one lock for whole and --part (issue 19.8)


@pytest.mark.parametrize("held", ["part", "whole"])
def test_a_whole_split_and_a_part_preprocess_of_one_split_exclude_each_other(held, tmp_path, imagenette_slice):
    split = tmp_path / "data" / "train"
    split.mkdir(parents=True)
    lock = split / (".lock-part-1-of-2" if held == "part" else ".lock")
    with (
        rundir.DirectoryLock(lock, "preprocess --split train" + (" --part 1/2" if held == "part" else "")),
        rundir.parts_lock(split, whole=held == "whole"),
    ):
        other = () if held == "part" else ("--part", "0/2")
        result = invoke("preprocess", imagenette_slice, tmp_path / "data", "--workers", "1", *other)
    outcome(result, 2, str(split), f"pid {os.getpid()}", case=f"preprocess/while-{held}-runs", command="preprocess")
    assert not list(split.glob("shard-*"))


# ---------------------------------------------------------------- predictions of an older checkpoint (issue 19.9)


def test_ensemble_re_evaluates_a_member_whose_best_checkpoint_changed_and_status_calls_it_stale(tmp_path, two_runs):
    members = [copy_tree(r, tmp_path / f"r{i}") for i, r in enumerate(two_runs)]
    for m in members:
        invoke("eval", m, "--crops", "1", check=True)
    best = members[1] / "checkpoints" / "best.pt"
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    ckpt["model"] = {k: v * 0.5 if v.is_floating_point() else v for k, v in ckpt["model"].items()}  # a retrain
    time.sleep(0.01)
    rundir.save_torch(best, ckpt)
    assert stage_state(members[1], "eval val-1crop") == "stale"
    result = invoke("ensemble", *members, "--out", tmp_path / "ens", "--crops", "1")
    outcome(result, 0, case="ensemble/member-checkpoint-changed", command="ensemble")
    assert "val-1crop.npz was made with another best.pt" in result.stderr
    metrics = json.loads((members[1] / "eval" / "val-1crop.json").read_text())
    assert metrics["checkpoint_sha256"] == rundir.file_sha256(best)
    assert stage_state(members[1], "eval val-1crop") == "done"


# ---------------------------------------------------------------- a newline in a directory's name (issue 19.17)


def test_status_of_a_run_named_with_a_newline_keeps_one_line_per_stage(tmp_path, two_runs):
    run = copy_tree(two_runs[0], tmp_path / "run\nwith a newline")
    (run / "run.json").unlink()
    rundir.record_failure(run / "failed.json", "train", "stopped by SIGTERM in epoch 1")
    listing = invoke("status", run)
    lines = listing.stdout.splitlines()
    assert lines and all(line.count("\t") == 4 and line.startswith(str(tmp_path)) for line in lines), lines
    assert "run\\nwith a newline" in lines[0]
    result = invoke("status", run, "--fail-on-error")
    outcome(result, 1, "run\\nwith a newline", "failed", case="status/newline-in-name", command="status", visible=True)


# ---------------------------------------------------------------- SIGTERM to predict and export (issue 19.14)


@pytest.mark.slow
def test_sigterm_stops_predict_in_one_sentence_after_a_whole_row(tmp_path, two_runs, imagenet_samples):
    proc = start(
        "predict", imagenet_samples, "--run", two_runs[0], "--crops", "1", "--batch-size", "1", "--format", "csv",
        "--workers", "0",
    )  # fmt: skip
    header, first = proc.stdout.readline(), proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    rest = finish(proc)
    outcome(rest, 1, "stopped by SIGTERM", "images", case="predict/sigterm", command="predict")
    rows = [first, *rest.stdout.splitlines(keepends=True)]
    assert header.startswith("image,") and all(r.endswith("\n") and r.count(",") == header.count(",") for r in rows)
    assert len(rows) < len(list(imagenet_samples.iterdir()))


@pytest.mark.slow
def test_sigterm_stops_export_in_one_sentence_without_a_manifest(tmp_path, two_runs):
    out = tmp_path / "export"
    proc = start("export", two_runs[0], "--out", out, "--format", "pt2,state-dict", "--crops", "1")
    wait_for(lambda: (out / "model.pt2").exists(), proc, what="model.pt2")
    proc.send_signal(signal.SIGTERM)
    result = finish(proc)
    outcome(result, 1, "stopped by SIGTERM", str(out), case="export/sigterm", command="export")
    assert not (out / "manifest.json").exists() and not _temporaries(out)


# ---------------------------------------------------------------- loader workers out of memory (issue 19.16)


def chunk_out_of_memory(task):
    """shards.process_chunk as a worker that cannot allocate runs it (read by reference in the worker)."""
    raise MemoryError()


def test_a_preprocess_worker_out_of_memory_is_one_sentence_naming_it_and_the_remedy(
    tmp_path, imagenette_slice, monkeypatch
):
    monkeypatch.setattr(shards, "process_chunk", chunk_out_of_memory)
    data = tmp_path / "data"
    result = invoke("preprocess", imagenette_slice, data, "--workers", "2", "--shard-size", "40")
    visible = status_shows(data, "preprocess train")
    outcome(
        result,
        1,
        "preprocess worker",
        "ran out of memory",
        "fewer --workers",
        case="preprocess/worker-out-of-memory",
        command="preprocess",
        visible=visible,
    )
    record = json.loads((data / "train" / "failed.json").read_text())
    assert "ran out of memory" in record["error"] and "MemoryError" not in record["error"]


def test_an_empty_memory_error_is_recorded_as_out_of_memory():
    assert rundir.describe_failure(MemoryError()) == "out of memory"
    assert rundir.describe_failure(WorkFailed("x")) == "x"


# ---------------------------------------------------------------- torchrun ranks (issues 19.3, 19.4, 19.15)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(runs: list[Path], datas: list[Path], *args: str) -> list[subprocess.Popen]:
    """Two ranks of one torchrun job, started as torchrun starts them (each node with its own RUN_DIR and
    --data), each with its own stderr: what each node's log shows."""
    port = str(_free_port())
    procs = []
    for rank, (run, data) in enumerate(zip(runs, datas)):
        env = {
            **environment(),
            "OMP_NUM_THREADS": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": "0",
        }
        command = [*ALEXCTL, "train", str(run), "--data", str(data), "--workers", "0", *TINY, *args]
        procs.append(zygote.popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    return procs


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, slice_data) -> Path:
    run = tmp_path_factory.mktemp("one-epoch") / "run"
    invoke("train", run, "--data", slice_data, *TINY, "--subset", "16", check=True)
    return run


@pytest.mark.slow
def test_ranks_on_separate_disks_that_disagree_on_the_resume_point_stop_before_the_first_step(
    tmp_path, slice_data, one_epoch
):
    resumed, fresh = copy_tree(one_epoch, tmp_path / "node0"), tmp_path / "node1"
    before = (resumed / "checkpoints" / "last.pt").read_bytes()
    results = [finish(p) for p in _ranks([resumed, fresh], [slice_data] * 2, "--subset", "16", "--epochs", "2")]
    for rank, result in enumerate(results):
        outcome(
            result, 2, "rank 1 and rank 0 disagree on the resume point", "epoch 1", "same RUN_DIR",
            case=f"train/ddp-resume-point-rank{rank}", command="train",
        )  # fmt: skip
    assert (resumed / "checkpoints" / "last.pt").read_bytes() == before and not fresh.exists()


@pytest.mark.slow
def test_ranks_reading_other_data_stop_before_the_first_step(tmp_path, slice_data, imagenette_slice):
    other = tmp_path / "other"  # the same photos and classes, another held-out tenth: other shards
    for split in ("train", "val"):
        holdout = ("--holdout", "0.1", "--holdout-seed", "1", "--shard-size", "40", "--workers", "1")
        invoke("preprocess", imagenette_slice, other, "--split", split, *holdout, check=True)
    runs = [tmp_path / "node0", tmp_path / "node1"]
    results = [finish(p) for p in _ranks(runs, [slice_data, other])]
    for rank, result in enumerate(results):
        outcome(
            result, 2, "rank 1 and rank 0 disagree on the data", "train split", "val split",
            case=f"train/ddp-other-data-rank{rank}", command="train",
        )  # fmt: skip
    assert not (runs[0] / "config.json").exists()


@pytest.mark.slow
def test_a_rank_killed_mid_training_is_one_recorded_sentence_on_the_other(tmp_path, slice_data):
    run = tmp_path / "run"
    rank0, rank1 = _ranks([run, run], [slice_data] * 2, "--epochs", "50", "--subset", "16", "--checkpoint-steps", "2")
    wait_for(lambda: (run / "checkpoints" / "last.pt").exists(), rank0, what="last.pt")
    rank1.kill()
    finish(rank1, timeout=30)
    result = finish(rank0, timeout=60)
    visible = status_shows(run, "train")
    outcome(
        result, 1, "rank 1 stopped (lost connection)", "run the same command again",
        case="train/ddp-peer-killed", command="train", visible=visible,
    )  # fmt: skip
