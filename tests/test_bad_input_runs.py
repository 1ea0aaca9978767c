"""The bad-input corpus, part 2: what reaches the commands that read data and run directories (train, eval,
ensemble, report, status, bench, predict, export), issue 11. Part 1 (tests/test_bad_input_data.py) covers
demo-data and preprocess; both pass every case through badinput.outcome.

The shared fixtures are conftest's: `slice_data` (110 train and 10 val photos) and `two_runs` (one-epoch
networks of width 0.125 on it). A case that damages a directory damages its own copy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from alexctl import rundir

from badinput import (
    OTHER,
    copy_tree,
    finish,
    flip_bytes,
    outcome,
    public_copy,
    run,
    stage_state,
    start,
    status_shows,
    truncate,
    wait_for,
)
from helpers import invoke

TINY = ("--epochs", "1", "--width", "0.125", "--batch-size", "16", "--checkpoint-minutes", "0")


@pytest.fixture(scope="module")
def five(tmp_path_factory, imagenette_slice) -> Path:
    """Five of the slice's ten classes, four photos each."""
    root = tmp_path_factory.mktemp("five") / "src"
    for wnid in sorted(p.name for p in imagenette_slice.iterdir())[:5]:
        (root / wnid).mkdir(parents=True)
        for photo in sorted((imagenette_slice / wnid).iterdir())[:4]:
            shutil.copyfile(photo, root / wnid / photo.name)
    return root


@pytest.fixture(scope="module")
def other_data(tmp_path_factory, five) -> Path:
    """Another data directory at 256 px: five classes, two train and two val photos each."""
    data = tmp_path_factory.mktemp("other") / "d"
    for split in ("train", "val"):
        invoke("preprocess", five, data, "--split", split, "--holdout", "0.5", "--workers", "1", check=True)
    return data


@pytest.fixture(scope="module")
def data32(tmp_path_factory, five) -> Path:
    """A data directory at 32 px (CIFAR's size)."""
    data = tmp_path_factory.mktemp("d32") / "d"
    for split in ("train", "val"):
        invoke(
            "preprocess", five, data, "--split", split, "--holdout", "0.5", "--size", "32", "--workers", "1", check=True
        )
    return data


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _damaged(tmp: Path, data: Path, how: str, split: str = "train") -> Path:
    """A copy of a data directory with one thing wrong with one split."""
    copy = copy_tree(data, tmp / "damaged")
    train = copy / split
    manifest = json.loads((train / "manifest.json").read_text())
    index = dict(np.load(train / "index.npz"))
    if how == "corrupt-manifest":
        _write(train / "manifest.json", '{"kind": "data-split", "shards": [')
    elif how == "foreign-manifest":
        _write(train / "manifest.json", '{"name": "something else"}')
    elif how == "truncated-index":
        truncate(train / "index.npz")
    elif how == "altered-index":  # offsets moved, file rewritten whole: only the recorded SHA-256 tells
        index["offset"] = index["offset"] + 512
        np.savez(train / "index.npz", **index)
    elif how == "altered-index-old-manifest":  # a manifest without index_sha256: the ranges tell
        index["offset"] = index["offset"] + 10**7
        np.savez(train / "index.npz", **index)
        _write(
            train / "manifest.json",
            json.dumps({k: v for k, v in manifest.items() if k not in ("index_sha256", "index_bytes")}),
        )
    elif how == "truncated-shard":
        truncate(train / "shard-000001.tar")
    elif how == "missing-shard":
        (train / "shard-000001.tar").unlink()
    elif how == "flipped-jpeg":  # a sample's JPEG header overwritten: size unchanged, so it is found when read
        first = int(np.argmin(index["shard"] * 10**12 + index["offset"]))
        flip_bytes(train / "shard-000000.tar", int(index["offset"][first]), 16)
    elif how == "corrupt-classes":
        _write(copy / "classes.json", "{")
    elif how == "other-class-list":
        classes = json.loads((copy / "classes.json").read_text())
        _write(copy / "classes.json", json.dumps({"classes": classes["classes"][:5]}))
    elif how == "missing-stats":
        (copy / "stats.npz").unlink()
    elif how == "truncated-stats":
        truncate(copy / "stats.npz")
    elif how == "no-val":
        shutil.rmtree(copy / "val")
    return copy


def _mixed(tmp: Path, data: Path, other: Path) -> Path:
    """slice_data with the val split of a five-class data directory: other classes than train's."""
    mixed = copy_tree(data, tmp / "mixed")
    shutil.rmtree(mixed / "val")
    copy_tree(other / "val", mixed / "val")
    return mixed


def _named(words: list[str], tmp: Path, data: Path, run: Path) -> list[str]:
    """The words a sentence must hold, with {tmp}, {data} and {run} filled in."""
    return [w.format(tmp=tmp, data=data, run=run) for w in words]


