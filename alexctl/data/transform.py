"""One image, as the paper prepares it: decode to RGB, rescale so the shorter side is
`size`, cut the central `size` x `size` patch (section 2), encode as JPEG for a shard.

Geometry (one home for it): the image is resized to (W', H') with the shorter side
exactly `size` and the longer side int(size * long / short), then the crop starts at
round((W' - size) / 2), round((H' - size) / 2) -- torchvision's Resize(size) followed
by CenterCrop(size). Resampling is bilinear with antialiasing. `center_origin` is also
where the test-time centre crop starts (alexctl.data.augment).

Speed (docs/benchmarks.md): JPEGs are decoded by libjpeg-turbo straight into numpy
(simplejpeg), at 1/2, 1/4 or 1/8 scale in the DCT domain when the shorter side stays
at least `size` (the lever PIL calls draft mode), and the resize maps pixels from the
scaled decode with the exact scale factors, so the result matches the full-size decode
(PSNR >= 35 dB, measured). Everything that is not a plain JPEG (PNG, CMYK, palette,
alpha, 16-bit, a PNG named .JPEG) goes through PIL. EXIF orientation is ignored, as
ImageNet's own tooling and torchvision's loader ignore it; alpha is dropped as
torchvision's loader drops it.

Memory (a pixel budget, MAX_PIXELS): no image is decoded into more than 50 million pixels, so
one decode holds about half a gigabyte at most whatever the file claims (a 560 KB PNG can
claim 24000x24000). Sizes are read from the header before anything is allocated. A JPEG
decoded by libjpeg-turbo is reduced in the DCT domain until it fits (even with
fast=False: beyond the budget an exact decode is not offered); a progressive or multi-scan
JPEG holds all its coefficients while it decodes, so its full size must fit. Every other
image larger than the budget is refused: UnreadableImage, and the file is skipped by name.
"""

from __future__ import annotations

import functools
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

# The most pixels one image is decoded into: ~8 bytes each on the way to RGB, so ~0.4 GB (measured: a 49 MP
# 16-bit PNG adds 382 MiB to the peak). A JPEG from any camera decodes reduced below it (a 144 MP one: +7 MiB);
# a PNG or TIFF past 50 MP (7071x7071) is refused. ILSVRC's images are JPEGs far below it.
MAX_PIXELS = 50_000_000
# PIL's own guard, which reads the same header at open: past twice this it refuses in its own words, first.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
PIL_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "AVIF", "HEIF")  # HEIF: with a plugin only
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")  # ISO BMFF major brands
_ROWS = 1 << 20  # pixels converted at a time from 16-bit or float grey (8 bytes each as float64)


class UnreadableImage(Exception):
    """The bytes are not an image alexctl can decode; the message is the reason recorded for the skip."""


@dataclass(frozen=True)
class Prepared:
    pixels: np.ndarray  # (size, size, 3) uint8 RGB: what the shard holds (before JPEG encoding)
    width: int  # the original image's size
    height: int


def prepare(data: bytes, size: int, *, fast: bool = True) -> Prepared:
    """Decode, rescale the shorter side to `size`, center-crop. `fast=False` decodes at full size, exactly."""
    rgb, width, height, scale = _decode(data, size, fast)
    return Prepared(rescale_center_crop(rgb, width, height, size, scale), width, height)


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    return simplejpeg.encode_jpeg(
        np.ascontiguousarray(pixels), quality=quality, colorspace="RGB", colorsubsampling="420"
    )


def decode_jpeg(data: bytes) -> np.ndarray:
    """A shard's JPEG back to (H, W, 3) uint8 RGB."""
    return simplejpeg.decode_jpeg(data, colorspace="RGB")


