"""Class lists and label files: which class each image belongs to, and each class's index.

Class indices are the sorted class names of the train split, or the order of a
`--classes FILE` (`wnid<TAB>name`, the form of ILSVRC's synsets list), which fixes the
1000-class order. A val split reuses the train split's list (DATA_DIR/classes.json).

Label files for a flat folder of images, one image per line (the image is named by
its file name, with or without extension):
  - `name,label` or `name label`, label being a wnid or a class name;
  - `LOC_val_solution.csv` (header `ImageId,PredictionString`; the first word of the
    prediction string is the wnid);
  - the devkit's `ILSVRC2012_validation_ground_truth.txt`: one ILSVRC2012_ID per line,
    line i for ILSVRC2012_val_%08d.JPEG, mapped to wnids through the devkit's
    data/meta.mat (read the way torchvision's ImageNet dataset reads it).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexctl import rundir
from alexctl.errors import UserError


@dataclass(frozen=True)
class ClassList:
    """Index i is wnids[i]; names[i] is the human-readable name (the wnid when none is known)."""

    wnids: tuple[str, ...]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.wnids)

    def to_json(self) -> dict:
        """The one schema of every classes.json alexctl writes (a data directory's, an export's):
        {"classes": [{"index", "class", "name"}, ...]}, "class" being the label the data names the class by
        (the wnid for ImageNet), as in predict's and eval's output."""
        return {
            "classes": [{"index": i, "class": w, "name": n} for i, (w, n) in enumerate(zip(self.wnids, self.names))]
        }

    @staticmethod
    def from_json(obj: dict) -> "ClassList":
        rows = obj["classes"]
        key = (
            "class" if not rows or "class" in rows[0] else "wnid"
        )  # data directories written before issue 20 (2026-12) say "wnid"
        return ClassList(tuple(r[key] for r in rows), tuple(r["name"] for r in rows))

    def with_names(self, names: dict[str, str]) -> "ClassList":
        return ClassList(self.wnids, tuple(names.get(w, n) for w, n in zip(self.wnids, self.names)))

    def resolver(self) -> "LabelResolver":
        return LabelResolver(self)


class LabelResolver:
    """Maps a label written as a wnid, a full class name or one unambiguous alias to its index."""

    def __init__(self, classes: ClassList):
        self.classes = classes
        self.exact: dict[str, int] = {}
        aliases: dict[str, set[int]] = {}
        for i, (wnid, name) in enumerate(zip(classes.wnids, classes.names)):
            self.exact.setdefault(wnid, i)
            self.exact.setdefault(name, i)
            for alias in name.split(","):
                aliases.setdefault(alias.strip().lower(), set()).add(i)
        self.aliases = {a: next(iter(s)) for a, s in aliases.items() if len(s) == 1 and a}

    def index(self, label: str, *, where: str) -> int:
        if label in self.exact:
            return self.exact[label]
        alias = label.strip().lower()
        if alias in self.aliases:
            return self.aliases[alias]
        raise UserError(
            f"label {label!r} ({where}) is not one of the {len(self.classes)} known classes "
            f"(e.g. {self.classes.wnids[0]!r}); check the label file or the class list."
        )


def read_class_file(path: Path) -> ClassList:
    """`wnid<TAB>name` per line (ILSVRC synsets form; a line with a wnid alone is allowed), or a folder: a
    data directory (its classes.json) or a trained run (the class list of its data), so that new images
    can be preprocessed in the order a run predicts."""
    path = Path(path)
    if path.is_dir():
        return _class_list_of_folder(path)
    wnids, names = [], []
    lines = _read_text(path, "class file", "utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        wnid, _, name = line.partition("\t") if "\t" in line else line.strip().partition(" ")
        wnid, name = wnid.strip(), name.strip()
        if wnid in wnids:
            raise UserError(f"class file {path} lists {wnid!r} twice (line {number}).")
        wnids.append(wnid)
        names.append(name or wnid)
    if not wnids:
        raise UserError(f"class file {path} lists no classes.")
    return ClassList(tuple(wnids), tuple(names))


def _class_list_of_folder(folder: Path) -> ClassList:
    data, run = rundir.DataDir(folder), rundir.RunDir(folder)
    if data.classes.exists():
        return ClassList.from_json(rundir.read_json(data.classes, "class list"))
    for checkpoint in (run.best_checkpoint, run.last_checkpoint):
        if checkpoint.exists():
            recorded = rundir.load_torch(checkpoint).get("data", {})
            wnids = tuple(recorded.get("classes") or ())
            if wnids:
                return ClassList(wnids, tuple(recorded.get("class_names") or wnids))
    raise UserError(
        f"--classes {folder} is a folder but neither a data directory (no classes.json) nor a trained "
        "run (no checkpoint with a class list)."
    )


def read_names(path: Path) -> dict[str, str]:
    classes = read_class_file(path)
    return dict(zip(classes.wnids, classes.names))


def read_label_file(path: Path, devkit: Path | None = None) -> dict[str, str]:
    """Image stem -> label (wnid or class name), from any of the accepted forms."""
    text = _read_text(path, "label file", "utf-8-sig")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise UserError(f"label file {path} is empty.")
    if all(ln.strip().isdigit() for ln in lines):
        return _ground_truth_txt(path, lines, devkit)
    if lines[0].replace(" ", "").lower().startswith("imageid,predictionstring"):
        return _loc_solution(path, lines)
    labels: dict[str, str] = {}
    lines_of: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        # The separator is whichever comes first, a comma or white space: `a.JPEG,n01440764`
        # and `b.png tench, Tinca tinca` both read right. A quoted name goes through csv.
        line = line.strip()
        first_space = next((i for i, c in enumerate(line) if c.isspace()), len(line))
        if line.startswith('"') or line.find(",") in range(0, first_space):
            row = next(csv.reader([line]))
            name, label = row[0], ",".join(row[1:])
        else:
            name, label = line[:first_space], line[first_space:]
        name, label = name.strip(), label.strip()
        if not name or not label:
            raise UserError(f"label file {path} line {number} is not `name,label` or `name label`: {line!r}.")
        _add(labels, lines_of, _stem(name), label, path, number)
    return labels


def _add(labels: dict[str, str], lines_of: dict[str, int], stem: str, label: str, path: Path, number: int) -> None:
    """One image's label; the same image listed again with another label is refused (which one is right?)."""
    if stem in labels and labels[stem] != label:
        raise UserError(
            f"label file {path} gives {stem!r} two labels: {labels[stem]!r} on line {lines_of[stem]} and "
            f"{label!r} on line {number}."
        )
    labels.setdefault(stem, label)
    lines_of.setdefault(stem, number)


