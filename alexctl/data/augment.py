"""The paper's data augmentation and its ten test-time patches (both section 4.1), on batches.

Input: (N, 3, S, S) uint8 images already on the target device (S = 256 for AlexNet, 32
for the CIFAR net) and the per-pixel training-set mean, float32 (3, S, S), 0..255 units,
on the same device. Output: float32 (N, 3, crop, crop), 0..255 units minus the mean: the
paper trains on "centered raw RGB values" (section 2), so there is no division by a std.

Every function works on the whole batch at once (one gather, no loop over samples), so
it runs as a few kernels on a GPU. Random numbers are drawn on the CPU from the caller's
torch.Generator and then moved to the device, so one seed gives the same augmentation on
CPU and GPU. Draw order per train_batch call: x offsets (N), y offsets (N), flips (N),
then the lighting alphas (N, 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

LIGHTING_STD = 0.1  # section 4.1: alpha_i ~ N(0, 0.1)
FLIP_PROBABILITY = 0.5  # section 4.1: an image or its horizontal reflection


def mean_image_tensor(mean_image, device) -> torch.Tensor:
    """The statistics file's (S, S, 3) float64 mean image as the (3, S, S) float32 tensor these functions take."""
    return torch.from_numpy(np.asarray(mean_image, np.float32)).permute(2, 0, 1).contiguous().to(device)