def _run_copy(tmp: Path, run: Path, how: str = "") -> Path:
    copy = copy_tree(run, tmp / "run")
    if how == "corrupt-config":
        _write(copy / "config.json", '{"kind": ')
    elif how == "foreign-config":
        _write(copy / "config.json", '{"kind": "something-else"}')
    elif how == "truncated-last":
        truncate(copy / "checkpoints" / "last.pt")
    elif how == "truncated-best":
        truncate(copy / "checkpoints" / "best.pt")
    elif how == "foreign-best":
        torch.save([1, 2, 3], copy / "checkpoints" / "best.pt")
    elif how == "eval-is-a-file":
        shutil.rmtree(copy / "eval", ignore_errors=True)
        _write(copy / "eval", "")
    return copy


# ---------------------------------------------------------------- train: refused before anything is written

DAMAGE = [  # (case, damage to a copy of slice_data, words of the sentence)
    ("corrupt-manifest", ["manifest.json"]),
    ("foreign-manifest", ["manifest.json", "not the manifest"]),
    ("truncated-index", ["index.npz"]),
    ("altered-index", ["index.npz"]),
    ("altered-index-old-manifest", ["index.npz", "byte ranges"]),
    ("truncated-shard", ["shard-000001.tar", "bytes"]),
    ("missing-shard", ["shard-000001.tar", "missing"]),
    ("flipped-jpeg", ["shard-000000.tar", "damaged"]),
    ("corrupt-classes", ["classes.json"]),
    ("other-class-list", ["classes.json", "the train split has 10 classes"]),
    ("missing-stats", ["stats.npz"]),
    ("no-val", ["val", "manifest.json"]),
]


@pytest.mark.parametrize("how,words", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_train_on_a_damaged_data_directory_is_refused_naming_the_file(how, words, tmp_path, slice_data):
    data = _damaged(tmp_path, slice_data, how)
    result = invoke("train", tmp_path / "run", "--data", data, *TINY)
    outcome(result, 2, *words, case=f"train/data-{how}", command="train")
    assert not (tmp_path / "run" / "config.json").exists()


def test_train_with_a_config_file_that_is_not_utf8_is_refused_naming_it(tmp_path, slice_data):
    config = _write(tmp_path / "c.toml", b"lr = 0.01 # caf\xe9\n")
    outcome(
        invoke("train", tmp_path / "run", "--data", slice_data, *TINY, "--config", config),
        2,
        "c.toml",
        case="train/config-file-not-utf8",
        command="train",
    )


def test_train_on_a_truncated_statistics_file_is_refused_naming_it(tmp_path, slice_data):
    data = _damaged(tmp_path, slice_data, "truncated-stats")
    outcome(
        invoke("train", tmp_path / "run", "--data", data, *TINY),
        2,
        "stats.npz",
        case="train/data-truncated-stats",
        command="train",
    )


TRAIN_REFUSED = [  # (case, arguments from (tmp, slice_data, a trained run, other fixtures), words)
    ("new-run-without-data", lambda t, d, r, f: [t / "run"], ["--data"]),
    ("data-missing", lambda t, d, r, f: [t / "run", "--data", t / "nothing"], ["nothing"]),
    ("data-is-a-run-dir", lambda t, d, r, f: [t / "run", "--data", r], ["{run}/train", "manifest.json"]),
    (
        "val-with-other-classes",
        lambda t, d, r, f: [t / "run", "--data", _mixed(t, d, f["other"])],
        ["the val split has 5 classes", "classes.json"],
    ),
    (
        "arch-alexnet-on-32px-data",
        lambda t, d, r, f: [t / "run", "--data", f["data32"], "--arch", "alexnet"],
        ["224x224", "32x32", "--arch cifar"],
    ),
    ("arch-unknown", lambda t, d, r, f: [t / "run", "--data", d, "--arch", "vgg"], ["--arch"]),
    ("batch-size-0", lambda t, d, r, f: [t / "run", "--data", d, "--batch-size", "0"], ["--batch-size"]),
    ("epochs-0", lambda t, d, r, f: [t / "run", "--data", d, "--epochs", "0"], ["--epochs"]),
    ("lr-negative", lambda t, d, r, f: [t / "run", "--data", d, "--lr", "-1"], ["--lr"]),
    ("schedule-bogus", lambda t, d, r, f: [t / "run", "--data", d, "--schedule", "sometimes"], ["--schedule"]),
    (
        "schedule-step-not-increasing",
        lambda t, d, r, f: [t / "run", "--data", d, "--schedule", "step:5,3"],
        ["--schedule"],
    ),
    ("width-0", lambda t, d, r, f: [t / "run", "--data", d, "--width", "0"], ["--width"]),
    ("dropout-1.5", lambda t, d, r, f: [t / "run", "--data", d, "--dropout", "1.5"], ["--dropout"]),
    ("columns-3", lambda t, d, r, f: [t / "run", "--data", d, "--columns", "3"], ["--columns"]),
    ("subset-larger-than-train", lambda t, d, r, f: [t / "run", "--data", d, "--subset", "1000"], ["--subset 1000"]),
    ("devices-cuda-without-cuda", lambda t, d, r, f: [t / "run", "--data", d, "--devices", "cuda:0"], ["cuda:0"]),
    ("residency-unknown", lambda t, d, r, f: [t / "run", "--data", d, "--residency", "ram"], ["--residency"]),
    ("precision-unknown", lambda t, d, r, f: [t / "run", "--data", d, "--precision", "fp8"], ["--precision"]),
    ("workers-not-a-number", lambda t, d, r, f: [t / "run", "--data", d, "--workers", "some"], ["--workers"]),
    ("config-file-missing", lambda t, d, r, f: [t / "run", "--data", d, "--config", t / "nope.toml"], ["nope.toml"]),
    (
        "config-file-unknown-key",
        lambda t, d, r, f: [t / "run", "--data", d, "--config", _write(t / "c.toml", "lrate = 0.1\n")],
        ["lrate"],
    ),
    (
        "config-file-broken-toml",
        lambda t, d, r, f: [t / "run", "--data", d, "--config", _write(t / "c.toml", "lr = [\n")],
        ["c.toml"],
    ),
    ("run-dir-is-a-file", lambda t, d, r, f: [_write(t / "run", ""), "--data", d], ["{tmp}/run"]),
    ("run-dir-under-a-file", lambda t, d, r, f: [_write(t / "file", "") / "run", "--data", d], ["file"]),
    ("run-with-other-settings", lambda t, d, r, f: [_run_copy(t, r), "--lr", "0.1"], ["other settings", "lr"]),
    ("run-config-corrupt", lambda t, d, r, f: [_run_copy(t, r, "corrupt-config")], ["config.json"]),
    ("run-config-foreign", lambda t, d, r, f: [_run_copy(t, r, "foreign-config"), "--data", d], ["config.json"]),
    (
        "run-last-checkpoint-truncated",
        lambda t, d, r, f: [_run_copy(t, r, "truncated-last"), "--epochs", "2"],
        ["last.pt"],
    ),
    ("run-trained-on-other-data", lambda t, d, r, f: [_run_copy(t, r), "--data", f["other"]], ["other settings"]),
]


@pytest.mark.parametrize("case,arguments,words", TRAIN_REFUSED, ids=[row[0] for row in TRAIN_REFUSED])
def test_bad_input_to_train_is_refused_before_the_run_directory_changes(
    case, arguments, words, tmp_path, slice_data, two_runs, other_data, data32
):
    args = arguments(tmp_path, slice_data, two_runs[0], {"other": other_data, "data32": data32})
    run_dir = Path(args[0])
    before = _snapshot(run_dir)
    result = invoke("train", run_dir, *TINY, *args[1:])  # the case's options after TINY's: the last one counts
    outcome(result, 2, *_named(words, tmp_path, slice_data, two_runs[0]), case=f"train/{case}", command="train")
    assert _snapshot(run_dir) == before, "a refused train must leave the run directory as it was"


def _snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        return {"": folder.read_bytes()} if folder.is_file() else {}
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (".lock",)
    }


