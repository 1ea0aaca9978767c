"""`alexctl status`: where a pipeline stands, read from its directories' files alone.

For each data directory (per split) and run directory, every stage is one of
  done     its manifest is there (manifest.json, run.json)
  running  a live process holds the lock; its pid and progress come from the lock record
  stale    the lock's record is there but its holder died (killed, machine rebooted):
           the next run of the same command takes the lock over and continues
  failed   the last attempt recorded an error (failed.json) and nothing runs now
  partial  some work is on disk but no process runs: the same command finishes it
  missing  nothing yet
so that a cron job or a person sees at once what to do next.
"""

from __future__ import annotations

from pathlib import Path

from alexctl import rundir
from alexctl.data.preprocess import SPLITS


def status(paths: list[Path]) -> list[dict]:
    return [_one(Path(p)) for p in paths]


def _one(path: Path) -> dict:
    if not path.exists():
        return {"path": str(path), "kind": "missing", "stages": [{"stage": "-", "state": "missing", "detail": ""}]}
    run = rundir.RunDir(path)
    manifest = rundir.read_json(run.manifest) if run.manifest.exists() else {}
    if manifest.get("kind") == "ensemble":
        return {"path": str(path), "kind": "ensemble", "stages": [_ensemble(run, manifest)]}
    if run.config.exists() or run.checkpoints.exists() or run.lock.exists():
        return {"path": str(path), "kind": "run", "stages": [_training(run, manifest)] + _evals(run)}
    data = rundir.DataDir(path)
    if data.classes.exists() or any(data.split(s).root.is_dir() for s in SPLITS):
        return {"path": str(path), "kind": "data", "stages": [_split(data, s) for s in SPLITS]}
    return {"path": str(path), "kind": "unknown",
            "stages": [{"stage": "-", "state": "missing", "detail": "neither a data nor a run directory"}]}


def _split(data: rundir.DataDir, split: str) -> dict:
    d = data.split(split)
    stage = {"stage": f"preprocess {split}"}
    locks = [d.lock] + sorted(d.root.glob(".lock-part-*")) if d.root.is_dir() else []
    if d.manifest.exists():
        m = rundir.read_json(d.manifest)
        return {**stage, "state": "done", "detail": f"{m['written']} images in {len(m['shards'])} shards, "
                                                    f"{len(m['skipped'])} skipped"}
    live = _live(locks)
    if live:
        record = rundir.lock_holder(live) or {}
        progress = ""
        if "shards_written" in record:
            progress = f", {record['shards_written']}/{record['shards_to_write']} shards"
        return {**stage, "state": "running", "pid": record.get("pid"),
                "detail": f"pid {record.get('pid')} since {record.get('started')}{progress}"}
    shards = len(list(d.root.glob("shard-*.npz"))) if d.root.is_dir() else 0
    return _idle(stage, d.failed, locks, f"{shards} shards written; the same command finishes it" if shards else "")


def _training(run: rundir.RunDir, manifest: dict) -> dict:
    stage = {"stage": "train"}
    config = rundir.read_json(run.config) if run.config.exists() else {}
    epochs = config.get("train", {}).get("epochs")
    rows = rundir.read_jsonl(run.metrics)
    if manifest and manifest.get("epochs_completed", 0) >= (epochs or 0):
        best = manifest.get("val_top1_error")
        return {**stage, "state": "done", "detail": f"{manifest['epochs_completed']} epochs, best val top-1 error "
                                                    + (f"{best:.2%}" if best is not None else "n/a")}
    if rundir.lock_state(run.lock) == "held":
        record = rundir.lock_holder(run.lock) or {}
        where = (f", epoch {record['epoch']}/{record['epochs']} step {record['step']}/{record['steps']}"
                 if "epoch" in record else "")
        return {**stage, "state": "running", "pid": record.get("pid"),
                "detail": f"pid {record.get('pid')} since {record.get('started')}{where}"}
    detail = f"{len(rows)} of {epochs} epochs done; the same command resumes it" if rows or epochs else ""
    return _idle(stage, run.failed, [run.lock], detail if run.checkpoints.exists() else "")


def _evals(run: rundir.RunDir) -> list[dict]:
    out = []
    for path in sorted(run.eval_dir.glob("*.json")) if run.eval_dir.is_dir() else []:
        m = rundir.read_json(path)
        out.append({"stage": f"eval {path.stem}", "state": "done",
                    "detail": f"top-1 {m['top1_error']:.2%}, top-5 {m['top5_error']:.2%} on {m['num_images']} images"})
    return out


def _ensemble(run: rundir.RunDir, manifest: dict) -> dict:
    return {"stage": "ensemble", "state": "done",
            "detail": f"{manifest['members']} members, top-1 {manifest['top1_error']:.2%}, "
                      f"top-5 {manifest['top5_error']:.2%}"}


def _live(locks: list[Path]) -> Path | None:
    return next((p for p in locks if rundir.lock_state(p) == "held"), None)


def _idle(stage: dict, failed: Path, locks: list[Path], partial_detail: str) -> dict:
    """Nothing runs: failed, stale, partial or missing."""
    if failed.exists():
        record = rundir.read_json(failed)
        return {**stage, "state": "failed", "detail": f"{record.get('error')} ({record.get('time')})"}
    stale = [p for p in locks if rundir.lock_state(p) == "stale"]
    if stale:
        record = rundir.lock_holder(stale[0]) or {}
        return {**stage, "state": "stale", "detail": f"pid {record.get('pid')} died while holding {stale[0].name}; "
                                                     "the next run takes the lock over"}
    if partial_detail:
        return {**stage, "state": "partial", "detail": partial_detail}
    return {**stage, "state": "missing", "detail": ""}
