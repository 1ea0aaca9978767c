"""`alexctl preprocess`: images from a SOURCE into one split of a data directory.

    scan SOURCE -> labels -> class indices -> (hold out) -> plan -> prepare shards -> merge

The plan (which image goes into which shard, in which order) depends only on the
input and the options, so the result is the same whatever `--workers` is, whichever
`--part I/N` runs did the work, and however often a killed run was restarted: each
shard is written whole under a temporary name, then its sidecar; a shard whose
sidecar exists is done. When every shard is done the split is merged: index,
classes and statistics (train split), and the manifest last.
"""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexctl import __version__, rundir
from alexctl.config import PreprocessOptions, to_dict
from alexctl.console import ProgressFactory, log, no_progress
from alexctl.data import shards as shard_ops
from alexctl.data import stats as stats_ops
from alexctl.data.labels import ClassList, image_stem, read_class_file, read_label_file, read_names
from alexctl.data.sources import Item, printable, sample_keys, scan
from alexctl.data.workers import ordered_map
from alexctl.errors import UserError, WorkFailed
from alexctl.stop import StopSignals


@dataclass(frozen=True)
class Inputs:
    """What to read, besides the options: the sources and the optional label and class files."""

    sources: tuple[Path, ...]  # one or more; Imagenette, say, ships as two tars of five classes each
    labels: Path | None = None
    classes: Path | None = None
    names: Path | None = None
    devkit: Path | None = None


def preprocess(
    inputs: Inputs,
    data_dir: Path,
    split: str,
    options: PreprocessOptions,
    *,
    workers: int,
    part: tuple[int, int] | None = None,
    force: bool = False,
    strict: bool = False,
    progress: ProgressFactory = no_progress,
) -> dict:
    """Prepare `split` of `data_dir`; returns the summary that `--json` prints.

    Any failure (a stop signal, a full disk, --strict with skipped files, a bug) is recorded in the
    split's failed.json, where `alexctl status` finds it; bad input is refused before anything is written."""
    started = time.monotonic()
    data = rundir.DataDir(Path(data_dir))
    split_dir = data.split(split)
    request = _request(inputs, options)
    if part is not None and force:
        raise UserError("--force cannot be combined with --part: redo the whole split without --part.")
    if split_dir.manifest.exists() and not force:
        return _already_done(split_dir, request, started)
    if split != "train":
        _check_disjoint_from_train(data, request)
    plan, classes = _make_plan(inputs, data, split, options)  # bad input is refused here, before any change
    rundir.check_writable(split_dir.root, "DATA_DIR")
    lock_path = split_dir.lock if part is None else split_dir.root / f".lock-part-{part[0]}-of-{part[1]}"
    with (
        rundir.DirectoryLock(
            lock_path, f"preprocess --split {split}" + (f" --part {part[0]}/{part[1]}" if part else "")
        ) as lock,
        rundir.parts_lock(split_dir.root, whole=part is None),
        rundir.split_readers(split_dir.root, exclusive=True) if force else nullcontext(),
    ):
        if split_dir.manifest.exists() and not force:  # finished by another process meanwhile
            return _already_done(split_dir, request, started)
        with rundir.failures_recorded(split_dir.failed, "preprocess", lock=lock), StopSignals() as stop:
            if force:
                _clear(data, split)
            rundir.clear_failure(split_dir.failed)
            summary = _prepare(
                split_dir, data, split, plan, classes, options, request, part, workers, progress, lock, stop, started
            )
            if strict and summary["skipped"]:
                first = summary["skipped"][0]
                split_dir.manifest.unlink(missing_ok=True)
                raise WorkFailed(
                    f"{len(summary['skipped'])} of {summary['found']} images could not be used "
                    f"(first: {first['path']}: {first['reason']}), and --strict was given.",
                    summary=summary,
                )
        return summary


def _prepare(
    split_dir, data, split, plan, classes, options, request, part, workers, progress, lock, stop, started
) -> dict:
    """Write this invocation's shards, then, when every shard of the split is done, merge it."""
    mine = [i for i in range(len(plan.shards)) if part is None or i % part[1] == part[0]]
    todo = [i for i in mine if not _shard_done(split_dir, i, plan.digest)]
    for i in todo:
        for stale in split_dir.root.glob(f".shard-{i:06d}.*{rundir.TMP_MARK}*"):
            stale.unlink(missing_ok=True)
    processed = sum(len(plan.shards[i]) for i in todo)
    if processed:
        with progress(f"preprocess {split}", processed) as bar:
            _write_shards(split_dir, plan, todo, classes, options, split == "train", workers, bar, lock, stop)
    complete = all(_shard_done(split_dir, i, plan.digest) for i in range(len(plan.shards)))
    scope = range(len(plan.shards)) if complete else mine
    sidecars = {i: rundir.load_npz(split_dir.shard_sidecar(i)) for i in scope}
    summary = _summarise(split_dir, sidecars, plan, data, split, classes, processed, started, complete)
    if complete:
        _merge(data, split, plan, classes, sidecars, request, summary)
    return summary


