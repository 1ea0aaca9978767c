"""alexctl/data/image.py: decoding whatever a file holds, and the paper's rescale + center crop."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageFile, ImageFilter

from alexctl.data import transform


def jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("w,h", [(500, 375), (375, 500), (300, 300), (1000, 257), (640, 480)])
def test_geometry_is_torchvision_resize_then_center_crop(w, h):
    rng = np.random.default_rng(w * h)
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ours = transform.rescale_center_crop(pixels, w, h, 256)
    x = torch.from_numpy(pixels).permute(2, 0, 1)
    ref = TF.center_crop(TF.resize(x, 256, antialias=True), [256, 256]).permute(1, 2, 0).numpy()
    assert ours.shape == (256, 256, 3)
    # Same sampling positions and filter: equal up to rounding in the last bit.
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


def test_crop_origin_and_resized_size():
    assert transform.resized_size(500, 375, 256) == (341, 256)
    assert transform.resized_size(375, 500, 256) == (256, 341)
    assert transform.crop_origin(500, 375, 256) == (42, 0)  # round((341 - 256) / 2) = round(42.5) = 42
    assert transform.crop_origin(256, 256, 256) == (0, 0)


def test_coordinate_encoded_image_keeps_its_centre():
    # Columns encode x: after the rescale, output column j samples source x = (j + left + 0.5) / scale - 0.5.
    w, h = 1024, 256
    ramp = np.tile(np.arange(w, dtype=np.float64) / (w - 1) * 255, (h, 1))
    pixels = np.repeat(ramp[:, :, None], 3, axis=2).round().astype(np.uint8)
    out = transform.rescale_center_crop(pixels, w, h, 256)  # scale 1: crop columns 384..639
    expected = np.arange(384, 640) / (w - 1) * 255
    assert np.abs(out[128, :, 0] - expected).max() <= 1.0


def test_panorama_takes_the_crop_only_path_with_the_same_result():
    rng = np.random.default_rng(1)
    w, h = 4000, 100  # resized to 10240 x 256: over 8x the crop, so only the seen box is resampled
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ours = transform.rescale_center_crop(pixels, w, h, 256)
    x = torch.from_numpy(pixels).permute(2, 0, 1)
    ref = TF.center_crop(TF.resize(x, 256, antialias=True), [256, 256]).permute(1, 2, 0).numpy()
    assert psnr(ours, ref) > 35


def test_fast_decode_matches_full_decode_on_real_photos(imagenet_samples):
    """DCT-domain downscaling must not be visible: PSNR >= 35 dB against the exact path."""
    files = sorted(imagenet_samples.glob("*.JPEG"))
    scaled = []
    for path in files:
        data = path.read_bytes()
        fast = transform.prepare(data, 256, fast=True)
        exact = transform.prepare(data, 256, fast=False)
        assert fast.pixels.shape == exact.pixels.shape == (256, 256, 3)
        assert (fast.width, fast.height) == (exact.width, exact.height)
        value = psnr(fast.pixels, exact.pixels)
        assert value >= 35, f"{path.name}: {value:.1f} dB"
        if min(fast.width, fast.height) > 512:
            scaled.append(path)
    assert scaled, "no sample was large enough to exercise DCT scaling"


def test_grayscale_cmyk_palette_alpha_and_16_bit_become_rgb():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    cases = {
        "gray jpeg": jpeg_bytes(rgb.convert("L")),
        "cmyk jpeg": jpeg_bytes(rgb.convert("CMYK")),
        "palette png": png_bytes(rgb.convert("P")),
        "rgba png": png_bytes(rgb.convert("RGBA")),
        "gray+alpha png": png_bytes(rgb.convert("LA")),
        "16-bit png": png_bytes(Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)),
    }
    for name, data in cases.items():
        out = transform.prepare(data, 64)
        assert out.pixels.shape == (64, 64, 3) and out.pixels.dtype == np.uint8, name
        assert (out.width, out.height) == (80, 60), name
    gray = transform.prepare(cases["gray jpeg"], 64).pixels
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    # CMYK goes through PIL's conversion: compare with it, then torchvision's resize and center crop.
    cmyk = torch.from_numpy(np.array(Image.open(io.BytesIO(cases["cmyk jpeg"])).convert("RGB"))).permute(2, 0, 1)
    ref = TF.center_crop(TF.resize(cmyk, 64, antialias=True), [64, 64]).permute(1, 2, 0).numpy()
    assert np.abs(transform.prepare(cases["cmyk jpeg"], 64).pixels.astype(int) - ref.astype(int)).max() <= 1
    # 16-bit grey is scaled to 8 bits (v // 257: the 8-bit grey it was made from), not clipped to white.
    sixteen = transform.prepare(cases["16-bit png"], 64).pixels
    eight = transform.prepare(png_bytes(rgb.convert("L")), 64).pixels
    assert 40 < sixteen.mean() < 215 and np.abs(sixteen.astype(int) - eight.astype(int)).max() <= 1


def test_png_named_jpeg_and_a_single_pixel():
    out = transform.prepare(png_bytes(Image.new("RGB", (1, 1), (10, 200, 30))), 256)
    assert out.pixels.shape == (256, 256, 3)
    assert np.all(out.pixels == np.array([10, 200, 30], np.uint8))


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"this is a text file, not a photograph\n", "not an image"),
        (b"", "not an image"),
    ],
)
def test_garbage_is_unreadable_with_a_reason(data, reason):
    with pytest.raises(transform.UnreadableImage, match=reason):
        transform.prepare(data, 256)


def test_truncated_jpeg_is_unreadable(imagenet_samples):
    data = (imagenet_samples / "n01440764_tench.JPEG").read_bytes()
    with pytest.raises(transform.UnreadableImage, match="truncated|cannot be decoded"):
        transform.prepare(data[: len(data) // 3], 256)


def test_encode_decode_round_trip(imagenet_samples):
    photo = transform.prepare((imagenet_samples / "n01440764_tench.JPEG").read_bytes(), 256).pixels
    data = transform.encode_jpeg(photo, 95)
    assert data[:2] == b"\xff\xd8"
    back = transform.decode_jpeg(data)
    assert back.shape == (256, 256, 3)
    assert psnr(back, photo) > 35  # quality 95 on a real photograph


# ---------------------------------------------------------------- the pixel budget (issue 19)


def test_a_jpeg_past_the_budget_decodes_reduced_and_a_progressive_one_is_refused(monkeypatch):
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(3))
    baseline, progressive = jpeg_bytes(photo, quality=95), jpeg_bytes(photo, quality=95, progressive=True)
    assert not transform._holds_all_coefficients(baseline) and transform._holds_all_coefficients(progressive)
    exact = transform.prepare(baseline, 64, fast=False).pixels
    # 120,000 pixels; a budget of 40,000 leaves room for 1/2 scale (30,000) and not for the full size.
    monkeypatch.setattr(transform, "MAX_PIXELS", 40_000)
    assert transform._jpeg_scale(baseline, 400, 300, 64, fast=False) == 2
    reduced = transform.prepare(baseline, 64, fast=False)
    assert (reduced.width, reduced.height) == (400, 300) and psnr(reduced.pixels, exact) > 30
    with pytest.raises(transform.UnreadableImage, match=r"400x300 pixels; a progressive JPEG decodes at full size"):
        transform.prepare(progressive, 64)
    monkeypatch.setattr(transform, "MAX_PIXELS", 1_000)  # 1/8 scale is 50 x 38 = 1,900 pixels
    with pytest.raises(transform.UnreadableImage, match="even at 1/8 scale"):
        transform.prepare(baseline, 64)


def test_a_png_past_the_budget_is_refused_by_its_header_before_any_pixel_is_decoded(monkeypatch):
    png = png_bytes(Image.new("RGB", (300, 200), (1, 2, 3)))
    monkeypatch.setattr(transform, "MAX_PIXELS", 59_999)
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    with pytest.raises(transform.UnreadableImage, match=r"300x200 pixels; not a JPEG that decodes reduced"):
        transform.prepare(png, 64)
    assert decoded == []


def test_sixteen_bit_grey_is_scaled_in_bands_as_it_was_whole(monkeypatch):
    """Every 16-bit value v becomes floor(v * 255 / 65535) = v // 257, band after band."""
    values = np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)
    monkeypatch.setattr(transform, "_ROWS", 64 * 5)  # bands of 5 rows: 13 of them, the last one short
    rgb = np.asarray(transform._to_rgb(Image.fromarray(values)))
    assert rgb.shape == (64, 64, 3) and np.array_equal(rgb[..., 1], (values // 257).astype(np.uint8))


def test_only_the_formats_of_the_image_extensions_are_decoded():
    """PIL picks a decoder by the bytes: an icon or a Photoshop file named .JPEG is refused, not decoded."""
    for form in ("ICO", "PCX", "SGI"):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), (9, 8, 7)).save(buffer, form)
        with pytest.raises(transform.UnreadableImage, match=r"not an image of a format alexctl reads \(JPEG, PNG"):
            transform.prepare(buffer.getvalue(), 16)
    for form in ("BMP", "TIFF", "WEBP", "PPM", "GIF"):  # what the image extensions name
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), (90, 80, 70)).save(buffer, form)
        assert transform.prepare(buffer.getvalue(), 16).pixels.shape == (16, 16, 3), form
