"""`alexctl bench`: where the time goes on this machine, measured in one run on the same images.

    (a) the data path alone: shards -> decode -> crop, flip, PCA colour, mean (on the device)
    (b) the network alone on synthetic input: forward, backward, SGD step
    (c) end-to-end training: (a) feeding (b)
    (d) ten-crop evaluation: decode once, ten crops on the device, forward, softmax average
    (e) the stock torchvision pipeline as the baseline: PIL decode + the stock recipe's transforms
        (alexctl.benchmarking.stock) in DataLoader workers, feeding torchvision's alexnet (fp32, eager)

Each figure is the median over `repeats` timed windows of `steps` batches, after `warmup`
batches, with the device synchronised around every window. The training step, the augmentation
and the ten-crop inference are the ones `train` and `eval` run (alexctl.training.train, alexctl.inference.core).

`Bench` measures several runtimes in one process on one data directory (the GPU check compares
precision, layout, compile, LRN, convolution forms and residencies this way): each network
setting is built (and compiled) once for as long as consecutive measurements share it, and each
way of reading the split is opened once. `bench` is one runtime and the stock baseline.
The preprocess image path against a naive PIL loop: alexctl.benchmarking.preprocess_bench.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from alexctl import rundir
from alexctl.benchmarking import stock
from alexctl.config import ModelConfig, PreprocessOptions
from alexctl.console import log
from alexctl.data.demo import make_demo_dataset
from alexctl.data.loader import epoch_batches, load_split
from alexctl.data.preprocess import Inputs, default_workers, preprocess
from alexctl.data.resident import open_source
from alexctl.device import Runtime, configure, forward_of, reading, synchronize, versions
from alexctl.errors import UserError
from alexctl.inference.core import infer_batch, probabilities
from alexctl.nets.build import runtime_model
from alexctl.training.optim import build_optimizer
from alexctl.training.train import Augmenter, make_train_step

DATA_PATH, STOCK_DATA_PATH = "data path (alexctl)", "data path (stock torchvision: PIL + transforms)"
SYNTHETIC, END_TO_END = "network, synthetic input (alexctl AlexNet)", "end-to-end training (alexctl)"
TEN_CROP = "ten-crop evaluation (alexctl)"
STOCK_SYNTHETIC = "network, synthetic input (torchvision alexnet, fp32 eager)"
STOCK_END_TO_END = "end-to-end training (stock torchvision)"
STOCK_TEN_CROP = "ten-crop evaluation (stock torchvision)"

MEASURES = ("data_path", "synthetic", "end_to_end", "ten_crop")  # what a row measures; rows carry it as "measure"
_NAMES = {
    "alexctl": dict(zip(MEASURES, (DATA_PATH, SYNTHETIC, END_TO_END, TEN_CROP))),
    "stock": dict(zip(MEASURES, (STOCK_DATA_PATH, STOCK_SYNTHETIC, STOCK_END_TO_END, STOCK_TEN_CROP))),
}


def bench(
    data_dir: Path | None,
    *,
    runtime: Runtime,
    width: float,
    batch_size: int,
    steps: int,
    warmup: int,
    repeats: int,
    stock: bool = True,
) -> dict:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="alexctl-bench-") as tmp:
        if data_dir is None:
            data_dir = _generated_data(Path(tmp), batch_size * (warmup + steps * repeats))
        with Bench(
            data_dir, width=width, batch_size=batch_size, steps=steps, warmup=warmup, repeats=repeats
        ) as measurements:
            if stock and measurements.model_config.arch != "alexnet":
                raise UserError(
                    f"--data {data_dir} holds 32x32 images: the stock torchvision pipeline (224 px "
                    "crops) cannot read them; add --no-stock."
                )
            ours = measurements.measure(runtime)
            rows = ours["rows"]
            if stock:
                rows += measurements.measure_stock(runtime, ("data_path", "synthetic", "end_to_end"))["rows"]
    by_name = {r["name"]: r["median"] for r in rows}
    ratios = {
        "end_to_end_over_synthetic": by_name[END_TO_END] / by_name[SYNTHETIC],
        "data_path_over_synthetic": by_name[DATA_PATH] / by_name[SYNTHETIC],
    }
    if stock:
        ratios["data_path_over_stock"] = by_name[DATA_PATH] / by_name[STOCK_DATA_PATH]
        if width == 1.0:  # otherwise the two networks differ in size and the ratio would mislead
            ratios["end_to_end_over_stock"] = by_name[END_TO_END] / by_name[STOCK_END_TO_END]
    return {
        "device": versions(runtime)["device_name"],
        **versions(runtime),
        "runtime": runtime.describe(),
        "residency": ours["residency"],
        "model": {"arch": measurements.model_config.arch, "width": width, "batch_size": batch_size},
        "timing": {"warmup_batches": warmup, "steps_per_window": steps, "windows": repeats},
        "data_dir": str(data_dir) if data_dir else "generated",
        "rows": rows,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "reading": what_bounds(by_name),
        "seconds": round(time.monotonic() - started, 2),
    }


def what_bounds(rates: dict[str, float]) -> str:
    """What the numbers mean: which stage bounds training on this machine."""
    data, net, e2e = rates[DATA_PATH], rates[SYNTHETIC], rates[END_TO_END]
    bound = "the data path (reading, decoding, augmenting)" if data < net else "the network (the device's compute)"
    text = (
        f"Training runs at {e2e:,.0f} images/s, {e2e / net:.0%} of what the network alone does "
        f"({net:,.0f}/s); the data path alone delivers {data:,.0f}/s, so {bound} bounds it."
    )
    if data < net:
        text += " More loader workers, --residency decoded or jpeg, or --decode gpu would help."
    elif e2e < 0.9 * min(data, net):
        text += " The two do not overlap well: the data path and the network wait for each other."
    return text


class Bench:
    """Measurements of one data directory's train split on any number of runtimes, in one process.

    measure(runtime, measures) builds the network the runtime describes (precision, layout, compile,
    CUDA graphs, LRN, convolution form) unless the previous measurement used the same one, and opens
    the split as the runtime reads it (residency, decoder, workers) once per way of reading; a
    network is dropped when the next measurement needs another (on a GPU, compiled graphs and CUDA
    graph pools are large). Use as a context manager: the sources are closed at the end.
    """

    def __init__(self, data_dir: Path, *, width: float, batch_size: int, steps: int, warmup: int, repeats: int):
        self.split = load_split(Path(data_dir), "train")
        self.stats = rundir.load_npz(rundir.DataDir(Path(data_dir)).stats, "statistics file")
        self.model_config = model_for(self.split.image_size, width, data_dir)
        self.width, self.batch_size = width, batch_size
        self.timing = (warmup, steps, repeats)
        self.needed = warmup + steps * repeats  # batches per measurement: one iterator, no restart inside a window
        self.networks_built = 0
        self._network: tuple[tuple, _Network | _Stock] | None = None  # the last one built, kept while it is asked for
        self._sources: dict[tuple, object] = {}

    def __enter__(self) -> "Bench":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for source in self._sources.values():
            source.close()
        self._sources.clear()
        self._network = None

    def measure(self, runtime: Runtime, measures: tuple[str, ...] = MEASURES) -> dict:
        """alexctl's own path on `runtime`: {"rows": [...], "implementations": how LRN and the grouped
        convolutions compute, "residency": the source's reason (None if no row read the split)}."""
        _check(measures)
        configure(runtime)
        timer = _Timer(runtime, *self.timing)
        network = self._network_for(runtime)
        source = self._source_for(runtime) if set(measures) - {"synthetic"} else None
        ours = _Ours(network, source, self.split, runtime, self.batch_size, self.needed)
        rows = [timer.measure(_NAMES["alexctl"][m], m, getattr(ours, m)()) for m in MEASURES if m in measures]
        return {
            "rows": rows,
            "implementations": network.net.implementations,
            "residency": source.reason if source is not None else None,
        }

    def measure_stock(self, runtime: Runtime, measures: tuple[str, ...] = MEASURES, *, crop: int = 224) -> dict:
        """The stock torchvision pipeline on the runtime's device and loader workers (fp32, eager, whatever
        the runtime's precision), on `crop`-pixel crops (224; less only for a quick run on a CPU): {"rows": [...]}."""
        _check(measures)
        configure(runtime)
        timer = _Timer(runtime, *self.timing)
        key = ("stock", runtime.primary, runtime.workers, crop)
        if self._network is None or self._network[0] != key:
            self._forget_network()
            self._network = (key, _Stock(self.split, runtime, self.batch_size, self.needed, crop))
            self.networks_built += 1
        baseline = self._network[1]
        return {
            "rows": [timer.measure(_NAMES["stock"][m], m, getattr(baseline, m)()) for m in MEASURES if m in measures]
        }

    def _network_for(self, runtime: Runtime) -> "_Network":
        key = (
            runtime.devices,
            runtime.precision,
            runtime.channels_last,
            runtime.compile,
            runtime.cuda_graphs,
            runtime.lrn_impl,
            runtime.conv_form,
        )
        if self._network is None or self._network[0] != key:
            self._forget_network()
            self._network = (key, _Network(runtime, self.model_config, self.split.num_classes, self.stats))
            self.networks_built += 1
        return self._network[1]

    def _forget_network(self) -> None:
        """Free the last network before another is built. Its compiled code goes with it (torch._dynamo.reset):
        each compiled variant compiles afresh, and one network's graphs (training, ten-crop) stay far below
        Dynamo's recompile limit, past which it would run the rest eagerly and time the wrong thing."""
        compiled = self._network is not None and getattr(self._network[1], "compiled", False)
        self._network = None
        if compiled:
            torch._dynamo.reset()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _source_for(self, runtime: Runtime):
        how = reading(runtime)
        key = tuple(sorted((k, str(v)) for k, v in how.items()))
        if key not in self._sources:
            self._sources[key] = open_source(self.split, **how)
        return self._sources[key]


