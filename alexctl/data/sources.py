"""Finding the images in a SOURCE, and reading each one's bytes, without extracting anything.

A SOURCE is
  1. a folder: an ImageFolder tree `<class>/<image>`, or flat images with --labels;
  2. a `.tar` holding either form, or the ILSVRC2012_img_train.tar form: a tar of
     per-class tars `<wnid>.tar`, each holding that class's images.
An uncompressed tar is indexed once (headers only) and each image is then read by its
byte range, nested tars included, so workers read in parallel and in any order.
A compressed tar (.tar.gz, ...) cannot be read by range: its images are held in memory,
which suits small sets such as CIFAR-10; decompress large ones first.

The class of an image is the first folder below the source's root (a leading folder
that every image shares, such as `train/` in a tar, is stepped into). Hidden files
(`.DS_Store`, `._x.JPEG` from macOS) are ignored; every other file with an image
extension is "found" and is either written or skipped with a reason.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from alexctl.data.labels import IMAGE_EXTENSIONS
from alexctl.data.ranges import read_range
from alexctl.errors import UserError

MAX_IN_MEMORY_BYTES = 8 << 30


@dataclass(frozen=True)
class Item:
    """One image in a source. `where` says how to read it (see read_bytes)."""

    relpath: str  # '/'-separated, relative to the source's root
    where: tuple  # ("file", path) | ("range", tar_path, offset, size) | ("bytes", data)

    @property
    def folder(self) -> str | None:
        parts = self.relpath.split("/")
        return parts[0] if len(parts) > 1 else None

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]


def scan(sources: Path | tuple[Path, ...] | list[Path]) -> list[Item]:
    """All images in one or more SOURCEs, sorted by relative path; each source's leading shared
    folder is stepped into, and a path found in two sources is an error."""
    sources = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(s) for s in sources]
    items = [it for source in sources for it in _scan_one(source)]
    items.sort(key=lambda it: it.relpath)
    for a, b in zip(items, items[1:]):
        if a.relpath == b.relpath:
            raise UserError(f"SOURCE {' + '.join(map(str, sources))} holds {a.relpath!r} twice.")
    return items


def _scan_one(source: Path) -> list[Item]:
    if source.is_dir():
        items = _scan_folder(source)
    elif source.is_file():
        items = _scan_tar(source)
    else:
        raise UserError(f"SOURCE {source} does not exist.")
    if not items:
        raise UserError(f"SOURCE {source} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    return _step_into_shared_folder(items)


def read_bytes(item: Item) -> bytes:
    kind = item.where[0]
    if kind == "file":
        with open(item.where[1], "rb") as f:
            return f.read()
    if kind == "range":
        _, path, offset, size = item.where
        return read_range(path, offset, size)
    return item.where[1]


def is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    if base.startswith(".") or "." not in base:
        return False
    return base.rsplit(".", 1)[1].lower() in IMAGE_EXTENSIONS


def _scan_folder(root: Path) -> list[Item]:
    """Every image below `root`. Symbolic links are followed (a class folder may link to images elsewhere), but
    each real directory is visited once: a link loop (`sub -> .`) cannot multiply the images."""
    items = []
    visited: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=_unlistable):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in visited:
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if is_image_name(name):
                relpath = (rel / name).as_posix()
                items.append(Item(relpath, ("file", os.path.join(dirpath, name))))
    return items


def _unlistable(error: OSError) -> None:
    """os.walk's onerror: a folder that cannot be listed would lose its images silently."""
    raise UserError(f"SOURCE folder {printable(str(error.filename))} cannot be listed: {error.strerror or error}.")


