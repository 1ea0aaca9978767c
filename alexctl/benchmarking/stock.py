"""The stock torchvision recipe for AlexNet: the baseline the GPU check sets the paper's recipe against.

torchvision's references/classification (train.py, presets.py) as its documentation trains alexnet
(`torchrun --nproc_per_node=8 train.py --model alexnet --lr 1e-2`, 32 images per GPU):

    train  ImageFolder-style files, PIL decode in DataLoader workers, RandomResizedCrop(224) + horizontal
           flip + Normalize(ImageNet mean, std); cross-entropy; SGD lr 0.01, momentum 0.9, weight decay
           1e-4; the learning rate divided by 10 every 30 epochs; 90 epochs; fp32, eager; the held-out
           split evaluated after every epoch
    eval   Resize(256) + CenterCrop(224); here also the paper's ten crops (Resize(256) + TenCrop(224))

On one GPU the batch is the eight-GPU run's 256, with its learning rate. The images are the original
files, split exactly as a preprocessed data directory split them (`partition`): each split's shard
sidecars record the source path of every image it holds, so both recipes train and are judged on the
same images. `alexctl stock-recipe train|eval DATA_DIR RUN_DIR` runs it; the GPU check calls it in its stock step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alexctl import rundir
from alexctl.console import log
from alexctl.data.labels import ClassList
from alexctl.errors import UserError
from alexctl.metrics import topk_errors

RECIPE = {  # torchvision references/classification, alexnet; units as torch.optim.SGD and StepLR take them
    "epochs": 90,
    "batch_size": 256,  # 8 GPUs x 32
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "lr_step_size": 30,  # epochs
    "lr_gamma": 0.1,
    "resize": 256,  # evaluation: shorter side, pixels
    "crop": 224,  # pixels
}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, as torchvision's presets
CHECKPOINT_EPOCHS = 10  # last.pt for a resume this often (the reference saves every epoch; 0.5 GB each here)


def train_transform(crop: int = RECIPE["crop"]):
    """ClassificationPresetTrain: PIL image -> (3, crop, crop) float32, normalised."""
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomResizedCrop(crop, antialias=True), v2.RandomHorizontalFlip(), *_to_tensor()])


def eval_transform(resize: int = RECIPE["resize"], crop: int = RECIPE["crop"]):
    """ClassificationPresetEval: PIL image -> (3, crop, crop) float32 of the center, normalised."""
    from torchvision.transforms import v2

    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(crop), *_to_tensor()])


def ten_crop_transform(resize: int = RECIPE["resize"], crop: int = RECIPE["crop"]):
    """PIL image -> (10, 3, crop, crop) float32: the four corners, the center and their reflections."""
    from torchvision.transforms import v2

    resize_then_crop = v2.Compose([v2.Resize(resize, antialias=True), v2.TenCrop(crop)])
    to_tensor = v2.Compose(_to_tensor())
    return lambda image: torch.stack([to_tensor(c) for c in resize_then_crop(image)])


def _to_tensor() -> list:
    from torchvision.transforms import v2

    return [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]


class ImageFiles(torch.utils.data.Dataset):
    """torchvision's ImageFolder, given its list: (path, label) pairs, PIL decode, a transform."""

    def __init__(self, paths: list[Path], labels: np.ndarray, transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB")), int(self.labels[i])


# ---------------------------------------------------------------- the partition


@dataclass
class Partition:
    """The original image files of a data directory's train and val splits, with alexctl's labels."""

    train: list[Path]
    train_labels: np.ndarray  # (n,) int64, classes.json's indices
    val: list[Path]
    val_labels: np.ndarray
    classes: list[str]  # wnids, in index order


def partition(data_dir: Path) -> Partition:
    """The files each split of `data_dir` was made from, read from the shard sidecars; the SOURCE recorded in
    the train manifest must be an image folder (the GPU check extracts its Imagenette part into one)."""
    data = rundir.DataDir(Path(data_dir))
    splits = {}
    for name in ("train", "val"):
        split_dir = data.split(name)
        manifest = rundir.read_json(split_dir.manifest, f"{name} manifest")
        roots = [Path(s) for s in manifest["source"]]
        if not all(r.is_dir() for r in roots):
            raise UserError(
                f"the stock recipe reads image files, but {data.root}'s {name} split was made from "
                f"{', '.join(map(str, roots))}, not an image folder; extract it and preprocess that."
            )
        sources, labels = [], []
        for i in range(len(manifest["shards"])):
            sidecar = rundir.load_npz(split_dir.shard_sidecar(i), "shard sidecar", keys=("sources", "labels"))
            sources += [str(s) for s in sidecar["sources"]]
            labels.append(sidecar["labels"])
        splits[name] = ([_locate(s, roots) for s in sources], np.concatenate(labels).astype(np.int64))
    classes = ClassList.from_json(rundir.read_json(data.classes, "class list"))
    return Partition(*splits["train"], *splits["val"], classes=list(classes.wnids))


def _locate(relpath: str, roots: list[Path]) -> Path:
    for root in roots:
        if (root / relpath).is_file():
            return root / relpath
    raise UserError(
        f"{relpath}, recorded in a shard sidecar, is not in {' or '.join(map(str, roots))}: the data "
        "directory was made from other files."
    )


# ---------------------------------------------------------------- train and evaluate


def train(
    data_dir: Path,
    run_dir: Path,
    *,
    epochs: int = RECIPE["epochs"],
    batch_size: int = RECIPE["batch_size"],
    workers: int = 16,
    crop: int = RECIPE["crop"],
    resize: int = RECIPE["resize"],
    seed: int = 0,
) -> dict:
    """Train torchvision's alexnet on `data_dir`'s train files with the stock recipe, evaluating the val files'
    center crop after every epoch; resumes from run_dir/last.pt; final.pt and train.json last."""
    import torchvision  # ~1 s to import; the rest of alexctl needs only torchvision.io and .transforms

    run_dir = Path(run_dir)
    settings = {
        "data_dir": str(Path(data_dir).resolve()),
        "epochs": epochs,
        "batch_size": batch_size,
        "crop": crop,
        "resize": resize,
        "seed": seed,
        **{k: RECIPE[k] for k in ("lr", "momentum", "weight_decay", "lr_step_size", "lr_gamma")},
    }
    summary_path, final, last = run_dir / "train.json", run_dir / "final.pt", run_dir / "last.pt"
    if summary_path.exists():
        done = rundir.read_json(summary_path, "stock summary")
        if done.get("settings") == settings:
            return {**done, "already_done": True}
    files = partition(data_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True  # as the reference does outside its deterministic mode
    torch.manual_seed(seed)
    net = torchvision.models.alexnet(num_classes=len(files.classes)).to(device)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=RECIPE["lr"], momentum=RECIPE["momentum"], weight_decay=RECIPE["weight_decay"]
    )
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, RECIPE["lr_step_size"], RECIPE["lr_gamma"])
    epoch, rows = _resume(last, settings, net, optimizer, schedule) if last.exists() else (0, [])
    cuda = device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        ImageFiles(files.train, files.train_labels, train_transform(crop)),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=cuda,
    )
    val = ImageFiles(files.val, files.val_labels, eval_transform(resize, crop))
    while epoch < epochs:
        epoch += 1
        started = time.monotonic()
        train_loss = _train_epoch(net, loader, optimizer, device)
        lr = schedule.get_last_lr()[0]
        schedule.step()
        errors = _errors(net, val, batch_size, workers, device, crops=1)
        rows.append(
            {
                "epoch": epoch,
                "lr": lr,
                "train_loss": train_loss,
                "val_top1_error": errors[1],
                "val_top5_error": errors[5],
                "seconds": round(time.monotonic() - started, 3),
            }
        )
        log(
            f"stock: epoch {epoch}/{epochs}: train loss {rows[-1]['train_loss']:.4f}, val top-1 error "
            f"{errors[1]:.2%}, {rows[-1]['seconds']:.1f} s"
        )
        if epoch % CHECKPOINT_EPOCHS == 0 and epoch < epochs:
            rundir.save_torch(
                last,
                {
                    "settings": settings,
                    "epoch": epoch,
                    "rows": rows,
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                },
            )
    rundir.save_torch(final, {"settings": settings, "epoch": epoch, "model": net.state_dict()})
    summary = {
        "run_dir": str(run_dir),
        "settings": settings,
        "epochs_completed": epoch,
        "train_images": len(files.train),
        "val_images": len(files.val),
        "classes": len(files.classes),
        "last_val_top1_error": rows[-1]["val_top1_error"],
        "last_val_top5_error": rows[-1]["val_top5_error"],
        "rows": rows,
    }
    rundir.write_json(summary_path, summary)  # last: the run is complete
    last.unlink(missing_ok=True)
    return {**summary, "already_done": False}


