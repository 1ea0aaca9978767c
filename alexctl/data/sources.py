"""Finding the images in a SOURCE, and reading each one's bytes, without extracting anything.

A SOURCE is
  1. a folder: an ImageFolder tree `<class>/<image>`, or flat images with --labels;
  2. a `.tar` holding either form, or the ILSVRC2012_img_train.tar form: a tar of
     per-class tars `<wnid>.tar`, each holding that class's images.
An uncompressed tar is indexed once (headers only) and each image is then read by its
byte range, nested tars included, so workers read in parallel and in any order.
A compressed tar (.tar.gz, ...) cannot be read by range: it is streamed once and its
images are held in memory, which suits small sets such as CIFAR-10; decompress large ones
first. A tar member that is a hard or symbolic link to an image in the same tar is read as
that image (as a folder's links are followed); a link to anything else, a FIFO or a device
is found and skipped with its reason. A tar holding a member named `../x` or `/x` is refused:
its names are not those of the folders it was made from.

The class of an image is the first folder below the source's root (a leading folder
that every image shares, such as `train/` in a tar, is stepped into). Hidden files
(`.DS_Store`, `._x.JPEG` from macOS) are ignored; every other file with an image
extension is "found" and is either written or skipped with a reason. Only regular files
are read (a FIFO would wait for a writer forever, a link to /dev/zero never ends), and
none larger than MAX_IMAGE_BYTES: anything else is skipped as NotRead.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from alexctl.data.labels import IMAGE_EXTENSIONS
from alexctl.data.ranges import read_range
from alexctl.errors import UserError

MAX_IN_MEMORY_BYTES = 8 << 30
# The largest file read as one image: an uncompressed 8-bit RGBA image at transform.MAX_PIXELS. A file
# is read whole into memory before it is decoded, so this bounds what one worker holds besides the pixels.
MAX_IMAGE_BYTES = 200 << 20
_LINK_HOPS = 16  # a chain of symbolic links in a tar longer than this is a loop


@dataclass(frozen=True)
class Item:
    """One image in a source. `where` says how to read it (see read_bytes)."""

    relpath: str  # '/'-separated, relative to the source's root
    where: tuple  # ("file", path) | ("range", tar_path, offset, size) | ("bytes", data) | ("skip", reason)

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


class NotRead(OSError):
    """A file or tar member that is found but not read (not a regular file, too large, a link out of its
    tar); its message is the reason recorded for the skip."""


def _scan_one(source: Path) -> list[Item]:
    if source.is_dir():
        items = _scan_folder(source)
    elif source.is_file():
        items = _scan_tar(source)
    elif source.exists():
        raise UserError(f"SOURCE {printable(str(source))} is neither a folder nor a regular file (a tar).")
    else:
        raise UserError(f"SOURCE {source} does not exist.")
    if not items:
        raise UserError(f"SOURCE {source} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    return _step_into_shared_folder(items)


def read_bytes(item: Item) -> bytes:
    """The item's bytes; NotRead (an OSError) for what is not read, as for a file that cannot be."""
    kind = item.where[0]
    if kind == "file":
        return _read_file(item.where[1])
    if kind == "range":
        _, path, offset, size = item.where
        return read_range(path, offset, size)
    if kind == "skip":
        raise NotRead(item.where[1])
    return item.where[1]


def _read_file(path: str) -> bytes:
    _check_regular(os.stat(path).st_mode)  # before open(): opening a FIFO waits, opening a tape rewinds it
    # O_NONBLOCK: should it have been swapped for a FIFO since, the open returns at once, and fstat says so.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        _check_regular(st.st_mode)
        _check_size(st.st_size)
        data = f.read(min(st.st_size, MAX_IMAGE_BYTES) + 1)  # one more: a file that grew past the cap
    _check_size(len(data))
    return data