def test_train_on_a_run_in_use_is_refused_naming_the_holder(tmp_path, two_runs):
    copy = _run_copy(tmp_path, two_runs[0])
    with rundir.DirectoryLock(copy / ".lock", "train"):
        result = invoke("train", copy, "--epochs", "2")
    outcome(result, 2, str(copy), "in use", f"pid {os.getpid()}", case="train/run-locked", command="train")


# ---------------------------------------------------------------- train: crashes, kills and resumes


@pytest.fixture(scope="module")
def subset_run(tmp_path_factory, slice_data) -> Path:
    """One epoch on 16 of the training photos: a run whose next epoch takes a second."""
    run_dir = tmp_path_factory.mktemp("subset") / "run"
    invoke("train", run_dir, "--data", slice_data, *TINY, "--subset", "16", check=True)
    return run_dir


@pytest.mark.parametrize("how", ["duplicated-row", "missing-row", "cut-last-line"])
def test_a_resume_after_a_crash_at_the_epoch_boundary_keeps_one_metrics_row_per_epoch(how, tmp_path, subset_run):
    copy = _run_copy(tmp_path, subset_run)
    metrics = copy / "metrics.jsonl"
    rows = metrics.read_text().splitlines()
    metrics.write_text(
        {
            "duplicated-row": "\n".join(rows + rows) + "\n",
            "missing-row": "",
            "cut-last-line": "\n".join(rows) + "\n" + rows[0][: len(rows[0]) // 2],
        }[how]
    )
    (copy / "run.json").unlink()  # the crash came before the manifest
    result = invoke("train", copy, "--epochs", "2")
    outcome(result, 0, case=f"train/resume-after-{how}", command="train")
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == [1, 2]


@pytest.mark.slow
def test_sigterm_mid_epoch_stops_train_in_one_sentence_and_the_rerun_finishes(tmp_path, slice_data):
    run_dir = tmp_path / "run"
    proc = start("train", run_dir, "--data", slice_data, *TINY, "--epochs", "2", "--batch-size", "8", "--subset", "24")
    wait_for(lambda: (run_dir / "config.json").exists(), proc, what="config.json")  # written once it can stop
    proc.send_signal(signal.SIGTERM)
    result = finish(proc)
    visible = status_shows(run_dir, "train")
    outcome(
        result,
        1,
        "stopped by SIGTERM",
        "run the same command again",
        case="train/sigterm-mid-epoch",
        command="train",
        visible=visible,
    )
    rerun = invoke("train", run_dir)
    assert rerun.returncode == 0, rerun.stderr
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert stage_state(run_dir, "train") == "done"


@pytest.mark.slow
def test_a_kill_at_an_epoch_boundary_then_the_rerun_writes_each_epoch_once(tmp_path, slice_data):
    run_dir = tmp_path / "run"
    proc = start("train", run_dir, "--data", slice_data, *TINY, "--epochs", "2", "--subset", "24")
    wait_for(lambda: (run_dir / "checkpoints" / "epoch-0001.pt").exists(), proc, what="epoch 1's checkpoint")
    proc.kill()
    finish(proc, timeout=30)
    visible = status_shows(run_dir, "train", ("stale",))
    rerun = invoke("train", run_dir)
    outcome(rerun, 0, case="train/sigkill-at-epoch-boundary-then-rerun", command="train", visible=visible)
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


@pytest.mark.slow
def test_preprocess_force_on_a_split_a_training_run_reads_is_refused(tmp_path, slice_data, imagenette_slice):
    data = copy_tree(slice_data, tmp_path / "data")
    shards = {p.name: p.read_bytes() for p in (data / "train").glob("shard-*.tar")}
    run_dir = tmp_path / "run"
    proc = start("train", run_dir, "--data", data, *TINY, "--epochs", "100", "--subset", "8")
    wait_for(lambda: (run_dir / "config.json").exists(), proc, what="config.json")  # its sources are open
    result = invoke(
        "preprocess", imagenette_slice, data, "--holdout", "0.1", "--shard-size", "40", "--force", "--workers", "1"
    )
    proc.send_signal(signal.SIGTERM)
    stopped = finish(proc)
    outcome(
        result, 2, str(data / "train"), "being read", case="preprocess/force-while-train-reads", command="preprocess"
    )
    assert {p.name: p.read_bytes() for p in (data / "train").glob("shard-*.tar")} == shards
    assert stopped.returncode == 1 and "stopped by SIGTERM" in stopped.stderr, stopped.stderr  # not killed by it


@pytest.mark.slow
def test_a_read_only_run_directory_is_refused_before_training(slice_data, public):
    data = public_copy(slice_data, public, "data")
    public.chmod(0o555)
    result = run("train", public / "run", "--data", data, *TINY, user=OTHER)
    outcome(result, 2, str(public / "run"), case="train/read-only-run-dir", command="train")


# ---------------------------------------------------------------- eval

EVAL_REFUSED = [  # (case, arguments from (tmp, slice_data, a trained run, other data), words)
    ("run-missing", lambda t, d, r, o: [t / "nothing"], ["nothing"]),
    ("data-dir-as-run", lambda t, d, r, o: [d], ["{data}", "best checkpoint"]),
    ("crops-5", lambda t, d, r, o: [r, "--crops", "5"], ["--crops"]),
    ("batch-size-0", lambda t, d, r, o: [r, "--batch-size", "0"], ["--batch-size"]),
    ("top5-negative", lambda t, d, r, o: [r, "--top5", "-1"], ["--top5"]),
    ("checkpoint-missing", lambda t, d, r, o: [r, "--checkpoint", t / "gone.pt"], ["gone.pt"]),
    ("checkpoint-a-text-file", lambda t, d, r, o: [r, "--checkpoint", _write(t / "notes.pt", "hello")], ["notes.pt"]),
    ("best-checkpoint-truncated", lambda t, d, r, o: [_run_copy(t, r, "truncated-best")], ["best.pt"]),
    ("best-checkpoint-foreign", lambda t, d, r, o: [_run_copy(t, r, "foreign-best")], ["best.pt", "not an alexctl"]),
    ("data-with-other-classes", lambda t, d, r, o: [r, "--data", o], ["10 classes", "5"]),
    ("split-missing", lambda t, d, r, o: [r, "--split", "test"], ["test"]),
    ("data-damaged", lambda t, d, r, o: [r, "--data", _damaged(t, d, "truncated-index", "val")], ["index.npz"]),
    ("eval-folder-is-a-file", lambda t, d, r, o: [_run_copy(t, r, "eval-is-a-file")], ["eval"]),
    ("residency-unknown", lambda t, d, r, o: [r, "--residency", "ram"], ["--residency"]),
    ("devices-unknown", lambda t, d, r, o: [r, "--devices", "tpu"], ["tpu"]),
]


@pytest.mark.parametrize("case,arguments,words", EVAL_REFUSED, ids=[c[0] for c in EVAL_REFUSED])
def test_bad_input_to_eval_is_refused_in_one_sentence(
    case, arguments, words, tmp_path, slice_data, two_runs, other_data
):
    mine = copy_tree(two_runs[0], tmp_path / "r0")  # a case that went wrong would write into it
    args = arguments(tmp_path, slice_data, mine, other_data)
    outcome(
        invoke("eval", *args, "--crops", "1") if case != "crops-5" else invoke("eval", *args),
        2,
        *_named(words, tmp_path, slice_data, mine),
        case=f"eval/{case}",
        command="eval",
    )


def test_eval_of_a_run_being_evaluated_is_refused(tmp_path, two_runs):
    copy = _run_copy(tmp_path, two_runs[0])
    with rundir.DirectoryLock(copy / "eval" / ".lock", "eval"):
        result = invoke("eval", copy, "--crops", "1", "--force")
    outcome(result, 2, str(copy / "eval"), "in use", case="eval/locked", command="eval")


def test_a_corrupt_earlier_evaluation_is_redone(tmp_path, two_runs):
    copy = _run_copy(tmp_path, two_runs[0])
    assert invoke("eval", copy, "--crops", "1").returncode == 0
    _write(copy / "eval" / "val-1crop.json", '{"top1')
    result = invoke("eval", copy, "--crops", "1", "--json")
    outcome(result, 0, case="eval/corrupt-earlier-metrics-redone", command="eval")
    assert json.loads(result.stdout)["already_done"] is False and stage_state(copy, "eval val-1crop") == "done"


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory, imagenette_slice) -> Path:
    """A tiny run on a data directory with 60 val photos: an evaluation long enough for a signal to land."""
    tmp = tmp_path_factory.mktemp("evalrun")
    data = tmp / "data"
    for split in ("train", "val"):
        invoke("preprocess", imagenette_slice, data, "--split", split, "--holdout", "0.5", "--workers", "1", check=True)
    invoke("train", tmp / "run", "--data", data, *TINY, "--subset", "20", check=True)
    return tmp / "run"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_eval_stops_it_in_one_sentence_and_status_shows_it(signum, tmp_path, eval_run):
    copy = _run_copy(tmp_path, eval_run)
    proc = start("eval", copy, "--batch-size", "1", "--residency", "disk", "--workers", "0")
    wait_for(
        lambda: rundir.lock_state(copy / "eval" / ".lock") == "held" and (copy / "eval" / ".lock").stat().st_size,
        proc,
        what="the eval lock",
    )
    time.sleep(0.3)  # past the moment between taking the lock and catching signals; 60 images take seconds
    proc.send_signal(signum)
    result = finish(proc)
    visible = status_shows(copy, "eval")
    outcome(
        result,
        1,
        f"stopped by {signal.Signals(signum).name}",
        str(copy),
        case=f"eval/{signal.Signals(signum).name}",
        command="eval",
        visible=visible,
    )
    assert invoke("eval", copy, "--crops", "1").returncode == 0
    assert stage_state(copy, "eval val-1crop") == "done"


