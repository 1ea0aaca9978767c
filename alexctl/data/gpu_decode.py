"""Batches of JPEGs decoded on the GPU by nvJPEG (torchvision.io.decode_jpeg), made safe, with a CPU fallback.

Two upstream behaviours shape it (../shared/spec/gpu-notes.md, "First contact"):

- nvJPEG writes before queued work has read. decode_jpeg(device="cuda") allocates its outputs on the
  current stream and nvJPEG's hardware engine writes them without waiting for the kernels queued there,
  which may still read that memory (the caching allocator recycles it stream-ordered). pytorch/vision
  PR #9606 saw 199 of 200 iterations corrupted on an H100, silently; torchcodec PR #1634 fixed it with
  one stream synchronise before the batched decode. Until torchvision carries it, every batched decode
  here is preceded by a synchronise of the current stream.
- A decoder that fails on bytes libjpeg-turbo decodes is the decoder's fault, not the shard's. Then the
  batch is decoded on the CPU instead, and so is every later batch of this process on that device, with
  one warning naming the cause. Only bytes that libjpeg-turbo cannot decode either are a damaged shard
  (a UserError naming the shard and the key, from Split.decode_into).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from alexctl.data.loader import Split
from alexctl.errors import UserError

# device -> why nvJPEG was given up on it in this process (one warning each, then CPU decoding).
_given_up: dict[torch.device, str] = {}


def decode_batch(split: Split, indices: np.ndarray, datas: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """(n, 3, S, S) uint8 on `device` from the n 1-D uint8 CPU tensors `datas` (sample indices[k]'s JPEG), by
    nvJPEG; by libjpeg-turbo once nvJPEG has failed on `device` in this process."""
    size = split.image_size
    if not datas:
        return torch.empty((0, 3, size, size), dtype=torch.uint8, device=device)
    if device not in _given_up:
        synchronize_stream(device)  # nothing queued may still read the memory nvJPEG's outputs will take
        try:
            images = nvjpeg(datas, device)
        except RuntimeError as e:
            images = decode_on_cpu(split, indices, datas, device)  # a damaged JPEG raises its UserError here
            _give_up(device, e)
            return images
        for i, image in zip(indices, images):
            if image.shape != (3, size, size):
                raise UserError(
                    f"{split.describe(i)} is {image.shape[2]}x{image.shape[1]} pixels, not {size}x{size} "
                    f"as the split's manifest says; run `alexctl preprocess` again."
                )
        return torch.stack(images)
    return decode_on_cpu(split, indices, datas, device)


def synchronize_stream(device: torch.device) -> None:
    """Wait for the work queued on `device`'s current stream (on the host: nvJPEG ignores stream order)."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def nvjpeg(datas: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """One batched nvJPEG decode: a (3, H, W) uint8 tensor on `device` per JPEG."""
    from torchvision.io import ImageReadMode, decode_jpeg  # torchvision's image extension: only this path needs it

    return decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)


def decode_on_cpu(split: Split, indices: np.ndarray, datas: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The batch decoded by libjpeg-turbo in this process, (n, 3, S, S) uint8 (channels-last) on `device`."""
    size = split.image_size
    out = np.empty((len(datas), size, size, 3), np.uint8)
    for k, (i, data) in enumerate(zip(indices, datas)):
        split.decode_into(i, data.numpy(), out[k])
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(device)


def _give_up(device: torch.device, error: Exception) -> None:
    cause = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
    _given_up[device] = f"{type(error).__name__}: {cause}"
    warnings.warn(
        f"alexctl: nvJPEG failed on {device} ({_given_up[device]}) on JPEGs that libjpeg-turbo decodes; "
        "decoding on the CPU from now on (the shards are fine).",
        RuntimeWarning,
        stacklevel=3,
    )
