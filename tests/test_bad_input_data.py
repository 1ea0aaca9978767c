"""The bad-input corpus, part 1: what reaches `alexctl demo-data` and `alexctl preprocess` (issue 11), and the
input files that eat memory or never end, in preprocess and predict, and a checkpoint carrying code (issue 19).

Every case builds its input here and passes badinput.outcome: exit 2 (bad input) or 1 (failed work) with
one sentence naming the culprit, or 0 where succeeding is right (a broken image is skipped and named);
no traceback; for preprocess, written + skipped == found == the image files made (zero images lost); and a
failure of work is visible in `alexctl status`. Part 2 (tests/test_bad_input_runs.py) covers the
commands that read data and run directories.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

import pytest

from alexctl import rundir

from badinput import (
    ALEXCTL,
    OTHER,
    Finished,
    copy_tree,
    encoded,
    environment,
    finish,
    flip_bytes,
    images_lost,
    jpeg_claiming,
    outcome,
    png_claiming,
    public_copy,
    run,
    stage_state,
    start,
    status_shows,
    summary_of,
    truncate,
    wait_for,
)
from helpers import invoke

SMALL = ("--size", "32", "--workers", "1", "--shard-size", "4")  # tiny shards of tiny images: fast


@pytest.fixture(scope="module")
def photos(imagenette_slice) -> dict[str, list[Path]]:
    """Three real photos of each of two classes."""
    classes = sorted(p for p in imagenette_slice.iterdir() if p.is_dir())[:2]
    return {c.name: sorted(c.iterdir())[:3] for c in classes}


def source(folder: Path, photos: dict[str, list[Path]]) -> Path:
    """An ImageFolder tree of the six photos."""
    for wnid, files in photos.items():
        (folder / wnid).mkdir(parents=True)
        for f in files:
            shutil.copyfile(f, folder / wnid / f.name)
    return folder


@pytest.fixture(scope="module")
def small(tmp_path_factory, photos) -> tuple[Path, Path]:
    """(SOURCE, DATA_DIR): the six photos preprocessed, one of each class's three held out for val."""
    tmp = tmp_path_factory.mktemp("small")
    src = source(tmp / "src", photos)
    data = tmp / "data"
    invoke("preprocess", src, data, "--holdout", "0.34", *SMALL, check=True)
    invoke("preprocess", src, data, "--split", "val", "--holdout", "0.34", *SMALL, check=True)
    return src, data


# ---------------------------------------------------------------- images: skipped and named, or written


def _file(name: str | bytes, data, images: int = 1):
    def add(folder: Path, good: bytes) -> tuple[str | None, int]:
        path = folder / (os.fsdecode(name) if isinstance(name, bytes) else name)
        path.write_bytes(data(good) if callable(data) else data)
        return path.name, images

    return add


def _link(name: str, target: str, images: int):
    def add(folder: Path, good: bytes) -> tuple[str | None, int]:
        (folder / name).symlink_to(target)
        return name, images

    return add


def _fifo(name: str):
    def add(folder: Path, good: bytes) -> tuple[str | None, int]:
        os.mkfifo(folder / name)  # opened for reading, it waits for a writer that never comes
        return name, 1

    return add


