"""`alexctl eval`: the paper's test protocol on a trained run (section 4.1, 6).

    checkpoint + split -> ten 224x224 patches per image (corners, center, reflections)
                       -> softmax averaged over the ten -> top-1 / top-5 error

Writes into the run directory (names in docs/run-directory.md): the metrics
(`eval/<split>-<crops>crop[-<tag>].json`) and the per-image predictions that `alexctl
ensemble` averages (`...npz`: keys, labels, probs, classes).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from alexctl import __version__, rundir
from alexctl import device as device_ops
from alexctl.console import ProgressFactory, no_progress
from alexctl.data.loader import Split, load_split
from alexctl.errors import UserError
from alexctl.metrics import cross_entropy, most_confused, per_class_accuracy, topk_errors
from alexctl.predict import predict
from alexctl.checkpoint import load_weights, model_from_checkpoint


def evaluate(run_dir: Path, *, data_dir: Path | None = None, split: str = "val", crops: int = 10,
             checkpoint: str = "best", runtime: device_ops.Runtime, batch_size: int = 64, top5: int = 0,
             progress: ProgressFactory = no_progress) -> dict:
    """Evaluate one checkpoint of `run_dir` on `split`; returns the `--json` summary."""
    started = time.monotonic()
    run = rundir.RunDir(Path(run_dir))
    path, tag = checkpoint_path(run, checkpoint)
    ckpt = load_weights(path)
    data_dir = Path(data_dir) if data_dir is not None else Path(ckpt["data"]["dir"])
    data = load_split(data_dir, split)
    _check_classes(ckpt, data, path)
    device_ops.configure(runtime)
    devices = [str(d) for d in runtime.devices]
    net = model_from_checkpoint(ckpt, devices if len(devices) == 2 else None)
    if len(devices) == 1:
        net.to(runtime.primary)
    if runtime.channels_last:
        net.to(memory_format=torch.channels_last)
    forward = torch.compile(net) if runtime.compile else net
    mean_image = ckpt["mean_image"].to(runtime.primary)
    with progress(f"eval {split}, {crops} crop{'s' if crops > 1 else ''}", len(data)) as bar:
        tick = time.monotonic()
        probs = predict(forward, data, mean_image, crops=crops, crop=net.input_size, runtime=runtime,
                        batch_size=batch_size, progress=bar)
        seconds = time.monotonic() - tick
    summary = write_predictions(run, split, crops, tag, data, probs, extra={
        "checkpoint": str(path), "checkpoint_epoch": ckpt.get("epoch"), "data_dir": str(data_dir.resolve()),
        "crops_per_second": round(len(data) * crops / max(seconds, 1e-9), 1),
    })
    if top5:
        summary["top5_file"] = str(write_top5(run, split, crops, tag, data, probs, top5))
    summary["seconds"] = round(time.monotonic() - started, 3)
    return summary


def checkpoint_path(run: rundir.RunDir, checkpoint: str) -> tuple[Path, str]:
    """(path, tag) for `best`, `last` or a file; the tag names the eval files ('' for best)."""
    if checkpoint in ("best", "last"):
        path = run.best_checkpoint if checkpoint == "best" else run.last_checkpoint
        if not path.exists():
            raise UserError(f"{run.root} has no {checkpoint} checkpoint ({path}): train it first "
                            f"(`alexctl train {run.root} --data DATA_DIR`).")
        return path, "" if checkpoint == "best" else "last"
    path = Path(checkpoint)
    if not path.is_file():
        raise UserError(f"--checkpoint {checkpoint} is neither best, last nor an existing file.")
    return path, path.stem


def _check_classes(ckpt: dict, data: Split, path: Path) -> None:
    if ckpt["num_classes"] != data.num_classes:
        raise UserError(f"{path} predicts {ckpt['num_classes']} classes but {data.root} has {data.num_classes}; "
                        "evaluate on data preprocessed with the training run's class list.")
    trained = ckpt["data"].get("classes")
    if trained is not None and list(trained) != list(data.classes.wnids):
        raise UserError(f"{data.root} orders its classes differently from the data {path} was trained on; "
                        "preprocess it with --classes set to the training data's class list.")


def write_predictions(run: rundir.RunDir, split: str, crops: int, tag: str, data: Split, probs: np.ndarray,
                      extra: dict) -> dict:
    """The predictions file and the metrics file of one evaluation (also used by ensemble)."""
    predictions = run.predictions(split, crops, tag)
    rundir.save_npz(predictions, keys=data.keys.astype(str), labels=data.labels, probs=probs.astype(np.float32),
                    classes=np.array(data.classes.wnids, dtype=str), names=np.array(data.classes.names, dtype=str))
    return write_metrics(run, split, crops, tag, data.classes.wnids, data.classes.names, data.labels, probs,
                         {**extra, "predictions": str(predictions)})


def write_metrics(run: rundir.RunDir, split: str, crops: int, tag: str, wnids, names, labels: np.ndarray,
                  probs: np.ndarray, extra: dict) -> dict:
    errors = topk_errors(probs, labels)
    per_class = per_class_accuracy(probs, labels, len(wnids))
    confused = [{**c, "true_class": wnids[c["true"]], "predicted_class": wnids[c["predicted"]],
                 "true_name": names[c["true"]], "predicted_name": names[c["predicted"]]}
                for c in most_confused(probs, labels, 10)]
    summary = {
        "kind": "eval",
        "alexctl_version": __version__,
        "split": split,
        "crops": crops,
        "num_images": int(len(labels)),
        "top1_error": errors[1],
        "top5_error": errors[5],
        "loss": cross_entropy(probs, labels) if len(labels) else None,
        **extra,
        "per_class_accuracy": [{"class": w, "name": n, "accuracy": a} for w, n, a in zip(wnids, names, per_class)],
        "most_confused": confused,
    }
    rundir.write_json(run.eval_metrics(split, crops, tag), summary)
    return summary


def write_top5(run: rundir.RunDir, split: str, crops: int, tag: str, data: Split, probs: np.ndarray, n: int) -> Path:
    """The paper's Figure 4 (left) in text: for the first n images, the true class and the five most probable."""
    names = data.classes.names
    lines = ["key\ttrue\t" + "\t".join(f"top{i}\tp{i}" for i in range(1, 6))]
    for i in range(min(n, len(probs))):
        top = np.argsort(-probs[i], kind="stable")[:5]
        lines.append(f"{data.keys[i]}\t{names[data.labels[i]]}\t"
                     + "\t".join(f"{names[c]}\t{probs[i, c]:.4f}" for c in top))
    path = run.top5(split, crops, tag)
    rundir.atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
