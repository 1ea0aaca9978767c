"""`alexctl status`: done, running, stale, failed, partial and missing, read from the directories."""

from __future__ import annotations

import json
import os
import shutil

from alexctl.rundir import DirectoryLock

from helpers import invoke, json_output


def states(*paths) -> dict[tuple[str, str], dict]:
    report = json_output(invoke("status", *paths, "--json", check=True))["directories"]
    return {(e["path"], s["stage"]): s for e in report for s in e["stages"]}


def test_done_stages_of_data_runs_and_ensembles(slice_data, two_runs, tmp_path):
    invoke("ensemble", *two_runs, "--out", tmp_path / "ens", "--crops", "1", check=True)
    got = states(slice_data, two_runs[0], tmp_path / "ens", tmp_path / "nowhere")
    assert got[(str(slice_data), "preprocess train")]["state"] == "done"
    assert got[(str(slice_data), "preprocess val")]["state"] == "done"
    assert got[(str(two_runs[0]), "train")]["state"] == "done"
    assert got[(str(two_runs[0]), "eval val-1crop")]["state"] == "done"
    assert got[(str(tmp_path / "ens"), "ensemble")]["detail"].startswith("2 members")
    assert got[(str(tmp_path / "nowhere"), "-")]["state"] == "missing"


def test_running_stale_failed_and_partial(two_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_runs[0], run, ignore=shutil.ignore_patterns(".lock", "run.json"))
    assert states(run)[(str(run), "train")]["state"] == "partial"  # checkpoints but not finished: resumable
    with DirectoryLock(run / ".lock", "train") as lock:
        lock.update(epoch=3, epochs=90, step=17, steps=100)
        running = states(run)[(str(run), "train")]
    assert running["state"] == "running" and running["pid"] == os.getpid()
    assert "epoch 3/90 step 17/100" in running["detail"]
    (run / ".lock").write_text(json.dumps({"pid": 4242, "command": "train", "started": "then"}))
    stale = states(run)[(str(run), "train")]
    assert stale["state"] == "stale" and "pid 4242" in stale["detail"]
    (run / "failed.json").write_text(json.dumps({"command": "train", "error": "disk full", "time": "now"}))
    failed = states(run)[(str(run), "train")]
    assert failed["state"] == "failed" and "disk full" in failed["detail"]
    strict = invoke("status", run, "--fail-on-error")
    assert strict.returncode == 1 and "need attention" in strict.stderr


def test_a_split_with_shards_but_no_manifest_is_partial(slice_data, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(slice_data, data, ignore=shutil.ignore_patterns(".lock"))
    (data / "train" / "manifest.json").unlink()
    got = states(data)[(str(data), "preprocess train")]
    assert got["state"] == "partial" and "3 shards written" in got["detail"]