def _progressive_claiming(width: int, height: int) -> bytes:
    """A small progressive JPEG whose frame header claims width x height (its coefficients: 3 bytes a pixel)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 10)).save(buffer, "JPEG", progressive=True)
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc2")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _album(folder: Path, good: bytes) -> tuple[str | None, int]:
    (folder / "album.JPEG").mkdir()  # a folder with an image's name, holding one photo
    (folder / "album.JPEG" / "inside.JPEG").write_bytes(good)
    return None, 1


IMAGES = [  # (case, how it is made, its fate: written, skipped, or ignored (not an image file at all))
    ("zero-byte", _file("zero.JPEG", b""), "skipped"),
    ("truncated-jpeg", _file("cut.JPEG", lambda good: good[: len(good) // 3]), "skipped"),
    ("text-named-jpg", _file("notes.jpg", b"not an image, just a note\n"), "skipped"),
    ("random-bytes-png", _file("noise.png", bytes(range(256)) * 16), "skipped"),
    ("jpeg-bomb-header-60000x60000", _file("bomb.JPEG", jpeg_claiming(60000, 60000)), "skipped"),
    ("png-bomb-header-40000x40000", _file("bomb.png", png_claiming(40000, 40000)), "skipped"),
    ("dangling-symlink", _link("gone.JPEG", "nowhere.JPEG", 1), "skipped"),
    ("non-utf8-name-broken", _file(b"caf\xe9-cut.JPEG", b"\xff\xd8\xff"), "skipped"),
    ("fifo-named-JPEG", _fifo("pipe.JPEG"), "skipped"),
    ("symlink-to-dev-zero", _link("zero.JPEG", "/dev/zero", 1), "skipped"),
    ("progressive-jpeg-bomb-header-20000x20000", _file("deep.JPEG", _progressive_claiming(20000, 20000)), "skipped"),
    ("heic-without-a-decoder", _file("phone.heic", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64)), "skipped"),
    ("avif", _file("modern.avif", encoded(form="AVIF")), "written"),
    ("eps-named-JPEG", _file("vector.JPEG", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"), "skipped"),
    ("png-named-JPEG", _file("really-a-png.JPEG", encoded(form="PNG")), "written"),
    ("jpeg-named-png", _file("really-a-jpeg.png", lambda good: good), "written"),
    ("cmyk-jpeg", _file("cmyk.JPEG", encoded("CMYK")), "written"),
    ("one-pixel", _file("dot.JPEG", encoded(size=(1, 1))), "written"),
    ("panorama-4000x50", _file("pano.JPEG", encoded(size=(4000, 50))), "written"),
    ("tower-50x4000", _file("tower.JPEG", encoded(size=(50, 4000))), "written"),
    ("rgba-png", _file("alpha.png", encoded("RGBA", form="PNG")), "written"),
    ("palette-gif", _file("palette.gif", encoded("P", form="GIF")), "written"),
    ("16-bit-png", _file("deep.png", encoded("I;16", form="PNG")), "written"),
    ("grayscale-jpeg", _file("gray.JPEG", encoded("L")), "written"),
    ("upper-case-extension", _file("SHOUT.JPG", lambda good: good), "written"),
    ("non-utf8-name", _file(b"caf\xe9.JPEG", lambda good: good), "written"),
    ("folder-named-JPEG", _album, "written"),
    ("symlink-loop-dot", _link("loop", ".", 0), "ignored"),
    ("symlink-loop-parent", _link("up", "..", 0), "ignored"),
    ("hidden-macos-file", _file("._resource.JPEG", b"\0\5\26\7", images=0), "ignored"),
]


REASONS = {  # words the skip's reason holds, where the case is about the reason
    "jpeg-bomb-header-60000x60000": "too large to decode safely (60000x60000 pixels",
    "png-bomb-header-40000x40000": "too large to decode safely (Image size (1600000000 pixels)",  # PIL's guard
    "progressive-jpeg-bomb-header-20000x20000": "a progressive JPEG decodes at full size",
    "fifo-named-JPEG": "it is a FIFO, not a regular file",
    "symlink-to-dev-zero": "it is a character device, not a regular file",
    "heic-without-a-decoder": "a HEIC/HEIF image, which the installed Pillow cannot decode",
    "eps-named-JPEG": "not an image of a format alexctl reads",  # PIL would run Ghostscript on it
}


@pytest.mark.parametrize("case,add,fate", IMAGES, ids=[c[0] for c in IMAGES])
def test_an_odd_image_is_written_or_skipped_by_name_and_none_is_lost(case, add, fate, tmp_path, photos):
    src = source(tmp_path / "src", photos)
    folder = next(p for p in sorted(src.iterdir()))
    name, added = add(folder, (folder / sorted(os.listdir(folder))[0]).read_bytes())
    result = invoke("preprocess", src, tmp_path / "data", *SMALL, "--json")
    summary = summary_of(result)
    skipped = {s["path"]: s["reason"] for s in summary["skipped"]}
    lost = images_lost(summary, created=6 + added)
    outcome(result, 0, case=f"preprocess/{case}", command="preprocess", lost=lost)
    if fate == "skipped":
        shown = f"{folder.name}/{rundir_printable(name)}"
        assert list(skipped) == [shown] and skipped[shown], summary["skipped"]
        assert REASONS.get(case, "") in skipped[shown], skipped[shown]
        assert summary["written"] == 6
    else:
        assert not skipped and summary["written"] == 6 + added


def rundir_printable(name: str) -> str:
    from alexctl.data.sources import printable

    return printable(name)


# ---------------------------------------------------------------- bad input refused (exit 2)


def _tar_cut(tmp: Path, src: Path) -> Path:
    whole = tmp / "whole.tar"
    with tarfile.open(whole, "w") as tar:
        tar.add(src, arcname="train")
    data = whole.read_bytes()
    (tmp / "cut.tar").write_bytes(data[: len(data) // 2])
    return tmp / "cut.tar"


def _flat(tmp: Path, src: Path) -> Path:
    flat = tmp / "flat"
    flat.mkdir()
    for path in sorted(src.rglob("*.JPEG")):
        shutil.copyfile(path, flat / f"{path.parent.name}_{path.name}")
    return flat


def _labels(tmp: Path, src: Path, conflict: bool = False, drop: int = 0) -> Path:
    """`name,wnid` lines for the flat folder (made here); `conflict`: the first image again under another
    label (line 7); `drop`: without the first lines."""
    flat = sorted(_flat(tmp, src).iterdir())
    lines = [f"{p.name},{p.name.split('_')[0]}" for p in flat]
    lines += [f"{flat[0].name},n99999999"] if conflict else []
    (tmp / "labels.csv").write_text("\n".join(lines[drop:]) + "\n")
    return tmp / "labels.csv"


def _one_class(tmp: Path, src: Path) -> Path:
    first = sorted(src.iterdir())[0]
    shutil.copytree(first, tmp / "one" / first.name)
    return tmp / "one"


def _same_key(src: Path) -> Path:
    """photo.JPEG and photo.png in one class folder: two files, one sample key."""
    folder = sorted(src.iterdir())[0]
    stem = sorted(folder.iterdir())[0].stem
    (folder / f"{stem}.png").write_bytes(encoded(form="PNG"))
    return src


def _train_only(tmp: Path, data: Path) -> Path:
    copy = copy_tree(data, tmp / "d")
    shutil.rmtree(copy / "val")
    return copy


def _file_at(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _tar_naming(tmp: Path, src: Path, name: str) -> Path:
    """A tar of the ImageFolder under train/, plus a photo stored under `name` (../../x/y.JPEG, /abs/...)."""
    path = tmp / "named.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(src, arcname="train")
        photo = sorted(src.rglob("*.JPEG"))[0]
        info = tar.gettarinfo(photo, arcname="x")
        info.name = name  # as tar -P or a hand-made archive stores it: tarfile.add would not keep it
        with open(photo, "rb") as f:
            tar.addfile(info, f)
    return path


REFUSED = [  # (case, arguments built from (tmp, src, small data dir), words the sentence must hold)
    ("missing-source", lambda t, s, d: [t / "nothing", t / "out"], ["nothing"]),
    ("empty-source", lambda t, s, d: [(t / "empty").mkdir() or t / "empty", t / "out"], ["empty", "no image"]),
    ("source-is-a-text-file", lambda t, s, d: [_file_at(t / "x.tar", b"hello\n"), t / "out"], ["x.tar"]),
    ("truncated-tar", lambda t, s, d: [_tar_cut(t, s), t / "out"], ["cut.tar"]),
    (
        "tar-member-named-dotdot",
        lambda t, s, d: [_tar_naming(t, s, "../../x/y.JPEG"), t / "out"],
        ["named.tar", "'../../x/y.JPEG'", "outside"],
    ),
    (
        "tar-member-named-absolute",
        lambda t, s, d: [_tar_naming(t, s, "/abs/n0/y.JPEG"), t / "out"],
        ["named.tar", "'/abs/n0/y.JPEG'", "outside"],
    ),
    ("source-is-a-fifo", lambda t, s, d: [os.mkfifo(t / "in.tar") or t / "in.tar", t / "out"], ["in.tar", "regular"]),
    ("flat-folder-without-labels", lambda t, s, d: [_flat(t, s), t / "out"], ["--labels"]),
    ("one-class-folder", lambda t, s, d: [_one_class(t, s), t / "out"], ["one class folder"]),
    ("two-files-one-key", lambda t, s, d: [_same_key(s), t / "out"], ["same key"]),
    ("same-image-in-two-sources", lambda t, s, d: [s, s, t / "out"], ["twice"]),
    ("labels-file-missing", lambda t, s, d: [_flat(t, s), t / "out", "--labels", t / "nowhere.csv"], ["nowhere.csv"]),
    (
        "labels-conflicting",
        lambda t, s, d: [t / "flat", t / "out", "--labels", _labels(t, s, conflict=True)],
        ["labels.csv", "line 1", "line 7", "two labels"],
    ),
    (
        "labels-not-covering-an-image",
        lambda t, s, d: [t / "flat", t / "out", "--labels", _labels(t, s, drop=1)],
        ["no line in --labels"],
    ),
    ("labels-file-is-a-folder", lambda t, s, d: [_flat(t, s), t / "out", "--labels", s], ["label file", "src"]),
    (
        "labels-not-utf8",
        lambda t, s, d: [_flat(t, s), t / "out", "--labels", _file_at(t / "l.csv", b"caf\xe9.JPEG,a\n")],
        ["l.csv", "UTF-8"],
    ),
    (
        "labels-malformed-line",
        lambda t, s, d: [_flat(t, s), t / "out", "--labels", _file_at(t / "l.csv", b"justone\n")],
        ["l.csv", "line 1"],
    ),
    (
        "labels-ground-truth-without-devkit",
        lambda t, s, d: [_flat(t, s), t / "out", "--labels", _file_at(t / "gt.txt", b"1\n2\n")],
        ["--devkit"],
    ),
    (
        "devkit-missing",
        lambda t, s, d: [
            _flat(t, s),
            t / "out",
            "--labels",
            _file_at(t / "gt.txt", b"1\n2\n"),
            "--devkit",
            t / "devkit",
        ],
        ["devkit", "meta.mat"],
    ),
    (
        "label-not-a-known-class",
        lambda t, s, d: [
            t / "flat",
            t / "out",
            "--labels",
            _labels(t, s),
            "--classes",
            _file_at(t / "c.txt", b"n0\tzero\nn1\tone\n"),
        ],
        ["is not one of the 2 known classes"],
    ),
    (
        "classes-file-duplicate-wnid",
        lambda t, s, d: [s, t / "out", "--classes", _file_at(t / "c.txt", b"a\nb\na\n")],
        ["c.txt", "twice"],
    ),
    (
        "classes-file-not-utf8",
        lambda t, s, d: [s, t / "out", "--classes", _file_at(t / "c.txt", b"n1\tcaf\xe9\n")],
        ["c.txt", "UTF-8"],
    ),
    ("classes-folder-neither-data-nor-run", lambda t, s, d: [s, t / "out", "--classes", s], ["--classes"]),
    ("holdout-0.95", lambda t, s, d: [s, t / "out", "--holdout", "0.95"], ["--holdout"]),
    ("holdout-negative", lambda t, s, d: [s, t / "out", "--holdout", "-0.1"], ["--holdout"]),
    ("part-out-of-range", lambda t, s, d: [s, t / "out", "--part", "2/2"], ["--part"]),
    ("part-not-i-of-n", lambda t, s, d: [s, t / "out", "--part", "half"], ["--part"]),
    ("part-with-force", lambda t, s, d: [s, t / "out", "--part", "0/2", "--force"], ["--force", "--part"]),
    ("split-unknown", lambda t, s, d: [s, t / "out", "--split", "holdout"], ["--split"]),
    ("workers-negative", lambda t, s, d: [s, t / "out", "--workers", "-2"], ["--workers"]),
    ("size-0", lambda t, s, d: [s, t / "out", "--size", "0"], ["--size"]),
    ("quality-101", lambda t, s, d: [s, t / "out", "--quality", "101"], ["--quality"]),
    ("shard-size-0", lambda t, s, d: [s, t / "out", "--shard-size", "0"], ["--shard-size"]),
    ("size-not-a-number", lambda t, s, d: [s, t / "out", "--size", "big"], ["--size"]),
    ("unknown-option", lambda t, s, d: [s, t / "out", "--colour"], ["--colour"]),
    ("data-dir-is-a-file", lambda t, s, d: [s, _file_at(t / "data", b"")], ["data"]),
    ("data-dir-under-a-file", lambda t, s, d: [s, _file_at(t / "file", b"") / "data"], ["file/data"]),
    ("val-before-train", lambda t, s, d: [s, t / "out", "--split", "val"], ["classes.json"]),
    ("val-other-holdout", lambda t, s, d: [s, _train_only(t, d), "--split", "val", "--holdout", "0.5"], ["--holdout"]),
    (
        "val-same-source-without-holdout",
        lambda t, s, d: [s, (invoke("preprocess", s, t / "d", *SMALL, check=True) and t / "d"), "--split", "val"],
        ["--holdout"],
    ),
    ("other-options-on-a-done-split", lambda t, s, d: [s, d, "--holdout", "0.34", "--size", "48"], ["--force"]),
    ("verify-an-incomplete-split", lambda t, s, d: [s, t / "out", "--verify"], ["manifest.json"]),
]


@pytest.mark.parametrize("case,arguments,words", REFUSED, ids=[c[0] for c in REFUSED])
def test_bad_input_to_preprocess_is_refused_in_one_sentence(case, arguments, words, tmp_path, photos, small):
    src = source(tmp_path / "src", photos)
    args = arguments(tmp_path, src, small[1])
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke("preprocess", *SMALL, *args)  # the case's options after SMALL's: the last one counts
    outcome(result, 2, *words, case=f"preprocess/{case}", command="preprocess")
    assert not (tmp_path / "out").exists(), "bad input must be refused before anything is written"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_labels_for_files_that_do_not_exist_are_reported_by_name(tmp_path, photos):
    src = source(tmp_path / "src", photos)
    labels, flat = _labels(tmp_path, src), tmp_path / "flat"
    labels.write_text(labels.read_text() + "ghost.JPEG,n01440764\n")
    result = invoke("preprocess", flat, tmp_path / "data", "--labels", labels, *SMALL, "--json")
    summary = summary_of(result)
    outcome(
        result,
        0,
        case="preprocess/labels-for-missing-files",
        command="preprocess",
        lost=images_lost(summary, created=6),
    )
    assert "lists 1 images" in result.stderr and "first: ghost" in result.stderr


def test_a_split_in_use_by_another_preprocess_is_refused(small, tmp_path):
    src, data = small
    copy = copy_tree(data, tmp_path / "d")
    with rundir.DirectoryLock(copy / "train" / ".lock", "preprocess --split train"):
        result = invoke("preprocess", src, copy, "--holdout", "0.34", "--force", *SMALL)
    outcome(
        result,
        2,
        str(copy / "train"),
        "in use",
        f"pid {os.getpid()}",
        case="preprocess/split-locked",
        command="preprocess",
    )


def test_force_on_a_split_being_read_is_refused(small, tmp_path):
    src, data = small
    copy = copy_tree(data, tmp_path / "d")
    before = (copy / "train" / "manifest.json").read_bytes()
    with rundir.split_readers(copy / "train"):  # as training or evaluation holds it
        result = invoke("preprocess", src, copy, "--holdout", "0.34", "--force", *SMALL)
    outcome(result, 2, str(copy / "train"), "being read", case="preprocess/force-while-read", command="preprocess")
    assert (copy / "train" / "manifest.json").read_bytes() == before


# ---------------------------------------------------------------- failed work (exit 1), recorded for status


def test_strict_with_a_skipped_image_fails_and_status_shows_it(tmp_path, photos):
    src = source(tmp_path / "src", photos)
    (next(src.iterdir()) / "zero.JPEG").write_bytes(b"")
    result = invoke("preprocess", src, tmp_path / "data", *SMALL, "--strict", "--json")
    summary = summary_of(result)
    visible = status_shows(tmp_path / "data", "preprocess train")
    outcome(
        result,
        1,
        "zero.JPEG",
        "--strict",
        case="preprocess/strict-with-skipped",
        command="preprocess",
        lost=images_lost(summary, created=7),
        visible=visible,
    )
    assert summary["ok"] is False and summary["exit_code"] == 1


@pytest.mark.parametrize(
    "damage,words",
    [
        ("flipped-shard", ["shard-000000.tar", "SHA-256"]),
        ("truncated-shard", ["shard-000000.tar", "bytes"]),
        ("truncated-index", ["index.npz"]),
        ("missing-shard", ["shard-000000.tar", "missing"]),
    ],
)
def test_verify_names_the_damaged_file_and_status_shows_it(damage, words, small, tmp_path):
    data = copy_tree(small[1], tmp_path / "d")
    shard, index = data / "train" / "shard-000000.tar", data / "train" / "index.npz"
    {
        "flipped-shard": lambda: flip_bytes(shard, 2000),
        "truncated-shard": lambda: truncate(shard),
        "truncated-index": lambda: truncate(index),
        "missing-shard": shard.unlink,
    }[damage]()
    result = invoke("preprocess", "unused", data, "--verify")
    visible = status_shows(data, "preprocess train", ("failed", "corrupt"))
    outcome(result, 1, *words, case=f"preprocess/verify-{damage}", command="preprocess", visible=visible)
    assert stage_state(data, "preprocess train", "--verify") == "corrupt"


# ---------------------------------------------------------------- tar members that are not plain files (issue 19)


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_links_are_read_as_their_targets_and_other_members_skipped_by_name(mode, tmp_path, photos):
    """`tar cf` of a folder stores a second name of a file as a hard link and a symbolic link as one: read as the
    folder reads them; a link out of the tar and a FIFO are found and skipped, each with its reason."""
    src = source(tmp_path / "src", photos)
    first, second = sorted(src.iterdir())
    photo = sorted(first.iterdir())[0]
    os.link(photo, second / "hard.JPEG")
    (second / "soft.JPEG").symlink_to(f"../{first.name}/{photo.name}")
    (second / "out.JPEG").symlink_to("../../../../etc/hostname")
    os.mkfifo(first / "pipe.JPEG")
    path = tmp_path / ("src.tar" if mode == "w" else "src.tar.gz")
    with tarfile.open(path, mode) as tar:
        tar.add(src, arcname="train")
    kinds = sorted(m.type for m in tarfile.open(path) if m.name.endswith(".JPEG"))
    assert kinds.count(tarfile.LNKTYPE) == 1 and kinds.count(tarfile.SYMTYPE) == 2 and tarfile.FIFOTYPE in kinds

    result = invoke("preprocess", path, tmp_path / "data", *SMALL, "--json")
    summary = summary_of(result)
    outcome(
        result,
        0,
        case=f"preprocess/tar{mode[1:].replace(':', '.')}-links-and-a-fifo",
        command="preprocess",
        lost=images_lost(summary, created=10),
    )
    skipped = {s["path"]: s["reason"] for s in summary["skipped"]}
    assert summary["written"] == 8, summary  # the six photos and both links to one of them
    assert sorted(skipped) == [f"{first.name}/pipe.JPEG", f"{second.name}/out.JPEG"]
    assert "FIFO" in skipped[f"{first.name}/pipe.JPEG"] and "outside the tar" in skipped[f"{second.name}/out.JPEG"]


# ---------------------------------------------------------------- files that eat memory (issue 19)


def png_bomb(width: int, height: int, depth: int = 8) -> bytes:
    """A whole grey PNG of width x height black pixels (8- or 16-bit), every row present: ~1 KB a million pixels.
    Its deflate stream repeats one deflated MiB of zeros, each copy ending at a full flush (no reference back), so
    it is made in milliseconds however large the image; 24000 x 24000 is 570 KB."""
    raw = height * (1 + width * depth // 8)  # each row: filter byte 0, then its pixels, all zero
    compressor = zlib.compressobj(9)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(raw, 1 << 20)
    compressor = zlib.compressobj(9)
    tail = compressor.compress(bytes(rest)) + compressor.flush()
    adler = ((raw % 65521) << 16) | 1  # adler32 of n zero bytes: A stays 1 and B counts them
    stream = block[:2] + block[2:] * whole + tail[2:-4] + struct.pack(">I", adler)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def test_a_png_bomb_is_a_whole_png_of_the_size_it_claims():
    """The builder's own check (at a size that decodes in a moment): PIL reads every row of it."""
    from PIL import Image

    for depth, mode in ((8, "L"), (16, "I;16")):
        image = Image.open(io.BytesIO(png_bomb(3000, 2000, depth)))
        image.load()
        assert (image.mode, image.size, image.getextrema()) == (mode, (3000, 2000), (0, 0))


