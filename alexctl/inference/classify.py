"""`alexctl predict`'s classifier: a run's network, or an ensemble's leaf networks, on the runtime, and the
probabilities they give any images (the softmax averaged over the crops by alexctl.inference.core, then over
the networks, each weighing the same)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alexctl import checkpoint, rundir
from alexctl.config import InferenceOptions
from alexctl.console import SILENT, Progress
from alexctl.device import Runtime, forward_of
from alexctl.errors import UserError
from alexctl.inference.core import infer_batch, probabilities
from alexctl.inference.ensemble import leaf_runs
from alexctl.nets.build import model_from_checkpoint


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


def load_classifier(run_dir: Path, checkpoint_name: str, runtime: Runtime) -> Classifier:
    """The checkpoint `checkpoint_name` (best, last or a file) of a run, or best or last of each leaf run of an
    ensemble directory (alexctl.inference.ensemble.leaf_runs), on the runtime; the members must predict the same classes."""

    run = rundir.RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise UserError(f"--run {run.root} does not exist.")
    runs = [run]
    manifest = rundir.read_json(run.manifest, "run manifest") if run.manifest.exists() else {}
    if manifest.get("kind") == "ensemble":
        checkpoint_name = InferenceOptions(checkpoint=checkpoint_name).member_checkpoint()
        runs = leaf_runs([Path(d) for d in manifest.get("member_dirs", [])], run.root)
    members, first = [], None
    for leaf in runs:
        path, _ = checkpoint.checkpoint_path(leaf, checkpoint_name)
        ckpt = checkpoint.load_weights(path)
        config = checkpoint.model_config_of(ckpt)
        described = (checkpoint.classes_of(ckpt), config.image_size)
        if first is None:
            first = (path, ckpt, described)
        elif described != first[2]:
            raise UserError(
                f"member {path} predicts other classes (or takes other images) than {first[0]}; "
                f"an ensemble's members must share their class list."
            )
        net = model_from_checkpoint(ckpt, runtime).eval()
        members.append(Member(path, forward_of(net, runtime), ckpt["mean_image"].to(runtime.primary), net.input_size))
    path, ckpt, (classes, image_size) = first
    names = list(ckpt["data"].get("class_names") or classes)
    return Classifier(members, classes or [str(i) for i in range(ckpt["num_classes"])], names, image_size)


def classify(
    classifier: Classifier,
    source,
    batches: list[np.ndarray],
    *,
    crops: int,
    runtime: Runtime,
    progress: Progress = SILENT,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each batch the source yields, as it is done: (indices (n,), (n, classes) float32 probabilities), the
    softmax averaged over the crops (infer_batch, as eval) and then over the classifier's networks."""
    with torch.no_grad():
        for images, _, indices in source.batches(batches):
            total = sum(
                infer_batch(
                    probabilities(m.forward, runtime), images, m.mean_image, crops=crops, crop=m.crop, runtime=runtime
                )
                for m in classifier.members
            )
            yield np.asarray(indices), (total / len(classifier.members)).cpu().numpy().astype(np.float32)
            progress.advance(len(indices))


def top_classes(probs: np.ndarray, k: int) -> np.ndarray:
    """(n, k) class indices, the most probable first (ties: the lower index first)."""
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]
