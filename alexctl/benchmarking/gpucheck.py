"""`make gpu-check` (issue 10, item 6): every speed figure, and the paper's recipe against the stock
torchvision recipe, on one Imagenette part, in one command a person runs on a fresh GPU machine.

    prepare  extract the part (a few images per class in a dry run) into WORK/images and preprocess it,
             10% of each class held out as val, into WORK/data
    bench    alexctl.benchmarking.bench.Bench at full size, each switch compared in one process (`ladder`): fp32 eager;
             bf16 + channels-last; the fused Triton LRN; the grouped convolutions' forms; + compile; + CUDA
             graphs; each residency with the fastest network; the stock torchvision pipeline
    paper    `alexctl train` with its defaults and the fastest runtime bench found, timed as a command; the
             center crop's errors from its last validation, the ten crops' from `alexctl eval`'s evaluation
    stock    alexctl.benchmarking.stock, torchvision's recipe, on the same files and the same partition, likewise
    report   the figures issue 10 asks for, each against its target (`figures`)

Every step saves OUT/gpu-check.json and re-renders OUT/gpu-check.md after each measurement, so a run
stopped anywhere (the device's 10-minute limit) keeps what it measured, and a step run again goes on from
there: bench measures only the rows it lacks, a recipe resumes from its checkpoint and adds its time. A
step's marker OUT/steps/STEP.json is written last, for make (pipelines/gpu-check.mk). Without CUDA the
same steps run a dry version (DRY): every path once, in about a minute; its numbers are not figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import traceback
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

from alexctl import __version__, rundir
from alexctl.benchmarking import stock as stock_recipe
from alexctl.benchmarking.bench import MEASURES, Bench
from alexctl.config import PreprocessOptions, RuntimeOptions
from alexctl.console import log
from alexctl.data.preprocess import Inputs, default_workers, preprocess
from alexctl.device import resolve
from alexctl.errors import UserError, WorkFailed
from alexctl.inference.evaluate import evaluate

STEPS = ("prepare", "bench", "paper", "stock", "report")
HOLDOUT = 0.1  # of each class, the val split both recipes are judged on
IMAGENETTE_IMAGES = 9_469  # both parts of Imagenette's training split (../shared/data/README.md)
ILSVRC_TRAIN_IMAGES = 1_281_167  # ILSVRC-2012's training split
STOCK_QUOTED_SECONDS = 393  # issue 10: the stock recipe, 90 epochs of Imagenette on an H100


@dataclass(frozen=True)
class Scale:
    """How big each step is: the issue's sizes on a GPU, a smoke test of the same paths on a CPU."""

    mode: str
    width: float  # the paper's net: 1.0
    batch_size: int
    warmup: int  # batches before each timed measurement
    steps: int  # batches per timed window
    repeats: int  # windows; the median is reported
    per_class: int  # images of each class taken from the part (0: all)
    preprocess_workers: int  # 0: all cores (1: in this process, no pool to start)
    epochs: int
    stock_crop: int  # the stock recipe's crop and resize (224 and 256; smaller in a dry run: alexnet is heavy)
    stock_resize: int


FULL = Scale("full", 1.0, 256, 10, 20, 5, 0, 0, 90, 224, 256)
DRY = Scale("dry", 0.125, 2, 0, 1, 2, 8, 1, 2, 64, 73)


@dataclass(frozen=True)
class Paths:
    out: Path  # light results: the JSON, the Markdown, the step markers
    work: Path  # heavy and rebuilt on a fresh machine: images, data directory, runs

    @property
    def doc(self) -> Path:
        return self.out / "gpu-check.json"

    @property
    def markdown(self) -> Path:
        return self.out / "gpu-check.md"

    def marker(self, step: str) -> Path:
        return self.out / "steps" / f"{step}.json"

    @property
    def images(self) -> Path:
        return self.work / "images"  # <wnid>/<name>.JPEG

    @property
    def data(self) -> Path:
        return self.work / "data"

    def run(self, recipe: str) -> Path:
        return self.work / "runs" / recipe


# ---------------------------------------------------------------- the document


