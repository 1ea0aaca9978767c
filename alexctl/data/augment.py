"""The paper's data augmentation and its ten test-time patches (both section 4.1), on batches.

Input: (N, 3, S, S) uint8 images already on the target device (S = 256 for AlexNet, 32
for the CIFAR net) and the per-pixel training-set mean, float32 (3, S, S), 0..255 units,
on the same device. Output: (N, 3, crop, crop) in `dtype` (float32 or bfloat16), 0..255
units minus the mean: the paper trains on "centered raw RGB values" (section 2), so there
is no division by a std.

train_batch is one pass over the batch: the random crop, the flip, the PCA lighting and the
mean subtraction are one gather from the uint8 pixels, with the lighting folded into the
subtracted mean: out = pixels[idx] - (mean[idx] - shift[n, c]), computed in float32 and
rounded once to `dtype`. On CUDA that gather is compiled (torch.compile: one kernel per
batch); on the CPU it is cut as one slice per image, which gives the same numbers bit for
bit (tested) and is faster there. Random numbers are drawn on the CPU from the caller's
torch.Generator and then moved to the device, so one seed gives the same augmentation on
CPU and GPU. Draw order per train_batch call: x offsets (N), y offsets (N), flips (N),
then the lighting alphas (N, 3).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from alexctl.data.transform import center_origin

LIGHTING_STD = 0.1  # section 4.1: alpha_i ~ N(0, 0.1)
FLIP_PROBABILITY = 0.5  # section 4.1: an image or its horizontal reflection


def mean_image_tensor(mean_image, device) -> torch.Tensor:
    """The statistics file's (S, S, 3) float64 mean image as the (3, S, S) float32 tensor these functions take."""
    return torch.from_numpy(np.asarray(mean_image, np.float32)).permute(2, 0, 1).contiguous().to(device)


def train_batch(
    images: torch.Tensor,
    mean_image: torch.Tensor,
    *,
    crop: int,
    generator: torch.Generator,
    lighting: Lighting | None,
    flip: bool = True,
    random_crop: bool = True,
    memory_format: torch.memory_format = torch.contiguous_format,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A random crop, a random horizontal flip and PCA lighting for every image independently.

    (N, 3, S, S) uint8 -> (N, 3, crop, crop) `dtype`, mean-subtracted: the mean image is
    cropped and flipped exactly as its image, which equals subtracting it at S x S first.
    flip=False: no reflections; random_crop=False: every image's centre patch (no
    translations). Either way the same numbers are drawn, so the other draws do not change.
    """
    n, size = _check(images, mean_image, crop, dtype)
    if generator.device.type != "cpu":
        raise ValueError(f"The augmentation generator must be a CPU torch.Generator, not one on {generator.device}.")
    xs, ys, flips, shift = _draws(n, size, crop, generator, lighting, flip)
    if not random_crop:
        xs.fill_(center_origin(size, crop)), ys.fill_(center_origin(size, crop))
    channels_last = memory_format == torch.channels_last
    if images.device.type == "cpu":
        # One slice per image: the same numbers as the gather, ~5x faster on a 2-core CPU
        # (measured: 69 against 383 ms for 128 images, 256 -> 224, float32).
        return _crop_each(images, mean_image, xs, ys, flips, shift, crop, channels_last, dtype)
    return _device_pass(images, mean_image, xs, ys, flips, shift, crop, channels_last, dtype)


@dataclass(eq=False)  # tensors: compare fields explicitly
class Lighting:
    """The paper's PCA colour augmentation (section 4.1), "fancy PCA".

    For each image, each time it is used, alpha_i ~ N(0, std) is drawn once and
    [p1 p2 p3] [alpha1 lambda1, alpha2 lambda2, alpha3 lambda3]^T is added to every pixel.

    Scale of lambda (a choice; the paper does not say): taken literally with lambda the
    eigenvalues of the covariance of 0..255 pixel values (ImageNet: lambda1 ~ 14,000),
    the shift would be ~1,400 levels at one std: absurd. alexctl follows fb.resnet.torch
    and the common PyTorch "Lighting" transform: lambda are the eigenvalues of the
    covariance of RGB values scaled to [0, 1] (lambda_unit = lambda_255 / 255**2), and
    the shift, computed in [0, 1] units, is added in 0..255 units (255 * shift_unit):
    a few levels (ImageNet: ~5.5 levels along p1 at one std).

    `from_stats` takes the eigen-decomposition alexctl's preprocess writes (0..255
    units, eigenvectors as columns). The tensors stay on the CPU by default so that the
    shift, computed where alpha is drawn, is bit-identical whichever device trains.
    """

    eigenvalues_unit: torch.Tensor  # (3,) float32, covariance eigenvalues of RGB in [0, 1] units
    eigenvectors: torch.Tensor  # (3, 3) float32, columns p_i
    std: float = LIGHTING_STD

    @staticmethod
    def from_stats(
        eigenvalues, eigenvectors, *, std: float = LIGHTING_STD, device: torch.device | str | None = None
    ) -> Lighting:
        """eigenvalues (3,), eigenvectors (3, 3) with columns p_i, both in 0..255 units (numpy or torch)."""
        values = torch.as_tensor(np.asarray(eigenvalues, dtype=np.float64)) / 255.0**2
        vectors = torch.as_tensor(np.asarray(eigenvectors, dtype=np.float64))
        if values.shape != (3,) or vectors.shape != (3, 3):
            raise ValueError(
                f"Lighting needs 3 eigenvalues and a 3x3 eigenvector matrix, "
                f"got shapes {tuple(values.shape)} and {tuple(vectors.shape)}."
            )
        return Lighting(values.float().to(device), vectors.float().to(device), std)

    def shift(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, 3) float32 RGB shifts in 0..255 units, one per image, on the eigen-tensors' device."""
        alpha = torch.randn(n, 3, generator=generator) * self.std  # (n, 3), drawn on the CPU
        weights = alpha.to(self.eigenvalues_unit.device) * self.eigenvalues_unit  # alpha_i * lambda_i
        # Elementwise product and sum rather than a matmul: exact float32 on any device (no TF32).
        return 255.0 * (self.eigenvectors[None] * weights[:, None, :]).sum(-1)