def model_for(image_size: int, width: float, data_dir: Path) -> ModelConfig:
    """The network a data directory's images feed: the paper's (256 px images, 224 px crops) or the CIFAR-10
    net (32 px images, 24 px crops)."""
    for arch in ("alexnet", "cifar"):
        config = ModelConfig(arch=arch, width=width)
        if config.image_size == image_size:
            return config
    raise UserError(
        f"--data {data_dir} holds {image_size}x{image_size} images; bench measures the paper's network "
        "on 256x256 images or the CIFAR-10 net on 32x32 (`alexctl preprocess --size`)."
    )


def _check(measures: tuple[str, ...]) -> None:
    unknown = sorted(set(measures) - set(MEASURES))
    if unknown:
        raise ValueError(f"unknown measurement {unknown[0]!r} (known: {', '.join(MEASURES)}).")


class _Timer:
    def __init__(self, runtime, warmup: int, steps: int, repeats: int):
        self.runtime, self.warmup, self.steps, self.repeats = runtime, warmup, steps, repeats

    def measure(self, name: str, measure: str, step_fn) -> dict:
        """step_fn() does one batch and returns how many items (images, or crops) it took; median over windows."""
        unit = "crops/s" if measure == "ten_crop" else "images/s"
        log(f"bench: {name} ...")
        for _ in range(self.warmup):
            step_fn()
        rates = []
        for _ in range(self.repeats):
            synchronize(self.runtime)
            start = time.perf_counter()
            n = sum(step_fn() for _ in range(self.steps))
            synchronize(self.runtime)
            rates.append(n / (time.perf_counter() - start))
        row = {
            "name": name,
            "measure": measure,
            "unit": unit,
            "median": round(statistics.median(rates), 1),
            "min": round(min(rates), 1),
            "max": round(max(rates), 1),
        }
        log(f"bench: {name}: {row['median']:,.1f} {unit} (median of {self.repeats})")
        return row


