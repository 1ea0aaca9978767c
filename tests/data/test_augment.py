"""alexctl/data/augment.py: random crops, flips and PCA lighting (section 4.1), test-time crops.

Most tests feed a synthetic image whose pixels encode their own coordinates
(channel 0 = x, channel 1 = y, channel 2 = sample index) with a zero mean, so every
output patch says where it was cut from and whether it was flipped.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from alexctl import device
from alexctl.config import RuntimeOptions
from alexctl.data.augment import Lighting, center_crop, crop_positions, ten_crop, train_batch
from alexctl.data.transform import center_origin
from alexctl.training.train import Augmenter

from helpers import SHARED_DATA

PHOTOS = SHARED_DATA / "imagenet-samples"  # ALEXCTL_SHARED_DATA moves it (a GPU machine carries a few: .data/tests)
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
    assert abs(flips.float().mean().item() - 0.5) < 5 * (0.25 / n) ** 0.5  # 5 binomial sigmas: any seed passes
    no_flip = train_batch(
        images, zero, crop=crop, generator=torch.Generator().manual_seed(0), lighting=None, flip=False
    )
    xs2, ys2, flips2 = decode(no_flip)
    assert not flips2.any() and torch.equal(xs2, xs) and torch.equal(ys2, ys)  # same crops, no reflections
    centred = train_batch(
        images, zero, crop=crop, generator=torch.Generator().manual_seed(0), lighting=None, random_crop=False
    )
    xs3, ys3, flips3 = decode(centred)
    mid = center_origin(size, crop)
    assert (xs3 == mid).all() and (ys3 == mid).all() and torch.equal(flips3, flips)  # same reflections, no shifts


def test_mean_subtraction_on_photographs():
    images = photographs(256)
    mean = torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(3)) * 255
    centered = images.float() - mean  # the paper: subtract the 256x256 mean, then cut
    # Recover the random crops from a coordinate batch drawn with the same seed, then compare.
    coords, zero = coordinate_images(len(images), 256)
    xs, ys, flips = decode(
        train_batch(coords, zero, crop=224, generator=torch.Generator().manual_seed(7), lighting=None)
    )
    out = train_batch(images, mean, crop=224, generator=torch.Generator().manual_seed(7), lighting=None)
    for i, (x, y, f) in enumerate(zip(xs.tolist(), ys.tolist(), flips.tolist())):
        expected = centered[i, :, y : y + 224, x : x + 224]
        torch.testing.assert_close(out[i], expected.flip(-1) if f else expected, rtol=0, atol=0)
    torch.testing.assert_close(center_crop(images, mean, crop=224), centered[:, :, 16:240, 16:240], rtol=0, atol=0)
    tens = ten_crop(images, mean, crop=224)
    torch.testing.assert_close(tens[:, 3], centered[:, :, 32:, 32:], rtol=0, atol=0)
    torch.testing.assert_close(tens[:, 6], centered[:, :, :224, 32:].flip(-1), rtol=0, atol=0)


def test_lighting_adds_one_rgb_vector_per_image_from_the_drawn_alphas():
    images = photographs(256, count=5)
    mean = images.float().mean(0)
    lighting = Lighting.from_stats(EIGENVALUES_255, EIGENVECTORS)
    plain = train_batch(images, mean, crop=224, generator=torch.Generator().manual_seed(11), lighting=None)
    lit = train_batch(images, mean, crop=224, generator=torch.Generator().manual_seed(11), lighting=lighting)
    delta = (lit - plain).double()
    torch.testing.assert_close(delta, delta[:, :, :1, :1].expand_as(delta), rtol=0, atol=1e-4)  # constant per image
    generator = torch.Generator().manual_seed(11)
    torch.randint(0, 33, (5,), generator=generator), torch.randint(0, 33, (5,), generator=generator)
    torch.rand(5, generator=generator)  # the crop and flip draws come first (module docstring)
    alpha = torch.randn(5, 3, generator=generator) * 0.1  # then the alphas
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
    b = train_batch(
        images, mean, crop=crop, generator=torch.Generator().manual_seed(0), lighting=lighting, memory_format=cl
    )
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
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_gives_the_same_augmentation_as_cpu(memory_format, dtype):
    images = photographs(256, count=8)
    mean = images.float().mean(0)
    lighting = Lighting.from_stats(EIGENVALUES_255, EIGENVECTORS)
    kw = dict(crop=224, lighting=lighting, memory_format=memory_format, dtype=dtype)
    cpu = train_batch(images, mean, generator=torch.Generator().manual_seed(9), **kw)
    gpu = train_batch(images.cuda(), mean.cuda(), generator=torch.Generator().manual_seed(9), **kw)  # compiled
    assert gpu.is_cuda and gpu.dtype == dtype and gpu.is_contiguous(memory_format=memory_format)
    assert torch.equal(cpu, gpu.cpu())
    kw = dict(crop=224, memory_format=memory_format, dtype=dtype)
    assert torch.equal(ten_crop(images.cuda(), mean.cuda(), **kw).cpu(), ten_crop(images, mean, **kw))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_lighting", [False, True])
def test_the_cpu_slices_and_the_device_gather_give_identical_batches(memory_format, dtype, with_lighting):
    """train_batch cuts one slice per image on the CPU and runs one gather elsewhere: the same bits.

    The device branch runs here on CPU tensors (eagerly: compilation is for CUDA), from draws
    recomputed in the documented order, on images laid out as the loaders yield them (HWC memory).
    """
    from alexctl.data.augment import _device_pass

    g = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (9, 40, 40, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)
    mean = torch.rand(3, 40, 40, generator=g) * 255
    lighting = Lighting.from_stats(EIGENVALUES_255, EIGENVECTORS) if with_lighting else None
    out = train_batch(
        images,
        mean,
        crop=32,
        generator=torch.Generator().manual_seed(3),
        lighting=lighting,
        memory_format=memory_format,
        dtype=dtype,
    )
    draws = torch.Generator().manual_seed(3)
    xs, ys = torch.randint(0, 9, (9,), generator=draws), torch.randint(0, 9, (9,), generator=draws)
    flips = torch.rand(9, generator=draws) < 0.5
    shift = lighting.shift(9, draws) if lighting else None
    assert 0 < flips.sum() < 9  # both branches are exercised
    expected = _device_pass(images, mean, xs, ys, flips, shift, 32, memory_format == torch.channels_last, dtype)
    assert out.dtype == expected.dtype == dtype and out.is_contiguous(memory_format=memory_format)
    assert torch.equal(out, expected)
    # ...and both are the paper's numbers: the S x S image minus the mean plus the shift, then cut.
    shifted = images.double() - mean.double() + (shift.double() if lighting else torch.zeros(9, 3))[:, :, None, None]
    for i, (x, y, f) in enumerate(zip(xs.tolist(), ys.tolist(), flips.tolist())):
        patch = shifted[i, :, y : y + 32, x : x + 32]
        torch.testing.assert_close(
            out[i].double(), patch.flip(-1) if f else patch, rtol=0, atol=1e-4 if dtype == torch.float32 else 1.0
        )


def test_the_device_gather_compiles_to_one_graph_with_the_same_numbers():
    """What CUDA runs is torch.compile of _gather; here Inductor's decompositions without code generation."""
    from alexctl.data.augment import _gather, _rows_cols

    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (5, 3, 36, 36), dtype=torch.uint8, generator=g)
    mean = torch.rand(3, 36, 36, generator=g) * 255
    xs, ys = torch.randint(0, 5, (5,), generator=g), torch.randint(0, 5, (5,), generator=g)
    rows, cols = _rows_cols(xs, ys, torch.tensor([True, False, True, True, False]), 32)
    shift = torch.randn(5, 3, generator=g) * 4
    compiled = torch.compile(_gather, backend="aot_eager_decomp_partition", fullgraph=True)
    for channels_last in (False, True):
        for dtype in (torch.float32, torch.bfloat16):
            eager = _gather(images, mean, rows, cols, shift, channels_last, dtype)
            assert torch.equal(compiled(images, mean, rows, cols, shift, channels_last, dtype), eager)


