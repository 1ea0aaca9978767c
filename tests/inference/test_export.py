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
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from alexctl import checkpoint, rundir
from alexctl.config import ModelConfig, from_dict
from alexctl.data import labels, transform
from alexctl.inference import export
from alexctl.nets import model

from helpers import invoke, json_output

PHOTOS = ("n01440764_tench.JPEG", "n02096051_Airedale.JPEG", "n02206856_bee.JPEG", "n02787622_banjo.JPEG")
TOLERANCE = 1e-5

# A user's program, in a fresh interpreter: the exported files are loaded while `import alexctl` fails (they
# must not need it), then the photos are prepared by the public transform alone, every later stage of alexctl
# blocked (it must not need training or the network code), and given to both files.
USERS_PROGRAM = """
import sys
from pathlib import Path
sys.modules["alexctl"] = None
import numpy as np, onnxruntime, torch
folder, out, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
program = torch.export.load(f"{folder}/model.pt2").module()
session = onnxruntime.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])
del sys.modules["alexctl"]
for stage in ("nets", "training", "inference", "reporting", "benchmarking", "cli"):
    sys.modules[f"alexctl.{stage}"] = None
from alexctl.data.transform import model_input
images = np.stack([model_input(p) for p in paths])
loaded = sorted(m for m, module in sys.modules.items() if m.startswith("alexctl") and module is not None)
with torch.no_grad():
    pt2 = program(torch.from_numpy(images)).numpy()
np.savez(out, pt2=pt2, onnx=session.run(None, {"images": images})[0], images=images, loaded=loaded)
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
    return paths, np.stack([transform.model_input(p) for p in paths])


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


def test_program_and_onnx_load_without_alexctl_and_match_predict_through_the_public_transform(
    two_runs, exported, photos, tmp_path
):
    out, summary = exported
    paths, pixels = photos
    proc = subprocess.run(
        [sys.executable, "-c", USERS_PROGRAM, str(out), str(tmp_path / "probs.npz"), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    forms = np.load(tmp_path / "probs.npz")
    assert list(forms["loaded"]) == ["alexctl", "alexctl.data", "alexctl.data.transform"]
    assert np.array_equal(forms["images"], pixels) and forms["images"].dtype == np.uint8
    expected = predicted(two_runs[0], paths)
    for form in ("pt2", "onnx"):
        assert forms[form].shape == expected.shape and forms[form].dtype == np.float32, form
        assert np.abs(forms[form] - expected).max() < TOLERANCE, form
    assert np.allclose(forms["pt2"].sum(1), 1.0, atol=1e-5)
    # What the README warns against: torchvision's own Resize(256) + CenterCrop(256) of the same files is not
    # the same input (another decoder and resampler), hence model_input.
    stock = v2.Compose([v2.Resize(256), v2.CenterCrop(256)])
    theirs = np.stack([np.asarray(stock(Image.open(p).convert("RGB"))).transpose(2, 0, 1) for p in paths])
    assert theirs.shape == pixels.shape and np.abs(theirs.astype(int) - pixels).mean() > 0.5


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
    assert [c["class"] for c in classes["classes"]] == checkpoint.classes_of(ckpt)
    # One schema: the export's class list is the data directory's, key for key and value for value.
    data_dir = ckpt["data"]["dir"]
    assert classes == json.loads(rundir.DataDir(Path(data_dir)).classes.read_text())
    assert list(classes["classes"][0]) == ["index", "class", "name"]
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


def test_a_data_directory_with_the_old_class_list_keys_still_reads(slice_data, tmp_path):
    new = json.loads(rundir.DataDir(slice_data).classes.read_text())
    old = {"classes": [{"index": c["index"], "wnid": c["class"], "name": c["name"]} for c in new["classes"]]}
    (tmp_path / "classes.json").write_text(json.dumps(old))
    read = labels.read_class_file(tmp_path)  # --classes DATA_DIR
    assert read == labels.ClassList.from_json(new) and read.wnids[0] == new["classes"][0]["class"]
    assert labels.ClassList.from_json(new).to_json() == new