class _Network:
    """The paper's net on a runtime, with the training step and augmentation `train` uses."""

    def __init__(self, runtime, model_config: ModelConfig, num_classes, stats):
        self.compiled = runtime.compile
        self.crop = model_config.input_size
        self.net = runtime_model(model_config, num_classes, runtime)
        self.forward = forward_of(self.net, runtime)
        self.step = make_train_step(self.net, build_optimizer(self.net), runtime)  # compiles its own graphs
        self.augment = Augmenter(stats, crop=self.crop, lighting_std=0.1, flip=True, random_crop=True, runtime=runtime)
        self.generator = torch.Generator().manual_seed(0)


class _Ours:
    """alexctl's own path: the split as `train` reads it, augmented on the device, the paper's net and step."""

    def __init__(self, network: _Network, source, split, runtime, batch_size, needed):
        self.network, self.source, self.split = network, source, split
        self.runtime, self.batch_size, self.needed = runtime, batch_size, needed

    def _batches(self):
        batches, epoch = [], 0
        while len(batches) < self.needed:
            epoch += 1
            batches += [
                b
                for b in epoch_batches(len(self.split), self.batch_size, seed=0, epoch=epoch)
                if len(b) == self.batch_size
            ]
        return iter(self.source.batches(batches[: self.needed]))

    def _augmented(self):
        for images, labels, _ in self._batches():
            yield self.network.augment(images, self.network.generator), labels

    def data_path(self):
        batches = self._augmented()
        return lambda: len(next(batches)[1])

    def synthetic(self):
        crop = self.network.crop
        x = torch.randn(self.batch_size, 3, crop, crop, device=self.runtime.primary).mul_(60)
        x = x.contiguous(memory_format=self.runtime.memory_format)
        y = torch.randint(0, self.split.num_classes, (self.batch_size,), device=self.runtime.primary)
        self.network.net.train()
        return lambda: self._train(x, y)

    def _train(self, x, y) -> int:
        self.network.step(x, y, 1.0 / len(y))
        return len(y)

    def end_to_end(self):
        batches = self._augmented()
        self.network.net.train()
        return lambda: self._train(*next(batches))

    def ten_crop(self):
        batches = self._batches()
        compute = probabilities(self.network.forward, self.runtime)
        self.network.net.eval()

        def step() -> int:
            images, _, _ = next(batches)
            with torch.no_grad():
                infer_batch(
                    compute,
                    images,
                    self.network.augment.mean_image,
                    crops=10,
                    crop=self.network.crop,
                    runtime=self.runtime,
                )
            return len(images) * 10

        return step