class _Zeros(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _huge_member_tar_gz(path: Path, photo: Path, wnids: list[str], size: int) -> Path:
    """A .tar.gz of a photo and (size > 0) a member of `size` zero bytes named as a JPEG (1.4 MB for 300 MiB)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        tar.add(photo, arcname=f"{wnids[0]}/kept-{photo.name}")
        if size:
            info = tarfile.TarInfo(f"{wnids[1]}/huge.JPEG")
            info.size = size
            tar.addfile(info, io.BufferedReader(_Zeros(size), 1 << 20))
    return path


def _measured(*args, timeout: float = 300) -> tuple[Finished, float]:
    """`alexctl ARGS` in a process of its own: how it ended, and its peak resident memory in MiB (wait4's
    ru_maxrss for that process alone: RUSAGE_CHILDREN would be the largest child this test process ever had)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([*ALEXCTL, *map(str, args)], stdout=out, stderr=err, env=environment())
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"alexctl {args} still ran after {timeout} s")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        out.seek(0)
        err.seek(0)
        return Finished(proc.returncode, out.read(), err.read()), usage.ru_maxrss / 1024


BOMBS = {  # name -> what issue 19 measured for it before the pixel budget
    "grey-24000x24000.png": lambda: png_bomb(24000, 24000),  # preprocess 7 GB, predict 8.6 GB
    "deep-17000x17000.png": lambda: png_bomb(17000, 17000, 16),  # preprocess 8.1 GB
}
HUGE_MEMBER = 300 << 20  # past sources.MAX_IMAGE_BYTES: read whole, it would add 300 MiB (3 GiB: 3.9 GB)
HEADROOM_MIB = 150  # the most the bombs may add to the peak of the same command without them


