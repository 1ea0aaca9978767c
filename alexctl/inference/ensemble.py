"""`alexctl ensemble`: average the softmax predictions of several networks (section 6: five CNNs
took ILSVRC-2012 top-5 error from 18.2% to 16.4%, seven to 15.4%).

Members are run directories or earlier ensembles. An ensemble given as a member stands for its own
members: the average is always over the leaf runs, each weighing the same (an ensemble of an
ensemble of A and B with C is (A + B + C) / 3, not ((A + B) / 2 + C) / 2), and a run reached twice
is refused. Each run's predictions for the split and crops asked for are read from its eval/
folder; a run without them is evaluated first, with the same options. Every member must have
predicted the same samples in the same order with the same class list. The ensemble writes its own
eval/ files and a run.json, so it can be read, reported and ensembled like a run; asked again for
the same members and predictions, it does nothing unless forced.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from alexctl import __version__, checkpoint, rundir
from alexctl.config import InferenceOptions
from alexctl.console import ProgressFactory, log, no_progress
from alexctl.device import Runtime, resolve
from alexctl.errors import UserError
from alexctl.inference.evaluate import evaluate, write_metrics
from alexctl.metrics import topk_errors
from alexctl.rundir import Evaluation


def ensemble(
    members: list[Path],
    out_dir: Path,
    *,
    data_dir: Path | None = None,
    split: str = "val",
    crops: int = 10,
    checkpoint_name: str = "best",
    runtime: Runtime | None = None,
    batch_size: int = 64,
    force: bool = False,
    progress: ProgressFactory = no_progress,
) -> dict:
    started = time.monotonic()
    out = rundir.RunDir(Path(out_dir))
    checkpoint_name = InferenceOptions(checkpoint=checkpoint_name).member_checkpoint()
    runs = leaf_runs([Path(m) for m in members], out.root)
    tag = "" if checkpoint_name == "best" else "last"
    evaluations = [member_evaluation(run, split, crops, tag, data_dir) for run in runs]
    data_tag = rundir.data_name(data_dir, _identity(data_dir, split)) if data_dir is not None else ""
    ev = Evaluation(split, crops, tag, data_tag)
    rundir.check_writable(out.eval_dir, "--out")
    with (
        rundir.DirectoryLock(out.eval_lock, "ensemble") as lock,
        rundir.failures_recorded(out.eval_failed, "ensemble", lock=lock),
    ):
        for run, member_ev in zip(runs, evaluations):
            why = _not_current(run, member_ev, checkpoint_name)
            if why:
                log(f"{run.root}: {why}, evaluating it ({crops} crops, {checkpoint_name} checkpoint)")
                evaluate(
                    run.root,
                    data_dir=data_dir,
                    split=split,
                    crops=crops,
                    checkpoint_name=checkpoint_name,
                    runtime=runtime or resolve(),
                    batch_size=batch_size,
                    progress=progress,
                )
        paths = [run.predictions(e) for run, e in zip(runs, evaluations)]
        identity = {
            "member_dirs": [str(r.root.resolve()) for r in runs],
            "member_predictions_sha256": [rundir.file_sha256(p) for p in paths],
        }
        done = _finished(out, ev, identity)
        if done is not None and not force:
            return {**done, "already_done": True, "seconds": round(time.monotonic() - started, 3)}
        rundir.clear_failure(out.eval_failed)
        predictions = [_read_predictions(run.root, p) for run, p in zip(runs, paths)]
        for run, p in zip(runs[1:], predictions[1:]):
            _check_same_samples(runs[0].root, predictions[0], run.root, p)
        summary = _write(out, ev, predictions, identity)
    return {**summary, "already_done": False, "seconds": round(time.monotonic() - started, 3)}


def leaf_runs(members: list[Path], out: Path) -> list[rundir.RunDir]:
    """The training runs the members stand for: a run itself, an ensemble its own (leaf) members."""
    leaves: list[rundir.RunDir] = []

    def add(path: Path, via: str) -> None:
        run = rundir.RunDir(path)
        if not path.is_dir():
            raise UserError(f"member {path}{via} does not exist.")
        if path.resolve() == out.resolve():
            raise UserError(f"--out {out} is also a member{via}; write the ensemble elsewhere.")
        manifest = rundir.read_json(run.manifest, "run manifest") if run.manifest.exists() else {}
        if manifest.get("kind") == "ensemble":
            for leaf in manifest.get("member_dirs", []):
                add(Path(leaf), f" (through the ensemble {path})")
            return
        if any(path.resolve() == r.root.resolve() for r in leaves):
            raise UserError(f"{path}{via} is among the members twice: every model would not weigh the same.")
        leaves.append(run)

    for member in members:
        add(member, "")
    if len(leaves) < 2:
        raise UserError("an ensemble needs at least two models (the paper averages 5 and 7).")
    return leaves


def member_evaluation(run: rundir.RunDir, split: str, crops: int, tag: str, data_dir: Path | None) -> Evaluation:
    """The eval/ file a run's predictions for this ensemble are in (its own data, or data_dir's split)."""
    if data_dir is None:
        return Evaluation(split, crops, tag)
    own = rundir.read_json(run.config, "run configuration").get("data", {}).get("dir") if run.config.exists() else None
    if own is not None and Path(own).resolve() == Path(data_dir).resolve():
        return Evaluation(split, crops, tag)
    return Evaluation(split, crops, tag, rundir.data_name(data_dir, _identity(data_dir, split)))


def _not_current(run: rundir.RunDir, ev: Evaluation, checkpoint_name: str) -> str:
    """Why the run's predictions for `ev` cannot be averaged as they are ('' if they can): missing, or made by
    another checkpoint than the run's best.pt (last.pt) now holds (a retrain, or eval during training)."""
    if not run.predictions(ev).exists():
        return f"no {run.predictions(ev).name} yet"
    try:
        recorded = rundir.read_json(run.eval_metrics(ev), "eval metrics").get("checkpoint_sha256")
    except UserError:  # missing or damaged: evaluate() redoes it
        recorded = None
    path, _ = checkpoint.checkpoint_path(run, checkpoint_name)
    if recorded != rundir.file_sha256(path):
        return f"{run.predictions(ev).name} was made with another {path.name} than the run holds now"
    return ""