def verify(data_dir: Path, split: str) -> dict:
    """Check a complete split: every shard against its recorded SHA-256 and size, the index against the
    manifest. A WorkFailed (exit 1) names what is damaged; the record goes to failed.json for `status`."""
    split_dir = rundir.DataDir(Path(data_dir)).split(split)
    if not split_dir.manifest.exists():
        raise UserError(f"{split_dir.root} is not a complete {split} split (no manifest.json); nothing to verify.")
    manifest = rundir.read_json(split_dir.manifest, "manifest")
    problems = shard_ops.verify_split(split_dir.root, manifest)
    summary = {"split": split, "data_dir": str(data_dir), "shards": len(manifest["shards"]), "problems": problems}
    if problems:
        message = (
            f"{len(problems)} problem(s) in {split_dir.root}: {'; '.join(problems[:3])}; "
            "preprocess it again with --force."
        )
        rundir.record_failure(split_dir.failed, "preprocess --verify", message)
        raise WorkFailed(message, summary=summary)
    rundir.clear_failure(split_dir.failed)  # an earlier --verify's record: the split is whole again
    return {
        **summary,
        "detail": f"{len(manifest['shards'])} shards and the index match the manifest ({manifest['written']} images)",
    }


def parse_part(text: str) -> tuple[int, int]:
    """'I/N' with 0 <= I < N."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--part {text!r} is not of the form I/N (for example 0/4).") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--part {text!r} needs 0 <= I < N.")
    return i, n


# ---------------------------------------------------------------- planning


def _make_plan(inputs: Inputs, data: rundir.DataDir, split: str, options: PreprocessOptions):
    items = scan(inputs.sources)
    keys = sample_keys(items)
    label_names = _labels(items, inputs)
    classes = _classes(data, split, label_names, inputs)
    resolver = classes.resolver()
    images = [
        shard_ops.PlannedImage(key, resolver.index(name, where=f"image {item.relpath}"), item)
        for key, name, item in zip(keys, label_names, items)
    ]
    if options.holdout > 0:
        images = _hold_out(images, options.holdout, options.holdout_seed, keep="val" if split == "val" else "train")
    if not images:
        raise UserError(f"SOURCE {_names(inputs)} leaves no images for the {split} split.")
    shaping = {**options.shaping(), "classes": list(classes.wnids)}
    return shard_ops.make_plan(images, options.shard_size, options.seed, shaping), classes


def _labels(items: list[Item], inputs: Inputs) -> list[str]:
    if inputs.labels is not None:
        table = read_label_file(inputs.labels, inputs.devkit)
        missing = [it.relpath for it in items if image_stem(it.name) not in table]
        if missing:
            raise UserError(
                f"{len(missing)} images in {_names(inputs)} have no line in --labels {inputs.labels} "
                f"(first: {printable(missing[0])})."
            )
        unused = sorted(set(table) - {image_stem(it.name) for it in items})
        if unused:
            log(
                f"--labels {inputs.labels} lists {len(unused)} images that {_names(inputs)} does not hold "
                f"(labelled, but not found; first: {printable(unused[0])}); they are ignored."
            )
        return [table[image_stem(it.name)] for it in items]
    flat = [it.relpath for it in items if it.folder is None]
    if flat:
        raise UserError(
            f"SOURCE {_names(inputs)} holds images outside class folders (first: {flat[0]}); "
            "give --labels FILE for a flat folder, or point at the folder whose subfolders are the classes."
        )
    folders = sorted({it.folder for it in items})
    if len(folders) == 1 and inputs.classes is None:
        raise UserError(
            f"SOURCE {_names(inputs)} holds one class folder only ({folders[0]!r}); "
            "a flat folder of images needs --labels FILE, and a single class needs --classes FILE."
        )
    return [it.folder for it in items]


def _classes(data: rundir.DataDir, split: str, label_names: list[str], inputs: Inputs) -> ClassList:
    if inputs.classes is not None:
        classes = read_class_file(inputs.classes)
    elif split == "train":
        wnids = tuple(sorted(set(label_names)))
        classes = ClassList(wnids, wnids)
    elif data.classes.exists():
        classes = ClassList.from_json(rundir.read_json(data.classes, "class list"))
    else:
        raise UserError(
            f"{data.classes} does not exist: preprocess the train split into {data.root} first "
            "(a val split reuses its class indices), or give --classes FILE."
        )
    if inputs.names is not None:
        classes = classes.with_names(read_names(inputs.names))
    if split == "val" and data.classes.exists() and inputs.classes is not None:
        trained = ClassList.from_json(rundir.read_json(data.classes, "class list"))
        if trained.wnids != classes.wnids:
            raise UserError(f"--classes {inputs.classes} orders the classes differently from {data.classes}.")
    return classes


def _check_disjoint_from_train(data: rundir.DataDir, request: dict) -> None:
    """A val split cut from the train split's own SOURCE must be exactly its held-out part."""
    manifest_path = data.split("train").manifest
    if not manifest_path.exists():
        return
    train = rundir.read_json(manifest_path, "manifest")
    held = {k: train["options"][k] for k in ("holdout", "holdout_seed")}
    asked = {k: request["options"][k] for k in ("holdout", "holdout_seed")}
    same_source = sorted(train["source"]) == sorted(request["source"])
    if same_source and held["holdout"] == 0 and asked["holdout"] == 0:
        raise UserError(
            f"the train split of {data.root} was made from this same SOURCE; a val split from it needs "
            "--holdout on both splits, or it would be the training images themselves."
        )
    if same_source and held != asked:
        raise UserError(
            f"the train split of {data.root} holds out {held['holdout']} of each class (--holdout-seed "
            f"{held['holdout_seed']}) of the same SOURCE; give the val split the same --holdout and --holdout-seed, "
            "or its images would overlap the training images."
        )
    if not same_source and asked["holdout"] > 0 and held["holdout"] > 0:
        raise UserError(
            f"--holdout takes the val split from the train split's SOURCE ({', '.join(train['source'])}); "
            "this SOURCE is another one."
        )