@pytest.mark.slow
def test_eval_of_a_read_only_run_is_refused_before_any_prediction(tmp_path, two_runs, slice_data, public):
    mine = copy_tree(two_runs[0], tmp_path / "run")
    shutil.rmtree(mine / "eval", ignore_errors=True)
    copy, data = public_copy(mine, public, "run"), public_copy(slice_data, public, "data")
    result = run("eval", copy, "--data", data, "--crops", "1", user=OTHER)
    outcome(result, 2, str(copy / "eval"), case="eval/read-only-run-dir", command="eval")


# ---------------------------------------------------------------- ensemble


def _evaluated(tmp: Path, run: Path, name: str, how: str = "") -> Path:
    """A copy of `run` with its 1-crop predictions, damaged as `how` says."""
    copy = copy_tree(run, tmp / name)
    invoke("eval", copy, "--crops", "1", check=True)
    predictions = copy / "eval" / "val-1crop.npz"
    z = dict(np.load(predictions))
    if how == "other-samples":
        z = {k: (v[:-2] if k in ("keys", "labels", "probs") else v) for k, v in z.items()}
    elif how == "other-class-order":
        z["classes"] = z["classes"][::-1]
    elif how == "lacking-probs":
        z.pop("probs")
    if how in ("other-samples", "other-class-order", "lacking-probs"):
        np.savez(predictions, **z)
    elif how == "truncated":
        truncate(predictions)
    return copy


