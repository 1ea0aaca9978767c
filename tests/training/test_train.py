"""`alexctl train` on real photographs (a slice of Imagenette), on the CPU: the run directory's
files, one trainer per run directory, refusing to mix runs, resuming and configuring from a run directory,
subsets, checkpoints. What one step computes: test_train_step.py; killed and stopped runs:
test_train_interrupted.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import TINY, invoke, json_output


@pytest.fixture(scope="module")
def data(slice_data) -> Path:
    return slice_data


def test_a_run_writes_its_files_and_summary(data, tmp_path):
    run = tmp_path / "run"
    trained = invoke(
        "train", run, "--data", data, "--epochs", "3", "--keep", "1", "--workers", "2", "--json", *TINY, check=True
    )
    summary = json_output(trained)
    # One short first line; where each split is held, and why, in --json and run.json.
    first = trained.stderr.splitlines()[0]
    assert first == f"alexctl: {run}: epoch 1 of 3, 110 training images held decoded, 10 val held decoded."
    assert summary["splits"]["train"]["residency"] == "decoded" and summary["splits"]["val"]["images"] == 10
    assert "budget" in summary["splits"]["train"]["reason"]
    assert json.loads((run / "run.json").read_text())["splits"] == summary["splits"]
    assert summary["tensorboard"] == str(run / "tensorboard") and len(list((run / "tensorboard").iterdir())) == 1
    for key in (
        "checkpoint",
        "last_checkpoint",
        "epochs_completed",
        "metrics",
        "val_top1_error",
        "val_top5_error",
        "seconds",
    ):
        assert key in summary, key
    assert summary["epochs_completed"] == 3
    assert Path(summary["checkpoint"]).name == "best.pt" and Path(summary["last_checkpoint"]).name == "last.pt"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["samples"] == 110  # every training sample, once, with two loader workers
        assert 0 <= r["val_top1_error"] <= 1 and 0 <= r["val_top5_error"] <= r["val_top1_error"]
        assert r["lr"] == 0.01 and r["images_per_second"] > 0 and np.isfinite(r["train_loss"])
    assert min(r["val_top1_error"] for r in rows) == summary["val_top1_error"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.pt",
        "epoch-0003.pt",
        "last.json",
        "last.pt",
    ]
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["momentum"] == 0.9 and config["model"]["lrn"] is True
    assert config["data"]["train_images"] == 110 and len(config["data"]["train_identity"]) == 64
    assert config["alexctl_version"]
    assert json.loads((run / "run.json").read_text())["epochs_completed"] == 3
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    assert best["epoch"] == summary["best_epoch"] and best["mean_image"].shape == (3, 256, 256)
    # Running the finished command again does nothing; raising --epochs trains further.
    repeated = invoke("train", run, "--data", data, "--epochs", "3", "--json", *TINY, check=True)
    assert (
        repeated.stderr.splitlines()[0]
        == f"alexctl: {run}: 3 of 3 epochs trained; nothing to do (raise --epochs to train further)."
    )
    again = json_output(repeated)
    assert again["epochs_completed"] == 3 and again["resumed_from"] == {"epoch": 3, "step": 0}
    further = json_output(invoke("train", run, "--data", data, "--epochs", "4", "--json", *TINY, check=True))
    assert further["epochs_completed"] == 4
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4


def test_one_trainer_per_run_directory_and_stale_locks(data, tmp_path):
    from alexctl.rundir import DirectoryLock

    run = tmp_path / "run"
    with DirectoryLock(run / ".lock", "another train"):
        busy = invoke("train", run, "--data", data, "--epochs", "1", *TINY)
    assert busy.returncode == 2 and "in use by another alexctl process" in busy.stderr
    # A lock file left by a process that died: its record is there but no one holds the flock.
    (run / ".lock").write_text(json.dumps({"pid": 999999, "command": "train", "started": "yesterday"}))
    ok = invoke("train", run, "--data", data, "--epochs", "1", "--json", *TINY, check=True)
    assert json_output(ok)["epochs_completed"] == 1


def test_resuming_with_other_data_or_settings_is_refused(data, tmp_path, imagenette_slice):
    run = tmp_path / "run"
    invoke("train", run, "--data", data, "--epochs", "1", *TINY, check=True)
    other_model = invoke("train", run, "--data", data, "--epochs", "2", *TINY, "--no-lrn")
    assert other_model.returncode == 2 and "lrn True -> False" in other_model.stderr
    other_lr = invoke("train", run, "--data", data, "--epochs", "2", *TINY, "--lr", "0.1")
    assert other_lr.returncode == 2 and "lr 0.01 -> 0.1" in other_lr.stderr
    other = tmp_path / "other"
    invoke("preprocess", imagenette_slice, other, "--holdout", "0.2", check=True)
    invoke("preprocess", imagenette_slice, other, "--split", "val", "--holdout", "0.2", check=True)
    other_data = invoke("train", run, "--data", other, "--epochs", "2", *TINY)
    assert other_data.returncode == 2 and "other shards" in other_data.stderr
    for proc in (other_model, other_lr, other_data):
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_bad_input_is_one_sentence_and_exit_2(data, tmp_path):
    missing = invoke("train", tmp_path / "r", "--data", tmp_path / "nothing")
    assert missing.returncode == 2 and "alexctl preprocess" in missing.stderr
    bad_schedule = invoke("train", tmp_path / "r", "--data", data, "--schedule", "sometimes", *TINY)
    assert bad_schedule.returncode == 2 and "sometimes" in bad_schedule.stderr
    no_cuda = invoke("train", tmp_path / "r", "--data", data, "--devices", "cuda:0", *TINY)
    if not torch.cuda.is_available():
        assert no_cuda.returncode == 2 and "CUDA" in no_cuda.stderr


def test_two_device_layout_trains_on_cpu_cpu(data, tmp_path):
    run = tmp_path / "run"
    invoke("train", run, "--data", data, "--epochs", "1", "--devices", "cpu,cpu", *TINY, check=True)
    from alexctl.checkpoint import load_weights
    from alexctl.nets.build import model_from_checkpoint

    net = model_from_checkpoint(load_weights(run / "checkpoints" / "best.pt"))  # two devices -> one device
    assert net(torch.zeros(1, 3, 224, 224)).shape == (1, 10)


def test_resume_and_configure_without_retyping(data, tmp_path):
    run = tmp_path / "run"
    invoke("train", run, "--data", data, "--epochs", "1", "--seed", "3", *TINY, check=True)
    # The run directory alone resumes with its own settings (and trains further with --epochs).
    again = json_output(invoke("train", run, "--epochs", "2", "--json", check=True))
    assert again["epochs_completed"] == 2 and again["resumed_from"] == {"epoch": 1, "step": 0}
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["seed"] == 3 and config["model"]["width"] == 0.125 and config["train"]["epochs"] == 2
    # An option given again must match; one that differs is named.
    other = invoke("train", run, "--lr", "0.5")
    assert other.returncode == 2 and "lr 0.01 -> 0.5" in other.stderr
    # A run's config.json starts another run like it; the command line overrides it.
    second = tmp_path / "second"
    started = json_output(
        invoke("train", second, "--config", run / "config.json", "--seed", "4", "--epochs", "1", "--json", check=True)
    )
    assert started["epochs_completed"] == 1
    second_config = json.loads((second / "config.json").read_text())
    assert second_config["train"]["seed"] == 4 and second_config["model"] == config["model"]
    assert second_config["data"]["dir"] == config["data"]["dir"]
    # A TOML file with a typo is refused by name; a new run without --data says what it needs.
    toml = tmp_path / "settings.toml"
    toml.write_text("lr = 0.005\nbatchsize = 8\n")
    typo = invoke("train", tmp_path / "third", "--config", toml, "--data", data)
    assert typo.returncode == 2 and "unknown setting 'batchsize'" in typo.stderr
    no_data = invoke("train", tmp_path / "fourth", *TINY)
    assert no_data.returncode == 2 and "give --data" in no_data.stderr
    assert not (tmp_path / "third").exists() and not (tmp_path / "fourth").exists()  # nothing written


def test_a_subset_with_center_crops_trains_on_exactly_those_images(data, tmp_path):
    run = tmp_path / "run"
    invoke("train", run, "--data", data, "--epochs", "1", "--subset", "30", "--train-crop", "center", *TINY, check=True)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert row["samples"] == 30  # the trainer also checks that exactly the subset was seen, once
    assert json.loads((run / "config.json").read_text())["data"]["trained_images"] == 30
    too_many = invoke("train", tmp_path / "r2", "--data", data, "--subset", "1000", *TINY)
    assert too_many.returncode == 2 and "--subset 1000" in too_many.stderr


def test_epoch_end_checkpoints_every_n_epochs_keep_best_in_step(data, tmp_path):
    run = tmp_path / "run"
    summary = json_output(
        invoke(
            "train",
            run,
            "--data",
            data,
            "--epochs",
            "3",
            "--checkpoint-epochs",
            "2",
            "--keep",
            "5",
            "--json",
            *TINY,
            check=True,
        )
    )
    assert sorted(p.name for p in (run / "checkpoints").glob("epoch-*.pt")) == ["epoch-0002.pt", "epoch-0003.pt"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3  # the metrics every epoch
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == summary["best_epoch"]  # held in memory until a save, never lost
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["progress"]["best_epoch"] == summary["best_epoch"] and last["epoch"] == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cuda_graphs", [False, True], ids=["compile", "compile+graphs"])
def test_cuda_compiled_step_trains_as_eager(cuda_graphs):
    """The paper's net on CUDA in bf16 + channels-last: Inductor's step (and CUDA graphs') against eager's."""
    from alexctl import device
    from alexctl.config import ModelConfig, RuntimeOptions
    from alexctl.nets.build import runtime_model
    from alexctl.training.optim import build_optimizer
    from alexctl.training.train import make_train_step

    config = ModelConfig(dropout=0.0)
    steps = []
    for compiled in (False, True):
        options = RuntimeOptions(
            devices="cuda:0", compile=compiled, cuda_graphs=compiled and cuda_graphs, lrn_impl="torch"
        )
        runtime = device.resolve(options)
        torch.manual_seed(0)
        net = runtime_model(config, 10, runtime)
        steps.append((net, make_train_step(net, build_optimizer(net, lr=0.01), runtime), runtime))
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(32, 3, 224, 224, generator=g) * 50, torch.randint(0, 10, (32,), generator=g)
        results = []
        for _, step, runtime in steps:
            xd = x.to(runtime.primary).contiguous(memory_format=runtime.memory_format)
            results.append([t.float().cpu() for t in step(xd, y.to(runtime.primary), 1 / 32)])
        (loss_e, _), (loss_c, _) = results  # top-1 hits: freshly initialised logits are near ties that bf16 flips
        torch.testing.assert_close(loss_c, loss_e, rtol=2e-2, atol=1e-2)  # bf16: the two fuse differently
    for (name, a), b in zip(steps[0][0].state_dict().items(), steps[1][0].state_dict().values()):
        torch.testing.assert_close(b.float(), a.float(), rtol=1e-2, atol=1e-4, msg=name)
