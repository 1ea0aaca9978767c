"""`alexctl export`: a trained network in forms that other tools load without alexctl, each with the
paper's test-time processing inside (section 4.1), so that it computes what `alexctl predict` does:

    images uint8 (N, 3, S, S) -> minus the training set's mean image -> ten crops (or the center one)
           -> softmax -> averaged over the crops -> probabilities float32 (N, classes)

The input is RGB, channels first, ALREADY rescaled so that the shorter side is S (256 for AlexNet) and
center-cropped to S x S: alexctl.data.transform.model_input gives exactly predict's pixels (torchvision's
Resize(256) + CenterCrop(256) has the same geometry but another decoder and resampler, so other pixels).
The batch size N is free. Computed in float32.

Forms (FORMATS), written into one folder beside classes.json and, last, manifest.json:

  pt2         model.pt2       a torch.export program: torch.export.load(path).module()(images)
  onnx        model.onnx      ONNX (opset ONNX_OPSET), input "images", output "probabilities":
                              onnxruntime.InferenceSession(path).run(None, {"images": x})[0]
  state-dict  state_dict.pt   torch.load(path, weights_only=True): the weights (canonical one-device names),
                              model_config, num_classes, classes, class_names, mean_image, crops; `rebuild`
                              turns it back into the module (alexctl.nets.model.build_model + load_state_dict)

TorchScript is not among them: torch.jit is deprecated in torch 2.14, and tracing cannot follow the crop
geometry (it rounds tensor-valued sizes); torch.export can, and the ONNX exporter builds on it. After
writing, each form is loaded back and compared with alexctl's own computation on a check batch; the
largest difference is recorded in the manifest, and one above CHECK_TOLERANCE fails the export.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch

from alexctl import __version__, checkpoint, rundir
from alexctl.config import ModelConfig, RuntimeOptions, from_dict
from alexctl.data.labels import ClassList
from alexctl.device import resolve
from alexctl.errors import UserError, WorkFailed
from alexctl.inference.core import infer_batch, probabilities
from alexctl.nets import model
from alexctl.nets.build import model_from_checkpoint
from alexctl.stop import StopSignals

FORMATS = ("pt2", "onnx", "state-dict")
FILES = {"pt2": "model.pt2", "onnx": "model.onnx", "state-dict": "state_dict.pt"}
LOADING = {  # how another program uses each file (images: uint8 (N, 3, S, S))
    "pt2": "torch.export.load('model.pt2').module()(images)",
    "onnx": "onnxruntime.InferenceSession('model.onnx').run(None, {'images': images})[0]",
    "state-dict": "alexctl.inference.export.rebuild('state_dict.pt')(images)",
}
ONNX_OPSET = 18
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # writing needs onnx and onnxscript; the check onnxruntime
CHECK_TOLERANCE = 1e-4  # fp32 forms agree with eager torch to ~1e-7 (measured); more is a broken export
STATE_DICT_FORMAT = 1

# Where an exported graph is traced: the CPU in float32, contiguous, the portable LRN and grouped convolution.
# (The same functions as every other implementation; exported programs can be moved to a GPU afterwards.)
TRACE_RUNTIME = RuntimeOptions(
    devices="cpu", precision="fp32", channels_last="off", workers=0, lrn_impl="torch", conv_form="groups"
)


def export(
    run_dir: Path,
    out_dir: Path,
    *,
    formats: tuple[str, ...] = FORMATS,
    crops: int = 10,
    checkpoint_name: str = "best",
    force: bool = False,
) -> dict:
    """Write `formats` of the run's checkpoint into `out_dir`; returns the `--json` summary (the manifest)."""

    started = time.monotonic()
    run, out = rundir.RunDir(Path(run_dir)), Path(out_dir)
    if not run.root.is_dir():
        raise UserError(f"RUN_DIR {run.root} does not exist.")
    if run.manifest.exists() and rundir.read_json(run.manifest, "run manifest").get("kind") == "ensemble":
        raise UserError(f"RUN_DIR {run.root} is an ensemble; export its runs one at a time.")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"--format {','.join(formats)}: give one or more of {', '.join(FORMATS)}, or all.")
    if crops not in (1, 10):
        raise UserError(f"--crops {crops} must be 1 or 10.")
    if "onnx" in formats:
        absent = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
        if absent:
            raise UserError(
                f"--format onnx needs {', '.join(absent)}, not installed here: pip install 'alexctl[export]'."
            )
    path, _ = checkpoint.checkpoint_path(run, checkpoint_name)
    ckpt = checkpoint.load_weights(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--out {out} is not empty; --force writes the export into it.")
    rundir.check_writable(out, "--out")

    manifest_path = out / "manifest.json"
    manifest_path.unlink(missing_ok=True)  # written last: absent until this export is complete
    for name in FILES.values():  # a forced export leaves no form of an earlier one beside its own
        (out / name).unlink(missing_ok=True)
    with StopSignals() as stop:  # noticed between forms: each one is written whole (atomic) or not at all
        forms = _write_forms(ckpt, crops, formats, out, stop, f"while exporting {run.root} to {out}")
    image_size = checkpoint.model_config_of(ckpt).image_size
    classes = checkpoint.classes_of(ckpt)
    names = list(ckpt["data"].get("class_names") or classes)
    rundir.write_json(out / "classes.json", ClassList(tuple(classes), tuple(names)).to_json())
    manifest = {
        "kind": "export",
        "alexctl_version": __version__,
        "created": rundir.now(),
        "run_dir": str(run.root),
        "checkpoint": str(path),
        "checkpoint_sha256": rundir.file_sha256(path),
        "checkpoint_epoch": ckpt.get("epoch"),
        "input": {
            "name": "images",
            "dtype": "uint8",
            "shape": ["N", 3, image_size, image_size],
            "meaning": f"RGB, channels first, already rescaled to {image_size} on the shorter side and "
            f"center-cropped to {image_size}x{image_size}: alexctl.data.transform.model_input(path, {image_size}) "
            "gives exactly the pixels `alexctl predict` uses",
        },
        "output": {
            "name": "probabilities",
            "dtype": "float32",
            "shape": ["N", len(classes)],
            "meaning": f"softmax probabilities averaged over {crops} crop{'s' if crops > 1 else ''}, "
            "in the order of classes.json",
        },
        "crops": crops,
        "num_classes": len(classes),
        "model_config": ckpt["model_config"],
        "onnx_opset": ONNX_OPSET if "onnx" in formats else None,
        "torch": torch.__version__,
        "check_tolerance": CHECK_TOLERANCE,
        "forms": forms,
        "classes": "classes.json",
    }
    rundir.write_json(manifest_path, manifest)
    return {**manifest, "out_dir": str(out), "seconds": round(time.monotonic() - started, 3)}


class Classifier(torch.nn.Module):
    """One network with the test-time processing inside: uint8 (N, 3, S, S) -> (N, classes) probabilities, by
    alexctl.inference.core.infer_batch, the inference path of eval and predict (one home for the crops)."""

    def __init__(self, net: torch.nn.Module, mean_image: torch.Tensor, crops: int):
        super().__init__()
        self.net, self.crops = net.eval(), crops
        self.register_buffer("mean_image", mean_image.float().contiguous())  # (3, S, S), 0..255 units
        self.runtime = resolve(TRACE_RUNTIME)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return infer_batch(
            probabilities(self.net, self.runtime),
            images,
            self.mean_image,
            crops=self.crops,
            crop=self.net.input_size,
            runtime=self.runtime,
        )


def _write_forms(ckpt: dict, crops: int, formats: tuple[str, ...], out: Path, stop: StopSignals, where: str) -> dict:
    """Each form written and loaded back, checked against alexctl's own probabilities; the manifest's `forms`."""
    stopped = f"{where}; no manifest.json was written: run the same command with --force again."
    module = classifier(ckpt, crops)
    example = check_batch(ckpt["mean_image"])
    with torch.no_grad():
        expected = module(example)
    program = _program(module, example) if {"pt2", "onnx"} & set(formats) else None  # traced once, for both
    forms = {}
    for form in formats:
        stop.check(stopped)
        target = out / FILES[form]
        if form == "pt2":
            _write_program(program, target)
        elif form == "onnx":
            _write_onnx(program, target)
        else:
            _write_state_dict(ckpt, crops, target)
        difference = float((_run_form(form, target, example) - expected).abs().max())
        if not difference <= CHECK_TOLERANCE:
            raise WorkFailed(
                f"the exported {form} ({target}) differs from alexctl's probabilities by "
                f"{difference:.3g} (more than {CHECK_TOLERANCE:g}) on the check batch."
            )
        forms[form] = {
            "file": target.name,
            "bytes": target.stat().st_size,
            "sha256": rundir.file_sha256(target),
            "load": LOADING[form],
            "max_abs_difference": difference,
        }
    stop.check(stopped)
    return forms


def classifier(ckpt: dict, crops: int) -> Classifier:
    """The checkpoint's network as a Classifier on the CPU (TRACE_RUNTIME), in eval mode."""
    net = model_from_checkpoint(ckpt, resolve(TRACE_RUNTIME))
    return Classifier(net, ckpt["mean_image"], crops).eval()


def rebuild(path: Path) -> Classifier:
    """The Classifier a state-dict export describes (needs alexctl; the other forms do not)."""
    d = torch.load(path, map_location="cpu", weights_only=True)
    net = model.build_model(from_dict(ModelConfig, d["model_config"]), d["num_classes"])
    net.load_state_dict(d["model"])
    model.set_implementations(net, lrn=TRACE_RUNTIME.lrn_impl, conv=TRACE_RUNTIME.conv_form)
    return Classifier(net, d["mean_image"], d["crops"]).eval()


def check_batch(mean_image: torch.Tensor) -> torch.Tensor:
    """(2, 3, S, S) uint8: the mean image, and the mean image plus seeded noise (images in the data's range)."""
    mean = mean_image.round().clamp(0, 255)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0)) * 40
    return torch.stack([mean, (mean + noise).round().clamp(0, 255)]).to(torch.uint8)


