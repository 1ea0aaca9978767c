"""The checkpoint files: written by `alexctl train`, read by train (resume), eval, ensemble,
predict, export, report and bench. One home for their format (docs/run-directory.md).

A checkpoint is a dict of tensors and plain values, loaded with `weights_only=True` (no
pickled code runs when a file is read): the weights in the canonical one-device form
(loadable by either device layout), the model's configuration, the class list, the
training data's mean image, and, in last.pt, everything a resume needs: the optimizer, the
schedule, the progress (best epoch, the running sums of the epoch in progress) and the
metrics rows so far. `checkpoints/last.json` beside it says cheaply where it stands, for
`alexctl status`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from alexctl import __version__, rundir
from alexctl.config import ModelConfig, from_dict, to_dict
from alexctl.errors import UserError

FORMAT = 2  # 1: alexctl 0.1.0 (no metrics rows in last.pt); read still
READABLE = (1, 2)


def weights(
    net: torch.nn.Module,
    model_config: ModelConfig,
    *,
    classes: list[str],
    class_names: list[str],
    mean_image: torch.Tensor,
    data: dict,
    epoch: int,
    val: dict | None,
) -> dict:
    """What eval, ensemble, predict and report need: the weights in canonical form and how to use them."""
    return {
        "format": FORMAT,
        "kind": "weights",
        "alexctl_version": __version__,
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "model_config": to_dict(model_config),
        "num_classes": len(classes),
        "epoch": epoch,
        "val_top1_error": val["top1"] if val else None,
        "val_top5_error": val["top5"] if val else None,
        "mean_image": mean_image.detach().cpu(),  # (3, S, S) float32, 0..255 units
        "data": {**data, "classes": list(classes), "class_names": list(class_names)},
    }


def save_epoch(run: rundir.RunDir, record: dict, epoch: int, *, keep: int) -> None:
    """epoch-NNNN.pt, of which the `keep` newest are kept (keep 0: none is written)."""
    if keep:
        rundir.save_torch(run.epoch_checkpoint(epoch), record)
    epochs = sorted(run.checkpoints.glob("epoch-*.pt"))
    for old in epochs[: max(0, len(epochs) - keep)]:
        old.unlink(missing_ok=True)


def save_best(run: rundir.RunDir, record: dict) -> None:
    """best.pt: the weights of the epoch with the lowest val top-1 error so far."""
    rundir.save_torch(run.best_checkpoint, record)


def save_resume(
    run: rundir.RunDir, record: dict, *, optimizer: dict, schedule: dict, progress: dict, devices: int
) -> None:
    """last.pt: a weights record plus what a resume needs; then last.json, its small summary for status."""
    rundir.save_torch(
        run.last_checkpoint,
        {
            **record,
            "kind": "resume",
            "optimizer": optimizer,
            "schedule": schedule,
            "devices": devices,
            "progress": progress,
        },
    )
    current = progress["current"]
    rundir.write_json(run.last_summary, {"epoch": progress["epoch"], "step": current["step"], "time": rundir.now()})


def load_weights(path: Path) -> dict:
    """A checkpoint written by train (best.pt, last.pt or epoch-N.pt), checked for its format."""
    ckpt = rundir.load_torch(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") not in READABLE or "model" not in ckpt:
        raise UserError(f"{path} is not an alexctl checkpoint.")
    for key in ("model_config", "num_classes", "mean_image", "data"):
        if key not in ckpt:
            raise UserError(f"{path} is an incomplete alexctl checkpoint (no {key!r}).")
    return ckpt


def load_resume(path: Path) -> dict:
    """last.pt, with its progress in the current form (format 1 kept it in separate keys)."""
    ckpt = load_weights(path)
    if ckpt.get("kind") != "resume" or "optimizer" not in ckpt:
        raise UserError(f"{path} is not an alexctl resume checkpoint (no optimizer state).")
    if "progress" not in ckpt:  # format 1
        best = ckpt["best"]
        ckpt["progress"] = {
            "epoch": ckpt["epoch"],
            "best_top1": best["top1"],
            "best_top5": best["top5"],
            "best_epoch": best["epoch"],
            "current": ckpt["current"],
            "rows": None,
            "metrics_rows": ckpt["metrics_rows"],
        }
    return ckpt


def model_config_of(ckpt: dict) -> ModelConfig:
    return from_dict(ModelConfig, ckpt["model_config"])


def classes_of(ckpt: dict) -> list[str]:
    return list(ckpt["data"].get("classes") or [])


def checkpoint_path(run: rundir.RunDir, name: str) -> tuple[Path, str]:
    """(path, tag) for `best`, `last` or a checkpoint file; the tag names the eval files ('' for best)."""
    if name in ("best", "last"):
        path = run.best_checkpoint if name == "best" else run.last_checkpoint
        if not path.exists():
            raise UserError(
                f"{run.root} has no {name} checkpoint ({path}): train it first (`alexctl train {run.root}`)."
            )
        return path, "" if name == "best" else "last"
    path = Path(name)
    if not path.is_file():
        raise UserError(f"--checkpoint {name} is neither best, last nor an existing file.")
    return path, path.stem