def _identity(data_dir: Path, split: str) -> str:
    manifest = rundir.DataDir(Path(data_dir)).split(split).manifest
    return rundir.read_json(manifest, f"the {split} split's manifest").get("identity", "")


def _finished(out: rundir.RunDir, ev: Evaluation, identity: dict) -> dict | None:
    if not (out.manifest.exists() and out.eval_metrics(ev).exists()):
        return None
    saved = rundir.read_json(out.eval_metrics(ev), "ensemble metrics")
    return saved if all(saved.get(k) == v for k, v in identity.items()) else None


def _read_predictions(member: Path, path: Path) -> dict:
    z = rundir.load_npz(path, "predictions")
    missing = {"keys", "labels", "probs", "classes"} - set(z)
    if missing:
        raise UserError(f"member {member}: {path} lacks {', '.join(sorted(missing))}; re-run `alexctl eval` on it.")
    z.setdefault("names", z["classes"])
    return z


def _check_same_samples(first: Path, a: dict, member: Path, b: dict) -> None:
    if not np.array_equal(a["classes"], b["classes"]):
        raise UserError(
            f"member {member} predicts another class list than {first} "
            f"({len(b['classes'])} vs {len(a['classes'])} classes, or another order)."
        )
    if len(a["keys"]) != len(b["keys"]) or not np.array_equal(a["keys"], b["keys"]):
        raise UserError(
            f"member {member} predicted other samples than {first} "
            f"({len(b['keys'])} vs {len(a['keys'])}, or another order): evaluate both on the same split."
        )
    if not np.array_equal(a["labels"], b["labels"]):
        raise UserError(f"member {member} has other labels for the same samples than {first}.")


def _write(out: rundir.RunDir, ev: Evaluation, predictions: list[dict], identity: dict) -> dict:
    """The averaged predictions, the metrics, then run.json (last: it marks the ensemble complete)."""
    first = predictions[0]
    total = np.zeros(first["probs"].shape, np.float64)
    for p in predictions:
        total += p["probs"]
    probs = (total / len(predictions)).astype(np.float32)
    member_errors = [topk_errors(p["probs"], p["labels"]) for p in predictions]
    path = out.predictions(ev)
    rundir.save_npz(
        path, keys=first["keys"], labels=first["labels"], probs=probs, classes=first["classes"], names=first["names"]
    )
    extra = {
        "members": len(predictions),
        **identity,
        "member_top1_errors": [e[1] for e in member_errors],
        "member_top5_errors": [e[5] for e in member_errors],
        "predictions": str(path),
    }
    summary = write_metrics(out, ev, first["classes"].tolist(), first["names"].tolist(), first["labels"], probs, extra)
    rundir.write_json(
        out.manifest,
        {
            "kind": "ensemble",
            "alexctl_version": __version__,
            "created": rundir.now(),
            "split": ev.split,
            "crops": ev.crops,
            "evaluation": ev.stem,
            "top1_error": summary["top1_error"],
            "top5_error": summary["top5_error"],
            "members": len(predictions),
            "member_dirs": identity["member_dirs"],
        },
    )
    return summary