def _write_program(program: torch.export.ExportedProgram, target: Path) -> None:
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    rundir.atomic_write_bytes(target, buffer.getvalue())


def _write_onnx(program: torch.export.ExportedProgram, target: Path) -> None:
    # The exporter may print its steps on stdout, which carries --json: they go to stderr, where logs go.
    with contextlib.redirect_stdout(sys.stderr):
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            input_names=["images"],
            output_names=["probabilities"],
            opset_version=ONNX_OPSET,
            verbose=False,
        )
    rundir.atomic_write_bytes(target, onnx_program.model_proto.SerializeToString())


def _write_state_dict(ckpt: dict, crops: int, target: Path) -> None:
    classes = checkpoint.classes_of(ckpt)
    rundir.save_torch(
        target,
        {
            "format": STATE_DICT_FORMAT,
            "alexctl_version": __version__,
            "model": ckpt["model"],
            "model_config": ckpt["model_config"],
            "num_classes": ckpt["num_classes"],
            "classes": classes,
            "class_names": list(ckpt["data"].get("class_names") or classes),
            "mean_image": ckpt["mean_image"].float(),
            "crops": crops,
            "rebuild": "alexctl.inference.export.rebuild(path); by hand: net = alexctl.nets.model.build_model(ModelConfig(**"
            "d['model_config']), d['num_classes']); net.load_state_dict(d['model']); then softmax(net(crop - "
            "mean_image crop)) averaged over the crops (alexctl.data.augment.ten_crop)",
        },
    )


def _program(module: Classifier, example: torch.Tensor) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))


def _run_form(form: str, target: Path, images: torch.Tensor) -> torch.Tensor:
    """What the written file computes for `images`, loaded as another tool would load it."""
    with torch.no_grad():
        if form == "pt2":
            return torch.export.load(target).module()(images)
        if form == "state-dict":
            return rebuild(target)(images)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    return torch.from_numpy(np.asarray(session.run(None, {"images": images.numpy()})[0]))
