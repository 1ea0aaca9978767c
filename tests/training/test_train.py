"""`alexctl train` on real photographs (a slice of Imagenette), on the CPU: the run directory's
files, exact resume after SIGKILL, one trainer per run directory, refusing to mix runs,
every sample once per epoch across workers and DDP ranks, and learning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import torch
import torch.nn.functional as F
import webdataset as wds

from alexctl import rundir

from helpers import freeze_at, invoke, json_output, run_cli, start_cli

TINY = ["--width", "0.125", "--batch-size", "16", "--checkpoint-minutes", "0"]


@pytest.fixture(scope="module")
def data(slice_data) -> Path:
    return slice_data


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_a_run_writes_its_files_and_summary(data, tmp_path):
    run = tmp_path / "run"
    summary = json_output(
        invoke(
            "train", run, "--data", data, "--epochs", "3", "--keep", "1", "--workers", "2", "--json", *TINY, check=True
        )
    )
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
    again = json_output(invoke("train", run, "--data", data, "--epochs", "3", "--json", *TINY, check=True))
    assert again["epochs_completed"] == 3 and again["resumed_from"] == {"epoch": 3, "step": 0}
    further = json_output(invoke("train", run, "--data", data, "--epochs", "4", "--json", *TINY, check=True))
    assert further["epochs_completed"] == 4
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4


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
    run_cli("train", reference, *args, check=True)

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

    resumed = json_output(run_cli("train", run, *args, "--json", check=True))
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
        "4",
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
    env = {**os.environ, "ALEXCTL_PROGRESS_SECONDS": "1000", "OMP_NUM_THREADS": "1"}
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
    assert summary["epochs_completed"] == 4 and summary["resumed_from"] == {
        "epoch": stopped_at[0],
        "step": stopped_at[1],
    }
    rows, reference = (rundir.read_jsonl(d / "metrics.jsonl") for d in (run, whole))
    assert [r["samples"] for r in rows] == [110] * 4  # the trainer also checks each sample was seen exactly once
    assert json.loads((run / "config.json").read_text())["runtime"]["world_size"] == 2
    for row, ref in zip(rows, reference):  # the resumed epoch's sums hold both ranks' shares
        assert row["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-6)
        assert row["train_top1_error"] == ref["train_top1_error"] and row["val_top1_error"] == ref["val_top1_error"]
    final, uninterrupted = weights(run / "checkpoints" / "last.pt"), weights(whole / "checkpoints" / "last.pt")
    assert all(torch.equal(final[k], uninterrupted[k]) for k in uninterrupted)


def test_the_paper_net_and_update_rule_fit_a_batch_of_real_photos(imagenette_slice):
    """The learning machinery works: eight real photos of four classes, center crops minus their mean,
    the paper's SGD rule (batch-size-scaled lr), 40 steps: the loss goes from ~ln 4 to ~0."""
    from alexctl.config import ModelConfig
    from alexctl.data import augment, transform
    from alexctl.nets.model import build_model
    from alexctl.training.optim import build_optimizer

    wnids = sorted(p.name for p in imagenette_slice.iterdir())[:4]
    photos = [(label, path) for label, w in enumerate(wnids) for path in sorted((imagenette_slice / w).iterdir())[:2]]
    pixels = torch.from_numpy(np.stack([transform.prepare(p.read_bytes(), 256).pixels for _, p in photos]))
    images = pixels.permute(0, 3, 1, 2).contiguous()
    x = augment.center_crop(images, images.float().mean(0), crop=224)
    y = torch.tensor([label for label, _ in photos])
    torch.manual_seed(0)
    net = build_model(ModelConfig(width=0.25, dropout=0.0), 4)
    optimizer = build_optimizer(net, lr=0.003)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert 1.0 < losses[0] < 2.5
    assert losses[-1] < 0.05
    assert (net.eval()(x).argmax(1) == y).all()


@pytest.mark.parametrize("arch, size", [("alexnet", 224), ("cifar", 24)])
def test_the_train_step_compiles_whole_and_trains_as_eager(arch, size):
    """--compile: the forward and loss as one graph, the paper's SGD update as another, with no graph break
    (fullgraph) under Inductor's decompositions and partitioner, and the same numbers as eager."""
    from alexctl import device
    from alexctl.config import ModelConfig, RuntimeOptions
    from alexctl.nets.build import runtime_model
    from alexctl.training.optim import build_optimizer
    from alexctl.training.train import make_train_step

    config = ModelConfig(arch=arch, width=0.125, dropout=0.0)
    steps = []
    for compiled in (False, True):
        runtime = device.resolve(RuntimeOptions(devices="cpu", workers=0, compile=compiled))
        torch.manual_seed(0)
        net = runtime_model(config, 10, runtime)
        optimizer = build_optimizer(net, lr=0.01)
        steps.append((net, make_train_step(net, optimizer, runtime, backend="aot_eager_decomp_partition")))
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(4, 3, size, size, generator=g) * 50, torch.randint(0, 10, (4,), generator=g)
        (loss_e, hits_e), (loss_c, hits_c) = [step(x, y, 0.25) for _, step in steps]
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-4)
        assert int(hits_c) == int(hits_e)
    for (name, a), b in zip(steps[0][0].state_dict().items(), steps[1][0].state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)


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


# ---------------------------------------------------------------- what one training step feeds the net


