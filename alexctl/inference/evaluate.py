"""`alexctl eval`: the paper's test protocol on a trained run (sections 4.1, 6).

    checkpoint + split -> ten 224x224 patches per image (corners, center, reflections)
                       -> softmax averaged over the ten -> top-1 / top-5 error

Writes into the run's eval/ folder (names in docs/run-directory.md, rundir.Evaluation): the
metrics (`<split>-<crops>crop[-<checkpoint>][@<data>].json`) and the per-image predictions that
`alexctl ensemble` averages (`.npz`: keys, labels, probs, classes). Evaluating the same
checkpoint on the same data again does nothing unless forced.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from alexctl import __version__, checkpoint, rundir
from alexctl.console import ProgressFactory, no_progress
from alexctl.data.loader import Split, load_split
from alexctl.data.resident import open_source
from alexctl.device import Runtime, configure, forward_of, reading
from alexctl.errors import UserError
from alexctl.inference.core import predict
from alexctl.metrics import cross_entropy, most_confused, per_class_accuracy, topk_errors
from alexctl.nets.build import model_from_checkpoint
from alexctl.rundir import Evaluation
from alexctl.stop import StopSignals


def evaluate(
    run_dir: Path,
    *,
    data_dir: Path | None = None,
    split: str = "val",
    crops: int = 10,
    checkpoint_name: str = "best",
    runtime: Runtime,
    batch_size: int = 64,
    top5: int = 0,
    force: bool = False,
    progress: ProgressFactory = no_progress,
) -> dict:
    """Evaluate one checkpoint of `run_dir` on `split`; returns the `--json` summary."""
    started = time.monotonic()
    run = rundir.RunDir(Path(run_dir))
    path, tag = checkpoint.checkpoint_path(run, checkpoint_name)
    ckpt = checkpoint.load_weights(path)
    own = Path(ckpt["data"]["dir"])
    data_root = Path(data_dir) if data_dir is not None else own
    data = load_split(data_root, split)
    check_classes(ckpt, data, path)
    other = data_root.resolve() != own.resolve()
    ev = Evaluation(split, crops, tag, rundir.data_name(data_root, data.identity) if other else "")
    identity = {"checkpoint_sha256": rundir.file_sha256(path), "data_identity": data.identity}
    done = finished(run, ev, identity)
    if done is not None and not force:
        if top5:  # the predictions are there: the top-5 table needs no network
            probs = rundir.load_npz(run.predictions(ev), "predictions", keys=("probs",))["probs"]
            done["top5_file"] = str(write_top5(run, ev, data, probs, top5))
        return {**done, "already_done": True, "seconds": round(time.monotonic() - started, 3)}
    rundir.check_writable(run.eval_dir, "the run's eval folder")
    with (
        rundir.DirectoryLock(run.eval_lock, "eval") as lock,
        rundir.failures_recorded(run.eval_failed, "eval", lock=lock),
        StopSignals() as stop,
        open_source(data, **reading(runtime)) as source,
    ):
        rundir.clear_failure(run.eval_failed)
        configure(runtime)
        net = model_from_checkpoint(ckpt, runtime)
        mean_image = ckpt["mean_image"].to(runtime.primary)
        with progress(f"eval {ev.stem}", len(data)) as bar:
            tick = time.monotonic()
            probs = predict(
                forward_of(net, runtime),
                source,
                np.arange(len(data)),
                mean_image,
                crops=crops,
                crop=net.input_size,
                runtime=runtime,
                batch_size=batch_size,
                progress=bar,
                check=lambda: stop.check(f"while evaluating {run.root}; nothing was written"),
            )
            seconds = time.monotonic() - tick
        summary = write_predictions(
            run,
            ev,
            data,
            probs,
            extra={
                "checkpoint": str(path),
                "checkpoint_epoch": ckpt.get("epoch"),
                "data_dir": str(data_root.resolve()),
                **identity,
                "crops_per_second": round(len(data) * crops / max(seconds, 1e-9), 1),
            },
        )
        run.top5(ev).unlink(missing_ok=True)  # never leave the top-5 table of an earlier evaluation beside these
        if top5:
            summary["top5_file"] = str(write_top5(run, ev, data, probs, top5))
    return {**summary, "already_done": False, "seconds": round(time.monotonic() - started, 3)}


def check_classes(ckpt: dict, data: Split, path: Path) -> None:
    if ckpt["num_classes"] != data.num_classes:
        raise UserError(
            f"{path} predicts {ckpt['num_classes']} classes but {data.root} has {data.num_classes}; "
            f"preprocess it with --classes {path.parent.parent} (the run's class list)."
        )
    trained = checkpoint.classes_of(ckpt)
    if trained and trained != list(data.classes.wnids):
        raise UserError(
            f"{data.root} orders its classes differently from the data {path} was trained on; "
            f"preprocess it with --classes {path.parent.parent} (the run's class list)."
        )


def finished(run: rundir.RunDir, ev: Evaluation, identity: dict) -> dict | None:
    """The summary of an earlier evaluation of the same checkpoint on the same data, if its files are there."""
    metrics, predictions = run.eval_metrics(ev), run.predictions(ev)
    if not (metrics.exists() and predictions.exists()):
        return None
    try:
        saved = rundir.read_json(metrics, "eval metrics")
    except UserError:
        return None
    return saved if all(saved.get(k) == v for k, v in identity.items()) else None


def write_predictions(run: rundir.RunDir, ev: Evaluation, data: Split, probs: np.ndarray, extra: dict) -> dict:
    """The predictions file, then the metrics file (last: it marks the evaluation complete)."""
    predictions = run.predictions(ev)
    rundir.save_npz(
        predictions,
        keys=data.keys.astype(str),
        labels=data.labels,
        probs=probs.astype(np.float32),
        classes=np.array(data.classes.wnids, dtype=str),
        names=np.array(data.classes.names, dtype=str),
    )
    return write_metrics(
        run, ev, data.classes.wnids, data.classes.names, data.labels, probs, {**extra, "predictions": str(predictions)}
    )


def write_metrics(
    run: rundir.RunDir, ev: Evaluation, wnids, names, labels: np.ndarray, probs: np.ndarray, extra: dict
) -> dict:
    errors = topk_errors(probs, labels)
    per_class = per_class_accuracy(probs, labels, len(wnids))
    confused = [
        {
            **c,
            "true_class": wnids[c["true"]],
            "predicted_class": wnids[c["predicted"]],
            "true_name": names[c["true"]],
            "predicted_name": names[c["predicted"]],
        }
        for c in most_confused(probs, labels, 10)
    ]
    summary = {
        "kind": "eval",
        "alexctl_version": __version__,
        "run_dir": str(run.root),
        "split": ev.split,
        "crops": ev.crops,
        "name": ev.stem,
        "num_images": int(len(labels)),
        "num_classes": len(wnids),
        "top1_error": errors[1],
        "top5_error": errors[5],
        "chance_top1_error": 1 - 1 / len(wnids),
        "chance_top5_error": max(0.0, 1 - 5 / len(wnids)),
        "loss": cross_entropy(probs, labels) if len(labels) else None,
        **extra,
        "per_class_accuracy": [{"class": w, "name": n, "accuracy": a} for w, n, a in zip(wnids, names, per_class)],
        "most_confused": confused,
    }
    rundir.write_json(run.eval_metrics(ev), summary)
    return summary


def write_top5(run: rundir.RunDir, ev: Evaluation, data: Split, probs: np.ndarray, n: int) -> Path:
    """The paper's Figure 4 (left) in text: for the first n images, the true class and the five most probable."""
    names = data.classes.names
    lines = ["key\ttrue\t" + "\t".join(f"top{i}\tp{i}" for i in range(1, 6))]
    for i in range(min(n, len(probs))):
        top = np.argsort(-probs[i], kind="stable")[:5]
        lines.append(
            f"{data.keys[i]}\t{names[data.labels[i]]}\t" + "\t".join(f"{names[c]}\t{probs[i, c]:.4f}" for c in top)
        )
    path = run.top5(ev)
    rundir.atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
