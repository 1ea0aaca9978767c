"""A small labelled image set that alexctl writes itself, so `make demo` needs no data and no network.

    make_demo_dataset(DIR)  ->  DIR/<class>/<class>_<0000>.JPEG  and  DIR/synsets.txt

Each class is a pattern, a shape or a texture, drawn at a random position, scale and rotation,
in random colours, over a cluttered background of random colour: colour says nothing about
the class, the pattern does. The pattern is large and near the middle of the image, so it
survives preprocess's rescale to 256 and central crop, and training's random 224 crops.
Horizontal flips keep every class what it is (stripes stay horizontal).

To preprocess the files look like ImageNet's: JPEGs of many sizes and aspect ratios
(landscape and portrait, a few large, a few tiny), one in twenty grayscale, quality 70-95.
Image i of class c depends only on (seed, c, i): the same seed gives the same bytes whatever
`classes` and `per_class` are.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from alexctl.errors import UserError

SYNSETS = "synsets.txt"


def make_demo_dataset(out_dir: Path, *, classes: int = 6, per_class: int = 120, seed: int = 0) -> dict:
    """Write `classes` x `per_class` JPEGs and DIR/synsets.txt into `out_dir`; returns the summary."""
    if not 2 <= classes <= MAX_CLASSES:
        raise UserError(f"--classes {classes} is out of range: the demo set has 2 to {MAX_CLASSES} classes.")
    if per_class < 1 or seed < 0:
        raise UserError(f"--per-class {per_class} and --seed {seed} must be >= 1 and >= 0.")
    out_dir = Path(out_dir)
    folders = class_folders(classes)
    grayscale = total_bytes = 0
    for c, folder in enumerate(folders):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            data, gray = _image(_KINDS[c][2], np.random.default_rng([seed, c, i]), i)
            (out_dir / folder / f"{folder}_{i:04d}.JPEG").write_bytes(data)
            grayscale += gray
            total_bytes += len(data)
    names = [_KINDS[c][1] for c in range(classes)]
    (out_dir / SYNSETS).write_text("".join(f"{f}\t{n}\n" for f, n in zip(folders, names)), encoding="utf-8")
    return {
        "out_dir": str(out_dir),
        "images": classes * per_class,
        "classes": classes,
        "per_class": per_class,
        "seed": seed,
        "class_names": folders,
        "names": names,
        "grayscale": grayscale,
        "bytes": total_bytes,
    }


def class_folders(classes: int = 0) -> list[str]:
    """The folder (wnid-like) names of the first `classes` classes (all of them for 0), in index order."""
    return [f"d{c}_{_KINDS[c][0]}" for c in range(classes or MAX_CLASSES)]


# ---------------------------------------------------------------- one image


@dataclass(frozen=True)
class _Place:
    """Where the pattern goes, in pixels: centre (cx, cy), half-size r; s is the image's shorter side."""

    cx: float
    cy: float
    r: float
    s: int


def _image(draw_pattern: Callable, rng: np.random.Generator, i: int) -> tuple[bytes, bool]:
    w, h = _size(rng, i)
    s = min(w, h)
    img, bg = _background(rng, w, h, s)
    # Centred within 0.06 s of the middle, reaching at most ~0.45 s from it (r <= 0.3 s, corners at
    # 1.3 r): inside the central s x s square that preprocess keeps, and mostly inside any 224/256 crop.
    place = _Place(
        w / 2 + rng.uniform(-0.06, 0.06) * s, h / 2 + rng.uniform(-0.06, 0.06) * s, rng.uniform(0.2, 0.3) * s, s
    )
    fg = _colour(rng, away_from=bg)
    draw_pattern(img, place, rng, fg, _colour(rng, away_from=fg))
    amplitude = int(rng.integers(4, 13))  # sensor noise; uniform integers: 5x faster than normal floats
    pixels = rng.integers(-amplitude, amplitude + 1, (h, w, 3), dtype=np.int16)
    pixels += np.asarray(img)
    img = Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8))
    gray = i % 20 == 7  # ImageNet holds grayscale JPEGs too; preprocess must make them RGB
    buf = io.BytesIO()
    (img.convert("L") if gray else img).save(buf, "JPEG", quality=int(rng.integers(70, 96)))
    return buf.getvalue(), gray


