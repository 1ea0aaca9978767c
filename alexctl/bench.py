"""`alexctl bench`: where the time goes on this machine, measured in one run on the same images.

    (a) the data path alone: shards -> decode -> crop, flip, PCA colour, mean (on the device)
    (b) the network alone on synthetic input: forward, backward, SGD step
    (c) end-to-end training: (a) feeding (b)
    (d) ten-crop evaluation: decode once, ten crops on the device, forward, softmax average
    (e) the stock torchvision pipeline as the baseline: PIL decode + transforms in DataLoader
        workers, feeding torchvision's alexnet (fp32, eager)

Each figure is the median over `repeats` timed windows of `steps` batches, after `warmup`
batches, with the device synchronised around every window. The training step, the augmentation
and the ten-crop inference are the ones `train` and `eval` run (alexctl.train, alexctl.predict).
`preprocess_bench` times the preprocess image path against a naive PIL loop, one process each,
on the same files.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alexctl import device as device_ops
from alexctl import rundir
from alexctl.config import ModelConfig, PreprocessOptions
from alexctl.console import log
from alexctl.data.loader import epoch_batches, load_split, open_source
from alexctl.optim import build_optimizer
from alexctl.predict import infer_batch, probabilities
from alexctl.train import Augmenter, make_train_step

DATA_PATH, STOCK_DATA_PATH = "data path (alexctl)", "data path (stock torchvision: PIL + transforms)"
SYNTHETIC, END_TO_END = "network, synthetic input (alexctl AlexNet)", "end-to-end training (alexctl)"
TEN_CROP = "ten-crop evaluation (alexctl)"
STOCK_SYNTHETIC = "network, synthetic input (torchvision alexnet, fp32 eager)"
STOCK_END_TO_END = "end-to-end training (stock torchvision)"


def bench(data_dir: Path | None, *, runtime: device_ops.Runtime, width: float, batch_size: int, steps: int,
          warmup: int, repeats: int, stock: bool = True) -> dict:
    started = time.monotonic()
    device_ops.configure(runtime)
    with tempfile.TemporaryDirectory(prefix="alexctl-bench-") as tmp:
        if data_dir is None:
            data_dir = _generated_data(Path(tmp), batch_size * (warmup + steps * repeats))
        split = load_split(data_dir, "train")
        stats = rundir.load_npz(rundir.DataDir(Path(data_dir)).stats, "statistics file")
        timer = _Timer(runtime, warmup, steps, repeats)
        needed = warmup + steps * repeats  # batches per measurement: one iterator, no restart inside a window
        with _Ours(split, stats, runtime, width, batch_size, needed) as ours:
            rows = [timer.measure(DATA_PATH, "images/s", ours.data_path()),
                    timer.measure(SYNTHETIC, "images/s", ours.synthetic()),
                    timer.measure(END_TO_END, "images/s", ours.end_to_end()),
                    timer.measure(TEN_CROP, "crops/s", ours.ten_crop(), per_item=10)]
            residency = ours.source.reason
        if stock:
            baseline = _Stock(split, runtime, batch_size, needed)
            rows += [timer.measure(STOCK_DATA_PATH, "images/s", baseline.data_path()),
                     timer.measure(STOCK_SYNTHETIC, "images/s", baseline.synthetic()),
                     timer.measure(STOCK_END_TO_END, "images/s", baseline.end_to_end())]
    by_name = {r["name"]: r["median"] for r in rows}
    ratios = {"end_to_end_over_synthetic": by_name[END_TO_END] / by_name[SYNTHETIC],
              "data_path_over_synthetic": by_name[DATA_PATH] / by_name[SYNTHETIC]}
    if stock:
        ratios["data_path_over_stock"] = by_name[DATA_PATH] / by_name[STOCK_DATA_PATH]
        if width == 1.0:  # otherwise the two networks differ in size and the ratio would mislead
            ratios["end_to_end_over_stock"] = by_name[END_TO_END] / by_name[STOCK_END_TO_END]
    return {
        "device": device_ops.versions(runtime)["device_name"],
        **device_ops.versions(runtime),
        "runtime": runtime.describe(),
        "residency": residency,
        "model": {"width": width, "batch_size": batch_size},
        "timing": {"warmup_batches": warmup, "steps_per_window": steps, "windows": repeats},
        "data_dir": str(data_dir) if data_dir else "generated",
        "rows": rows,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "reading": reading(by_name),
        "seconds": round(time.monotonic() - started, 2),
    }


def reading(rates: dict[str, float]) -> str:
    """What the numbers mean: which stage bounds training on this machine."""
    data, net, e2e = rates[DATA_PATH], rates[SYNTHETIC], rates[END_TO_END]
    bound = "the data path (reading, decoding, augmenting)" if data < net else "the network (the device's compute)"
    text = (f"Training runs at {e2e:,.0f} images/s, {e2e / net:.0%} of what the network alone does "
            f"({net:,.0f}/s); the data path alone delivers {data:,.0f}/s, so {bound} bounds it.")
    if data < net:
        text += " More loader workers, --residency decoded or jpeg, or --decode gpu would help."
    elif e2e < 0.9 * min(data, net):
        text += " The two do not overlap well: the data path and the network wait for each other."
    return text


class _Timer:
    def __init__(self, runtime, warmup: int, steps: int, repeats: int):
        self.runtime, self.warmup, self.steps, self.repeats = runtime, warmup, steps, repeats

    def measure(self, name: str, unit: str, step_fn, per_item: int = 1) -> dict:
        """step_fn() does one batch and returns how many images it took; median over windows."""
        log(f"bench: {name} ...")
        for _ in range(self.warmup):
            step_fn()
        rates = []
        for _ in range(self.repeats):
            device_ops.synchronize(self.runtime)
            start = time.perf_counter()
            n = sum(step_fn() for _ in range(self.steps))
            device_ops.synchronize(self.runtime)
            rates.append(n * per_item / (time.perf_counter() - start))
        row = {"name": name, "unit": unit, "median": round(statistics.median(rates), 1),
               "min": round(min(rates), 1), "max": round(max(rates), 1)}
        log(f"bench: {name}: {row['median']:,.1f} {unit} (median of {self.repeats})")
        return row


class _Ours:
    """alexctl's own path: the split as `train` reads it, augmented on the device, the paper's net and step."""

    def __init__(self, split, stats, runtime, width, batch_size, needed):
        self.split, self.runtime, self.batch_size, self.needed = split, runtime, batch_size, needed
        self.net = device_ops.build_model(ModelConfig(width=width), split.num_classes, runtime)
        self.forward = device_ops.forward_of(self.net, runtime)
        self.step = make_train_step(self.forward, build_optimizer(self.net), runtime)
        self.augment = Augmenter(stats, crop=224, lighting_std=0.1, flip=True, random_crop=True, runtime=runtime)
        self.generator = torch.Generator().manual_seed(0)
        self.source = open_source(split, **device_ops.reading(runtime))

    def __enter__(self) -> "_Ours":
        return self

    def __exit__(self, *exc) -> None:
        self.source.close()

    def _batches(self):
        batches, epoch = [], 0
        while len(batches) < self.needed:
            epoch += 1
            batches += [b for b in epoch_batches(len(self.split), self.batch_size, seed=0, epoch=epoch)
                        if len(b) == self.batch_size]
        return iter(self.source.batches(batches[: self.needed]))

    def _augmented(self):
        for images, labels, _ in self._batches():
            yield self.augment(images, self.generator), labels

    def data_path(self):
        batches = self._augmented()
        return lambda: len(next(batches)[1])

    def synthetic(self):
        x = torch.randn(self.batch_size, 3, 224, 224, device=self.runtime.primary).mul_(60)
        x = x.contiguous(memory_format=self.runtime.memory_format)
        y = torch.randint(0, self.split.num_classes, (self.batch_size,), device=self.runtime.primary)
        self.net.train()
        return lambda: self._train(x, y)

    def _train(self, x, y) -> int:
        self.step(x, y, 1.0 / len(y))
        return len(y)

    def end_to_end(self):
        batches = self._augmented()
        self.net.train()
        return lambda: self._train(*next(batches))

    def ten_crop(self):
        batches = self._batches()
        compute = probabilities(self.forward, self.runtime)
        self.net.eval()

        def step() -> int:
            images, _, _ = next(batches)
            with torch.no_grad():
                infer_batch(compute, images, self.augment.mean_image, crops=10, crop=224, runtime=self.runtime)
            return len(images)

        return step


class _StockImages(torch.utils.data.Dataset):
    """The usual ImageFolder-style dataset, reading the same JPEG bytes: PIL decode and torchvision transforms."""

    def __init__(self, split):
        from torchvision.transforms import v2

        self.split = split
        self.transform = v2.Compose([v2.RandomCrop(224), v2.RandomHorizontalFlip(), v2.PILToTensor(),
                                     v2.ToDtype(torch.float32, scale=True),
                                     v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        from PIL import Image

        image = Image.open(io.BytesIO(self.split.read(i))).convert("RGB")
        return self.transform(image), int(self.split.labels[i])


class _Stock:
    def __init__(self, split, runtime, batch_size, needed):
        import torchvision

        self.runtime, self.batch_size = runtime, batch_size
        self.dataset = _StockImages(split)
        sampler = torch.utils.data.RandomSampler(self.dataset, num_samples=needed * batch_size)  # permutations, chained
        self.loader_args = dict(batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=runtime.workers,
                                pin_memory=runtime.is_cuda)
        self.net = torchvision.models.alexnet(num_classes=split.num_classes).to(runtime.primary)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        self.num_classes = split.num_classes

    def _batches(self):
        for x, y in torch.utils.data.DataLoader(self.dataset, **self.loader_args):
            yield x.to(self.runtime.primary, non_blocking=True), y.to(self.runtime.primary, non_blocking=True)

    def _train_step(self, x, y) -> int:
        F.cross_entropy(self.net(x), y).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return len(y)

    def data_path(self):
        batches = self._batches()
        return lambda: len(next(batches)[1])

    def synthetic(self):
        x = torch.randn(self.batch_size, 3, 224, 224, device=self.runtime.primary)
        y = torch.randint(0, self.num_classes, (self.batch_size,), device=self.runtime.primary)
        return lambda: self._train_step(x, y)

    def end_to_end(self):
        batches = self._batches()
        return lambda: self._train_step(*next(batches))


def _generated_data(tmp: Path, images: int) -> Path:
    """A small data directory from alexctl's own demo images, when no --data is given."""
    from alexctl.data.demo import make_demo_dataset
    from alexctl.data.preprocess import Inputs, default_workers, preprocess

    per_class = max(8, -(-images // 6))
    make_demo_dataset(tmp / "images", classes=6, per_class=per_class, seed=0)
    preprocess(Inputs((tmp / "images",)), tmp / "data", "train", PreprocessOptions(), workers=default_workers())
    return tmp / "data"


# ---------------------------------------------------------------- preprocess


def preprocess_bench(source: Path, *, size: int, quality: int, repeats: int) -> dict:
    """alexctl's image path against a naive PIL loop, one process each, on the same files (per core).

    Both read the files from memory (loaded once beforehand), so the figure is decode + rescale +
    crop + encode, what preprocess spends its cores on. PSNR compares the default fast path with
    the exact full-size decode.
    """
    from alexctl.data import image as image_ops
    from alexctl.data.sources import read_bytes, scan

    datas = [read_bytes(it) for it in scan(source)]
    torch.set_num_threads(1)

    def ours():
        for data in datas:
            try:
                image_ops.encode_jpeg(image_ops.prepare(data, size).pixels, quality)
            except image_ops.UnreadableImage:
                pass

    def naive():
        for data in datas:
            try:
                _naive_pil(data, size, quality)
            except OSError:
                pass

    ours(), naive()  # warm-up: page cache, libraries, allocators
    timings = {"alexctl": [], "naive PIL loop": []}
    for _ in range(repeats):  # interleaved, so drift in the machine's speed hits both alike
        for name, fn in (("alexctl", ours), ("naive PIL loop", naive)):
            start = time.perf_counter()
            fn()
            timings[name].append(len(datas) / (time.perf_counter() - start))
    psnr = []
    for data in datas:
        try:
            fast, exact = image_ops.prepare(data, size), image_ops.prepare(data, size, fast=False)
        except image_ops.UnreadableImage:
            continue
        mse = np.mean((fast.pixels.astype(np.float64) - exact.pixels) ** 2)
        psnr.append(float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse))
    rows = [{"name": n, "unit": "images/s per core", "median": round(statistics.median(r), 1),
             "min": round(min(r), 1), "max": round(max(r), 1)} for n, r in timings.items()]
    # The speed-up pair by pair (each alexctl window against the naive window beside it): robust
    # to the machine's speed drifting during the run.
    pairs = [a / b for a, b in zip(timings["alexctl"], timings["naive PIL loop"])]
    return {
        "source": str(source),
        "images": len(datas),
        "rows": rows,
        "speedup": round(statistics.median(pairs), 2),
        "speedup_min_max": [round(min(pairs), 2), round(max(pairs), 2)],
        "psnr_db_vs_full_decode": {"min": round(min(psnr), 1), "median": round(float(np.median(psnr)), 1)},
        "repeats": repeats,
    }


def _naive_pil(data: bytes, size: int, quality: int) -> bytes:
    """What most preprocessing scripts do: open, convert, resize the shorter side, crop, save."""
    from PIL import Image

    from alexctl.data.image import crop_origin, resized_size

    img = Image.open(io.BytesIO(data)).convert("RGB")
    new_w, new_h = resized_size(img.width, img.height, size)
    left, top = crop_origin(img.width, img.height, size)
    img = img.resize((new_w, new_h), Image.BILINEAR).crop((left, top, left + size, top + size))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()
