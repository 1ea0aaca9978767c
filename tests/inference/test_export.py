"""`alexctl export`: each form, loaded as another tool loads it (the torch.export program and ONNX in a
process where alexctl cannot be imported; the state dict rebuilt through alexctl), gives the probabilities
`alexctl predict` gives on real photographs.

Tolerance: 1e-5 (float32 throughout; predict's --json rounds to 6 decimals, and onnxruntime's kernels
differ from torch's by ~1e-7, measured).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from alexctl import checkpoint, rundir
from alexctl.config import ModelConfig, from_dict
from alexctl.data import transform
from alexctl.inference import export
from alexctl.nets import model

from helpers import invoke, json_output

PHOTOS = ("n01440764_tench.JPEG", "n02096051_Airedale.JPEG", "n02206856_bee.JPEG", "n02787622_banjo.JPEG")
TOLERANCE = 1e-5

# Run in a fresh interpreter in which `import alexctl` fails: the exported files must not need it.
WITHOUT_ALEXCTL = """
import sys
sys.modules["alexctl"] = None
import numpy as np, onnxruntime, torch
folder, images = sys.argv[1], np.load(sys.argv[2])
with torch.no_grad():
    program = torch.export.load(f"{folder}/model.pt2").module()(torch.from_numpy(images)).numpy()
session = onnxruntime.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])
np.savez(sys.argv[3], pt2=program, onnx=session.run(None, {"images": images})[0])
"""


@pytest.fixture(scope="module")
def exported(two_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "seed0"
    summary = json_output(invoke("export", two_runs[0], "--out", out, "--json", check=True))
    return out, summary


@pytest.fixture(scope="module")
def photos(imagenet_samples):
    """The photos as predict reads them, and as the exported forms take them: uint8 (4, 3, 256, 256)."""
    paths = [imagenet_samples / name for name in PHOTOS]
    pixels = np.stack([transform.prepare(p.read_bytes(), 256).pixels for p in paths]).transpose(0, 3, 1, 2)
    return paths, np.ascontiguousarray(pixels)


def predicted(run, paths, *args) -> np.ndarray:
    """`alexctl predict`'s probabilities of every class, (n, classes), in the run's class order."""
    classes = checkpoint.classes_of(checkpoint.load_weights(run / "checkpoints" / "best.pt"))
    summary = json_output(invoke("predict", *paths, "--run", run, "--top-k", 999, "--json", *args, check=True))
    probs = np.zeros((len(paths), len(classes)))
    for i, row in enumerate(summary["results"]):
        assert row["image"] == str(paths[i])
        for t in row["top"]:
            probs[i, classes.index(t["class"])] = t["probability"]
    return probs


def test_program_and_onnx_load_without_alexctl_and_match_predict(two_runs, exported, photos, tmp_path):
    out, summary = exported
    paths, pixels = photos
    np.save(tmp_path / "images.npy", pixels)
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_ALEXCTL, str(out), str(tmp_path / "images.npy"), str(tmp_path / "probs.npz")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    forms = np.load(tmp_path / "probs.npz")
    expected = predicted(two_runs[0], paths)
    for form in ("pt2", "onnx"):
        assert forms[form].shape == expected.shape and forms[form].dtype == np.float32, form
        assert np.abs(forms[form] - expected).max() < TOLERANCE, form
    assert np.allclose(forms["pt2"].sum(1), 1.0, atol=1e-5)


def test_state_dict_rebuilt_through_alexctl_matches_predict(two_runs, exported, photos):
    out, _ = exported
    paths, pixels = photos
    expected = predicted(two_runs[0], paths)
    with torch.no_grad():
        rebuilt = export.rebuild(out / "state_dict.pt")(torch.from_numpy(pixels)).numpy()
    assert np.abs(rebuilt - expected).max() < TOLERANCE
    # By hand, as the file says: the network from its config and weights, then the center crop minus the mean.
    d = torch.load(out / "state_dict.pt", weights_only=True)
    net = model.build_model(from_dict(ModelConfig, d["model_config"]), d["num_classes"]).eval()
    net.load_state_dict(d["model"])
    patch = torch.from_numpy(pixels)[..., 16:240, 16:240].float() - d["mean_image"][:, 16:240, 16:240]
    with torch.no_grad():
        center = torch.softmax(net(patch), 1).numpy()
    assert np.abs(center - predicted(two_runs[0], paths, "--crops", "1")).max() < TOLERANCE
    assert d["crops"] == 10 and d["classes"] == checkpoint.classes_of(
        checkpoint.load_weights(two_runs[0] / "checkpoints" / "best.pt")
    )


def test_manifest_and_class_list_describe_the_files(two_runs, exported):
    out, summary = exported
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["forms"]) == {"pt2", "onnx", "state-dict"}
    for about in manifest["forms"].values():
        assert rundir.file_sha256(out / about["file"]) == about["sha256"]
        assert about["max_abs_difference"] <= export.CHECK_TOLERANCE
    assert manifest["input"]["shape"] == ["N", 3, 256, 256] and manifest["input"]["dtype"] == "uint8"
    assert manifest["output"]["shape"] == ["N", 10] and manifest["crops"] == 10
    classes = json.loads((out / "classes.json").read_text())
    ckpt = checkpoint.load_weights(two_runs[0] / "checkpoints" / "best.pt")
    assert [c["class"] for c in classes] == checkpoint.classes_of(ckpt)
    assert summary["command"] == "export" and summary["dir"] == str(out)
    assert summary["forms"].keys() == manifest["forms"].keys()
    assert not list(out.glob(f".*{rundir.TMP_MARK}*"))


def test_one_crop_state_dict_export_and_what_is_refused(two_runs, exported, photos, tmp_path):
    out, _ = exported
    paths, pixels = photos
    refused = invoke("export", two_runs[0], "--out", out, "--format", "state-dict")
    assert refused.returncode == 2 and "--out" in refused.stderr and "--force" in refused.stderr
    one = tmp_path / "one"
    summary = json_output(
        invoke("export", two_runs[1], "--out", one, "--format", "state-dict", "--crops", "1", "--json", check=True)
    )
    assert list(summary["forms"]) == ["state-dict"] and summary["crops"] == 1
    with torch.no_grad():
        probs = export.rebuild(one / "state_dict.pt")(torch.from_numpy(pixels)).numpy()
    assert np.abs(probs - predicted(two_runs[1], paths, "--crops", "1")).max() < TOLERANCE
    # --force replaces an earlier export, leaving no form of it behind.
    (one / "model.onnx").write_bytes(b"stale")
    invoke("export", two_runs[1], "--out", one, "--format", "state-dict", "--force", check=True)
    assert not (one / "model.onnx").exists() and (one / "manifest.json").exists()
    unknown = invoke("export", two_runs[0], "--out", tmp_path / "x", "--format", "pt2,savedmodel")
    assert unknown.returncode == 2 and "savedmodel" in unknown.stderr
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert "cannot be written" in invoke("export", two_runs[0], "--out", blocked / "sub").stderr
    assert invoke("export", tmp_path / "no-run", "--out", tmp_path / "y").returncode == 2
