"""Inference, in one place: what a network computes for a set of 256x256 images, with the paper's
test-time crops (section 4.1: the four corners and the center, plus their reflections).

    source (uint8 batches on the device) -> crops - mean -> compute(patches) -> averaged over crops

`compute` says what to compute: `probabilities(forward, runtime)` (the softmax, averaged over the
crops as the paper does; training's validation, `eval`, `predict`, `ensemble`, bench) or
`last_hidden(net, runtime)` (the representation Figure 4 compares: fc7 for AlexNet; `report`).
A source is anything with `batches(list of index arrays)` yielding (uint8 (n, 3, S, S) on the
device, labels, indices): a preprocessed split (alexctl.data.loader.open_source) or image files
(alexctl.data.images).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from alexctl import device as device_ops
from alexctl.console import SILENT, Progress
from alexctl.data import augment
from alexctl.errors import UserError

Compute = Callable[[torch.Tensor], torch.Tensor]  # (n * crops, 3, c, c) patches -> (n * crops, d)


def infer(compute: Compute, source, indices: np.ndarray, mean_image: torch.Tensor, *, crops: int, crop: int,
          runtime: device_ops.Runtime, batch_size: int, progress: Progress = SILENT,
          check: Callable[[], None] = lambda: None) -> np.ndarray:
    """(len(indices), d) float32: `compute` of each image's patches, averaged over its `crops` (1: the center
    crop; 10: the paper's ten), in the order of `indices`. `check()` runs after every batch (it may raise
    to stop, e.g. StopSignals.check)."""
    if crops not in (1, 10):
        raise ValueError(f"crops must be 1 or 10, not {crops}")
    indices = np.asarray(indices, dtype=np.int64)
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    out = []
    with torch.no_grad():
        for images, _, _ in source.batches(batches):
            out.append(infer_batch(compute, images, mean_image, crops=crops, crop=crop, runtime=runtime).cpu().numpy())
            progress.advance(images.shape[0])
            check()
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out).astype(np.float32)


def infer_batch(compute: Compute, images: torch.Tensor, mean_image: torch.Tensor, *, crops: int, crop: int,
                runtime: device_ops.Runtime) -> torch.Tensor:
    """(n, d) float32 on the device for one uint8 (n, 3, S, S) batch: `compute` averaged over the crops."""
    n = images.shape[0]
    if crops == 1:
        patches = augment.center_crop(images, mean_image, crop=crop, memory_format=runtime.memory_format)
    else:
        patches = augment.ten_crop(images, mean_image, crop=crop, memory_format=runtime.memory_format).flatten(0, 1)
    return compute(patches).float().view(n, crops, -1).mean(1)


def probabilities(forward: Callable, runtime: device_ops.Runtime) -> Compute:
    """The softmax of the network's logits. `forward` (the net, or its compiled form) runs in eval mode:
    the paper's "multiply the outputs by 0.5" is what inverted dropout already did at training time."""
    def compute(patches: torch.Tensor) -> torch.Tensor:
        with device_ops.autocast(runtime):
            logits = forward(patches)
        return torch.softmax(logits.float(), dim=1)

    return compute


def last_hidden(net: torch.nn.Module, runtime: device_ops.Runtime) -> Compute:
    """The last hidden layer's activations without dropout: fc7 (4096-d) for AlexNet, the paper's Figure 4."""
    def compute(patches: torch.Tensor) -> torch.Tensor:
        with device_ops.autocast(runtime):
            return net.last_hidden(patches)

    return compute


def predict(forward: Callable, source, indices: np.ndarray, mean_image: torch.Tensor, *, crops: int,
            runtime: device_ops.Runtime, batch_size: int, progress: Progress = SILENT, crop: int | None = None,
            check: Callable[[], None] = lambda: None) -> np.ndarray:
    """(len(indices), classes) float32: the softmax averaged over `crops`. `forward` is the network (or its
    compiled or wrapped form; `crop` is then needed) and is put in eval mode for the call."""
    net = getattr(forward, "_orig_mod", forward)  # torch.compile's wrapper keeps the module here
    crop = crop or net.input_size
    was_training = net.training
    net.eval()
    try:
        return infer(probabilities(forward, runtime), source, indices, mean_image, crops=crops, crop=crop,
                     runtime=runtime, batch_size=batch_size, progress=progress, check=check)
    finally:
        net.train(was_training)