ENSEMBLE_REFUSED = [  # (case, arguments from (tmp, run a, run b), words)
    ("one-member", lambda t, a, b: [a, "--out", t / "ens"], ["at least two"]),
    ("member-missing", lambda t, a, b: [a, t / "gone", "--out", t / "ens"], ["gone"]),
    ("member-twice", lambda t, a, b: [a, a, "--out", t / "ens"], ["twice"]),
    ("out-is-a-member", lambda t, a, b: [a, b, "--out", b], ["--out"]),
    ("out-under-a-file", lambda t, a, b: [a, b, "--out", _write(t / "file", "") / "ens"], ["--out", "file"]),
    (
        "members-predict-other-samples",
        lambda t, a, b: [_evaluated(t, a, "a"), _evaluated(t, b, "b", "other-samples"), "--out", t / "ens"],
        ["{tmp}/b", "other samples"],
    ),
    (
        "members-other-class-order",
        lambda t, a, b: [_evaluated(t, a, "a"), _evaluated(t, b, "b", "other-class-order"), "--out", t / "ens"],
        ["{tmp}/b", "class list"],
    ),
    (
        "member-predictions-lacking-probs",
        lambda t, a, b: [_evaluated(t, a, "a"), _evaluated(t, b, "b", "lacking-probs"), "--out", t / "ens"],
        ["probs"],
    ),
    ("checkpoint-epoch", lambda t, a, b: [a, b, "--out", t / "ens", "--checkpoint", "epoch-0001"], ["--checkpoint"]),
    ("crops-5", lambda t, a, b: [a, b, "--out", t / "ens", "--crops", "5"], ["--crops"]),
    ("member-is-a-data-dir", lambda t, a, b: [a, t / "data", "--out", t / "ens"], ["data"]),
]