@pytest.mark.parametrize("size, crop", SIZES)
def test_bfloat16_output_is_the_float32_output_rounded_once(size, crop):
    images = photographs(size, count=3)
    mean = images.float().mean(0)
    lighting = Lighting.from_stats(EIGENVALUES_255, EIGENVECTORS)
    bf16 = torch.bfloat16
    for memory_format in (torch.contiguous_format, torch.channels_last):
        kw = dict(crop=crop, memory_format=memory_format)
        a = train_batch(images, mean, generator=torch.Generator().manual_seed(1), lighting=lighting, **kw)
        b = train_batch(images, mean, generator=torch.Generator().manual_seed(1), lighting=lighting, dtype=bf16, **kw)
        assert b.dtype == bf16 and b.is_contiguous(memory_format=memory_format) and torch.equal(b, a.to(bf16))
        assert torch.equal(center_crop(images, mean, dtype=bf16, **kw), center_crop(images, mean, **kw).to(bf16))
        assert torch.equal(ten_crop(images, mean, dtype=bf16, **kw), ten_crop(images, mean, **kw).to(bf16))
    with pytest.raises(ValueError, match="floating-point"):
        center_crop(images, mean, crop=crop, dtype=torch.uint8)


def test_ten_crop_matches_torchvision_on_photographs():
    """Golden: torchvision's ten_crop of the mean-subtracted images, re-ordered to alexctl's order.

    torchvision returns (tl, tr, bl, br, center) of the image, then the same five cut from
    the flipped image, whose top-left is the reflection of the original's top-right: so its
    patches 5..9 are alexctl's 6, 5, 8, 7, 9 (alexctl reflects each of its first five).
    """
    from torchvision.transforms.v2 import functional as TF

    images = photographs(256, count=4)
    mean = torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(2)) * 255
    ours = ten_crop(images, mean, crop=224)  # (4, 10, 3, 224, 224)
    theirs = torch.stack(TF.ten_crop(images.float() - mean, [224, 224]), 1)  # (4, 10, 3, 224, 224)
    torchvision_to_ours = [0, 1, 2, 3, 4, 6, 5, 8, 7, 9]
    assert torch.equal(ours[:, torchvision_to_ours], theirs)
    assert torch.equal(center_crop(images, mean, crop=224), TF.center_crop(images.float() - mean, [224, 224]))


