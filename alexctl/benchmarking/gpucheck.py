"""`alexctl gpu-check` (`make gpu-check`, issue 17): the whole table from one call of at most 8 minutes on one
GPU machine, planned against a budget (alexctl.benchmarking.plan) and safe against its own failures.

The steps, most valuable first (`steps`), each in its own child process (`alexctl gpu-check --step NAME`):

    preflight      under 30 s: driver and GPU, a C compiler and Python headers for Triton, one real JPEG decoded
                   on the GPU against the CPU decode, bf16, one small compile
    prepare        the Imagenette part (a few images per class in a dry run) extracted into WORK/images and
                   preprocessed, 10% of each class held out as val, into WORK/data
    cuda-tests     the tests that skip without CUDA, GPU correctness tests among them (pytest -m cuda)
    bench-eager    images/s at batch 128, synthetic and end to end: fp32; bf16 + channels-last; LRN and
                   convolution forms (alexctl.benchmarking.gpubench)
    bench-compiled + compile, + CUDA graphs, then each residency on the fastest network
    ten-crop       crops/s through `alexctl eval`'s own inference path
    paper          the paper's recipe, 90 epochs on the part, compile time apart (alexctl.benchmarking.gpurecipes)
    stock          the stock torchvision recipe for a few epochs: its rate against its 90-epoch anchors
    bench-256      the fastest network at batch 256

OUT (light: gpu-check.json, .md, .log; it travels back) and WORK (heavy: images, data, runs; rebuilt on a fresh
machine) live apart. A rerun with the same OUT skips what is done. Without CUDA the same steps run a dry version
(`DRY`): every step's code once, stand-ins where a GPU is needed, in about a minute; its numbers are not figures.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from alexctl import __version__, rundir
from alexctl.benchmarking import gpubench, gpufigures, gpurecipes, preflight
from alexctl.benchmarking.plan import Step, earlier_result, run_plan, write_result
from alexctl.config import PreprocessOptions
from alexctl.console import log
from alexctl.data.preprocess import Inputs, default_workers, preprocess
from alexctl.errors import UserError

BUDGET_S = 480.0  # of command time: a device call runs at most 10 minutes, the machine's start apart
HOLDOUT = 0.1  # of each class, the val split both recipes are judged on
ROOT = Path(__file__).resolve().parents[2]  # the working tree: the tests the cuda-tests step runs
STEM = "gpu-check"


@dataclass(frozen=True)
class Scale:
    """How big each step is: the issue's sizes on a GPU, a smoke test of the same paths on a CPU."""

    mode: str
    width: float  # the paper's net: 1.0
    batch_size: int  # the recipe's 128 (section 5); bench-256 doubles it
    warmup: int  # batches before each timed measurement
    steps: int  # batches per timed window
    repeats: int  # windows; the median is reported
    per_class: int  # images of each class taken from the part (0: all)
    preprocess_workers: int  # 0: all cores (1: in this process, no pool to start)
    epochs: int  # the paper's recipe
    stock_epochs: int  # the stock recipe: a few, for its rate
    stock_crop: int  # the stock recipe's crop and resize (224 and 256; smaller in a dry run: alexnet is heavy)
    stock_resize: int


FULL = Scale("full", 1.0, 128, 10, 20, 5, 0, 0, 90, 3, 224, 256)
DRY = Scale("dry", 0.125, 2, 0, 1, 2, 6, 1, 2, 1, 64, 73)


@dataclass(frozen=True)
class Paths:
    out: Path  # light results that travel back: gpu-check.json, .md, .log
    work: Path  # heavy, rebuilt on a fresh machine: images, data directory, runs

    @property
    def images(self) -> Path:
        return self.work / "images"  # <wnid>/<name>.JPEG

    @property
    def data(self) -> Path:
        return self.work / "data"

    def run(self, recipe: str) -> Path:
        return self.work / "runs" / recipe