@pytest.fixture(scope="module")
def bombs(tmp_path_factory, photos) -> dict[str, Path]:
    """Two runs' inputs, without and with the bombs: a folder (the six photos, or them and the two PNG bombs, a
    FIFO and a link to /dev/zero) and a .tar.gz (a photo, or it and a 300 MiB member)."""
    tmp = tmp_path_factory.mktemp("bombs")
    wnids = sorted(photos)
    made = {}
    for kind in ("plain", "bombs"):
        folder = source(tmp / kind / "src", photos)
        if kind == "bombs":
            for name, make in BOMBS.items():
                (folder / wnids[0] / name).write_bytes(make())
            os.mkfifo(folder / wnids[1] / "pipe.JPEG")
            (folder / wnids[1] / "zero.JPEG").symlink_to("/dev/zero")
        made[kind] = folder
        size = HUGE_MEMBER if kind == "bombs" else 0
        made[f"{kind}.tar.gz"] = _huge_member_tar_gz(tmp / kind / "more.tar.gz", photos[wnids[1]][0], wnids, size)
    return made


@pytest.mark.slow
def test_pixel_bombs_and_a_huge_tar_member_are_skipped_by_name_in_bounded_memory(bombs, tmp_path):
    """Issue 19: each bomb named and skipped, the photos written, and the peak no higher than without the bombs."""
    options = ("--size", "32", "--workers", "1", "--json")
    plain, plain_mib = _measured("preprocess", bombs["plain"], bombs["plain.tar.gz"], tmp_path / "plain", *options)
    assert plain.returncode == 0, plain.stderr
    result, peak_mib = _measured("preprocess", bombs["bombs"], bombs["bombs.tar.gz"], tmp_path / "data", *options)
    summary = summary_of(result)
    outcome(
        result,
        0,
        case="preprocess/pixel-bombs-fifo-dev-zero-huge-tar-member",
        command="preprocess",
        lost=images_lost(summary, created=12),
    )
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in summary["skipped"]}
    assert summary["written"] == 7, summary
    assert sorted(reasons) == sorted([*BOMBS, "pipe.JPEG", "zero.JPEG", "huge.JPEG"]), reasons
    assert all("too large to decode safely" in reasons[name] for name in BOMBS), reasons
    assert "FIFO" in reasons["pipe.JPEG"] and "character device" in reasons["zero.JPEG"]
    assert f"{HUGE_MEMBER:,} bytes" in reasons["huge.JPEG"]
    assert peak_mib < plain_mib + HEADROOM_MIB, f"peak {peak_mib:.0f} MiB, {plain_mib:.0f} MiB without the bombs"