def model_input(image: str | Path | bytes, size: int = 256) -> np.ndarray:
    """(3, size, size) uint8 RGB, channels first: an image file (a path, or its bytes) exactly as `alexctl
    predict` gives it to the network, and as an exported model.pt2 or model.onnx takes it (np.stack them for
    a batch of N). For people who use the exported files: this module needs numpy, torch, simplejpeg and
    Pillow, and imports nothing else of alexctl. Raises UnreadableImage for bytes that are not an image.

    torchvision's Resize(256) + CenterCrop(256), or PIL, give the same geometry but other pixels (another
    JPEG decoder and resampler: top-1 probabilities up to 0.06 apart); prepare()'s docstring and the
    module's say exactly what is computed."""
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    return np.ascontiguousarray(prepare(data, size).pixels.transpose(2, 0, 1))


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(W', H'): the shorter side becomes `size`, the longer one int(size * long / short)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop_origin(width: int, height: int, size: int) -> tuple[int, int]:
    """Top-left (x, y) of the central `size` x `size` patch of the resized image."""
    new_w, new_h = resized_size(width, height, size)
    return center_origin(new_w, size), center_origin(new_h, size)


def center_origin(length: int, crop: int) -> int:
    """Where a centred `crop` starts along an axis of `length`: round((length - crop) / 2).

    Python's round, half to even, as torchvision's CenterCrop: 42 for 341/256, 16 for
    256/224 (the validation crop, alexctl.data.augment), 4 for 32/24.
    """
    return int(round((length - crop) / 2.0))


def rescale_center_crop(rgb: np.ndarray, width: int, height: int, size: int, scale: int = 1) -> np.ndarray:
    """(h, w, 3) uint8 decoded at 1/scale of (width, height) -> (size, size, 3) uint8.

    The scale factors are those of the full-size image (W'/width, H'/height), times `scale`
    for a DCT-scaled decode, so output pixel (x, y) samples the same point either way.
    """
    new_w, new_h = resized_size(width, height, size)
    left, top = crop_origin(width, height, size)
    fy, fx = new_h / height * scale, new_w / width * scale
    if new_w > 8 * size or new_h > 8 * size:
        return _resample_crop_only(rgb, fx, fy, left, top, size)
    h, w = rgb.shape[:2]
    # (1, 3, h, w) uint8 viewing the (h, w, 3) array: channels-last. The batch stride is set to the
    # element count, or interpolate() sees an ambiguous layout and returns NCHW (pytorch#68430, the
    # way torchvision avoids it); the channels-last result makes the final (h, w, 3) copy cheap.
    x = torch.from_numpy(rgb).as_strided((1, 3, h, w), (h * w * 3, 1, w * 3, 3))
    # The tiny factor keeps floor(in * f) from landing one pixel short through rounding.
    out = F.interpolate(
        x,
        scale_factor=(fy * (1 + 1e-7), fx * (1 + 1e-7)),
        mode="bilinear",
        antialias=True,
        align_corners=False,
        recompute_scale_factor=False,
    )
    return out[0, :, top : top + size, left : left + size].permute(1, 2, 0).contiguous().numpy()


def _resample_crop_only(rgb: np.ndarray, fx: float, fy: float, left: int, top: int, size: int) -> np.ndarray:
    """A panorama: resample only the source box the crop sees (PIL's box), not an image 8x the crop."""
    box = (left / fx, top / fy, (left + size) / fx, (top + size) / fy)
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR, box=box))