def _loc_solution(path: Path, lines: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    lines_of: dict[str, int] = {}
    for number, row in enumerate(csv.reader(lines[1:]), 2):
        if len(row) < 2 or not row[1].split():
            raise UserError(f"label file {path} line {number} has no PredictionString.")
        _add(labels, lines_of, _stem(row[0]), row[1].split()[0], path, number)
    return labels


def _ground_truth_txt(path: Path, lines: list[str], devkit: Path | None) -> dict[str, str]:
    if devkit is None:
        raise UserError(
            f"label file {path} holds ILSVRC2012 IDs (the devkit's ground-truth form); "
            "give --devkit DIR (the ILSVRC2012 devkit, for data/meta.mat) to map them to wnids."
        )
    id_to_wnid = read_devkit_meta(devkit)
    labels = {}
    for i, line in enumerate(lines, 1):
        ilsvrc_id = int(line)
        if ilsvrc_id not in id_to_wnid:
            raise UserError(
                f"label file {path} line {i} has ILSVRC2012_ID {ilsvrc_id}, which {devkit} does not define."
            )
        labels[f"ILSVRC2012_val_{i:08d}"] = id_to_wnid[ilsvrc_id]
    return labels


def read_devkit_meta(devkit: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid for the 1000 leaf classes, from the devkit folder or its meta.mat."""
    devkit = Path(devkit)
    meta = devkit if devkit.is_file() else devkit / "data" / "meta.mat"
    if not meta.is_file():
        raise UserError(f"--devkit {devkit} holds no data/meta.mat (extract ILSVRC2012_devkit_t12.tar.gz first).")
    try:
        import scipy.io

        # As torchvision's ImageNet dataset reads it: the leaf synsets (num_children == 0) are the classes.
        synsets = scipy.io.loadmat(meta, squeeze_me=True)["synsets"]
        leaves = synsets[np.asarray(synsets["num_children"], dtype=int) == 0]
        return {int(i): str(w) for i, w in zip(leaves["ILSVRC2012_ID"], leaves["WNID"])}
    except Exception as e:  # scipy raises several types for a foreign file
        raise UserError(f"{meta} is not the devkit's meta.mat: {e}.") from None


def _read_text(path: Path, what: str, encoding: str) -> str:
    try:
        return Path(path).read_text(encoding=encoding)
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read: {e.strerror or e}.") from None
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise UserError(
            f"{what} {path} is not UTF-8 text (line {line} holds the byte 0x{e.object[e.start]:02x}); save it as UTF-8."
        ) from None


def _stem(name: str) -> str:
    base = name.strip().replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = base.rpartition(".")
    return stem if dot and ext.lower() in IMAGE_EXTENSIONS else base


# What an image file is called, in a folder, a tar or a label file. One rule with predict, which decodes any file
# it is given by name: every format a phone or camera writes is here, so a folder's .heic or .avif photo is
# found too, and is decoded, or skipped and named when this Pillow has no decoder for it (HEIC needs a plugin).
IMAGE_EXTENSIONS = {
    *("jpg", "jpeg", "jpe", "png", "bmp", "gif", "tif", "tiff", "webp", "ppm", "pgm", "pbm"),
    *("avif", "heic", "heif"),
}


def image_stem(name: str) -> str:
    """The key a label file uses for an image: its file name without the image extension."""
    return _stem(name)