def _resume(last: Path, settings: dict, net, optimizer, schedule) -> tuple[int, list[dict]]:
    """The state of an interrupted stock run from its last.pt: (epochs done, their rows)."""
    saved = rundir.load_torch(last, "stock checkpoint")
    if saved["settings"] != settings:
        raise UserError(f"{last.parent} holds a stock run with other settings; remove it or use another folder.")
    net.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    log(f"stock: resuming {last.parent} after epoch {saved['epoch']}")
    return saved["epoch"], saved["rows"]


def _train_epoch(net, loader, optimizer, device: torch.device) -> float:
    """One epoch of the recipe (cross-entropy, SGD); the mean training loss."""
    net.train()
    loss_sum, seen = torch.zeros((), device=device), 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        seen += len(y)
    return float(loss_sum) / seen


def evaluate(
    data_dir: Path,
    run_dir: Path,
    *,
    crops: int,
    batch_size: int = RECIPE["batch_size"],
    workers: int = 16,
    crop: int = RECIPE["crop"],
    resize: int = RECIPE["resize"],
) -> dict:
    """Top-1 and top-5 error of run_dir/final.pt on the val files: the center crop (crops=1) or ten crops,
    the softmax averaged over them."""
    import torchvision

    if crops not in (1, 10):
        raise UserError(f"--crops {crops} is not 1 or 10.")
    final = Path(run_dir) / "final.pt"
    if not final.exists():
        raise UserError(f"{run_dir} has no final.pt: train the stock recipe there first.")
    saved = rundir.load_torch(final, "stock weights")
    files = partition(data_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = torchvision.models.alexnet(num_classes=len(files.classes))
    net.load_state_dict(saved["model"])
    net.to(device)
    transform = eval_transform(resize, crop) if crops == 1 else ten_crop_transform(resize, crop)
    started = time.monotonic()
    errors = _errors(net, ImageFiles(files.val, files.val_labels, transform), batch_size, workers, device, crops=crops)
    seconds = time.monotonic() - started
    return {
        "run_dir": str(run_dir),
        "crops": crops,
        "num_images": len(files.val),
        "top1_error": errors[1],
        "top5_error": errors[5],
        "epoch": saved["epoch"],
        "crops_per_second": round(len(files.val) * crops / max(seconds, 1e-9), 1),
    }


def _errors(
    net, dataset: ImageFiles, batch_size: int, workers: int, device: torch.device, *, crops: int
) -> dict[int, float]:
    """Top-1 and top-5 error over `dataset` (items (3, c, c), or (10, 3, c, c) for ten crops)."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=max(1, batch_size // crops), num_workers=workers, pin_memory=device.type == "cuda"
    )
    net.eval()
    probs = []
    with torch.no_grad():
        for x, _ in loader:
            x = x.to(device, non_blocking=True)
            p = torch.softmax(net(x.flatten(0, 1) if crops > 1 else x), dim=1)
            probs.append(p.view(len(x), crops, -1).mean(1).cpu().numpy())
    net.train()
    return topk_errors(np.concatenate(probs), dataset.labels)