def _size(rng: np.random.Generator, i: int) -> tuple[int, int]:
    """Width and height drawn independently; a few large and a few tiny; no side over 2.5x the other."""
    low, high = (600, 1200) if i % 25 == 18 else (32, 56) if i % 25 == 11 else (120, 640)
    w, h = (int(v) for v in rng.integers(low, high + 1, 2))
    return (min(w, int(2.5 * h)), h) if w > h else (w, min(h, int(2.5 * w)))


def _background(rng: np.random.Generator, w: int, h: int, s: int) -> tuple[Image.Image, np.ndarray]:
    """A gentle gradient of one random colour, strewn with small random blobs and lines; and its mean colour."""
    base = rng.uniform(0, 255, 3)
    far = np.clip(base + rng.uniform(-40, 40, 3), 0, 255)
    angle = rng.uniform(0, 2 * math.pi)
    # The gradient on an 8x8 grid, stretched by PIL: far cheaper than at full size.
    t = (np.linspace(0, 1, 8)[None, :] * math.cos(angle) + np.linspace(0, 1, 8)[:, None] * math.sin(angle)) / 2 + 0.5
    img = Image.fromarray((base + (far - base) * t[..., None]).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(10, 25))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        a, b = rng.uniform(0.02, 0.1, 2) * s
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse([x - a, y - b, x + a, y + b], fill=colour)
        elif kind == 1:
            draw.rectangle([x - a, y - b, x + a, y + b], fill=colour)
        else:
            draw.line([x - 2 * a, y - 2 * b, x + 2 * a, y + 2 * b], fill=colour, width=int(rng.integers(1, 4)))
    return img, (base + far) / 2


def _colour(rng: np.random.Generator, away_from: np.ndarray) -> tuple[int, int, int]:
    """A random colour whose luminance differs from `away_from`'s by 60 or more, so the pattern
    shows in grayscale too. Every class draws its colours this way, so colour gives no class away."""
    target = _luminance(away_from)
    for _ in range(100):
        colour = rng.integers(0, 256, 3)
        if abs(_luminance(colour) - target) >= 60:
            break
    return tuple(int(v) for v in colour)


def _luminance(rgb) -> float:
    return 0.299 * float(rgb[0]) + 0.587 * float(rgb[1]) + 0.114 * float(rgb[2])


# ---------------------------------------------------------------- the classes' patterns


def _polygon(img, p: _Place, angle: float, fg, corners) -> None:
    """Corners in units of p.r, rotated by `angle` about the centre."""
    c, s = math.cos(angle), math.sin(angle)
    points = [(p.cx + p.r * (x * c - y * s), p.cy + p.r * (x * s + y * c)) for x, y in corners]
    ImageDraw.Draw(img).polygon(points, fill=fg)


def _star_points(n: int, outer: float, inner: float):
    return [
        (rad * math.cos(k * math.pi / n - math.pi / 2), rad * math.sin(k * math.pi / n - math.pi / 2))
        for k, rad in zip(range(2 * n), [outer, inner] * n)
    ]


def _circle(img, p, rng, fg, fg2):
    ry = p.r * 1.1 * rng.uniform(0.85, 1.0)
    ImageDraw.Draw(img).ellipse([p.cx - 1.1 * p.r, p.cy - ry, p.cx + 1.1 * p.r, p.cy + ry], fill=fg)


def _square(img, p, rng, fg, fg2):
    _polygon(img, p, rng.uniform(0, math.pi / 2), fg, [(1, 1), (1, -1), (-1, -1), (-1, 1)])


def _triangle(img, p, rng, fg, fg2):
    _polygon(img, p, rng.uniform(0, 2 * math.pi), fg, _star_points(3, 1.3, 0.65))  # inner = outer/2: straight sides