def _decode(data: bytes, size: int, fast: bool) -> tuple[np.ndarray, int, int, int]:
    """(rgb, width, height, scale): `rgb` is the image decoded at 1/scale of width x height."""
    if data[:2] == b"\xff\xd8":
        try:
            height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
            if colorspace in ("Gray", "YCbCr", "RGB"):  # CMYK and YCCK go through PIL
                scale = _jpeg_scale(data, width, height, size, fast)
                rgb = simplejpeg.decode_jpeg(
                    data,
                    colorspace="RGB",
                    fastdct=fast,
                    fastupsample=fast,
                    min_height=-(-height // scale),
                    min_width=-(-width // scale),
                    min_factor=scale,
                )
                if rgb.shape[:2] == (-(-height // scale), -(-width // scale)):
                    return rgb, width, height, scale
        except ValueError:
            pass  # CMYK, arithmetic coding, a damaged file...: PIL decides, and gives the reason
    rgb = _decode_with_pil(data)
    return rgb, rgb.shape[1], rgb.shape[0], 1


def _jpeg_scale(data: bytes, width: int, height: int, size: int, fast: bool) -> int:
    """The DCT scale to decode at: the fast one (or 1), or the smallest larger one within MAX_PIXELS."""
    if width * height > MAX_PIXELS and _holds_all_coefficients(data):
        raise UnreadableImage(_too_large(width, height, "a progressive JPEG decodes at full size"))
    scale = _dct_scale(width, height, size) if fast else 1
    while -(-width // scale) * -(-height // scale) > MAX_PIXELS:
        if scale == 8:
            raise UnreadableImage(_too_large(width, height, "even at 1/8 scale"))
        scale *= 2
    return scale


def _holds_all_coefficients(data: bytes) -> bool:
    """Whether libjpeg keeps the whole image's coefficients while decoding: a progressive frame, or a
    first scan with fewer components than the frame (components in separate scans). Read from the
    markers before the first scan; a header it cannot walk counts as yes."""
    i, components = 2, 0
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return True
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC2, 0xC6, 0xCA, 0xCE):  # SOF2, 6, 10, 14: progressive
            return True
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # another start of frame
            components = data[i + 9] if i + 9 < len(data) else 0
        if marker == 0xDA:  # start of scan: the components it interleaves
            return i + 4 >= len(data) or data[i + 4] < components
        i += 2 + length
    return True


def _too_large(width: int, height: int, why: str) -> str:
    return f"too large to decode safely ({width}x{height} pixels; {why}, more than {MAX_PIXELS:,} pixels)"


def _dct_scale(width: int, height: int, size: int) -> int:
    """The largest of 1, 2, 4, 8 that keeps the shorter side at least `size` (and one pixel to spare)."""
    scale = 1
    while scale < 8 and min(width, height) // (2 * scale) > size:
        scale *= 2
    return scale


def _decode_with_pil(data: bytes) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette-with-transparency and EXIF warnings
            img = Image.open(io.BytesIO(data), formats=_pil_formats())
            width, height = img.size  # from the header: nothing is decoded yet
            if width * height > MAX_PIXELS:
                raise UnreadableImage(_too_large(width, height, "not a JPEG that decodes reduced"))
            img.load()
            return np.array(_to_rgb(img))  # a writable copy: torch.from_numpy warns on read-only arrays
    except UnidentifiedImageError:
        if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:  # a phone's photo: say what would read it
            raise UnreadableImage(
                "a HEIC/HEIF image, which the installed Pillow cannot decode; convert it to JPEG"
            ) from None
        raise UnreadableImage(f"not an image of a format alexctl reads ({', '.join(_pil_formats())})") from None
    except Image.DecompressionBombError as e:
        raise UnreadableImage(f"too large to decode safely ({e})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise UnreadableImage(f"cannot be decoded: {e}") from None


@functools.cache
def _pil_formats() -> tuple[str, ...]:
    """The formats PIL may decode: those of the image extensions (labels.IMAGE_EXTENSIONS; MPO, a camera's JPEG,
    comes with JPEG) that this Pillow has. Not the dozens of others it knows: PIL picks a decoder by the bytes,
    not the name, and an EPS named .JPEG would run Ghostscript, a PSD or FITS a decoder nobody here needs."""
    Image.init()
    return tuple(f for f in PIL_FORMATS if f in Image.OPEN)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float grayscale: scale to 8 bits rather than clip, a band of rows at a time (as
        # float64 the whole image would take 8 bytes a pixel).
        a = np.asarray(img)
        hi = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        grey = np.empty(a.shape, np.uint8)
        rows = max(1, _ROWS // max(1, a.shape[1]))
        for top in range(0, a.shape[0], rows):
            band = a[top : top + rows].astype(np.float64)
            grey[top : top + rows] = np.clip(band * (255.0 / hi), 0, 255).astype(np.uint8)
        img = Image.fromarray(grey, "L")
    return img if img.mode == "RGB" else img.convert("RGB")