def _check_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotRead(f"it is {_file_kind(mode)}, not a regular file")


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}
    kinds |= {stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a folder"}
    return next((name for test, name in kinds.items() if test(mode)), "a file of another kind")


def _check_size(size: int) -> None:
    if size > MAX_IMAGE_BYTES:
        raise NotRead(_too_big(size))


def _too_big(size: int) -> str:
    return f"{size:,} bytes, more than the {MAX_IMAGE_BYTES >> 20} MiB read for one image"


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
    with tar:
        try:
            return _TarScan(path, _is_compressed(path)).items(tar)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise UserError(f"SOURCE {path} is a damaged tar file: {e}.") from None


class _TarScan:
    """The images of one SOURCE tar: each member as an Item, read in place (an uncompressed tar) or held
    (a compressed one, MAX_IN_MEMORY_BYTES in all); members are streamed, none is read whole unless it is
    an image within MAX_IMAGE_BYTES."""

    def __init__(self, path: Path, compressed: bool):
        self.path, self.compressed, self.held = path, compressed, 0

    def items(self, tar: tarfile.TarFile, base: int = 0, folder: str | None = None) -> list[Item]:
        """The images of `tar`, whose data starts `base` bytes into the file (a nested tar); with `folder`,
        labelled by it (the per-class tars of ILSVRC2012_img_train.tar) rather than by their own path."""
        images: list[tarfile.TarInfo] = []  # members with an image's name, of any type
        wheres: dict[str, tuple] = {}  # member name -> how to read it: the targets that links may name
        links: dict[str, tarfile.TarInfo] = {}
        nested: list[Item] = []
        for member in tar:
            if _hidden(member.name) or member.isdir():
                continue
            name = self._name(member)
            if folder is None and member.isfile() and name.lower().endswith(".tar"):
                with tarfile.open(fileobj=tar.extractfile(member), mode="r:") as inner:
                    nested += self.items(inner, base + member.offset_data, PurePosixPath(name).stem)
                continue
            image = is_image_name(name)
            if member.islnk() or member.issym():
                links[name] = member
            elif member.isfile() and image:
                wheres[name] = self._where(tar, member, base)
            elif member.isfile() and not self.compressed:  # a link may name it; read in place, if ever
                wheres[name] = ("member", member)
            if image:
                images.append(member)
        items = []
        for member in images:
            name = _clean(member.name)
            if member.isfile():
                where = wheres[name]
            elif name in links:
                where = self._link(name, links, wheres, tar, base)
            else:
                where = ("skip", f"it is {'a FIFO' if member.isfifo() else 'a device'}, not a regular file")
            items.append(Item(f"{folder}/{name.rsplit('/', 1)[-1]}" if folder else name, where))
        return items + nested

    def _name(self, member: tarfile.TarInfo) -> str:
        name = _clean(member.name)
        if member.name.startswith("/") or ".." in name.split("/"):
            raise UserError(
                f"SOURCE {self.path} holds a member named {printable(member.name)!r}, outside the archive's "
                "root; alexctl reads no such tar (its folders are not the classes): rebuild it with relative names."
            )
        return name

    def _where(self, tar: tarfile.TarFile, member: tarfile.TarInfo, base: int) -> tuple:
        if member.size > MAX_IMAGE_BYTES:
            return ("skip", _too_big(member.size))  # not read: its data is streamed past
        if not self.compressed:
            return ("range", str(self.path), base + member.offset_data, member.size)
        self.held += member.size
        if self.held > MAX_IN_MEMORY_BYTES:
            raise UserError(
                f"SOURCE {self.path} is compressed and larger than {MAX_IN_MEMORY_BYTES >> 30} GiB; "
                "decompress it first (alexctl reads uncompressed tars in place)."
            )
        return ("bytes", tar.extractfile(member).read())

    def _link(self, name: str, links: dict, wheres: dict, tar: tarfile.TarFile, base: int) -> tuple:
        """How to read the member a hard or symbolic link names, followed within the tar (never outside it)."""
        for _ in range(_LINK_HOPS):
            member = links[name]
            if member.islnk():  # a hard link names its target from the archive's root
                target = _clean(member.linkname)
            elif member.linkname.startswith("/"):
                return ("skip", f"a link to {printable(member.linkname)!r}, outside the tar")
            else:
                target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
            if target == ".." or target.startswith("../"):
                return ("skip", f"a link to {printable(member.linkname)!r}, outside the tar")
            if target not in links:
                where = wheres.get(target)
                if where is None:
                    what = "an image" if self.compressed else "a regular file"
                    return ("skip", f"a link to {printable(target)!r}, which the tar does not hold as {what}")
                if where[0] == "member":  # a regular member without an image name
                    return self._where(tar, where[1], base)
                return where
            name = target
        return ("skip", f"a loop of symbolic links through {printable(name)!r}")


def _is_compressed(path: Path) -> bool:
    with open(path, "rb") as f:
        magic = f.read(6)
    return magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic[:6] == b"\xfd7zXZ\x00"


def _hidden(name: str) -> bool:
    return any(part.startswith(".") and part not in (".", "..") for part in name.split("/"))


def _clean(name: str) -> str:
    return posixpath.normpath(name.lstrip("/")).removeprefix("./")


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