@pytest.mark.parametrize("case,arguments,words", ENSEMBLE_REFUSED, ids=[c[0] for c in ENSEMBLE_REFUSED])
def test_bad_input_to_ensemble_is_refused_in_one_sentence(case, arguments, words, tmp_path, two_runs, slice_data):
    copy_tree(slice_data, tmp_path / "data")
    mine = [copy_tree(r, tmp_path / f"r{i}") for i, r in enumerate(two_runs)]  # ensemble may evaluate them
    args = arguments(tmp_path, *mine)
    crops = [] if "--crops" in args else ["--crops", "1"]
    outcome(
        invoke("ensemble", *args, *crops),
        2,
        *_named(words, tmp_path, slice_data, two_runs[0]),
        case=f"ensemble/{case}",
        command="ensemble",
    )
    assert not (tmp_path / "ens" / "run.json").exists()


def test_ensemble_of_a_member_with_truncated_predictions_names_the_file(tmp_path, two_runs):
    args = [_evaluated(tmp_path, two_runs[0], "a"), _evaluated(tmp_path, two_runs[1], "b", "truncated")]
    outcome(
        invoke("ensemble", *args, "--out", tmp_path / "ens", "--crops", "1"),
        2,
        "val-1crop.npz",
        case="ensemble/member-predictions-truncated",
        command="ensemble",
    )


# ---------------------------------------------------------------- report

REPORT_REFUSED = [  # (case, arguments from (tmp, slice_data, run, other data), words)
    ("run-missing", lambda t, d, r, o: [t / "gone", "--out", t / "rep"], ["gone"]),
    ("data-dir-as-run", lambda t, d, r, o: [d, "--out", t / "rep"], ["{data}", "neither a training run"]),
    ("out-is-the-run", lambda t, d, r, o: [r, "--out", r], ["--out"]),
    ("out-under-a-file", lambda t, d, r, o: [r, "--out", _write(t / "file", "") / "rep"], ["file"]),
    ("images-negative", lambda t, d, r, o: [r, "--out", t / "rep", "--images", "-1"], ["--images"]),
    ("reach-2", lambda t, d, r, o: [r, "--out", t / "rep", "--reach", "2"], ["--reach"]),
    (
        "best-checkpoint-truncated",
        lambda t, d, r, o: [_run_copy(t, r, "truncated-best"), "--out", t / "rep"],
        ["best.pt"],
    ),
    (
        "data-with-other-classes",
        lambda t, d, r, o: [r, "--out", t / "rep", "--data", o, "--images", "0"],
        ["class list"],
    ),
    (
        "data-damaged",
        lambda t, d, r, o: [r, "--out", t / "rep", "--data", _damaged(t, d, "truncated-index", "val")],
        ["index.npz"],
    ),
]


@pytest.mark.parametrize("case,arguments,words", REPORT_REFUSED, ids=[c[0] for c in REPORT_REFUSED])
def test_bad_input_to_report_is_refused_in_one_sentence(
    case, arguments, words, tmp_path, slice_data, two_runs, other_data
):
    args = arguments(tmp_path, slice_data, two_runs[0], other_data)
    outcome(
        invoke("report", *args),
        2,
        *_named(words, tmp_path, slice_data, two_runs[0]),
        case=f"report/{case}",
        command="report",
    )
    assert not (tmp_path / "rep" / "report.md").exists()


