"""alexctl/data/augment.py: random crops, flips and PCA lighting (section 4.1), test-time crops.

Most tests feed a synthetic image whose pixels encode their own coordinates
(channel 0 = x, channel 1 = y, channel 2 = sample index) with a zero mean, so every
output patch says where it was cut from and whether it was flipped.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexctl.data.augment import Lighting, center_crop, crop_positions, ten_crop, train_batch

ROOT = Path(__file__).resolve().parents[2]
# The shared data sits beside the project (../shared/data) or, on a device machine, inside it.
PHOTOS = next((p for p in (ROOT.parent / "shared", ROOT / "shared") if p.is_dir()), ROOT.parent / "shared")
PHOTOS = PHOTOS / "data" / "imagenet-samples"
# ImageNet's RGB eigen-decomposition in [0, 1] units as fb.resnet.torch publishes it, here in 0..255 units.
EIGENVALUES_255 = np.array([0.2175, 0.0188, 0.0045]) * 255**2
EIGENVECTORS = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
SIZES = [(256, 224), (32, 24)]


def coordinate_images(n, size):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    image = torch.stack([xx % 256, yy % 256, torch.zeros_like(xx)]).to(torch.uint8)
    images = image.expand(n, 3, size, size).clone()
    images[:, 2] = (torch.arange(n) % 256).to(torch.uint8)[:, None, None]
    return images, torch.zeros(3, size, size)


def photographs(size, count=4):
    paths = sorted(PHOTOS.glob("*.JPEG"))[:count]
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def decode(patches, owners=None):
    """(N, 3, c, c) patches of coordinate images -> x origins, y origins, flips; asserts they are exact crops.

    owners: (N,) the image each patch must come from; default patch i from image i.
    """
    owners = torch.arange(len(patches)) if owners is None else owners
    c = patches.shape[-1]
    steps = torch.arange(c, dtype=patches.dtype)
    x_first, x_last, ys = patches[:, 0, 0, 0], patches[:, 0, 0, -1], patches[:, 1, 0, 0]
    flips = x_first > x_last
    xs = torch.where(flips, x_last, x_first)
    cols = torch.where(flips[:, None], xs[:, None] + c - 1 - steps, xs[:, None] + steps)  # (N, c)
    expected_x = cols[:, None, :].expand(-1, c, -1)
    expected_y = (ys[:, None] + steps)[:, :, None].expand(-1, -1, c)
    assert torch.equal(patches[:, 0], expected_x) and torch.equal(patches[:, 1], expected_y)
    assert torch.equal(patches[:, 2], (owners % 256).to(patches.dtype)[:, None, None].expand(-1, c, c))
    return xs.long(), ys.long(), flips


@pytest.mark.parametrize("size, crop", SIZES)
def test_ten_crop_and_center_crop_positions(size, crop):
    images, zero = coordinate_images(2, size)
    out = ten_crop(images, zero, crop=crop)
    assert out.shape == (2, 10, 3, crop, crop) and out.dtype == torch.float32
    xs, ys, flips = decode(out.flatten(0, 1), owners=torch.arange(2).repeat_interleave(10))
    far, mid = size - crop, (size - crop) // 2  # 32 and 16 for 256/224; 8 and 4 for 32/24
    origins = [(0, 0), (far, 0), (0, far), (far, far), (mid, mid)] * 2
    assert list(zip(xs.tolist(), ys.tolist())) == origins * 2
    assert flips.tolist() == ([False] * 5 + [True] * 5) * 2
    assert crop_positions(size, crop) == origins
    assert torch.equal(center_crop(images, zero, crop=crop), out[:, 4])
    assert torch.equal(out[:, 5:], out[:, :5].flip(-1))


@pytest.mark.parametrize("size, crop", SIZES)
def test_train_batch_takes_exact_crops_at_every_offset_with_half_flipped(size, crop):
    generator = torch.Generator().manual_seed(0)
    n = 2000 if size == 32 else 384
    images, zero = coordinate_images(n, size)
    out = train_batch(images, zero, crop=crop, generator=generator, lighting=None)
    assert out.shape == (n, 3, crop, crop) and out.dtype == torch.float32
    xs, ys, flips = decode(out)  # each patch is an exact crop (flipped or not) of its own image
    every = set(range(size - crop + 1))  # 0..S-crop inclusive: 33 positions per axis for 256/224
    assert set(xs.tolist()) == every and set(ys.tolist()) == every
    if size == 32:
        assert len(set(zip(xs.tolist(), ys.tolist()))) == len(every) ** 2  # every (x, y) pair
    assert 0.45 < flips.float().mean().item() < 0.55
    no_flip = train_batch(images, zero, crop=crop, generator=torch.Generator().manual_seed(0), lighting=None,
                          flip=False)
    xs2, ys2, flips2 = decode(no_flip)
    assert not flips2.any() and torch.equal(xs2, xs) and torch.equal(ys2, ys)  # same crops, no reflections


def test_mean_subtraction_on_photographs():
    images = photographs(256)
    mean = torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(3)) * 255
    centered = images.float() - mean  # the paper: subtract the 256x256 mean, then cut
    # Recover the random crops from a coordinate batch drawn with the same seed, then compare.
    coords, zero = coordinate_images(len(images), 256)
    xs, ys, flips = decode(train_batch(coords, zero, crop=224, generator=torch.Generator().manual_seed(7),
                                       lighting=None))
    out = train_batch(images, mean, crop=224, generator=torch.Generator().manual_seed(7), lighting=None)
    for i, (x, y, f) in enumerate(zip(xs.tolist(), ys.tolist(), flips.tolist())):
        expected = centered[i, :, y:y + 224, x:x + 224]
        torch.testing.assert_close(out[i], expected.flip(-1) if f else expected, rtol=0, atol=0)
    torch.testing.assert_close(center_crop(images, mean, crop=224), centered[:, :, 16:240, 16:240], rtol=0, atol=0)
    tens = ten_crop(images, mean, crop=224)
    torch.testing.assert_close(tens[:, 3], centered[:, :, 32:, 32:], rtol=0, atol=0)
    torch.testing.assert_close(tens[:, 6], centered[:, :, :224, 32:].flip(-1), rtol=0, atol=0)


def test_lighting_adds_one_rgb_vector_per_image_from_the_drawn_alphas():
    lighting = Lighting.from_stats(EIGENVALUES_255, EIGENVECTORS)
    x = torch.rand(5, 3, 8, 8) * 255
    shifted = lighting(x, torch.Generator().manual_seed(11))
    delta = (shifted - x).double()
    torch.testing.assert_close(delta, delta[:, :, :1, :1].expand_as(delta), rtol=0, atol=1e-4)  # constant per image
    alpha = torch.randn(5, 3, generator=torch.Generator().manual_seed(11)) * 0.1  # the same draws
    lambda_unit = torch.tensor(EIGENVALUES_255) / 255**2
    expected = 255 * (torch.tensor(EIGENVECTORS) @ (alpha.double() * lambda_unit).T).T  # (5, 3)
    torch.testing.assert_close(delta[:, :, 0, 0], expected, rtol=1e-5, atol=1e-4)


def test_lighting_alpha_std_and_shift_size():
    lighting = Lighting.from_stats(EIGENVALUES_255, EIGENVECTORS)
    shifts = lighting.shift(40_000, torch.Generator().manual_seed(5)).double()  # (n, 3), 0..255 units
    lambda_unit = torch.tensor(EIGENVALUES_255) / 255**2
    alpha = (shifts / 255) @ torch.tensor(EIGENVECTORS) / lambda_unit  # P is orthonormal: P^T s = alpha * lambda
    assert alpha.std(0).sub(0.1).abs().max() < 0.002  # alpha_i ~ N(0, 0.1), section 4.1
    assert alpha.mean(0).abs().max() < 0.002
    # A few grey levels along p1 (255 * 0.1 * 0.2175 = 5.5), not the ~1,400 of the literal 0..255 reading.
    along_p1 = shifts @ torch.tensor(EIGENVECTORS)[:, 0]
    assert 5.4 < along_p1.std() < 5.7


def test_train_batch_applies_lighting_after_the_same_crops():
    images = photographs(256, count=3)
    mean = images.float().mean(0)
    lighting = Lighting.from_stats(EIGENVALUES_255, EIGENVECTORS)
    plain = train_batch(images, mean, crop=224, generator=torch.Generator().manual_seed(2), lighting=None)
    lit = train_batch(images, mean, crop=224, generator=torch.Generator().manual_seed(2), lighting=lighting)
    generator = torch.Generator().manual_seed(2)
    torch.randint(0, 33, (3,), generator=generator), torch.randint(0, 33, (3,), generator=generator)
    torch.rand(3, generator=generator)  # the crop and flip draws come first (module docstring)
    expected = lighting.shift(3, generator)[:, :, None, None]
    torch.testing.assert_close(lit - plain, expected.expand_as(plain), rtol=0, atol=1e-3)


def test_same_seed_same_batch_different_seed_different_batch():
    images = photographs(256, count=4)
    mean = images.float().mean(0)
    lighting = Lighting.from_stats(EIGENVALUES_255, EIGENVECTORS)

    def run(seed):
        return train_batch(images, mean, crop=224, generator=torch.Generator().manual_seed(seed), lighting=lighting)

    assert torch.equal(run(4), run(4))
    assert not torch.equal(run(4), run(5))


@pytest.mark.parametrize("size, crop", SIZES)
def test_channels_last_output_has_the_same_values(size, crop):
    images = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mean = torch.rand(3, size, size) * 255
    cl = torch.channels_last
    lighting = Lighting.from_stats(EIGENVALUES_255, EIGENVECTORS)
    a = train_batch(images, mean, crop=crop, generator=torch.Generator().manual_seed(0), lighting=lighting)
    b = train_batch(images, mean, crop=crop, generator=torch.Generator().manual_seed(0), lighting=lighting,
                    memory_format=cl)
    assert a.is_contiguous() and b.is_contiguous(memory_format=cl) and torch.equal(a, b)
    c, c_plain = center_crop(images, mean, crop=crop, memory_format=cl), center_crop(images, mean, crop=crop)
    assert c_plain.is_contiguous() and c.is_contiguous(memory_format=cl) and torch.equal(c, c_plain)
    t, t_plain = ten_crop(images, mean, crop=crop, memory_format=cl), ten_crop(images, mean, crop=crop)
    assert t_plain.is_contiguous() and t.flatten(0, 1).is_contiguous(memory_format=cl) and torch.equal(t, t_plain)


def test_bad_inputs_are_rejected():
    images, zero = coordinate_images(2, 32)
    generator = torch.Generator()
    with pytest.raises(ValueError, match="uint8"):
        center_crop(images.float(), zero, crop=24)
    with pytest.raises(ValueError, match="mean image"):
        center_crop(images, torch.zeros(3, 16, 16), crop=24)
    with pytest.raises(ValueError, match="Crop size 33"):
        train_batch(images, zero, crop=33, generator=generator, lighting=None)
    with pytest.raises(ValueError, match="eigenvector"):
        Lighting.from_stats([1.0, 2.0], np.eye(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_same_augmentation_as_cpu():
    images = photographs(256, count=8)
    mean = images.float().mean(0)
    lighting = Lighting.from_stats(EIGENVALUES_255, EIGENVECTORS)
    cpu = train_batch(images, mean, crop=224, generator=torch.Generator().manual_seed(9), lighting=lighting)
    gpu = train_batch(images.cuda(), mean.cuda(), crop=224, generator=torch.Generator().manual_seed(9),
                      lighting=lighting)
    assert gpu.is_cuda and torch.equal(cpu, gpu.cpu())
    torch.testing.assert_close(ten_crop(images.cuda(), mean.cuda(), crop=224).cpu(), ten_crop(images, mean, crop=224),
                               rtol=0, atol=0)


def test_the_cpu_slices_and_the_device_gather_give_identical_batches():
    """train_batch cuts one slice per image on the CPU and uses one gather elsewhere: same numbers."""
    from alexctl.data.augment import _gather

    g = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8, generator=g)
    mean = torch.rand(3, 40, 40, generator=g) * 255
    for memory_format in (torch.contiguous_format, torch.channels_last):
        out = train_batch(images, mean, crop=32, generator=torch.Generator().manual_seed(3), lighting=None,
                          memory_format=memory_format)
        draws = torch.Generator().manual_seed(3)
        xs = torch.randint(0, 9, (6,), generator=draws)
        ys = torch.randint(0, 9, (6,), generator=draws)
        flips = torch.rand(6, generator=draws) < 0.5
        steps = torch.arange(32)
        rows = ys[:, None] + steps
        cols = torch.where(flips[:, None], xs[:, None] + 31 - steps, xs[:, None] + steps)
        expected = _gather(images, mean, rows, cols, memory_format == torch.channels_last)
        assert torch.equal(out, expected)
        assert out.is_contiguous(memory_format=memory_format)