@pytest.mark.slow
def test_predict_skips_pixel_bombs_by_name_in_bounded_memory(bombs, two_runs, tmp_path):
    options = ("--run", two_runs[0], "--crops", "1", "--workers", "1", "--json")
    plain, plain_mib = _measured("predict", bombs["plain"], bombs["plain.tar.gz"], *options)
    assert plain.returncode == 0, plain.stderr
    result, peak_mib = _measured("predict", bombs["bombs"], bombs["bombs.tar.gz"], *options)
    outcome(result, 0, case="predict/pixel-bombs-fifo-dev-zero-huge-tar-member", command="predict")
    summary = summary_of(result)
    skipped = sorted(s["image"].rsplit("/", 1)[-1] for s in summary["skipped_files"])
    assert summary["predicted"] == 7 and skipped == sorted([*BOMBS, "pipe.JPEG", "zero.JPEG", "huge.JPEG"]), summary
    lines = result.stderr.splitlines()
    for name in BOMBS:  # one line each: "alexctl: skipped PATH: too large to decode safely (...)"
        assert any(f"/{name}: too large to decode safely" in line for line in lines), result.stderr
    assert peak_mib < plain_mib + HEADROOM_MIB, f"peak {peak_mib:.0f} MiB, {plain_mib:.0f} MiB without the bombs"


