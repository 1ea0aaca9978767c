"""Softmax predictions of a network on a preprocessed split, with the paper's test-time crops.

One home for inference, used by training's validation (the center crop, every epoch) and by
`alexctl eval` (ten crops: the four corners and the center, plus their reflections, with the
softmax outputs averaged; section 4.1). Each 256x256 image is decoded once and its crops are
cut on the device.
"""

from __future__ import annotations

import numpy as np
import torch

from alexctl import device as device_ops
from alexctl.console import SILENT, Progress
from alexctl.data import augment
from alexctl.data.loader import Split, batch_loader, to_device


def predict(model: torch.nn.Module, split: Split, mean_image: torch.Tensor, *, crops: int, crop: int,
            runtime: device_ops.Runtime, batch_size: int, indices: np.ndarray | None = None,
            progress: Progress = SILENT) -> np.ndarray:
    """(len(indices), classes) float32: the softmax averaged over `crops` (1: center, 10: the paper's ten).

    `model` is called in eval mode (dropout off: the paper's "multiply the outputs by 0.5"
    is what inverted dropout already did at training time).
    """
    if crops not in (1, 10):
        raise ValueError(f"crops must be 1 or 10, not {crops}")
    indices = np.arange(len(split)) if indices is None else indices
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for images, _, _ in batch_loader(split, batches, workers=runtime.workers, decode=runtime.decode,
                                             pin_memory=runtime.is_cuda):
                x = to_device(images, runtime.primary)
                n = x.shape[0]
                if crops == 1:
                    patches = augment.center_crop(x, mean_image, crop=crop, memory_format=memory_format)
                else:
                    patches = augment.ten_crop(x, mean_image, crop=crop, memory_format=memory_format).flatten(0, 1)
                with device_ops.autocast(runtime):
                    logits = model(patches)
                probs = torch.softmax(logits.float(), dim=1).view(n, crops, -1).mean(1)
                out.append(probs.cpu().numpy())
                progress.advance(n)
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out).astype(np.float32)