# (name, estimate s on an H100, estimate s dry, value, cap s on an H100, needs): the estimates are the planner's
# guesses before anything was measured on a GPU; docs/benchmarks.md says how the first call's measured seconds
# should replace them.
PLAN = (
    ("preflight", 20, 6, 100, 45, ()),
    ("prepare", 25, 6, 95, 150, ()),
    ("cuda-tests", 45, 12, 90, 150, ()),
    ("bench-eager", 60, 8, 80, 150, ("prepare",)),
    ("bench-compiled", 130, 8, 75, 220, ("prepare",)),
    ("ten-crop", 40, 5, 65, 90, ("prepare",)),
    ("paper", 100, 12, 60, 240, ("prepare",)),
    ("stock", 45, 10, 50, 120, ("prepare",)),
    ("bench-256", 60, 6, 40, 150, ("prepare",)),
)
CUDA_TEST_FILES = (  # the test files with tests that skip without CUDA (tests/benchmarking/test_gpucheck.py checks)
    "tests/data/test_augment.py",
    "tests/data/test_resident.py",
    "tests/nets/kernels/test_lrn.py",
    "tests/nets/test_model.py",
    "tests/training/test_train.py",
)


def gpu_check(paths: Paths, *, part: Path, mode: str, budget_s: float, retry: bool, command: str) -> dict:
    """Plan and run the check's steps (each a child process); returns the records with the figures."""
    scale = scale_for(mode)
    records = paths.out / f"{STEM}.json"
    if records.exists():
        earlier = rundir.read_json(records, "GPU check results").get("scale", {}).get("mode")
        if earlier not in (None, scale.mode):
            raise UserError(
                f"{paths.out} holds a {earlier} run's results and this is a {scale.mode} run; remove it or give "
                "another OUT."
            )
    if not Path(part).is_file():
        raise UserError(
            f"the Imagenette part {part} does not exist: run pipelines/gpu-prepare.sh (it fills .data/), or give "
            "PART=.../train-1of2.tar."
        )
    paths.work.mkdir(parents=True, exist_ok=True)
    rundir.check_writable(paths.out, "the GPU check's OUT folder")
    log(f"gpu-check ({scale.mode}): budget {budget_s:.0f} s, results in {paths.out}")
    meta = dict(scale=asdict(scale), command=command, alexctl_version=__version__, machine=machine())
    doc = run_plan(
        steps(paths, scale, part), paths.out, budget_s=budget_s, title=title(scale), retry=retry, stem=STEM, meta=meta
    )
    doc["figures"] = gpufigures.figures(doc)
    rundir.write_json(records, doc)
    table = gpufigures.markdown(doc) + "\n" + (paths.out / f"{STEM}.md").read_text()
    rundir.atomic_write_bytes(paths.out / f"{STEM}.md", table.encode())
    return doc


def scale_for(mode: str) -> Scale:
    if mode == "auto":
        mode = "full" if torch.cuda.is_available() else "dry"
    return FULL if mode == "full" else DRY


def title(scale: Scale) -> str:
    return "GPU check" + (" (dry run, no CUDA: not figures)" if scale.mode == "dry" else "")


def steps(paths: Paths, scale: Scale, part: Path) -> list[Step]:
    """The plan: each step runs `alexctl gpu-check --step NAME` with the same folders and scale."""
    common = [str(paths.out), "--work", str(paths.work), "--part", str(part), "--mode", scale.mode]
    python = [sys.executable, "-m", "alexctl", "gpu-check"]
    dry = scale.mode == "dry"
    return [
        Step(
            name,
            [*python, "--step", name, *common],
            estimate_s=dry_s if dry else full_s,
            value=value,
            cap_s=max(cap, 60) if dry else cap,  # a loaded CPU starts Python slowly
            needs=needs,
            produces=(paths.data / "val" / "manifest.json",) if name == "prepare" else (),
        )
        for name, full_s, dry_s, value, cap, needs in PLAN
    ]