@pytest.mark.slow
def test_worker_processes_skip_a_fifo_dev_zero_and_a_bomb_by_name_and_finish(bombs, tmp_path):
    """Issue 19: with two workers a FIFO named pipe.JPEG never let preprocess finish; the workers read as one does."""
    result = run(
        "preprocess", bombs["bombs"], tmp_path / "data", "--size", "32", "--workers", "2", "--json", timeout=180
    )
    summary = summary_of(result)
    outcome(
        result,
        0,
        case="preprocess/fifo-dev-zero-bombs-workers-2",
        command="preprocess",
        lost=images_lost(summary, created=10),
    )
    assert summary["written"] == 6 and len(summary["skipped"]) == 4, summary


# ---------------------------------------------------------------- a checkpoint carrying code (issue 19)


@pytest.mark.parametrize("how", ["predict", "export", "preprocess-classes-of-a-run"])
def test_a_checkpoint_carrying_pickled_code_is_refused_in_one_sentence_and_nothing_runs(
    how, tmp_path, two_runs, photos
):
    import torch

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    run = copy_tree(two_runs[0], tmp_path / "run")
    evil = run / "checkpoints" / "best.pt"
    torch.save({"format": 2, "model": Payload()}, evil)
    photo = next(iter(photos.values()))[0]
    result = {
        "predict": lambda: invoke("predict", photo, "--run", run, "--crops", "1"),
        "export": lambda: invoke("export", run, "--out", tmp_path / "out"),
        "preprocess-classes-of-a-run": lambda: invoke(
            "preprocess", photo.parent.parent, tmp_path / "d", *SMALL, "--classes", run
        ),
    }[how]()
    command = how.split("-")[0]
    outcome(result, 2, str(evil), "refused", case=f"{how}/checkpoint-with-pickled-code", command=command)
    assert "weights_only" not in result.stderr and not marker.exists()


