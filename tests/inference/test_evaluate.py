"""`alexctl eval`: ten-crop averaging, the center crop that training validates with, the files it
writes, and what it refuses."""

from __future__ import annotations

import json

import numpy as np
import torch

from alexctl import device
from alexctl.checkpoint import load_weights
from alexctl.config import RuntimeOptions
from alexctl.data import augment
from alexctl.data.loader import load_split
from alexctl.data.resident import open_source
from alexctl.inference.core import predict
from alexctl.nets.build import model_from_checkpoint

from helpers import invoke, json_output


def test_ten_crop_softmax_average_equals_a_direct_computation(two_runs, slice_data):
    ckpt = load_weights(two_runs[0] / "checkpoints" / "best.pt")
    net = model_from_checkpoint(ckpt).eval()
    split = load_split(slice_data, "val")
    mean = ckpt["mean_image"]
    runtime = device.resolve(RuntimeOptions(devices="cpu", workers=0))
    with open_source(split, device="cpu", residency="disk", workers=0) as source:
        probs = predict(net, source, np.arange(len(split)), mean, crops=10, runtime=runtime, batch_size=3)
    from alexctl.data import transform

    for i in (0, 4, 9):
        pixels = torch.from_numpy(transform.decode_jpeg(split.read(i))).permute(2, 0, 1)[None]
        direct = []
        for x, y in augment.crop_positions(256, 224)[:5]:
            patch = pixels[..., y : y + 224, x : x + 224].float() - mean[:, y : y + 224, x : x + 224]
            for p in (patch, patch.flip(-1)):
                with torch.no_grad():
                    direct.append(torch.softmax(net(p), 1))
        expected = torch.cat(direct).mean(0).numpy()
        assert np.allclose(probs[i], expected, atol=1e-6)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_one_crop_eval_equals_the_validation_of_training(two_runs):
    rows = [json.loads(line) for line in (two_runs[0] / "metrics.jsonl").read_text().splitlines()]
    summary = json_output(invoke("eval", two_runs[0], "--crops", "1", "--checkpoint", "last", "--json", check=True))
    assert summary["top1_error"] == rows[-1]["val_top1_error"]
    assert summary["top5_error"] == rows[-1]["val_top5_error"]
    assert abs(summary["loss"] - rows[-1]["val_loss"]) < 1e-6


def test_eval_writes_metrics_predictions_and_top5(two_runs, slice_data):
    run = two_runs[1]
    summary = json_output(invoke("evaluate", run, "--top5", "4", "--json", check=True))  # the long spelling
    for key in ("top1_error", "top5_error", "crops", "num_images", "predictions", "seconds"):
        assert key in summary, key
    assert summary["crops"] == 10 and summary["num_images"] == 10
    z = np.load(run / "eval" / "val-10crop.npz")
    assert z["probs"].shape == (10, 10) and z["probs"].dtype == np.float32
    assert z["keys"].tolist() == load_split(slice_data, "val").keys.tolist()
    assert len(z["classes"]) == 10
    metrics = json.loads((run / "eval" / "val-10crop.json").read_text())
    assert metrics["top1_error"] == summary["top1_error"]
    assert len(metrics["per_class_accuracy"]) == 10 and "most_confused" in metrics
    lines = (run / "eval" / "val-10crop-top5.tsv").read_text().splitlines()
    assert len(lines) == 5 and len(lines[1].split("\t")) == 12
    last = json_output(invoke("eval", run, "--checkpoint", "last", "--crops", "1", "--json", check=True))
    assert last["predictions"].endswith("val-1crop-last.npz")


def test_eval_refuses_clearly(two_runs, slice_data, tmp_path, imagenette_slice):
    empty = invoke("eval", tmp_path / "never-trained")
    assert empty.returncode == 2 and "no best checkpoint" in empty.stderr
    no_split = invoke("eval", two_runs[0], "--split", "test")
    assert no_split.returncode == 2 and "not a complete test split" in no_split.stderr
    # Data with another number of classes: five of the ten.
    five = tmp_path / "five"
    for wnid in sorted(p.name for p in imagenette_slice.iterdir())[:5]:
        (five / wnid).mkdir(parents=True)
        for photo in sorted((imagenette_slice / wnid).iterdir())[:4]:
            (five / wnid / photo.name).write_bytes(photo.read_bytes())
    invoke("preprocess", five, tmp_path / "d5", "--holdout", "0.25", check=True)
    invoke("preprocess", five, tmp_path / "d5", "--split", "val", "--holdout", "0.25", check=True)
    other = invoke("eval", two_runs[0], "--data", tmp_path / "d5")
    assert other.returncode == 2 and "predicts 10 classes" in other.stderr and "has 5" in other.stderr
    bad_crops = invoke("eval", two_runs[0], "--crops", "5")
    assert bad_crops.returncode == 2 and "'--crops'" in bad_crops.stderr and "'5'" in bad_crops.stderr
    for proc in (empty, no_split, other, bad_crops):
        assert "Traceback" not in proc.stderr


def test_the_summary_names_the_checkpoint_and_its_epoch(two_runs):
    run = two_runs[0]
    ckpt = run / "checkpoints" / "epoch-0001.pt"
    lines = {
        which: invoke("eval", run, "--crops", "1", "--checkpoint", which, check=True).stdout.splitlines()[0]
        for which in ("best", "last", str(ckpt))
    }
    assert lines["best"].startswith(f"{run}, best checkpoint (epoch 1), on val (10 images, 1 crop)")
    assert lines["last"].startswith(f"{run}, last checkpoint (epoch 1), on val")
    assert lines[str(ckpt)].startswith(f"{run}, checkpoint {ckpt} (epoch 1), on val")
