"""alexctl/rundir.py: atomic files, the JSON-lines log, locks, the readers' lock, failure records and the
names of evaluation files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from alexctl import rundir
from alexctl.errors import UserError, WorkFailed


def test_atomic_writes_leave_no_temporaries_and_replace_whole_files(tmp_path):
    target = tmp_path / "a" / "b.json"
    rundir.write_json(target, {"x": 1})
    rundir.write_json(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2} and sorted(p.name for p in target.parent.iterdir()) == ["b.json"]
    rundir.save_npz(tmp_path / "z.npz", a=np.arange(3))
    assert rundir.load_npz(tmp_path / "z.npz")["a"].tolist() == [0, 1, 2]
    (tmp_path / f".c.json{rundir.TMP_MARK}123").write_text("half")  # what a killed writer leaves
    assert rundir.remove_temporaries(tmp_path) == 1


def test_a_failed_write_removes_its_temporary_and_names_the_file(tmp_path, monkeypatch):
    real_open = open

    class Full:  # a file on a full disk: the write fails after the temporary file was created
        def __init__(self, path, mode):
            self.f = real_open(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:10])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir, "open", Full, raising=False)
    with pytest.raises(OSError) as caught:
        rundir.write_json(tmp_path / "m.json", {"x": 1})
    assert caught.value.errno == 28 and caught.value.filename == str(tmp_path / "m.json")
    assert list(tmp_path.iterdir()) == []


def test_a_failure_that_failed_json_cannot_hold_stays_in_the_lock_record(tmp_path):
    lock_path = tmp_path / ".lock"
    (tmp_path / "failed.json").mkdir()  # failed.json cannot be written (as on a full disk)
    with pytest.raises(WorkFailed):
        with (
            rundir.DirectoryLock(lock_path, "eval") as lock,
            rundir.failures_recorded(tmp_path / "failed.json", "eval", lock=lock),
        ):
            raise WorkFailed("it broke")
    assert rundir.lock_state(lock_path) == "stale" and rundir.lock_holder(lock_path)["error"] == "it broke"


def test_a_whole_split_and_its_parts_exclude_each_other_but_parts_share(tmp_path):
    with rundir.parts_lock(tmp_path, whole=False), rundir.parts_lock(tmp_path, whole=False):
        with pytest.raises(UserError, match="--part preprocess of the same split cannot run together"):
            with rundir.parts_lock(tmp_path, whole=True):
                pass
    with rundir.parts_lock(tmp_path, whole=True):
        with pytest.raises(UserError, match=str(tmp_path)):
            with rundir.parts_lock(tmp_path, whole=False):
                pass


def test_a_jsonl_line_cut_short_is_dropped(tmp_path):
    log = tmp_path / "m.jsonl"
    rundir.append_jsonl(log, {"epoch": 1})
    with open(log, "a") as f:
        f.write('{"epoch": 2, "lo')  # a kill in the middle of a write
    assert rundir.read_jsonl(log) == [{"epoch": 1}]


def test_unreadable_files_are_user_errors_naming_them(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="bad.json cannot be read"):
        rundir.read_json(tmp_path / "bad.json", "manifest")
    with pytest.raises(UserError, match="missing.npz does not exist"):
        rundir.load_npz(tmp_path / "missing.npz")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="cut.pt cannot be read"):
        rundir.load_torch(tmp_path / "cut.pt")


def test_load_torch_runs_no_pickled_code(tmp_path):
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match=r"evil.pt holds pickled objects .* refused, and nothing in it was run\.$"):
        rundir.load_torch(tmp_path / "evil.pt")


def test_a_directory_lock_is_exclusive_and_a_dead_holders_lock_is_stale(tmp_path):
    lock = tmp_path / ".lock"
    with rundir.DirectoryLock(lock, "train") as held:
        held.update(epoch=2)
        assert rundir.lock_state(lock) == "held" and rundir.lock_holder(lock)["epoch"] == 2
        with pytest.raises(UserError, match="in use by another alexctl process"):
            with rundir.DirectoryLock(lock, "train"):
                pass
    assert rundir.lock_state(lock) == "free"
    lock.write_text(json.dumps({"pid": 999999}))  # the record a killed process leaves
    assert rundir.lock_state(lock) == "stale"


def test_a_lock_that_removes_itself_leaves_nothing_and_stays_exclusive(tmp_path, monkeypatch):
    lock = tmp_path / "out" / ".lock"
    with rundir.DirectoryLock(lock, "report", remove=True):
        with pytest.raises(UserError, match="in use by another alexctl process"):
            with rundir.DirectoryLock(lock, "report", remove=True):
                pass
    assert not lock.exists()
    # The race: the file this process opened is removed by its holder before this process locks it. Locking
    # the removed file would let a third process lock a new one too; the lock starts again on the new file.
    real_open, opened = os.open, []

    def holder_removes_it_meanwhile(path, flags, mode=0o777):
        fd = real_open(path, flags, mode)
        if not opened:
            os.unlink(path)
        opened.append(fd)
        return fd

    monkeypatch.setattr(rundir.os, "open", holder_removes_it_meanwhile)
    with rundir.DirectoryLock(lock, "report", remove=True) as held:
        monkeypatch.undo()
        assert len(opened) == 2 and held.fd == opened[1] and os.path.samestat(os.fstat(held.fd), os.stat(lock))
    assert not lock.exists()


def test_readers_share_a_split_and_force_waits_for_none(tmp_path):
    with rundir.split_readers(tmp_path), rundir.split_readers(tmp_path):  # two readers at once
        with pytest.raises(UserError, match="being read by a training run"):
            with rundir.split_readers(tmp_path, exclusive=True):
                pass
    with rundir.split_readers(tmp_path, exclusive=True):
        # Another process: a reader cannot start while the split is rewritten.
        code = (
            "import sys; from alexctl import rundir\n"
            f"try:\n    rundir.split_readers({str(tmp_path)!r}).__enter__()\n"
            "except Exception as e:\n    print(e); sys.exit(3)"
        )
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert other.returncode == 3 and "being rewritten" in other.stdout


def test_failures_are_recorded_but_bad_input_is_not(tmp_path):
    failed = tmp_path / "failed.json"
    with pytest.raises(UserError):
        with rundir.failures_recorded(failed, "train"):
            raise UserError("bad option")
    assert not failed.exists()
    with pytest.raises(WorkFailed):
        with rundir.failures_recorded(failed, "train"):
            raise WorkFailed("stopped by SIGTERM")
    assert json.loads(failed.read_text())["error"] == "stopped by SIGTERM"
    with pytest.raises(OSError):
        with rundir.failures_recorded(failed, "train"):
            raise OSError(28, "No space left on device", "/data/shard-000001.tar")
    assert json.loads(failed.read_text())["error"] == "No space left on device: /data/shard-000001.tar"


def test_writability_is_checked_before_work(tmp_path):
    rundir.check_writable(tmp_path / "new" / "eval", "the run's eval folder")
    assert (tmp_path / "new" / "eval").is_dir() and not list((tmp_path / "new" / "eval").iterdir())
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="file/eval cannot be written"):
        rundir.check_writable(tmp_path / "file" / "eval", "the run's eval folder")


def test_evaluation_names_keep_other_data_apart(tmp_path):
    run = rundir.RunDir(tmp_path)
    assert run.predictions(rundir.Evaluation()).name == "val-10crop.npz"
    assert run.eval_metrics(rundir.Evaluation("val", 1, "last")).name == "val-1crop-last.json"
    other = rundir.Evaluation("test", 10, "", rundir.data_name(tmp_path / "new photos", "ab12cd34ef"))
    assert run.top5(other).name == "test-10crop@new_photos-ab12cd34-top5.tsv"


def test_file_sha256(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert rundir.file_sha256(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