def load(paths: Paths, scale: Scale, command: str) -> dict:
    """OUT/gpu-check.json as far as it goes, or a new one; a dry run's results never mix with a full one's."""
    doc = rundir.read_json(paths.doc, "GPU check results") if paths.doc.exists() else {}
    if doc and doc.get("mode") != scale.mode:
        raise UserError(
            f"{paths.out} holds a {doc.get('mode')} run's results and this is a {scale.mode} run; "
            "remove it or give another OUT."
        )
    doc.setdefault("kind", "gpu-check")
    doc.setdefault("started", rundir.now())
    doc.update(mode=scale.mode, scale=asdict(scale), command=command, alexctl_version=__version__, machine=machine())
    doc.setdefault("steps", {})
    return doc


def save(paths: Paths, doc: dict) -> None:
    """The JSON with the figures recomputed, then the Markdown beside it."""
    doc["updated"] = rundir.now()
    doc["figures"] = figures(doc)
    rundir.write_json(paths.doc, doc)
    rundir.atomic_write_bytes(paths.markdown, markdown(doc).encode())


def machine() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    versions = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(),
    }
    for name in ("torchvision", "triton"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    device = torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.machine()}), no CUDA"
    return {"device_name": device, "cpu_count": os.cpu_count(), **versions}


def step_record(doc: dict, step: str) -> dict:
    record = doc["steps"].setdefault(step, {})
    record.update(device_name=doc["machine"]["device_name"], date=rundir.now(), argv=sys.argv[1:])
    return record


def finish(paths: Paths, doc: dict, step: str, started: float) -> None:
    doc["steps"][step].update(complete=True, seconds=round(time.monotonic() - started, 1))
    save(paths, doc)
    rundir.write_json(paths.marker(step), {"step": step, "complete": True, "date": rundir.now()})  # last, for make


# ---------------------------------------------------------------- prepare


def prepare(paths: Paths, scale: Scale, doc: dict, source: Path) -> None:
    """The part's images (all, or `per_class` of each class) as class folders, preprocessed into train and val."""
    record = step_record(doc, "prepare")
    marker = paths.work / "scale.json"
    wanted = {"mode": scale.mode, "per_class": scale.per_class, "source": str(Path(source).resolve())}
    if marker.exists() and rundir.read_json(marker, "work folder marker") != wanted:
        raise UserError(
            f"{paths.work} was prepared from {rundir.read_json(marker)} , not {wanted}; remove it or give another WORK."
        )
    if not paths.images.is_dir():
        log(f"gpu-check: extracting {source} into {paths.images}")
        extract(Path(source), paths.images, per_class=scale.per_class)
    rundir.write_json(marker, wanted)
    options = PreprocessOptions(holdout=HOLDOUT)
    workers = scale.preprocess_workers or default_workers()
    summaries = {
        split: preprocess(Inputs((paths.images,)), paths.data, split, options, workers=workers)
        for split in ("train", "val")
    }
    record.update(
        source=str(source),
        images=str(paths.images),
        data=str(paths.data),
        holdout=HOLDOUT,
        train_images=summaries["train"]["written"],
        val_images=summaries["val"]["written"],
        skipped=len(summaries["train"]["skipped"]) + len(summaries["val"]["skipped"]),
        classes=summaries["train"]["classes"],
    )


def extract(tar_path: Path, out: Path, *, per_class: int = 0) -> None:
    """The images of an ImageFolder tar (`.../<class>/<name>`) as out/<class>/<name>, written whole before
    `out` appears (a folder beside it, renamed)."""
    if not tar_path.is_file():
        raise UserError(
            f"the Imagenette part {tar_path} does not exist: run pipelines/gpu-prepare.sh (it fills "
            ".data/), or give PART=.../train-1of2.tar."
        )
    tmp = out.with_name(out.name + rundir.TMP_MARK + str(os.getpid()))
    shutil.rmtree(tmp, ignore_errors=True)
    counts: dict[str, int] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 2 or parts[-1].startswith("."):
                continue
            folder, name = parts[-2], parts[-1]
            if per_class and counts.get(folder, 0) >= per_class:
                continue
            counts[folder] = counts.get(folder, 0) + 1
            (tmp / folder).mkdir(parents=True, exist_ok=True)
            (tmp / folder / name).write_bytes(tar.extractfile(member).read())
    os.replace(tmp, out)