def test_report_reads_a_metrics_log_whose_last_line_was_cut(tmp_path, two_runs):
    copy = _run_copy(tmp_path, two_runs[0])
    with open(copy / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')  # a writer killed mid-line
    result = invoke("report", copy, "--out", tmp_path / "rep", "--images", "0", "--neighbours", "0")
    outcome(result, 0, case="report/metrics-cut-last-line", command="report")


# ---------------------------------------------------------------- status


def _status_case(tmp: Path, data: Path, run: Path, how: str) -> tuple[Path, str, str, tuple[str, ...]]:
    """(directory, stage, expected state, extra status options) for one damaged directory."""
    if how == "nonexistent":
        return tmp / "gone", "-", "missing", ()
    if how == "a-file":
        return _write(tmp / "file", ""), "-", "missing", ()
    if how == "corrupt-split-manifest":
        return _damaged(tmp, data, "corrupt-manifest"), "preprocess train", "broken", ()
    if how == "truncated-shard":
        return _damaged(tmp, data, "truncated-shard"), "preprocess train", "corrupt", ()
    if how == "truncated-index":
        return _damaged(tmp, data, "truncated-index"), "preprocess train", "corrupt", ()
    if how == "flipped-shard-verify":
        return _damaged(tmp, data, "flipped-jpeg"), "preprocess train", "corrupt", ("--verify",)
    if how == "missing-val-split":
        return _damaged(tmp, data, "no-val"), "preprocess val", "missing", ()
    if how == "corrupt-failure-record":
        copy = _damaged(tmp, data, "")
        shutil.rmtree(copy / "val")
        _write(copy / "val" / "failed.json", "{")
        return copy, "preprocess val", "broken", ()
    if how == "corrupt-run-config":
        return _run_copy(tmp, run, "corrupt-config"), "train", "broken", ()
    if how == "corrupt-run-manifest":
        copy = _run_copy(tmp, run)
        _write(copy / "run.json", "[")
        return copy, "-", "broken", ()
    if how == "corrupt-checkpoint-summary":
        copy = _run_copy(tmp, run)
        (copy / "run.json").unlink()
        _write(copy / "checkpoints" / "last.json", "{")
        return copy, "train", "broken", ()
    if how == "stale-lock":
        copy = _run_copy(tmp, run)
        (copy / "run.json").unlink()
        _write(copy / ".lock", json.dumps({"pid": 999999, "command": "train", "started": "then"}))
        return copy, "train", "stale", ()
    if how == "corrupt-eval-metrics":
        copy = _run_copy(tmp, run)
        _write(copy / "eval" / "val-1crop.json", "{")
        return copy, "eval", "broken", ()
    if how == "truncated-checkpoint-verify":
        return _run_copy(tmp, run, "truncated-best"), "checkpoint best.pt", "corrupt", ("--verify",)
    raise ValueError(how)


STATUS = [
    "nonexistent",
    "a-file",
    "corrupt-split-manifest",
    "truncated-shard",
    "truncated-index",
    "flipped-shard-verify",
    "missing-val-split",
    "corrupt-failure-record",
    "corrupt-run-config",
    "corrupt-run-manifest",
    "corrupt-checkpoint-summary",
    "stale-lock",
    "corrupt-eval-metrics",
    "truncated-checkpoint-verify",
]


@pytest.mark.parametrize("how", STATUS)
def test_status_names_what_is_wrong_and_fails_on_it_while_the_rest_reads_as_usual(how, tmp_path, slice_data, two_runs):
    directory, stage, state, extra = _status_case(tmp_path, slice_data, two_runs[0], how)
    report = invoke("status", directory, slice_data, "--json", *extra)
    stages = {(d["path"], s["stage"]): s for d in json.loads(report.stdout)["directories"] for s in d["stages"]}
    got = [s for (path, name), s in stages.items() if path == str(directory) and name.startswith(stage)]
    assert report.returncode == 0 and [s["state"] for s in got] == [state], stages
    assert {stages[(str(slice_data), f"preprocess {s}")]["state"] for s in ("train", "val")} == {"done"}
    result = invoke("status", directory, slice_data, "--fail-on-error", *extra)
    outcome(result, 1, str(directory), state, case=f"status/{how}", command="status", visible=True)


@pytest.mark.slow
def test_status_of_an_unreadable_directory_says_broken(two_runs, public):
    copy = public_copy(two_runs[0], public, "run")
    copy.chmod(0)
    result = run("status", copy, "--fail-on-error", user=OTHER)
    outcome(result, 1, str(copy), "broken", case="status/unreadable-directory", command="status", visible=True)


# ---------------------------------------------------------------- bench

BENCH_REFUSED = [  # (case, arguments from (tmp, slice_data, run), words)
    ("data-missing", lambda t, d, r: ["--data", t / "gone"], ["gone"]),
    ("data-is-a-run", lambda t, d, r: ["--data", r], ["{run}/train"]),
    ("data-damaged", lambda t, d, r: ["--data", _damaged(t, d, "truncated-shard")], ["shard-000001.tar"]),
    ("batch-size-0", lambda t, d, r: ["--data", d, "--batch-size", "0"], ["--batch-size"]),
    ("steps-0", lambda t, d, r: ["--data", d, "--steps", "0"], ["--steps"]),
    ("width-0", lambda t, d, r: ["--data", d, "--width", "0"], ["--width"]),
    ("preprocess-source-missing", lambda t, d, r: ["--preprocess", t / "gone"], ["gone"]),
    ("residency-unknown", lambda t, d, r: ["--data", d, "--residency", "ram"], ["--residency"]),
]


def test_bench_on_32px_data_measures_the_cifar_net_and_refuses_the_stock_pipeline(data32):
    """32x32 images (CIFAR-10's) feed the CIFAR-10 net; the stock pipeline's 224 px crops cannot be cut from them."""
    outcome(
        invoke("bench", "--data", data32),
        2,
        str(data32),
        "32x32",
        "--no-stock",
        case="bench/stock-on-32px",
        command="bench",
    )
    result = invoke("bench", "--data", data32, "--no-stock", "--batch-size", "4", "--json", check=True)
    summary = json.loads(result.stdout)
    assert summary["model"]["arch"] == "cifar" and all(r["median"] > 0 for r in summary["rows"])


@pytest.mark.parametrize("case,arguments,words", BENCH_REFUSED, ids=[c[0] for c in BENCH_REFUSED])
def test_bad_input_to_bench_is_refused_in_one_sentence(case, arguments, words, tmp_path, slice_data, two_runs):
    result = invoke("bench", *arguments(tmp_path, slice_data, two_runs[0]), "--no-stock")
    outcome(result, 2, *_named(words, tmp_path, slice_data, two_runs[0]), case=f"bench/{case}", command="bench")


def test_bench_on_a_truncated_statistics_file_names_it(tmp_path, slice_data):
    result = invoke("bench", "--data", _damaged(tmp_path, slice_data, "truncated-stats"), "--no-stock")
    outcome(result, 2, "stats.npz", case="bench/data-truncated-stats", command="bench")


# ---------------------------------------------------------------- predict and export

PREDICT = [  # (case, arguments from (tmp, run, data), exit status, words)
    ("run-missing", lambda t, r, d: [t / "photo.jpg", "--run", t / "gone"], 2, ["gone"]),
    ("run-is-a-data-dir", lambda t, r, d: [t / "photo.jpg", "--run", d], 2, ["best checkpoint"]),
    ("source-missing", lambda t, r, d: [t / "nothing.jpg", "--run", r], 2, ["nothing.jpg"]),
    ("only-broken-images", lambda t, r, d: [_write(t / "zero.jpg", b""), "--run", r], 1, ["none of the 1"]),
    ("top-k-0", lambda t, r, d: [t / "photo.jpg", "--run", r, "--top-k", "0"], 2, ["--top-k"]),
    ("crops-5", lambda t, r, d: [t / "photo.jpg", "--run", r, "--crops", "5"], 2, ["--crops"]),
    (
        "best-checkpoint-truncated",
        lambda t, r, d: [t / "photo.jpg", "--run", _run_copy(t, r, "truncated-best")],
        2,
        ["best.pt"],
    ),
]


@pytest.mark.parametrize("case,arguments,code,words", PREDICT, ids=[c[0] for c in PREDICT])
def test_bad_input_to_predict_is_refused_in_one_sentence(
    case, arguments, code, words, tmp_path, two_runs, slice_data, imagenet_samples
):
    shutil.copyfile(sorted(imagenet_samples.iterdir())[0], tmp_path / "photo.jpg")
    outcome(
        invoke("predict", *arguments(tmp_path, two_runs[0], slice_data), "--crops", "1")
        if case != "crops-5"
        else invoke("predict", *arguments(tmp_path, two_runs[0], slice_data)),
        code,
        *words,
        case=f"predict/{case}",
        command="predict",
    )


def test_predict_skips_and_names_a_broken_image_among_good_ones(tmp_path, two_runs, imagenet_samples):
    _write(tmp_path / "zero.jpg", b"")
    result = invoke(
        "predict",
        tmp_path / "zero.jpg",
        sorted(imagenet_samples.iterdir())[0],
        "--run",
        two_runs[0],
        "--crops",
        "1",
        "--format",
        "csv",
    )
    outcome(result, 0, case="predict/broken-among-good", command="predict")
    assert "zero.jpg" in result.stderr and len(result.stdout.splitlines()) == 2


EXPORT = [  # (case, arguments from (tmp, run), words)
    ("run-missing", lambda t, r: [t / "gone", "--out", t / "out"], ["gone"]),
    ("out-under-a-file", lambda t, r: [r, "--out", _write(t / "file", "") / "out"], ["--out"]),
    ("format-unknown", lambda t, r: [r, "--out", t / "out", "--format", "tflite"], ["--format"]),
    ("checkpoint-missing", lambda t, r: [r, "--out", t / "out", "--checkpoint", t / "gone.pt"], ["gone.pt"]),
    ("best-checkpoint-foreign", lambda t, r: [_run_copy(t, r, "foreign-best"), "--out", t / "out"], ["best.pt"]),
]


@pytest.mark.parametrize("case,arguments,words", EXPORT, ids=[c[0] for c in EXPORT])
def test_bad_input_to_export_is_refused_in_one_sentence(case, arguments, words, tmp_path, two_runs):
    outcome(invoke("export", *arguments(tmp_path, two_runs[0])), 2, *words, case=f"export/{case}", command="export")
    assert not (tmp_path / "out" / "manifest.json").exists()