def test_center_origin_is_shared_with_the_preprocessing_geometry():
    assert crop_positions(256, 224)[4] == (center_origin(256, 224),) * 2 == (16, 16)
    assert crop_positions(33, 24)[4] == (4, 4)  # round(4.5) = 4: half to even, as torchvision
    assert crop_positions(35, 24)[4] == (6, 6)  # round(5.5) = 6


def test_flips_are_fair_and_independent_of_the_crops_for_any_seed():
    """Over several seeds, bands of 5 binomial sigmas (and a chi-square bound at the same ~3e-7 tail): a
    working sampler passes with any seed, a biased or crop-dependent flip fails with all of them."""
    images, zero = coordinate_images(2500, 32)
    xs, ys, flips = [], [], []
    for seed in range(10):
        x, y, f = decode(
            train_batch(images, zero, crop=24, generator=torch.Generator().manual_seed(seed), lighting=None)
        )
        assert abs(f.float().mean().item() - 0.5) < 5 * (0.25 / len(f)) ** 0.5  # per seed: 0.45..0.55
        xs.append(x), ys.append(y), flips.append(f)
    xs, ys, flips = torch.cat(xs), torch.cat(ys), torch.cat(flips).double()
    n = len(flips)
    assert abs(flips.mean().item() - 0.5) < 5 * (0.25 / n) ** 0.5  # pooled: 0.484..0.516
    for offsets in (xs, ys):
        # Independence: the flip rate is the same at every one of the 9 offsets (chi-square, 8 dof).
        counts = torch.bincount(offsets, minlength=9).double()
        flipped = torch.bincount(offsets, weights=flips, minlength=9)
        chi2 = (((flipped - counts / 2) ** 2) / (counts / 4)).sum().item()
        assert chi2 < _chi2_bound(dof=8, sigmas=5)  # 47: the mean is 8
        # and flips do not follow the offsets' parity or size (a flip taken from the same random bits would)
        for mask in (offsets % 2 == 0, offsets < 4):
            a, b = flips[mask], flips[~mask]
            assert abs(a.mean() - b.mean()).item() < 5 * (0.25 / len(a) + 0.25 / len(b)) ** 0.5


def _chi2_bound(dof: int, sigmas: float) -> float:
    """The chi-square quantile at a normal tail of `sigmas` (Wilson-Hilferty approximation)."""
    return dof * (1 - 2 / (9 * dof) + sigmas * (2 / (9 * dof)) ** 0.5) ** 3


def test_a_failing_compiler_falls_back_to_the_eager_gather(monkeypatch):
    from alexctl.data import augment

    def failing(*args):
        raise torch._dynamo.exc.TorchDynamoException("no working compiler")

    monkeypatch.setattr(augment, "_compiled", failing)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8, generator=g)
    mean = torch.rand(3, 40, 40, generator=g) * 255
    xs, ys, flips, shift = augment._draws(3, 40, 32, g, None, True)
    with pytest.warns(UserWarning, match="running it eagerly"):
        out = augment._device_pass(images, mean, xs, ys, flips, shift, 32, False, torch.float32)
    assert augment._compiled is augment._gather
    assert torch.equal(out, augment._crop_each(images, mean, xs, ys, flips, shift, 32, False, torch.float32))


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_the_trainer_augments_in_the_runtimes_dtype(precision, dtype):
    """The trainer's (and bench's) Augmenter: bf16 batches under bf16 precision (CUDA's default), so a
    figure measured with bf16 does not move float32 batches; the same numbers, rounded once."""
    runtime = device.resolve(RuntimeOptions(devices="cpu", workers=0, precision=precision))
    stats = {"mean_image": np.full((32, 32, 3), 120.0), "eigenvalues": EIGENVALUES_255, "eigenvectors": EIGENVECTORS}
    augmenter = Augmenter(stats, crop=24, lighting_std=0.1, flip=True, random_crop=True, runtime=runtime)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    out = augmenter(images, torch.Generator().manual_seed(3))
    assert out.dtype == dtype and out.shape == (6, 3, 24, 24)
    wide = train_batch(
        images,
        augmenter.mean_image,
        crop=24,
        generator=torch.Generator().manual_seed(3),
        lighting=augmenter.lighting,
    )
    assert torch.equal(out, wide.to(dtype))