class _StockImages(torch.utils.data.Dataset):
    """The usual ImageFolder-style dataset, reading the same JPEG bytes: PIL decode, then one of the stock
    recipe's transforms (alexctl.benchmarking.stock)."""

    def __init__(self, split, transform):
        self.split, self.transform = split, transform

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        from PIL import Image

        image = Image.open(io.BytesIO(self.split.read(i))).convert("RGB")
        return self.transform(image), int(self.split.labels[i])


class _Stock:
    def __init__(self, split, runtime, batch_size, needed, crop):
        import torchvision

        self.runtime, self.batch_size, self.needed, self.split, self.crop = runtime, batch_size, needed, split, crop
        self.train_transform = stock.train_transform(crop)
        self.ten_crop_transform = stock.ten_crop_transform(crop * stock.RECIPE["resize"] // stock.RECIPE["crop"], crop)
        self.net = torchvision.models.alexnet(num_classes=split.num_classes).to(runtime.primary)
        self.optimizer = torch.optim.SGD(
            self.net.parameters(),
            lr=stock.RECIPE["lr"],
            momentum=stock.RECIPE["momentum"],
            weight_decay=stock.RECIPE["weight_decay"],
        )
        self.num_classes = split.num_classes

    def _batches(self, transform, batch_size: int):
        dataset = _StockImages(self.split, transform)
        sampler = torch.utils.data.RandomSampler(dataset, num_samples=self.needed * batch_size)  # permutations
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.runtime.workers,
            pin_memory=self.runtime.is_cuda,
        )
        for x, y in loader:
            yield x.to(self.runtime.primary, non_blocking=True), y.to(self.runtime.primary, non_blocking=True)

    def _train_step(self, x, y) -> int:
        F.cross_entropy(self.net(x), y).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return len(y)

    def data_path(self):
        batches = self._batches(self.train_transform, self.batch_size)
        return lambda: len(next(batches)[1])

    def synthetic(self):
        x = torch.randn(self.batch_size, 3, self.crop, self.crop, device=self.runtime.primary)
        y = torch.randint(0, self.num_classes, (self.batch_size,), device=self.runtime.primary)
        self.net.train()
        return lambda: self._train_step(x, y)

    def end_to_end(self):
        batches = self._batches(self.train_transform, self.batch_size)
        self.net.train()
        return lambda: self._train_step(*next(batches))

    def ten_crop(self):
        # (n, 10, 3, crop, crop) float32 batches of a tenth as many images, as TenCrop is used: the same crops per
        # forward as a training batch has images, and loader workers' prefetched batches stay a few GB.
        batches = self._batches(self.ten_crop_transform, max(1, self.batch_size // 10))
        self.net.eval()

        def step() -> int:
            crops, _ = next(batches)
            with torch.no_grad():
                torch.softmax(self.net(crops.flatten(0, 1)), dim=1).view(len(crops), 10, -1).mean(1)
            return crops.shape[0] * 10

        return step


def _generated_data(tmp: Path, images: int) -> Path:
    """A small data directory from alexctl's own demo images, when no --data is given."""
    per_class = max(8, -(-images // 6))
    make_demo_dataset(tmp / "images", classes=6, per_class=per_class, seed=0)
    preprocess(Inputs((tmp / "images",)), tmp / "data", "train", PreprocessOptions(), workers=default_workers())
    return tmp / "data"