# ---------------------------------------------------------------- signals, kills, users, the working directory


@pytest.fixture(scope="module")
def samples(tmp_path_factory, imagenet_samples) -> tuple[Path, Path]:
    """(folder, labels): 80 full-size ILSVRC photos, enough work for a signal to land mid-way."""
    tmp = tmp_path_factory.mktemp("samples80")
    folder = tmp / "photos"
    folder.mkdir()
    for path in sorted(imagenet_samples.iterdir())[:80]:
        (folder / path.name).symlink_to(path)
    labels = tmp / "labels.csv"
    labels.write_text("".join(f"{p.name},{p.name.split('_')[0]}\n" for p in sorted(folder.iterdir())))
    return folder, labels


def _preprocess_samples(samples, data, **kwargs):
    folder, labels = samples
    return start("preprocess", folder, data, "--labels", labels, "--workers", "2", "--shard-size", "4", **kwargs)


def _rerun_finishes(samples, data) -> int:
    """The same command again (in this process, one worker: the plan does not depend on it) finishes the
    split; returns the images lost."""
    folder, labels = samples
    result = invoke("preprocess", folder, data, "--labels", labels, "--workers", "1", "--shard-size", "4", "--json")
    summary = summary_of(result)
    assert result.returncode == 0 and summary["complete"], result.stderr
    manifest = json.loads((data / "train" / "manifest.json").read_text())
    return images_lost(summary, created=80) + manifest["found"] - manifest["written"] - len(manifest["skipped"])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT-to-the-group", "SIGTERM-to-the-group"])
def test_a_signal_to_preprocess_with_workers_stops_it_in_one_sentence_and_the_rerun_finishes(how, samples, tmp_path):
    data = tmp_path / "data"
    proc = _preprocess_samples(samples, data)
    wait_for(lambda: (data / "train" / "shard-000000.npz").exists(), proc, what="a first shard")
    signum = signal.SIGINT if how.startswith("SIGINT") else signal.SIGTERM
    if how.endswith("group"):
        os.killpg(proc.pid, signum)  # Ctrl-C, or systemd and `timeout --foreground` ending a job
    else:
        proc.send_signal(signum)
    result = finish(proc)
    visible = status_shows(data, "preprocess train")
    lost = _rerun_finishes(samples, data)
    outcome(
        result,
        1,
        f"stopped by {signum.name}",
        "run the same command again",
        case=f"preprocess/{how}-workers-2",
        command="preprocess",
        visible=visible,
        lost=lost,
    )
    assert "leaked" not in result.stderr