def train_images(data: Path) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """The train split read back without alexctl's loader: (M, 3, 256, 256) uint8 images decoded with
    libjpeg-turbo from the shards' bytes, the stored (3, 256, 256) float32 mean image, and the stored
    eigenvalues (3,) and eigenvectors (3, 3) of the pixel covariance (0..255 units)."""
    shards = sorted(str(p) for p in (data / "train").glob("*.tar"))
    jpegs = [jpg for (jpg,) in wds.WebDataset(shards, shardshuffle=False).to_tuple("jpg")]
    images = torch.from_numpy(np.stack([simplejpeg.decode_jpeg(j, colorspace="RGB") for j in jpegs]))
    stats = np.load(data / "stats.npz")
    mean = torch.from_numpy(stats["mean_image"].astype(np.float32)).permute(2, 0, 1)
    return images.permute(0, 3, 1, 2).contiguous(), mean.contiguous(), stats["eigenvalues"], stats["eigenvectors"]


def placements(fed: torch.Tensor, images: torch.Tensor, mean: torch.Tensor) -> list[tuple]:
    """Where each fed (3, 224, 224) patch came from: (image, x, y, flipped, (3,) shift) such that
    patch = reflect?(images[image] - mean)[:, y:y+224, x:x+224] + shift[c], found by search (its 2 x 8
    corner against every origin of every image and its reflection, the best few checked on the whole patch)."""
    m, crop = len(images), fed.shape[-1]
    centred = images.float() - mean
    candidates = torch.cat([centred, centred.flip(-1)])  # (2M, 3, 256, 256): the images, then their reflections
    span = images.shape[-1] - crop + 1  # 33 origins per axis
    corners = F.unfold(candidates[:, :, : span + 1, : span + 7], (2, 8))  # (2M, 48, 33 * 33)
    found = []
    for patch in fed:
        residual = (patch[:, :2, :8].reshape(1, 48, 1) - corners).view(2 * m, 3, 16, span * span)
        order = residual.var(2).sum(1).flatten().argsort()  # constant per channel: the lighting shift
        for k in order[:50].tolist():
            c, at = divmod(k, span * span)
            y, x = divmod(at, span)
            rest = patch - candidates[c, :, y : y + crop, x : x + crop]
            shift = rest.flatten(1).median(1).values
            if (rest - shift[:, None, None]).abs().max() < 1e-3:
                flipped = c >= m
                found.append((c % m, (span - 1 - x) if flipped else x, y, flipped, shift.numpy()))
                break
        else:
            raise AssertionError("a patch fed to the net is no crop of a training image minus the mean image")
    return found


def fed_in_one_step(data: Path, run: Path, *flags: str) -> list[tuple[int, int, int, bool, np.ndarray]]:
    """Train one step of 16 real photos and return where each patch the net was fed came from."""
    fed = []

    def first_input(module, inputs):  # every module's pre-hook: the net and its first layer see the same batch
        x = inputs[0]
        if module.training and x.ndim == 4 and x.shape[1] == 3 and not any(x is f for f in fed):
            fed.append(x)

    hook = torch.nn.modules.module.register_module_forward_pre_hook(first_input)
    try:
        invoke(
            "train", run, "--data", data, "--epochs", "1", "--subset", "16", "--seed", "5", *TINY, *flags, check=True
        )
    finally:
        hook.remove()
    assert len(fed) == 1 and fed[0].shape == (16, 3, 224, 224), [f.shape for f in fed]
    images, mean, _, _ = train_images(data)
    return placements(fed[0].detach(), images, mean)


def test_one_training_step_feeds_the_net_the_papers_augmentation_and_only_what_is_asked(data, tmp_path):
    """Section 4.1 as the trainer wires it, seen at the net's input: random crops, reflections and PCA
    lighting when on; each one gone when switched off, and nothing else changed (the same draws)."""
    _, _, eigenvalues, eigenvectors = train_images(data)
    paper = fed_in_one_step(data, tmp_path / "paper")
    origins = {(x, y) for _, x, y, _, _ in paper}
    assert len(origins) > 8 and all(0 <= x <= 32 and 0 <= y <= 32 for x, y in origins)  # translations
    assert 0 < sum(flipped for *_, flipped, _ in paper) < 16  # some images reflected, some not
    shifts = np.stack([shift for *_, shift in paper])  # (16, 3) levels added to every pixel of each image
    assert (np.abs(shifts).max(1) > 0.01).all() and len({tuple(np.round(s, 3)) for s in shifts}) == 16
    # shift = 255 V (alpha * lambda / 255^2): the alphas behind the shifts are N(0, 0.1) draws
    alphas = (shifts / 255.0) @ eigenvectors / (eigenvalues / 255.0**2)
    assert 0.03 < alphas.std() < 0.3 and np.abs(alphas).max() < 0.6, alphas

    fixed = fed_in_one_step(data, tmp_path / "fixed", "--no-flip", "--train-crop", "center")
    assert [p[0] for p in fixed] == [p[0] for p in paper]  # the same images in the same order
    assert all((x, y, flipped) == (16, 16, False) for _, x, y, flipped, _ in fixed)  # centre patches, none reflected
    np.testing.assert_allclose(np.stack([p[4] for p in fixed]), shifts, atol=1e-3)  # the same lighting

    plain = fed_in_one_step(data, tmp_path / "plain", "--lighting-std", "0")
    assert [p[:4] for p in plain] == [p[:4] for p in paper]  # the same crops and reflections
    assert np.abs(np.stack([p[4] for p in plain])).max() < 1e-3  # and no lighting


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