def run_step(name: str, paths: Paths, *, part: Path, mode: str) -> int:
    """One step, in the child process the planner started; its result goes to the planner (write_result)."""
    scale = scale_for(mode)
    log(f"gpu-check: {name} ({scale.mode})")
    if name == "preflight":
        result = preflight.check(image=first_jpeg(part), dry=scale.mode == "dry")
        write_result(result)
        return 0 if all(c["ok"] for c in result["checks"].values()) else 1
    if name == "prepare":
        write_result(prepare(paths, scale, part))
    elif name == "cuda-tests":
        result = cuda_tests(paths, part)
        write_result(result)
        return 0 if result["failed"] == 0 and result["errors"] == 0 else 1
    elif name.startswith("bench-"):
        earlier = {n: earlier_result(n) for n in ("bench-eager", "bench-compiled")}
        gpubench.bench_step(name, paths.data, scale, earlier)
    elif name == "ten-crop":
        write_result(gpubench.ten_crop(paths.data, scale))
    elif name == "paper":
        fastest = earlier_result("bench-compiled").get("fastest") or earlier_result("bench-eager").get("fastest")
        gpurecipes.paper(paths.data, paths.run("paper"), scale, fastest)
    elif name == "stock":
        gpurecipes.stock(paths.data, paths.run("stock"), scale)
    else:
        raise UserError(f"--step {name} is not a step of the GPU check ({', '.join(p[0] for p in PLAN)}).")
    return 0


def machine() -> dict:
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


# ---------------------------------------------------------------- prepare


def prepare(paths: Paths, scale: Scale, part: Path) -> dict:
    """The part's images (all, or `per_class` of each class) as class folders, preprocessed into train and val."""
    marker = paths.work / "scale.json"
    wanted = {"mode": scale.mode, "per_class": scale.per_class, "source": str(Path(part).resolve())}
    if marker.exists() and rundir.read_json(marker, "work folder marker") != wanted:
        raise UserError(f"{paths.work} was prepared from other images than {wanted}; remove it or give another WORK.")
    if not paths.images.is_dir():
        extract(Path(part), paths.images, per_class=scale.per_class)
    rundir.write_json(marker, wanted)
    workers = scale.preprocess_workers or default_workers()
    tick = time.monotonic()
    summaries = {
        split: preprocess(
            Inputs((paths.images,)), paths.data, split, PreprocessOptions(holdout=HOLDOUT), workers=workers
        )
        for split in ("train", "val")
    }
    return {
        "source": str(part),
        "holdout": HOLDOUT,
        "train_images": summaries["train"]["written"],
        "val_images": summaries["val"]["written"],
        "skipped": len(summaries["train"]["skipped"]) + len(summaries["val"]["skipped"]),
        "classes": summaries["train"]["classes"],
        "preprocess_seconds": round(time.monotonic() - tick, 1),
    }


def extract(tar_path: Path, out: Path, *, per_class: int = 0) -> None:
    """The images of an ImageFolder tar (`.../<class>/<name>`) as out/<class>/<name>, written whole before
    `out` appears (a folder beside it, renamed)."""
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


def first_jpeg(part: Path) -> bytes:
    """One real photograph from the part: what preflight decodes on the GPU and on the CPU."""
    with tarfile.open(part) as tar:
        for member in tar:
            if member.isfile() and member.name.lower().endswith((".jpeg", ".jpg")):
                return tar.extractfile(member).read()
    raise UserError(f"the Imagenette part {part} holds no JPEG file.")


# ---------------------------------------------------------------- cuda-tests


def cuda_tests(paths: Paths, part: Path) -> dict:
    """pytest -m cuda on CUDA_TEST_FILES (in this process); counts and failures' names. The tests read their
    photographs from ALEXCTL_SHARED_DATA: a device has no ../shared/data, so .data/tests (made by
    pipelines/gpu-prepare.sh: the photographs the tests' fixtures take) when it is there, else the part's folder."""
    import xml.etree.ElementTree as ElementTree

    import pytest  # a test dependency: only this step needs it

    carried = ROOT / ".data" / "tests"
    os.environ.setdefault("ALEXCTL_SHARED_DATA", str(carried if carried.is_dir() else Path(part).resolve().parents[1]))
    report = paths.work / "cuda-tests.xml"
    files = [str(ROOT / f) for f in CUDA_TEST_FILES]
    args = ["-q", "-m", "cuda", "-p", "no:cacheprovider", f"--rootdir={ROOT}", f"--junitxml={report}", *files]
    tick = time.monotonic()
    code = pytest.main(args)
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    return {
        "exit": int(code),
        "tests": tests,
        "failed": int(suite.get("failures", 0)),
        "errors": int(suite.get("errors", 0)),
        "skipped": skipped,
        "passed": tests - skipped - len(failed),
        "failures": failed[:20],
        "seconds": round(time.monotonic() - tick, 1),
    }