@pytest.mark.slow
def test_preprocess_killed_with_sigkill_leaves_no_worker_and_a_stale_lock_the_rerun_takes_over(samples, tmp_path):
    data = tmp_path / "data"
    proc = _preprocess_samples(samples, data)
    wait_for(lambda: (data / "train" / "shard-000000.npz").exists(), proc, what="a first shard")
    proc.kill()  # the OOM killer, kill -9: only the command itself; its workers must end on their own
    killed = finish(proc, timeout=30)  # every process holding the output pipes has ended
    assert killed.returncode == -signal.SIGKILL and "Traceback" not in killed.stderr, killed.stderr
    visible = status_shows(data, "preprocess train", ("stale",))
    lost = _rerun_finishes(samples, data)
    rerun = invoke("preprocess", samples[0], data, "--labels", samples[1], "--workers", "1", "--shard-size", "4")
    outcome(rerun, 0, case="preprocess/sigkill-then-rerun", command="preprocess", visible=visible, lost=lost)


@pytest.mark.slow
def test_a_folder_named_alexctl_in_the_working_directory_does_not_hang_the_workers(samples, tmp_path):
    parent = tmp_path / "parent"
    (parent / "alexctl").mkdir(parents=True)
    (parent / "alexctl" / "__init__.py").write_text("")  # the parent folder of a clone: no __version__
    folder, labels = samples
    result = run(
        "preprocess",
        folder,
        tmp_path / "data",
        "--labels",
        labels,
        "--workers",
        "2",
        "--shard-size",
        "20",
        "--size",
        "64",
        "--json",
        cwd=parent,
        script=True,
        timeout=120,
    )
    summary = summary_of(result)
    outcome(
        result,
        0,
        case="preprocess/alexctl-folder-in-cwd-workers-2",
        command="preprocess",
        lost=images_lost(summary, created=80),
    )


@pytest.mark.slow
def test_unreadable_files_and_folders_and_a_read_only_data_dir(tmp_path, photos, public):
    one = source(tmp_path / "one", photos)
    first = sorted(one.iterdir())[0]
    shutil.copyfile(sorted(first.iterdir())[0], first / "secret.JPEG")
    two = source(tmp_path / "two", photos)
    (sorted(two.iterdir())[0] / "locked").mkdir()
    shutil.copyfile(sorted(first.iterdir())[0], sorted(two.iterdir())[0] / "locked" / "hidden.JPEG")
    one, two = public_copy(one, public, "one"), public_copy(two, public, "two")
    (one / first.name / "secret.JPEG").chmod(0)
    (two / first.name / "locked").chmod(0)
    out = public / "out"
    out.mkdir()
    out.chmod(0o777)
    public.chmod(0o555)

    result = run("preprocess", one, out / "data", *SMALL, "--json", user=OTHER)
    summary = summary_of(result)
    outcome(result, 0, case="preprocess/unreadable-file", command="preprocess", lost=images_lost(summary, created=7))
    assert [(s["path"], "Permission denied" in s["reason"]) for s in summary["skipped"]] == [
        (f"{first.name}/secret.JPEG", True)
    ]

    result = run("preprocess", two, out / "data2", *SMALL, user=OTHER)
    outcome(result, 2, "locked", "cannot be listed", case="preprocess/unreadable-folder", command="preprocess")

    result = run("preprocess", one, public / "data", *SMALL, user=OTHER)
    outcome(result, 2, str(public / "data"), case="preprocess/read-only-data-dir", command="preprocess")


# ---------------------------------------------------------------- demo-data

DEMO = [
    ("classes-1", lambda t: [t / "demo", "--classes", "1"], ["--classes"]),
    ("classes-11", lambda t: [t / "demo", "--classes", "11"], ["--classes"]),
    ("per-class-0", lambda t: [t / "demo", "--per-class", "0"], ["--per-class"]),
    ("seed-negative", lambda t: [t / "demo", "--seed", "-1"], ["--seed"]),
    ("per-class-not-a-number", lambda t: [t / "demo", "--per-class", "many"], ["--per-class"]),
    ("dir-is-a-file", lambda t: [_file_at(t / "demo", b"")], ["demo"]),
    ("dir-not-empty", lambda t: [_file_at(t / "demo" / "mine.txt", b"keep me").parent], ["demo", "--force"]),
    ("dir-under-a-file", lambda t: [_file_at(t / "file", b"") / "demo", "--per-class", "1"], ["file"]),
]


@pytest.mark.parametrize("case,arguments,words", DEMO, ids=[c[0] for c in DEMO])
def test_bad_input_to_demo_data_is_refused_in_one_sentence(case, arguments, words, tmp_path):
    result = invoke("demo-data", *arguments(tmp_path))
    outcome(result, 2, *words, case=f"demo-data/{case}", command="demo-data")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers, f"demo-data left {leftovers}"
