"""Inference, in one place: what a network computes for a set of 256x256 images, with the paper's
test-time crops (section 4.1: the four corners and the center, plus their reflections).

    source (uint8 batches on the device) -> crops - mean -> compute(patches) -> averaged over crops

`compute` says what to compute: `probabilities(forward, runtime)` (the softmax, averaged over the
crops as the paper does; training's validation, `eval`, `predict`, `ensemble`, bench) or
`last_hidden(net, runtime)` (the representation Figure 4 compares: fc7 for AlexNet; `report`).
A source is anything with `batches(list of index arrays)` yielding (uint8 (n, 3, S, S) on the
device, labels, indices): a preprocessed split (alexctl.data.resident.open_source) or image files
(alexctl.data.image_files).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from alexctl.console import SILENT, Progress
from alexctl.data import augment
from alexctl.device import Runtime, autocast

Compute = Callable[[torch.Tensor], torch.Tensor]  # (n * crops, 3, c, c) patches -> (n * crops, d)


def infer(
    compute: Compute,
    source,
    indices: np.ndarray,
    mean_image: torch.Tensor,
    *,
    crops: int,
    crop: int,
    runtime: Runtime,
    batch_size: int,
    progress: Progress = SILENT,
    check: Callable[[], None] = lambda: None,
) -> np.ndarray:
    """(len(indices), d) float32: `compute` of each image's patches, averaged over its `crops` (1: the center
    crop; 10: the paper's ten), in the order of `indices`. `check()` runs after every batch (it may raise
    to stop, e.g. StopSignals.check)."""
    if crops not in (1, 10):
        raise ValueError(f"crops must be 1 or 10, not {crops}")
    indices = np.asarray(indices, dtype=np.int64)
    batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    out = []
    with torch.no_grad():
        for images, _, _ in source.batches(batches):
            out.append(infer_batch(compute, images, mean_image, crops=crops, crop=crop, runtime=runtime).cpu().numpy())
            progress.advance(images.shape[0])
            check()
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out).astype(np.float32)


def infer_batch(
    compute: Compute, images: torch.Tensor, mean_image: torch.Tensor, *, crops: int, crop: int, runtime: Runtime
) -> torch.Tensor:
    """(n, d) float32 on the device for one uint8 (n, 3, S, S) batch: `compute` averaged over the crops."""
    n = images.shape[0]
    if crops == 1:
        patches = augment.center_crop(
            images, mean_image, crop=crop, memory_format=runtime.memory_format, dtype=runtime.dtype
        )
    else:
        patches = augment.ten_crop(
            images, mean_image, crop=crop, memory_format=runtime.memory_format, dtype=runtime.dtype
        ).flatten(0, 1)
    return compute(patches).float().view(n, crops, -1).mean(1)


def probabilities(forward: Callable, runtime: Runtime) -> Compute:
    """The softmax of the network's logits. `forward` (the net, or its compiled form) runs in eval mode:
    the paper's "multiply the outputs by 0.5" is what inverted dropout already did at training time."""

    def compute(patches: torch.Tensor) -> torch.Tensor:
        with autocast(runtime):
            logits = forward(patches)
        return torch.softmax(logits.float(), dim=1)

    return compute


def last_hidden(net: torch.nn.Module, runtime: Runtime) -> Compute:
    """The last hidden layer's activations without dropout: fc7 (4096-d) for AlexNet, the paper's Figure 4."""

    def compute(patches: torch.Tensor) -> torch.Tensor:
        with autocast(runtime):
            return net.last_hidden(patches)

    return compute


def predict(
    forward: Callable,
    source,
    indices: np.ndarray,
    mean_image: torch.Tensor,
    *,
    crops: int,
    runtime: Runtime,
    batch_size: int,
    progress: Progress = SILENT,
    crop: int | None = None,
    check: Callable[[], None] = lambda: None,
) -> np.ndarray:
    """(len(indices), classes) float32: the softmax averaged over `crops`. `forward` is the network (or its
    compiled or wrapped form; `crop` is then needed) and is put in eval mode for the call."""
    net = getattr(forward, "_orig_mod", forward)  # torch.compile's wrapper keeps the module here
    crop = crop or net.input_size
    was_training = net.training
    net.eval()
    try:
        return infer(
            probabilities(forward, runtime),
            source,
            indices,
            mean_image,
            crops=crops,
            crop=crop,
            runtime=runtime,
            batch_size=batch_size,
            progress=progress,
            check=check,
        )
    finally:
        net.train(was_training)