def _scan_tar(path: Path) -> list[Item]:
    try:
        tar = tarfile.open(path, "r:*")
    except OSError as e:
        raise UserError(f"SOURCE {path} cannot be read: {e.strerror or e}.") from None
    except tarfile.TarError:  # its message lists every method tried, one line each
        raise UserError(f"SOURCE {path} is neither a folder nor a tar file (plain, gzip, bzip2 or xz).") from None
    compressed = _is_compressed(path)
    items: list[Item] = []
    held = 0
    with tar:
        try:
            for member in tar:
                if not member.isfile() or _hidden(member.name):
                    continue
                name = _clean(member.name)
                if name.lower().endswith(".tar"):
                    items.extend(_scan_nested(tar, member, path, compressed, PurePosixPath(name).stem))
                elif is_image_name(name):
                    if compressed:
                        data = tar.extractfile(member).read()
                        held += len(data)
                        if held > MAX_IN_MEMORY_BYTES:
                            raise UserError(
                                f"SOURCE {path} is compressed and larger than {MAX_IN_MEMORY_BYTES >> 30} GiB; "
                                "decompress it first (alexctl reads uncompressed tars in place)."
                            )
                        items.append(Item(name, ("bytes", data)))
                    else:
                        items.append(Item(name, ("range", str(path), member.offset_data, member.size)))
        except (tarfile.TarError, EOFError, OSError) as e:
            raise UserError(f"SOURCE {path} is a damaged tar file: {e}.") from None
    return items


def _scan_nested(
    tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path, compressed: bool, folder: str
) -> list[Item]:
    """A per-class tar inside the outer tar (ILSVRC2012_img_train.tar): its images, labelled by its name."""
    items = []
    fileobj = tar.extractfile(member)
    with tarfile.open(fileobj=fileobj, mode="r:") as inner:
        for m in inner:
            if not m.isfile() or _hidden(m.name) or not is_image_name(m.name):
                continue
            relpath = f"{folder}/{_clean(m.name).rsplit('/', 1)[-1]}"
            if compressed:
                items.append(Item(relpath, ("bytes", inner.extractfile(m).read())))
            else:
                items.append(Item(relpath, ("range", str(path), member.offset_data + m.offset_data, m.size)))
    return items


def _is_compressed(path: Path) -> bool:
    with open(path, "rb") as f:
        magic = f.read(6)
    return magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic[:6] == b"\xfd7zXZ\x00"


def _hidden(name: str) -> bool:
    return any(part.startswith(".") and part not in (".", "..") for part in name.split("/"))


def _clean(name: str) -> str:
    return str(PurePosixPath(name.lstrip("/"))).removeprefix("./")


def _step_into_shared_folder(items: list[Item]) -> list[Item]:
    """Step into a leading folder that every image shares, as long as a class folder remains below it."""
    while True:
        firsts = {it.relpath.split("/", 1)[0] for it in items}
        if len(firsts) != 1 or any(it.relpath.count("/") < 2 for it in items):
            return items
        items = [Item(it.relpath.split("/", 1)[1], it.where) for it in items]


def printable(name: str) -> str:
    """A file name as it can be shown and stored as text: bytes that are not UTF-8 (which Python keeps as
    surrogate escapes) become U+FFFD, so the name can be printed, logged and written to JSON."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# ---------------------------------------------------------------- sample keys

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-/,'+=@~()]")
_KEY_MAX = 90  # USTAR names hold 100 bytes; the key leaves room for ".json"


def sample_keys(items: list[Item]) -> list[str]:
    """A unique, stable WebDataset key per image, derived from its path.

    WebDataset splits a member name at the first dot of its base name, so the key keeps
    the path without its extension and replaces dots (and other unsafe characters) with
    '_'; a key changed that way, or too long, gets a short hash of the path so that two
    paths never meet.
    """
    keys = []
    for it in items:
        stem = it.relpath.rsplit(".", 1)[0]
        key = _KEY_UNSAFE.sub("_", stem)
        if key != stem or len(key.encode()) > _KEY_MAX:
            # A name that is not valid UTF-8 reaches Python with surrogate escapes: hash its original bytes.
            digest = hashlib.sha1(it.relpath.encode("utf-8", "surrogateescape")).hexdigest()[:8]
            key = key.encode()[: _KEY_MAX - 9].decode(errors="ignore") + "_" + digest
        keys.append(key)
    seen: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in seen:
            raise UserError(
                f"images {printable(items[seen[key]].relpath)!r} and {printable(items[i].relpath)!r} map to "
                f"the same key {key!r}."
            )
        seen[key] = i
    return keys