# ---------------------------------------------------------------- bench


def ladder(cuda: bool, scale: Scale, done: dict[str, dict]):
    """The variants bench measures, in order, as (name, group, runtime options, measures, why it is skipped or
    None). Later choices read earlier results in `done` (name -> record): the faster LRN goes into the
    compiled variants, and the residencies are compared on the network with the fastest end to end."""
    no_cuda = None if cuda else "needs CUDA"
    no_compile = no_cuda or ("a dry run does not compile" if scale.mode == "dry" else None)
    eager = dict(
        precision="fp32",
        channels_last="off",
        compile=False,
        cuda_graphs=False,
        lrn_impl="torch",
        conv_form="groups",
        residency="decoded",
    )
    bf16 = {**eager, "precision": "bf16", "channels_last": "on"}
    yield "fp32, eager", "network", eager, MEASURES, None
    yield "bf16 + channels-last", "network", bf16, MEASURES, None
    yield (
        "bf16 + channels-last, Triton LRN",
        "network",
        {**bf16, "lrn_impl": "triton"},
        ("synthetic", "end_to_end"),
        no_cuda,
    )
    for form in ("split", "blockdiag", "auto"):
        yield f"bf16 + channels-last, conv {form}", "network", {**bf16, "conv_form": form}, ("synthetic",), None
    synthetic = {
        impl: _median(done.get(f"bf16 + channels-last{suffix}", {}), "synthetic", default=0)
        for impl, suffix in (("torch", ""), ("triton", ", Triton LRN"))
    }
    lrn = "triton" if synthetic["triton"] > synthetic["torch"] else "torch"  # the faster in eager mode
    other = "triton" if lrn == "torch" else "torch"
    compiled = {**bf16, "compile": True, "lrn_impl": lrn, "conv_form": "auto"}
    yield f"bf16 + channels-last + compile ({lrn} LRN)", "network", compiled, MEASURES, no_compile
    graphs = {**compiled, "cuda_graphs": True}
    yield f"bf16 + channels-last + compile + CUDA graphs ({lrn} LRN)", "network", graphs, MEASURES, no_compile
    yield (
        f"bf16 + channels-last + compile + CUDA graphs ({other} LRN)",
        "network",
        {**graphs, "lrn_impl": other},
        ("synthetic", "end_to_end"),
        no_compile,
    )
    best = fastest(done, group="network")
    for residency in ("disk", "jpeg", "decoded"):
        yield (
            f"residency {residency}",
            "residency",
            {**(best or {}).get("options", eager), "residency": residency},
            ("data_path", "end_to_end"),
            None,
        )
    yield "stock torchvision (PIL in workers, alexnet fp32 eager)", "stock", eager, MEASURES, None