def center_crop(
    images: torch.Tensor,
    mean_image: torch.Tensor,
    *,
    crop: int,
    memory_format: torch.memory_format = torch.contiguous_format,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The validation transform: the mean-subtracted central patch, (N, 3, crop, crop) `dtype`."""
    _, size = _check(images, mean_image, crop, dtype)
    x, y = crop_positions(size, crop)[4]
    pixels = images[:, :, y : y + crop, x : x + crop]
    return _centered(pixels, mean_image[:, y : y + crop, x : x + crop], memory_format == torch.channels_last, dtype)


def ten_crop(
    images: torch.Tensor,
    mean_image: torch.Tensor,
    *,
    crop: int,
    memory_format: torch.memory_format = torch.contiguous_format,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The paper's ten test patches (section 4.1), (N, 10, 3, crop, crop) `dtype`, mean-subtracted.

    Order: top-left, top-right, bottom-left, bottom-right, center, then the same five
    flipped horizontally. (torchvision's ten_crop cuts its last five from the flipped
    image, so its 6th is alexctl's 7th: the flipped top-right; see the golden test.)
    With memory_format=torch.channels_last each (3, crop, crop) patch is stored
    channels-last, so out.flatten(0, 1) is a channels-last batch.
    """
    _, size = _check(images, mean_image, crop, dtype)
    five = crop_positions(size, crop)[:5]
    # Cut the uint8 pixels and the mean at the same places (the same numbers as subtracting
    # the S x S mean first, with a quarter of the memory traffic), then convert once.
    pixels = torch.stack([images[:, :, y : y + crop, x : x + crop] for x, y in five], 1)  # (N, 5, 3, crop, crop)
    means = torch.stack([mean_image[:, y : y + crop, x : x + crop] for x, y in five])  # (5, 3, crop, crop)
    pixels, means = torch.cat([pixels, pixels.flip(-1)], 1), torch.cat([means, means.flip(-1)])
    return _centered(pixels, means, memory_format == torch.channels_last, dtype)


def crop_positions(size: int, crop: int) -> list[tuple[int, int]]:
    """The (x, y) origins of ten_crop's patches, in its order; index 4 is center_crop's.

    The center origin is image.center_origin: 16 for 256/224, 4 for 32/24. The last five
    repeat the first five because a reflection is cut from the same place.
    """
    far, mid = size - crop, center_origin(size, crop)
    five = [(0, 0), (far, 0), (0, far), (far, far), (mid, mid)]
    return five + five


def _draws(n: int, size: int, crop: int, generator: torch.Generator, lighting: Lighting | None, flip: bool):
    """(xs, ys, flips, shift) on the CPU, drawn in the documented order; shift (n, 3) float32 or None."""
    # Every valid origin in [0, S - crop], i.e. 33 x 33 positions for 256/224. The paper's
    # "factor of 2048" is 32 * 32 * 2, one position short per axis (an off-by-one in its
    # arithmetic); alexctl samples every valid patch.
    xs = torch.randint(0, size - crop + 1, (n,), generator=generator)
    ys = torch.randint(0, size - crop + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < FLIP_PROBABILITY  # drawn even if unused: same crops either way
    if not flip:
        flips.zero_()
    shift = lighting.shift(n, generator).cpu() if lighting is not None else None
    return xs, ys, flips, shift


def _device_pass(
    images, mean_image, xs, ys, flips, shift, crop: int, channels_last: bool, dtype: torch.dtype
) -> torch.Tensor:
    """train_batch off the CPU: the draws moved to the device in two small copies, then one (compiled) gather."""
    device = images.device
    rows, cols = _rows_cols(xs, ys, flips, crop)
    indices = torch.stack([rows, cols]).to(device, non_blocking=True)  # (2, N, crop)
    shift = torch.zeros(len(xs), 3) if shift is None else shift  # mean - 0 is the mean, bit for bit
    args = (images, mean_image, indices[0], indices[1], shift.to(device, non_blocking=True), channels_last, dtype)
    try:
        return _device_gather()(*args)
    except torch._dynamo.exc.TorchDynamoException as e:  # the compiler failed: same numbers, a few more kernels
        global _compiled
        warnings.warn(
            f"alexctl: compiling the augmentation gather failed ({type(e).__name__}); running it eagerly.", stacklevel=2
        )
        _compiled = _gather
        return _gather(*args)


def _rows_cols(xs: torch.Tensor, ys: torch.Tensor, flips: torch.Tensor, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, crop) source rows and columns of every output row and column; columns reversed where flipped."""
    steps = torch.arange(crop)
    rows = ys[:, None] + steps
    cols = torch.where(flips[:, None], xs[:, None] + crop - 1 - steps, xs[:, None] + steps)
    return rows, cols


def _gather(images, mean_image, rows, cols, shift, channels_last: bool, dtype: torch.dtype) -> torch.Tensor:
    """The formula of train_batch, as one gather:

    out[n, c, i, j] = images[n, c, r, k] - (mean_image[c, r, k] - shift[n, c]), r = rows[n, i], k = cols[n, j],
    in float32, then rounded to `dtype`. rows, cols: (N, crop) int64; shift: (N, 3) float32.
    """
    n = images.shape[0]
    batch = torch.arange(n, device=images.device)
    channel = torch.arange(3, device=images.device)
    if channels_last:
        # Index into an (N, crop, crop, 3) result and permute: a channels-last tensor with no extra copy.
        idx = (batch[:, None, None, None], channel[None, None, None, :], rows[:, :, None, None], cols[:, None, :, None])
        centred = images[idx].float() - (mean_image[idx[1:]] - shift[:, None, None, :])
        return centred.to(dtype).permute(0, 3, 1, 2)
    idx = (batch[:, None, None, None], channel[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :])
    return (images[idx].float() - (mean_image[idx[1:]] - shift[:, :, None, None])).to(dtype)


def _device_gather():
    """_gather compiled into one kernel where Triton can build it (CUDA), else _gather itself."""
    global _compiled
    if _compiled is None:
        from torch.utils._triton import has_triton

        _compiled = torch.compile(_gather, dynamic=None) if has_triton() else _gather
    return _compiled


_compiled = None


def _crop_each(
    images, mean_image, xs, ys, flips, shift, crop: int, channels_last: bool, dtype: torch.dtype
) -> torch.Tensor:
    """train_batch on the CPU: the numbers of _gather (bit for bit), one slice per image."""
    n, size = images.shape[0], images.shape[-1]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((n, 3, crop, crop), dtype=dtype, memory_format=memory_format)
    # A reflected crop of the mean at x is a plain crop of the reflected mean at size - crop - x.
    mirrored = mean_image.flip(-1)
    for i, (x, y, flip) in enumerate(zip(xs.tolist(), ys.tolist(), flips.tolist())):
        pixels = images[i, :, y : y + crop, x : x + crop]
        if flip:
            pixels, x = pixels.flip(-1), size - crop - x  # a uint8 copy
        mean = (mirrored if flip else mean_image)[:, y : y + crop, x : x + crop]
        if shift is not None:
            mean = mean - shift[i, :, None, None]
        torch.sub(pixels, mean, out=out[i])  # uint8 - float32 is computed in float32, then rounded to dtype
    return out


def _centered(pixels: torch.Tensor, mean: torch.Tensor, channels_last: bool, dtype: torch.dtype) -> torch.Tensor:
    """(..., 3, c, c) uint8 minus a broadcastable float32 mean -> `dtype`, optionally channels-last."""
    if channels_last:
        # Lay out the cheap uint8 copy channels-last; float(), sub_ and to() keep that layout.
        pixels = pixels.movedim(-3, -1).contiguous().movedim(-1, -3)
    return pixels.float().sub_(mean).to(dtype)


def _check(images: torch.Tensor, mean_image: torch.Tensor, crop: int, dtype: torch.dtype) -> tuple[int, int]:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(
            f"Expected square uint8 images of shape (N, 3, S, S), got {images.dtype} {tuple(images.shape)}."
        )
    n, _, size, _ = images.shape
    if mean_image.shape != (3, size, size) or mean_image.dtype != torch.float32 or mean_image.device != images.device:
        raise ValueError(
            f"Expected a float32 mean image of shape (3, {size}, {size}) on {images.device}, "
            f"got {mean_image.dtype} {tuple(mean_image.shape)} on {mean_image.device}."
        )
    if not 0 < crop <= size:
        raise ValueError(f"Crop size {crop} does not fit in {size} x {size} images.")
    if not dtype.is_floating_point:
        raise ValueError(f"The output dtype must be a floating-point type such as torch.bfloat16, not {dtype}.")
    return n, size