def _hold_out(images: list, fraction: float, seed: int, keep: str) -> list:
    """A fixed fraction of every class, chosen by a seeded hash of the key: stable and disjoint."""
    by_class: dict[int, list] = {}
    for im in images:
        by_class.setdefault(im.label, []).append(im)
    held = set()
    for members in by_class.values():
        ranked = sorted(members, key=lambda im: hashlib.sha1(f"{seed}:{im.key}".encode()).hexdigest())
        held.update(im.key for im in ranked[: int(round(fraction * len(members)))])
    return [im for im in images if (im.key in held) == (keep == "val")]


# ---------------------------------------------------------------- writing


def _shard_done(split_dir: rundir.SplitDir, i: int, digest: str) -> bool:
    sidecar, shard = split_dir.shard_sidecar(i), split_dir.shard(i)
    if not sidecar.exists() or not shard.exists():
        return False
    try:
        meta = rundir.load_npz(sidecar, keys=("plan", "tar_bytes"))  # not the statistics arrays
    except Exception:  # unreadable, truncated (zipfile's BadZipFile) or of another form: the shard is redone
        return False
    return str(meta["plan"]) == digest and int(meta["tar_bytes"]) == shard.stat().st_size


def _write_shards(split_dir, plan, todo, classes, options, with_stats, workers, bar, lock, stop) -> None:
    tasks, remaining = [], {}
    for i in todo:
        shard_tasks = shard_ops.chunk_tasks(
            plan, i, classes.wnids, options.size, options.quality, options.fast_decode, with_stats
        )
        tasks += shard_tasks
        remaining[i] = len(shard_tasks)
    pending: list = []
    written = 0
    where = "while shards were being written; every finished shard is kept: run the same command again to finish."
    for result in ordered_map(shard_ops.process_chunk, tasks, workers, stop, where):
        shard_index = result[0]
        pending.append(result)
        bar.advance(len(result[2]) + len(result[3]))
        remaining[shard_index] -= 1
        if remaining[shard_index] == 0:
            data, sidecar = shard_ops.build_shard(plan.digest, shard_index, pending)
            rundir.atomic_write_bytes(split_dir.shard(shard_index), data)
            rundir.save_npz(split_dir.shard_sidecar(shard_index), **sidecar)  # after the shard: marks it done
            pending = []
            written += 1
            lock.update(shards_written=written, shards_to_write=len(todo))  # for `alexctl status`
        stop.check(
            f"after {written} of {len(todo)} shards; every finished shard is kept: run the same command "
            "again to finish."
        )


# ---------------------------------------------------------------- merging and summaries