def bench(paths: Paths, scale: Scale, doc: dict) -> None:
    import torch

    record = step_record(doc, "bench")
    record.update(
        width=scale.width,
        batch_size=scale.batch_size,
        warmup_batches=scale.warmup,
        steps_per_window=scale.steps,
        windows=scale.repeats,
    )
    done = {v["name"]: v for v in record.setdefault("variants", [])}
    cuda = torch.cuda.is_available()
    # Each batch shape compiles its own static graph (training at 256, ten-crop at 2,560), as a training run and
    # an evaluation in separate processes would, rather than one graph with a dynamic batch dimension.
    torch._dynamo.config.automatic_dynamic_shapes = False
    with Bench(
        paths.data,
        width=scale.width,
        batch_size=scale.batch_size,
        steps=scale.steps,
        warmup=scale.warmup,
        repeats=scale.repeats,
    ) as measurements:
        for name, group, options, measures, skip in ladder(cuda, scale, done):
            variant = done.get(name)
            if variant is None:
                variant = done[name] = {"name": name, "group": group, "options": options, "rows": []}
                record["variants"].append(variant)
            if skip:
                variant["skipped"] = skip
                continue
            if "error" in variant:  # failed in an earlier call: recorded, not tried again
                continue
            missing = [m for m in measures if m not in {r["measure"] for r in variant["rows"]}]
            if not missing:
                continue
            log(f"gpu-check: bench: {name} ({', '.join(missing)})")
            tick = time.monotonic()
            try:
                runtime = resolve(RuntimeOptions(**options))
                for measure in missing:
                    if group == "stock":
                        result = measurements.measure_stock(runtime, (measure,), crop=scale.stock_crop)
                    else:
                        result = measurements.measure(runtime, (measure,))
                        variant["implementations"] = result["implementations"]
                        variant["residency_reason"] = result["residency"] or variant.get("residency_reason")
                    variant["rows"] += result["rows"]
                    # building, compiling and every batch run, warm-up included: where a lease's minutes go
                    variant["seconds"] = round(variant.get("seconds", 0) + time.monotonic() - tick, 1)
                    tick = time.monotonic()
                    save(paths, doc)
            except Exception as e:  # one switch that fails (a kernel, memory) must not cost the others' figures
                traceback.print_exc()
                variant["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                save(paths, doc)
    record["fastest"] = fastest(done)


def fastest(done: dict[str, dict], group: str | None = None) -> dict | None:
    """The measured alexctl variant with the highest end-to-end median (of `group`, or of all): its name,
    runtime options, end-to-end and synthetic medians (a residency variant's synthetic is its network's)."""
    candidates = [
        v
        for v in done.values()
        if v["group"] in ((group,) if group else ("network", "residency")) and _median(v, "end_to_end") is not None
    ]
    if not candidates:
        return None
    best = max(candidates, key=lambda v: _median(v, "end_to_end"))
    network = fastest(done, "network") if best["group"] == "residency" else None
    return {
        "name": best["name"],
        "options": best["options"],
        "end_to_end": _median(best, "end_to_end"),
        "synthetic": _median(best, "synthetic") or (network or {}).get("synthetic"),
        "network": (network or best)["name"],
    }


def _median(variant: dict, measure: str, default=None):
    return next((r["median"] for r in variant.get("rows", []) if r["measure"] == measure), default)


# ---------------------------------------------------------------- the two recipes


def paper(paths: Paths, scale: Scale, doc: dict) -> None:
    """`alexctl train` (its defaults, the fastest runtime bench found) timed as a command, then `alexctl eval`'s
    evaluation of its last checkpoint with ten crops (here, in this process). If the compiled runtime fails, the
    run starts again without compile, and both attempts are recorded."""
    record = step_record(doc, "paper")
    best = doc["steps"].get("bench", {}).get("fastest") or {}
    options = dict(best.get("options") or {})
    record["runtime_from"] = best.get("name") or "defaults (no bench result)"
    run = rundir.RunDir(paths.run("paper"))
    width = ["--width", str(scale.width)] if scale.width != 1.0 else []
    if trained_before(record, run.manifest, run.root):
        summary, options = rundir.read_json(run.manifest, "run manifest"), record.get("options", options)
    while not run.manifest.exists():
        # Epoch-end checkpoints every 10 epochs, as the stock recipe's: an epoch here is under a second on a GPU.
        command = [
            sys.executable,
            "-m",
            "alexctl",
            "train",
            str(run.root),
            "--data",
            str(paths.data),
            "--epochs",
            str(scale.epochs),
            "--checkpoint-epochs",
            "10",
            *width,
            *runtime_flags(options),
            "--json",
        ]
        code, out, tail = timed(paths, doc, record, command, resumable=run.last_checkpoint.exists())
        if code == 0:
            summary = json.loads(out)
            break
        if not options.get("compile"):
            raise WorkFailed(f"alexctl train failed (exit {code}): {tail}")
        log("gpu-check: training with compile failed; starting again without compile")
        shutil.rmtree(run.root, ignore_errors=True)
        options = {**options, "compile": False, "cuda_graphs": False}
    rows = rundir.read_jsonl(Path(summary["metrics"]))
    data = rundir.read_json(run.config, "run configuration")["data"]
    record.update(
        options=options,
        epochs=summary["epochs_completed"],
        train_images=data["train_images"],
        val_images=data["val_images"],
        train_seconds=round(sum(r["train_seconds"] for r in rows), 1),
        val_seconds=round(sum(r["val_seconds"] for r in rows), 1),
        images_per_second=summary["images_per_second"],
        # the last epoch's validation is `alexctl eval --crops 1 --checkpoint last`: the same weights and
        # images, the center crop
        errors_1crop={
            "top1": summary["last_val_top1_error"],
            "top5": summary["last_val_top5_error"],
            "images": data["val_images"],
        },
    )
    result = evaluate(
        run.root,
        crops=10,
        checkpoint_name="last",
        batch_size=64,
        runtime=resolve(RuntimeOptions(**{**options, "compile": False, "cuda_graphs": False})),
    )
    record["errors_10crop"] = {
        "top1": result["top1_error"],
        "top5": result["top5_error"],
        "images": result["num_images"],
    }


def stock(paths: Paths, scale: Scale, doc: dict) -> None:
    """alexctl.benchmarking.stock: torchvision's recipe on the files of the same partition, timed as a command, then its
    ten-crop errors (in this process)."""
    record = step_record(doc, "stock")
    run = paths.run("stock")
    workers = max(1, (os.cpu_count() or 2) - 1)  # as alexctl's loaders: all cores but one
    sizes = ["--crop", str(scale.stock_crop), "--resize", str(scale.stock_resize), "--workers", str(workers)]
    command = [
        sys.executable,
        "-m",
        "alexctl.benchmarking.stock",
        "train",
        str(paths.data),
        str(run),
        "--epochs",
        str(scale.epochs),
        *sizes,
        "--json",
    ]
    if trained_before(record, run / "train.json", run):
        summary = rundir.read_json(run / "train.json", "stock summary")
    else:
        code, out, tail = timed(paths, doc, record, command, resumable=(run / "last.pt").exists())
        if code != 0:
            raise WorkFailed(f"the stock recipe failed (exit {code}): {tail}")
        summary = json.loads(out)
    record.update(
        epochs=summary["epochs_completed"],
        train_images=summary["train_images"],
        val_images=summary["val_images"],
        settings=summary["settings"],
        train_seconds=round(sum(r["seconds"] for r in summary["rows"]), 1),
        # the last epoch's evaluation: the final weights, Resize + CenterCrop
        errors_1crop={
            "top1": summary["last_val_top1_error"],
            "top5": summary["last_val_top5_error"],
            "images": summary["val_images"],
        },
    )
    result = stock_recipe.evaluate(
        paths.data, run, crops=10, workers=workers, crop=scale.stock_crop, resize=scale.stock_resize
    )
    record["errors_10crop"] = {
        "top1": result["top1_error"],
        "top5": result["top5_error"],
        "images": result["num_images"],
    }


def runtime_flags(options: dict) -> list[str]:
    """alexctl's runtime options as command-line flags (the ones a bench variant sets)."""
    flags = []
    for name in ("precision", "channels_last", "lrn_impl", "conv_form", "residency"):
        if name in options:
            flags += [f"--{name.replace('_', '-')}", str(options[name])]
    flags += ["--compile"] if options.get("compile") else []
    return flags + (["--cuda-graphs"] if options.get("cuda_graphs") else [])


def trained_before(record: dict, manifest: Path, run: Path) -> bool:
    """Whether a recipe's run finished in an earlier call whose time is on record (a step run again). A finished
    run without a recorded time is trained again: its wall time is the figure."""
    if (
        manifest.exists()
        and record.get("wall_seconds") is not None
        and record.get("attempts", [{}])[-1].get("status") == "done"
    ):
        return True
    if manifest.exists():
        shutil.rmtree(run)
    return False


def timed(
    paths: Paths, doc: dict, record: dict, command: list[str], *, resumable: bool, every: float = 5.0
) -> tuple[int, str, str]:
    """Run a recipe's command, its stderr passed on as it comes; its wall time is added to the current attempt in
    `record` and saved every few seconds, so a call stopped midway still counts the time it spent. The last
    attempt goes on if it was stopped with the same command and its run can resume (`resumable`: a
    checkpoint is there); otherwise a new attempt starts. Returns (exit status, stdout, stderr's last line)."""
    attempts = record.setdefault("attempts", [])
    last = attempts[-1] if attempts else {}
    if not (last.get("command") == command and last.get("status") == "running" and resumable):
        attempts.append({"command": command, "status": "running", "seconds": 0.0, "calls": 0})
    attempt = attempts[-1]
    attempt["calls"] += 1
    before, started = attempt["seconds"], time.monotonic()
    log(f"gpu-check: {' '.join(command[1:])}")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = [], deque(maxlen=20)
    readers = [
        threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True),
        threading.Thread(target=_relay, args=(proc.stderr, err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    while True:
        try:
            code = proc.wait(timeout=every)
            break
        except subprocess.TimeoutExpired:
            attempt["seconds"] = round(before + time.monotonic() - started, 1)
            save(paths, doc)
    for reader in readers:
        reader.join()
    attempt.update(seconds=round(before + time.monotonic() - started, 1), status="done" if code == 0 else "failed")
    if code != 0:
        attempt["error"] = err[-1].strip() if err else f"exit {code}"
    record["wall_seconds"] = attempt["seconds"]
    save(paths, doc)
    return code, "".join(out), attempt.get("error", "")


def _relay(stream, tail: deque) -> None:
    for line in stream:
        sys.stderr.write(line)
        sys.stderr.flush()
        tail.append(line)


# ---------------------------------------------------------------- figures and the table


def figures(doc: dict) -> list[dict]:
    """Issue 10's figures from the measurements so far, each with its target and whether it is met."""
    steps = doc.get("steps", {})
    variants = {v["name"]: v for v in steps.get("bench", {}).get("variants", [])}
    best = fastest(variants)
    ten_crop = max(
        (
            (_median(v, "ten_crop"), name)
            for name, v in variants.items()
            if v["group"] != "stock" and _median(v, "ten_crop")
        ),
        default=(None, None),
    )
    jpeg = variants.get("residency jpeg", {})
    ilsvrc_rate, ilsvrc_basis = (
        (_median(jpeg, "end_to_end"), "residency jpeg: ILSVRC-2012 at 256 px is ~25 GB as JPEG, ~252 GB decoded")
        if _median(jpeg, "end_to_end")
        else ((best or {}).get("end_to_end"), (best or {}).get("name"))
    )
    paper, stock = _projected(steps.get("paper", {})), _projected(steps.get("stock", {}))
    measured = {
        "paper": steps.get("paper", {}).get("wall_seconds"),
        "stock": steps.get("stock", {}).get("wall_seconds"),
    }
    rows = [
        _figure(
            "end to end / synthetic",
            _ratio(best, "end_to_end", "synthetic"),
            "",
            ">=",
            0.95,
            best and f"{best['name']} (network: {best['network']})",
        ),
        _figure(
            "paper net, end-to-end training",
            best and best["end_to_end"],
            "images/s",
            ">=",
            25_000,
            best and best["name"],
        ),
        _figure("ten-crop evaluation", ten_crop[0], "crops/s", ">=", 40_000, ten_crop[1]),
        _figure("90 Imagenette epochs, paper recipe", paper[0], "s", "<=", 60, paper[1]),
        _figure(
            "90 Imagenette epochs, stock torchvision recipe",
            stock[0],
            "s",
            None,
            None,
            stock[1] and f"{stock[1]}; issue 10 quotes {STOCK_QUOTED_SECONDS} s on an H100",
        ),
        _figure(
            "paper recipe's speed-up over the stock recipe",
            _ratio(measured, "stock", "paper"),
            "x",
            None,
            None,
            "wall times on the same part and partition",
        ),
        _figure(
            "projected 90 ILSVRC-2012 epochs",
            ilsvrc_rate and ILSVRC_TRAIN_IMAGES * 90 / ilsvrc_rate / 60,
            "min",
            "<",
            80,
            ilsvrc_basis and f"{ILSVRC_TRAIN_IMAGES:,} images x 90 at the end-to-end rate of {ilsvrc_basis}",
        ),
    ]
    return rows


def _figure(name, value, unit, comparison, target, basis) -> dict:
    met = (
        None
        if value is None or target is None
        else (value >= target if comparison == ">=" else value <= target if comparison == "<=" else value < target)
    )
    status = "not measured" if value is None else ("no target" if target is None else ("met" if met else "not met"))
    return {
        "name": name,
        "value": None if value is None else round(value, 3),
        "unit": unit,
        "comparison": comparison,
        "target": target,
        "met": status,
        "basis": basis,
    }


def _ratio(values: dict | None, top: str, bottom: str) -> float | None:
    if not values or not values.get(top) or not values.get(bottom):
        return None
    return values[top] / values[bottom]


def _projected(recipe: dict) -> tuple[float | None, str | None]:
    """A recipe's 90-epoch wall time scaled from this part to all of Imagenette: what the epochs took (training and
    validation) grows with the images, the rest (start-up, checkpoints, compile outside the epochs) does not."""
    wall, epochs_seconds = recipe.get("wall_seconds"), recipe.get("train_seconds")
    images = (recipe.get("train_images") or 0) + (recipe.get("val_images") or 0)
    if not recipe.get("complete") or wall is None or epochs_seconds is None or not images:
        return None, None
    epochs_seconds += recipe.get("val_seconds") or 0.0  # alexctl's validation; the stock rows include theirs
    factor = IMAGENETTE_IMAGES / images
    value = wall - epochs_seconds + epochs_seconds * factor
    return value, (
        f"{wall:.1f} s measured on this part's {images:,} images ({epochs_seconds:.1f} s in the epochs), "
        f"the epochs scaled x{factor:.2f} to Imagenette's {IMAGENETTE_IMAGES:,}"
    )


def markdown(doc: dict) -> str:
    """The table for docs/benchmarks.md and docs/results.md: the machine, the command, the figures, every row."""
    m, steps = doc["machine"], doc["steps"]
    lines = [
        f"# GPU check: {m['device_name']}",
        "",
        f"torch {m['torch']}, CUDA {m['cuda']}, cuDNN {m['cudnn']}, torchvision {m['torchvision']}, triton "
        f"{m['triton']}, Python {m['python']}, {m['cpu_count']} CPU cores; alexctl {doc['alexctl_version']}.",
        f"Command: `{doc['command']}`; started {doc['started']}, updated {doc.get('updated', '')}.",
    ]
    prep = steps.get("prepare", {})
    if prep.get("train_images"):
        lines.append(
            f"Data: {Path(prep['source']).name}, {prep['train_images']:,} train and {prep['val_images']:,} "
            f"held-out images ({prep['holdout']:.0%} of each of {prep['classes']} classes)"
            + (f"; with {prep['classes']} classes a top-5 error is 0 by construction." if prep["classes"] <= 5 else ".")
        )
    if doc["mode"] == "dry":
        lines += [
            "",
            "**Dry run on a machine without CUDA** (width 0.125, a few images, 2 epochs): it checks that "
            "every path runs. Its numbers are not figures.",
        ]
    lines += ["", "## Figures (issue 10)", "", "| figure | measured | target | | basis |", "|---|---|---|---|---|"]
    for f in doc.get("figures", []):
        target = f"{f['comparison']} {_number(f['target'])} {f['unit']}" if f["target"] is not None else ""
        value = f"{_number(f['value'])} {f['unit']}" if f["value"] is not None else "not measured"
        lines.append(f"| {f['name']} | {value} | {target} | {f['met']} | {f['basis'] or ''} |")
    bench = steps.get("bench", {})
    if bench.get("variants"):
        lines += [
            "",
            f"## alexctl bench: width {bench['width']}, batch {bench['batch_size']}; median, min and max "
            f"of {bench['windows']} windows of {bench['steps_per_window']} batches after "
            f"{bench['warmup_batches']} warm-up batches",
            "",
            "| variant | measure | median | min | max | unit |",
            "|---|---|---|---|---|---|",
        ]
        for v in bench["variants"]:
            note = v.get("skipped") or v.get("error")
            if note or not v["rows"]:
                lines.append(
                    f"| {v['name']} | {'skipped: ' if v.get('skipped') else 'failed: '}{note or 'not yet'} | | | | |"
                )
            for r in v["rows"]:
                lines.append(
                    f"| {v['name']}{_chosen(v)} | {r['measure'].replace('_', ' ')} | {_number(r['median'])} "
                    f"| {_number(r['min'])} | {_number(r['max'])} | {r['unit']} |"
                )
    recipes = [(name, steps[name]) for name in ("paper", "stock") if steps.get(name, {}).get("attempts")]
    if recipes:
        lines += [
            "",
            "## 90 epochs on the same train/val partition"
            if doc["mode"] == "full"
            else "## The two recipes on the same train/val partition",
            "",
            "| recipe | runtime | epochs | wall s | 1-crop top-1 / top-5 error | 10-crop top-1 / top-5 error |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in recipes:
            runtime = (
                (" ".join(runtime_flags(r.get("options", {}))) or "defaults")
                if name == "paper"
                else "torchvision references/classification, fp32 eager"
            )
            errors = [
                (f"{e['top1']:.2%} / {e['top5']:.2%}" if e else "")
                for e in (r.get("errors_1crop"), r.get("errors_10crop"))
            ]
            state = "" if r.get("complete") else " (not finished)"
            lines.append(
                f"| {'paper (alexctl train)' if name == 'paper' else 'stock torchvision'}{state} | {runtime} "
                f"| {r.get('epochs', '')} | {r.get('wall_seconds', '')} | {errors[0]} | {errors[1]} |"
            )
    return "\n".join(lines) + "\n"


def _chosen(variant: dict) -> str:
    """What conv_form auto chose, layer by layer (measured on CUDA; groups elsewhere)."""
    conv = (variant.get("implementations") or {}).get("conv")
    if variant["options"].get("conv_form") != "auto" or conv is None:
        return ""
    return " (auto: " + (", ".join(f"{k} {v}" for k, v in conv.items()) if isinstance(conv, dict) else conv) + ")"


def _number(x) -> str:
    return f"{x:,.0f}" if isinstance(x, (int, float)) and abs(x) >= 100 else (f"{x:.3g}" if x is not None else "")


# ---------------------------------------------------------------- python -m alexctl.benchmarking.gpucheck STEP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m alexctl.benchmarking.gpucheck", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--out", type=Path, default=Path("out/gpu-check"), help="results: JSON, Markdown, markers")
    parser.add_argument("--work", type=Path, default=Path("/tmp/alexctl-gpu-check"), help="images, data, runs")
    parser.add_argument("--part", type=Path, help="prepare: the Imagenette part (a tar of <wnid>/<name>.JPEG)")
    parser.add_argument(
        "--mode", choices=("auto", "full", "dry"), default="auto", help="auto: full with CUDA, dry without"
    )
    parser.add_argument(
        "--command", default="python -m alexctl.benchmarking.gpucheck", help="what a person ran, for the record"
    )
    args = parser.parse_args(argv)
    paths = Paths(args.out.resolve(), args.work.resolve())
    started = time.monotonic()
    try:
        with rundir.DirectoryLock(paths.out / ".lock", f"gpu-check {args.step}"):
            if args.step == "report":  # from the results alone: no torch to import
                doc = rundir.read_json(paths.doc, "GPU check results (run a step first)")
                save(paths, doc)
                sys.stdout.write(markdown(doc))
                return 0
            import torch

            mode = args.mode if args.mode != "auto" else ("full" if torch.cuda.is_available() else "dry")
            scale = FULL if mode == "full" else DRY
            doc = load(paths, scale, args.command)
            log(f"gpu-check: {args.step} ({scale.mode}) on {doc['machine']['device_name']}")
            if args.step == "prepare":
                if args.part is None:
                    raise UserError("prepare needs --part TAR, the Imagenette part to extract.")
                prepare(paths, scale, doc, args.part)
            else:
                {"bench": bench, "paper": paper, "stock": stock}[args.step](paths, scale, doc)
            finish(paths, doc, args.step, started)
    except (UserError, WorkFailed) as e:
        print(f"alexctl.benchmarking.gpucheck: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