def _star(img, p, rng, fg, fg2):
    _polygon(img, p, rng.uniform(0, 2 * math.pi), fg, _star_points(5, 1.3, 0.55))


def _cross(img, p, rng, fg, fg2):
    t, a = 0.35, 1.2  # half-width and half-length of the arms
    corners = [
        (t, a),
        (t, t),
        (a, t),
        (a, -t),
        (t, -t),
        (t, -a),
        (-t, -a),
        (-t, -t),
        (-a, -t),
        (-a, t),
        (-t, t),
        (-t, a),
    ]
    _polygon(img, p, rng.uniform(0, math.pi / 2), fg, corners)


def _rings(img, p, rng, fg, fg2):
    draw, bands = ImageDraw.Draw(img), int(rng.integers(4, 7))
    for k in range(bands):  # a bullseye: discs from the outside in, alternating colours
        rad = 1.2 * p.r * (1 - k / bands)
        draw.ellipse([p.cx - rad, p.cy - rad, p.cx + rad, p.cy + rad], fill=fg if k % 2 == 0 else fg2)


def _annulus(img, p, rng, fg, fg2):
    rad = 1.2 * p.r
    width = max(2, int(rad * rng.uniform(0.25, 0.4)))  # hollow: the background shows through
    ImageDraw.Draw(img).ellipse([p.cx - rad, p.cy - rad, p.cx + rad, p.cy + rad], outline=fg, width=width)


def _texture(on: Callable) -> Callable:
    """A texture class: a large rectangle around the centre filled with two colours where `on(u, v, s)`
    says, (u, v) being pixel offsets from the centre, turned by at most 10 degrees."""

    def draw(img, p, rng, fg, fg2):
        hx, hy = rng.uniform(0.34, 0.5, 2) * p.s
        x0, y0 = max(0, round(p.cx - hx)), max(0, round(p.cy - hy))
        x1, y1 = min(img.width, round(p.cx + hx)), min(img.height, round(p.cy + hy))
        angle = rng.uniform(-0.17, 0.17)
        x = np.arange(x0, x1, dtype=np.float32)[None, :] - p.cx
        y = np.arange(y0, y1, dtype=np.float32)[:, None] - p.cy
        u, v = x * math.cos(angle) + y * math.sin(angle), y * math.cos(angle) - x * math.sin(angle)
        mask = on(u, v, p.s, rng)
        patch = np.where(mask[..., None], np.array(fg, np.uint8), np.array(fg2, np.uint8))
        img.paste(Image.fromarray(patch), (x0, y0))

    return draw


def _stripes(u, v, s, rng):  # 7 to 12 periods across the shorter side: visible at 224 px
    period = max(4.0, s * rng.uniform(0.08, 0.14))
    return (v / period + rng.uniform()) % 1 < 0.5


def _checks(u, v, s, rng):
    cell = max(3.0, s * rng.uniform(0.06, 0.1))
    return (np.floor(u / cell + rng.uniform()) + np.floor(v / cell + rng.uniform())) % 2 == 0


def _dots(u, v, s, rng):
    step = max(5.0, s * rng.uniform(0.1, 0.15))
    du, dv = (u / step + rng.uniform()) % 1 - 0.5, (v / step + rng.uniform()) % 1 - 0.5
    return du * du + dv * dv < rng.uniform(0.25, 0.35) ** 2


# (folder suffix, human-readable name, drawer); the default six come first. Appending keeps
# every earlier class's index, folder and images.
_KINDS = [
    ("circle", "filled circle", _circle),
    ("square", "filled square", _square),
    ("triangle", "filled triangle", _triangle),
    ("stripes", "horizontal stripes", _texture(_stripes)),
    ("checkerboard", "checkerboard", _texture(_checks)),
    ("rings", "concentric rings, bullseye", _rings),
    ("cross", "plus sign, cross", _cross),
    ("star", "five-pointed star", _star),
    ("dots", "polka dots", _texture(_dots)),
    ("annulus", "hollow ring, annulus", _annulus),
]
MAX_CLASSES = len(_KINDS)  # 10: one digit in d<i>_, so sorted folder order is index order