def _merge(
    data: rundir.DataDir, split: str, plan, classes: ClassList, sidecars: dict, request: dict, summary: dict
) -> None:
    split_dir = data.split(split)
    sidecars = [sidecars[i] for i in range(len(plan.shards))]
    rundir.save_npz(
        split_dir.index,
        keys=np.concatenate([s["keys"] for s in sidecars]).astype(str),
        labels=np.concatenate([s["labels"] for s in sidecars]),
        shard=np.concatenate([np.full(len(s["keys"]), i, np.int64) for i, s in enumerate(sidecars)]),
        offset=np.concatenate([s["offsets"] for s in sidecars]),
        size=np.concatenate([s["sizes"] for s in sidecars]),
    )
    if split == "train" or not data.classes.exists():  # a split preprocessed alone (--classes) can be evaluated
        rundir.write_json(data.classes, classes.to_json())
    if split == "train":
        acc = stats_ops.StatsAccumulator.empty(request["options"]["size"])
        for s in sidecars:
            acc.merge(stats_ops.StatsAccumulator.from_arrays(s))
        if acc.images == 0:
            raise WorkFailed(f"no image of the train split could be decoded; see {split_dir.root}.")
        stats = stats_ops.finish(acc)
        rundir.save_npz(data.stats, **stats)
        rundir.write_json(data.stats_summary, stats_ops.summary(stats))
    labels = np.concatenate([s["labels"] for s in sidecars])
    shard_hashes = [str(s["tar_sha256"]) for s in sidecars]
    manifest = {
        "kind": "data-split",
        "split": split,
        "alexctl_version": __version__,
        "created": rundir.now(),
        **request,
        "plan": plan.digest,
        "identity": hashlib.sha256("".join(shard_hashes).encode()).hexdigest(),
        "found": summary["found"],
        "written": summary["written"],
        "skipped": summary["skipped"],
        "classes": len(classes),
        "class_wnids": list(classes.wnids),  # what the labels index: a reader checks classes.json against it
        "class_counts": np.bincount(labels, minlength=len(classes)).tolist(),
        "shards": [
            {"path": split_dir.shard(i).name, "samples": int(len(s["keys"])), "bytes": int(s["tar_bytes"]), "sha256": h}
            for i, (s, h) in enumerate(zip(sidecars, shard_hashes))
        ],
        "index": split_dir.index.name,
        "index_bytes": split_dir.index.stat().st_size,
        "index_sha256": rundir.file_sha256(split_dir.index),
        "stats": data.stats.name if split == "train" else None,
        "seconds": summary["seconds"],
    }
    rundir.write_json(split_dir.manifest, manifest)  # last: its presence means the split is complete


def _summarise(split_dir, sidecars, plan, data, split, classes, processed, started, complete) -> dict:
    written, skipped, paths = 0, [], []
    for i, meta in sidecars.items():
        written += len(meta["keys"])
        skipped += [{"path": str(p), "reason": str(r)} for p, r in zip(meta["skipped_paths"], meta["skipped_reasons"])]
        paths.append(str(split_dir.shard(i)))
    seconds = time.monotonic() - started
    return {
        "split": split,
        "data_dir": str(data.root),
        "complete": complete,
        "found": sum(len(plan.shards[i]) for i in sidecars),
        "written": written,
        "skipped": skipped,
        "shards": paths,
        "stats": str(data.stats) if split == "train" and complete else None,
        "classes": len(classes),
        "processed_now": processed,
        "images_per_second": round(processed / seconds, 1) if processed else None,
        "seconds": round(seconds, 3),
    }


def _already_done(split_dir: rundir.SplitDir, request: dict, started: float) -> dict:
    manifest = rundir.read_json(split_dir.manifest, "manifest")
    changed = [k for k in request if manifest.get(k) != request[k]]
    if changed:
        detail = "; ".join(f"{k}: {manifest.get(k)} -> {request[k]}" for k in changed)
        raise UserError(f"{split_dir.root} was made from other input or options ({detail}); pass --force to redo it.")
    return {
        "split": manifest["split"],
        "data_dir": str(split_dir.root.parent),
        "complete": True,
        "already_complete": True,
        "found": manifest["found"],
        "written": manifest["written"],
        "skipped": manifest["skipped"],
        "shards": [str(split_dir.root / s["path"]) for s in manifest["shards"]],
        "stats": str(split_dir.root.parent / manifest["stats"]) if manifest["stats"] else None,
        "classes": manifest["classes"],
        "processed_now": 0,
        "images_per_second": None,
        "seconds": round(time.monotonic() - started, 3),
    }


def _request(inputs: Inputs, options: PreprocessOptions) -> dict:
    def path(p):
        return str(Path(p).resolve()) if p is not None else None

    return {
        "source": [path(p) for p in inputs.sources],
        "labels": path(inputs.labels),
        "classes_file": path(inputs.classes),
        "names_file": path(inputs.names),
        "options": to_dict(options),
    }


def _names(inputs: Inputs) -> str:
    return " + ".join(str(p) for p in inputs.sources)


def _clear(data: rundir.DataDir, split: str) -> None:
    split_dir = data.split(split)
    if split_dir.root.is_dir():
        for p in split_dir.root.iterdir():
            if p.name not in (split_dir.lock.name, ".readers", ".parts") and p.is_file():
                p.unlink()
    if split == "train":
        for p in (data.classes, data.stats, data.stats_summary):
            p.unlink(missing_ok=True)


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
