"""`alexctl ensemble`: average the softmax predictions of several networks (section 6: five CNNs
took ILSVRC-2012 top-5 error from 18.2% to 16.4%, seven to 15.4%).

Members are run directories (or earlier ensembles). Each member's predictions for the split
and crops asked for are read from its eval/ folder; a training run without them is
evaluated first, with the same options. Every member must have predicted the same
samples in the same order with the same class list. The ensemble writes its own
eval/ files and a run.json, so it can be read, reported and ensembled like a run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from alexctl import __version__, rundir
from alexctl import device as device_ops
from alexctl.console import ProgressFactory, log, no_progress
from alexctl.errors import UserError
from alexctl.evaluate import evaluate, write_metrics
from alexctl.metrics import topk_errors


def ensemble(members: list[Path], out_dir: Path, *, split: str = "val", crops: int = 10, checkpoint: str = "best",
             runtime: device_ops.Runtime | None = None, batch_size: int = 64,
             progress: ProgressFactory = no_progress) -> dict:
    started = time.monotonic()
    members = [Path(m) for m in members]
    out = rundir.RunDir(Path(out_dir))
    if len(members) < 2:
        raise UserError("an ensemble needs at least two members (the paper averages 5 and 7).")
    if any(m.resolve() == out.root.resolve() for m in members):
        raise UserError(f"--out {out.root} is also a member; write the ensemble elsewhere.")
    if len({m.resolve() for m in members}) != len(members):
        raise UserError("a run directory is listed twice among the members.")
    tag = "" if checkpoint == "best" else ("last" if checkpoint == "last" else None)
    if tag is None:
        raise UserError(f"--checkpoint {checkpoint!r}: an ensemble takes best or last from each member.")
    with rundir.DirectoryLock(out.lock, "ensemble"):
        predictions = [_member_predictions(m, split, crops, checkpoint, tag, runtime, batch_size, progress)
                       for m in members]
        first = predictions[0]
        for member, p in zip(members[1:], predictions[1:]):
            _check_same_samples(members[0], first, member, p)
        total = np.zeros(first["probs"].shape, np.float64)
        for p in predictions:
            total += p["probs"]
        probs = (total / len(predictions)).astype(np.float32)
        member_errors = [topk_errors(p["probs"], p["labels"]) for p in predictions]
        path = out.predictions(split, crops, tag)
        rundir.save_npz(path, keys=first["keys"], labels=first["labels"], probs=probs, classes=first["classes"],
                        names=first["names"])
        extra = {
            "members": len(members),
            "member_dirs": [str(m.resolve()) for m in members],
            "member_top1_errors": [e[1] for e in member_errors],
            "member_top5_errors": [e[5] for e in member_errors],
            "predictions": str(path),
        }
        summary = write_metrics(out, split, crops, tag, first["classes"].tolist(), first["names"].tolist(),
                                first["labels"], probs, extra)
        summary["seconds"] = round(time.monotonic() - started, 3)
        rundir.write_json(out.manifest, {
            "kind": "ensemble", "alexctl_version": __version__, "created": rundir._now(), "split": split,
            "crops": crops, "checkpoint": checkpoint, "top1_error": summary["top1_error"],
            "top5_error": summary["top5_error"], **{k: extra[k] for k in ("members", "member_dirs")},
        })
        return summary


def _member_predictions(member: Path, split, crops, checkpoint, tag, runtime, batch_size, progress) -> dict:
    run = rundir.RunDir(member)
    path = run.predictions(split, crops, tag)
    if not path.exists():
        kind = rundir.read_json(run.manifest, "run manifest").get("kind") if run.manifest.exists() else None
        if kind == "ensemble" or not (run.best_checkpoint.exists() or run.last_checkpoint.exists()):
            raise UserError(f"member {member} has no predictions {path.name} and no checkpoint to make them from.")
        if runtime is None:
            runtime = device_ops.resolve()
        log(f"{member}: no {path.name} yet, evaluating it ({crops} crops, {checkpoint} checkpoint)")
        evaluate(member, split=split, crops=crops, checkpoint=checkpoint, runtime=runtime, batch_size=batch_size,
                 progress=progress)
    z = rundir.load_npz(path, "predictions")
    missing = {"keys", "labels", "probs", "classes"} - set(z)
    if missing:
        raise UserError(f"member {member}: {path} lacks {', '.join(sorted(missing))}; re-run `alexctl eval` on it.")
    z.setdefault("names", z["classes"])
    return z


def _check_same_samples(first: Path, a: dict, member: Path, b: dict) -> None:
    if not np.array_equal(a["classes"], b["classes"]):
        raise UserError(f"member {member} predicts another class list than {first} "
                        f"({len(b['classes'])} vs {len(a['classes'])} classes, or another order).")
    if len(a["keys"]) != len(b["keys"]) or not np.array_equal(a["keys"], b["keys"]):
        raise UserError(f"member {member} predicted other samples than {first} "
                        f"({len(b['keys'])} vs {len(a['keys'])}, or another order): evaluate both on the same split.")
    if not np.array_equal(a["labels"], b["labels"]):
        raise UserError(f"member {member} has other labels for the same samples than {first}.")