# ---------------------------------------------------------------- `alexctl predict`: trained runs on any images


@dataclass(frozen=True)
class Member:
    """One network that `alexctl predict` averages: a checkpoint on the runtime, in eval mode."""

    checkpoint: Path
    forward: Callable  # the net, or its compiled form
    mean_image: torch.Tensor  # (3, S, S) float32 on the runtime's primary device, 0..255 units
    crop: int  # 224 for AlexNet


@dataclass(frozen=True)
class Classifier:
    """A run's network, or an ensemble's leaf networks (each weighing the same), and what they predict."""

    members: list[Member]
    classes: list[str]  # wnids, in the order of the probabilities
    names: list[str]  # the classes' readable names
    image_size: int  # S: the networks' input before the crops (256 for AlexNet)


def load_classifier(run_dir: Path, checkpoint_name: str, runtime: device_ops.Runtime) -> Classifier:
    """The checkpoint `checkpoint_name` (best, last or a file) of a run, or best or last of each leaf run of an
    ensemble directory (alexctl.ensemble.leaf_runs), on the runtime; the members must predict the same classes."""
    from alexctl import checkpoint, rundir
    from alexctl.ensemble import leaf_runs
    from alexctl.evaluate import checkpoint_path

    run = rundir.RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise UserError(f"--run {run.root} does not exist.")
    runs = [run]
    manifest = rundir.read_json(run.manifest, "run manifest") if run.manifest.exists() else {}
    if manifest.get("kind") == "ensemble":
        if checkpoint_name not in ("best", "last"):
            raise UserError(f"--checkpoint {checkpoint_name}: an ensemble takes best or last from each member.")
        runs = leaf_runs([Path(d) for d in manifest.get("member_dirs", [])], run.root)
    members, first = [], None
    for leaf in runs:
        path, _ = checkpoint_path(leaf, checkpoint_name)
        ckpt = checkpoint.load_weights(path)
        config = checkpoint.model_config_of(ckpt)
        described = (checkpoint.classes_of(ckpt), config.image_size)
        if first is None:
            first = (path, ckpt, described)
        elif described != first[2]:
            raise UserError(f"member {path} predicts other classes (or takes other images) than {first[0]}; "
                            f"an ensemble's members must share their class list.")
        net = checkpoint.model_from_checkpoint(ckpt, runtime).eval()
        members.append(Member(path, device_ops.forward_of(net, runtime), ckpt["mean_image"].to(runtime.primary),
                              net.input_size))
    path, ckpt, (classes, image_size) = first
    names = list(ckpt["data"].get("class_names") or classes)
    return Classifier(members, classes or [str(i) for i in range(ckpt["num_classes"])], names, image_size)


def classify(classifier: Classifier, source, batches: list[np.ndarray], *, crops: int,
             runtime: device_ops.Runtime, progress: Progress = SILENT) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each batch the source yields, as it is done: (indices (n,), (n, classes) float32 probabilities), the
    softmax averaged over the crops (infer_batch, as eval) and then over the classifier's networks."""
    with torch.no_grad():
        for images, _, indices in source.batches(batches):
            total = sum(infer_batch(probabilities(m.forward, runtime), images, m.mean_image, crops=crops,
                                    crop=m.crop, runtime=runtime) for m in classifier.members)
            yield np.asarray(indices), (total / len(classifier.members)).cpu().numpy().astype(np.float32)
            progress.advance(len(indices))


def top_classes(probs: np.ndarray, k: int) -> np.ndarray:
    """(n, k) class indices, the most probable first (ties: the lower index first)."""
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]