def train_batch(images: torch.Tensor, mean_image: torch.Tensor, *, crop: int, generator: torch.Generator,
                lighting: Lighting | None, flip: bool = True,
                memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """A random crop, a random horizontal flip and PCA lighting for every image independently.

    (N, 3, S, S) uint8 -> (N, 3, crop, crop) float32, mean-subtracted: the mean image is
    cropped and flipped exactly as its image, which equals subtracting it at S x S first.
    """
    n, size = _check(images, mean_image, crop)
    if generator.device.type != "cpu":
        raise ValueError(f"The augmentation generator must be a CPU torch.Generator, not one on {generator.device}.")
    # Every valid origin in [0, S - crop], i.e. 33 x 33 positions for 256/224. The paper's
    # "factor of 2048" is 32 * 32 * 2, one position short per axis (an off-by-one in its
    # arithmetic); alexctl samples every valid patch.
    xs = torch.randint(0, size - crop + 1, (n,), generator=generator)
    ys = torch.randint(0, size - crop + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < FLIP_PROBABILITY  # drawn even if unused: same crops either way
    if not flip:
        flips.zero_()
    device = images.device
    if device.type == "cpu":
        # One slice per image: 2-8x faster than the gather on a CPU (measured, 2 cores); same numbers.
        out = _crop_each(images, mean_image, xs, ys, flips, crop, memory_format)
    else:
        steps = torch.arange(crop)
        rows = ys[:, None] + steps  # (N, crop)
        cols = torch.where(flips[:, None], xs[:, None] + crop - 1 - steps, xs[:, None] + steps)  # reversed if flipped
        rows, cols = rows.to(device, non_blocking=True), cols.to(device, non_blocking=True)
        out = _gather(images, mean_image, rows, cols, memory_format == torch.channels_last)
    if lighting is not None:
        out += lighting.shift(n, generator).to(device, non_blocking=True)[:, :, None, None]
    return out


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
    def from_stats(eigenvalues, eigenvectors, *, std: float = LIGHTING_STD,
                   device: torch.device | str | None = None) -> Lighting:
        """eigenvalues (3,), eigenvectors (3, 3) with columns p_i, both in 0..255 units (numpy or torch)."""
        values = torch.as_tensor(np.asarray(eigenvalues, dtype=np.float64)) / 255.0**2
        vectors = torch.as_tensor(np.asarray(eigenvectors, dtype=np.float64))
        if values.shape != (3,) or vectors.shape != (3, 3):
            raise ValueError(f"Lighting needs 3 eigenvalues and a 3x3 eigenvector matrix, "
                             f"got shapes {tuple(values.shape)} and {tuple(vectors.shape)}.")
        return Lighting(values.float().to(device), vectors.float().to(device), std)

    def shift(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, 3) float32 RGB shifts in 0..255 units, one per image, on the eigen-tensors' device."""
        alpha = torch.randn(n, 3, generator=generator) * self.std  # (n, 3), drawn on the CPU
        weights = alpha.to(self.eigenvalues_unit.device) * self.eigenvalues_unit  # alpha_i * lambda_i
        # Elementwise product and sum rather than a matmul: exact float32 on any device (no TF32).
        return 255.0 * (self.eigenvectors[None] * weights[:, None, :]).sum(-1)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(N, 3, H, W) float -> x + one constant RGB shift per image."""
        return x + self.shift(x.shape[0], generator).to(x.device)[:, :, None, None]


def center_crop(images: torch.Tensor, mean_image: torch.Tensor, *, crop: int,
                memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """The validation transform: the mean-subtracted central patch, (N, 3, crop, crop) float32."""
    _, size = _check(images, mean_image, crop)
    x, y = crop_positions(size, crop)[4]
    pixels = images[:, :, y:y + crop, x:x + crop]
    return _centered(pixels, mean_image[:, y:y + crop, x:x + crop], memory_format == torch.channels_last)


def ten_crop(images: torch.Tensor, mean_image: torch.Tensor, *, crop: int,
             memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """The paper's ten test patches (section 4.1), (N, 10, 3, crop, crop) float32, mean-subtracted.

    Order: top-left, top-right, bottom-left, bottom-right, center, then the same five
    flipped horizontally. With memory_format=torch.channels_last each (3, crop, crop)
    patch is stored channels-last, so out.flatten(0, 1) is a channels-last batch.
    """
    _, size = _check(images, mean_image, crop)
    five = crop_positions(size, crop)[:5]
    # Cut the uint8 pixels and the mean at the same places (the same numbers as subtracting
    # the S x S mean first, with a quarter of the memory traffic), then convert once.
    pixels = torch.stack([images[:, :, y:y + crop, x:x + crop] for x, y in five], 1)  # (N, 5, 3, crop, crop)
    means = torch.stack([mean_image[:, y:y + crop, x:x + crop] for x, y in five])  # (5, 3, crop, crop)
    pixels, means = torch.cat([pixels, pixels.flip(-1)], 1), torch.cat([means, means.flip(-1)])
    return _centered(pixels, means, memory_format == torch.channels_last)


def crop_positions(size: int, crop: int) -> list[tuple[int, int]]:
    """The (x, y) origins of ten_crop's patches, in its order; index 4 is center_crop's.

    The center origin is round((size - crop) / 2) (Python's round, as torchvision's
    CenterCrop): 16 for 256/224, 4 for 32/24. The last five repeat the first five
    because a reflection is cut from the same place.
    """
    far, mid = size - crop, round((size - crop) / 2)
    five = [(0, 0), (far, 0), (0, far), (far, far), (mid, mid)]
    return five + five


def _gather(images, mean_image, rows, cols, channels_last: bool) -> torch.Tensor:
    """out[n, c, i, j] = images[n, c, rows[n, i], cols[n, j]] - mean_image[c, rows[n, i], cols[n, j]]."""
    n = images.shape[0]
    batch = torch.arange(n, device=images.device)
    channel = torch.arange(3, device=images.device)
    if channels_last:
        # Index into an (N, crop, crop, 3) result and permute: a channels-last tensor with no extra copy.
        idx = (batch[:, None, None, None], channel[None, None, None, :], rows[:, :, None, None], cols[:, None, :, None])
        pixels, mean = images[idx], mean_image[idx[1:]]
        return (pixels.float() - mean).permute(0, 3, 1, 2)
    idx = (batch[:, None, None, None], channel[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :])
    return images[idx].float() - mean_image[idx[1:]]


def _crop_each(images, mean_image, xs, ys, flips, crop: int, memory_format) -> torch.Tensor:
    """train_batch's crops on the CPU: the same result as _gather, one slice per image."""
    out = torch.empty((images.shape[0], 3, crop, crop), dtype=torch.float32, memory_format=memory_format)
    for i, (x, y, flip) in enumerate(zip(xs.tolist(), ys.tolist(), flips.tolist())):
        patch = images[i, :, y:y + crop, x:x + crop].float() - mean_image[:, y:y + crop, x:x + crop]
        out[i] = patch.flip(-1) if flip else patch
    return out


def _centered(pixels: torch.Tensor, mean: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(..., 3, c, c) uint8 minus a broadcastable float32 mean -> float32, optionally channels-last."""
    if channels_last:
        # Lay out the cheap uint8 copy channels-last; float() and sub_ keep that layout.
        pixels = pixels.movedim(-3, -1).contiguous().movedim(-1, -3)
    return pixels.float().sub_(mean)


def _check(images: torch.Tensor, mean_image: torch.Tensor, crop: int) -> tuple[int, int]:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"Expected square uint8 images of shape (N, 3, S, S), "
                         f"got {images.dtype} {tuple(images.shape)}.")
    n, _, size, _ = images.shape
    if mean_image.shape != (3, size, size) or mean_image.dtype != torch.float32 or mean_image.device != images.device:
        raise ValueError(f"Expected a float32 mean image of shape (3, {size}, {size}) on {images.device}, "
                         f"got {mean_image.dtype} {tuple(mean_image.shape)} on {mean_image.device}.")
    if not 0 < crop <= size:
        raise ValueError(f"Crop size {crop} does not fit in {size} x {size} images.")
    return n, size
