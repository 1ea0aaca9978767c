"""`alexctl status`: where a pipeline stands, read from its directories' files alone.

For each data directory (per split) and run directory, every stage is one of
  done     its manifest is there (manifest.json, run.json, an eval .json)
  running  a live process holds the lock; its pid and progress come from the lock record
  stale    the lock's record is there but its holder died (killed, machine rebooted):
           the next run of the same command takes the lock over and continues; or an
           evaluation made with a checkpoint the run no longer holds (retrained since)
  failed   the last attempt recorded an error (failed.json) and nothing runs now
  partial  some work is on disk but no process runs: the same command finishes it
  missing  nothing yet (or the path does not exist)
  broken   a file that should describe the stage cannot be read (a corrupt manifest, say)
  corrupt  with `verify`: a shard, index or checkpoint does not match what was recorded
so that a cron job or a person sees at once what to do next. One directory that cannot be
read is reported as broken; the others are reported as usual.
"""

from __future__ import annotations

from pathlib import Path

from alexctl import rundir
from alexctl.data.shards import size_problems, verify_split
from alexctl.errors import UserError

NEEDS_ATTENTION = ("failed", "stale", "missing", "broken", "corrupt")
UNREADABLE = (UserError, OSError, ValueError, KeyError, TypeError, AttributeError)  # a record of another form


def status(paths: list[Path], *, verify: bool = False) -> list[dict]:
    return [_one(Path(p), verify) for p in paths]


def tab_line(entry: dict, stage: dict) -> str:
    """One stage as a tab-separated line: path, kind, stage, state, detail. A tab, newline or backslash inside a
    field (a run directory named with a newline) is written as \\t, \\n or \\\\, so that a line is always one stage."""
    fields = (entry["path"], entry["kind"], stage["stage"], stage["state"], stage["detail"])
    return "\t".join(escaped(str(f)) for f in fields)


def escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _one(path: Path, verify: bool) -> dict:
    try:
        return _read(path, verify)
    except UNREADABLE as e:
        return {"path": str(path), "kind": "broken", "stages": [_broken("-", e)]}


def _broken(stage: str, e: Exception) -> dict:
    if isinstance(e, OSError) and e.filename:
        detail = f"{e.filename}: {e.strerror or e}"
    else:
        detail = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
    return {"stage": stage, "state": "broken", "detail": detail}


def _guarded(stage: str, read, *args) -> list[dict]:
    """The stages `read(*args)` returns, or one broken stage: one unreadable file spoils only its own stage."""
    try:
        result = read(*args)
    except UNREADABLE as e:
        return [_broken(stage, e)]
    return result if isinstance(result, list) else [result]


def _read(path: Path, verify: bool) -> dict:
    if not path.exists():
        return {
            "path": str(path),
            "kind": "missing",
            "stages": [{"stage": "-", "state": "missing", "detail": "no such directory"}],
        }
    if not path.is_dir():
        return {
            "path": str(path),
            "kind": "unknown",
            "stages": [{"stage": "-", "state": "missing", "detail": "a file, not a data or run directory"}],
        }
    run = rundir.RunDir(path)
    manifest = rundir.read_json(run.manifest, "run manifest") if run.manifest.exists() else {}
    if not isinstance(manifest, dict):
        raise UserError(f"run manifest {run.manifest} is not a JSON object.")
    if manifest.get("kind") == "ensemble":
        return {
            "path": str(path),
            "kind": "ensemble",
            "stages": _guarded("ensemble", _ensemble, run, manifest) + _guarded("eval", _evals, run, False),
        }
    if run.config.exists() or run.checkpoints.exists() or run.lock.exists():
        stages = _guarded("train", _training, run, manifest) + _guarded("eval", _evals, run)
        if verify:
            stages += _guarded("checkpoints", _verify_checkpoints, run)
        return {"path": str(path), "kind": "run", "stages": stages}
    data = rundir.DataDir(path)
    if data.classes.exists() or any(data.split(s).root.is_dir() for s in data.split_names()):
        stages = [stage for s in data.split_names() for stage in _guarded(f"preprocess {s}", _split, data, s, verify)]
        return {"path": str(path), "kind": "data", "stages": stages}
    return {
        "path": str(path),
        "kind": "unknown",
        "stages": [{"stage": "-", "state": "missing", "detail": "neither a data nor a run directory"}],
    }


def _split(data: rundir.DataDir, split: str, verify: bool) -> dict:
    d = data.split(split)
    stage = {"stage": f"preprocess {split}"}
    locks = [d.lock] + sorted(d.root.glob(".lock-part-*")) if d.root.is_dir() else []
    live = _live(locks)
    if d.manifest.exists() and not live:
        m = rundir.read_json(d.manifest, "manifest")
        done = {
            **stage,
            "state": "done",
            "detail": f"{m['written']} images in {len(m['shards'])} shards, {len(m['skipped'])} skipped",
        }
        # A missing or cut shard or index is found without --verify: a stat per file costs nothing.
        problems = verify_split(d.root, m) if verify else size_problems(d.root, m)
        if problems:
            return {
                **stage,
                "state": "corrupt",
                "detail": "; ".join(problems[:3])
                + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
                + f"; `alexctl preprocess ... {data.root} --split {split} --force` redoes it",
            }
        if d.failed.exists() and not verify:  # beside a manifest: `preprocess --verify` found damage
            record = rundir.read_json(d.failed, "failure record")
            state = "corrupt" if "--verify" in str(record.get("command")) else "failed"
            return {**stage, "state": state, "detail": f"{record.get('error')} ({record.get('time')})"}
        if verify:
            done["detail"] += ", every shard and the index verified"
        return done
    if live:
        record = rundir.lock_holder(live) or {}
        progress = ""
        if "shards_written" in record:
            progress = f", {record['shards_written']}/{record['shards_to_write']} shards"
        return {
            **stage,
            "state": "running",
            "pid": record.get("pid"),
            "detail": f"`{record.get('command', '?')}` pid {record.get('pid')} since {record.get('started')}{progress}",
        }
    shards = len(list(d.root.glob("shard-*.npz"))) if d.root.is_dir() else 0
    return _idle(stage, d.failed, locks, f"{shards} shards written; the same command finishes it" if shards else "")


def _training(run: rundir.RunDir, manifest: dict) -> dict:
    stage = {"stage": "train"}
    config = rundir.read_json(run.config, "run configuration") if run.config.exists() else {}
    epochs = config.get("train", {}).get("epochs")
    if rundir.lock_state(run.lock) == "held":
        record = rundir.lock_holder(run.lock) or {}
        where = (
            f", epoch {record['epoch']}/{record.get('epochs', epochs)} step {record['step']}/{record['steps']}"
            if "epoch" in record
            else ""
        )
        return {
            **stage,
            "state": "running",
            "pid": record.get("pid"),
            "detail": f"pid {record.get('pid')} since {record.get('started')}{where}",
        }
    if manifest and manifest.get("epochs_completed", 0) >= (epochs or 0):
        best = manifest.get("val_top1_error")
        return {
            **stage,
            "state": "done",
            "detail": f"{manifest['epochs_completed']} epochs, best val top-1 error "
            + (f"{best:.2%}" if best is not None else "n/a"),
        }
    saved = rundir.read_json(run.last_summary, "checkpoint summary") if run.last_summary.exists() else None
    if saved is not None:
        step = f", step {saved['step']}" if saved.get("step") else ""
        detail = (
            f"{saved['epoch']} of {epochs} epochs done; the same command resumes after epoch {saved['epoch']}{step}"
        )
    elif run.config.exists():
        detail = f"0 of {epochs} epochs done (no checkpoint yet); the same command starts it again"
    else:
        detail = ""
    return _idle(stage, run.failed, [run.lock], detail)


def _evals(run: rundir.RunDir, done: bool = True) -> list[dict]:
    """The evaluations in eval/ (done ones too, unless `done` is False), and one running, failed or stale."""
    out = []
    if not run.eval_dir.is_dir():
        return out
    for path in sorted(run.eval_dir.glob("*.json")) if done else []:
        if path.name == run.eval_failed.name:
            continue
        m = rundir.read_json(path, "eval metrics")
        what = f"ensemble of {m['members']}, " if "members" in m else ""
        changed = _changed_checkpoint(run, path, m)
        out.append(
            {
                "stage": f"eval {path.stem}",
                "state": "stale" if changed else "done",
                "detail": f"{changed} since this evaluation; `alexctl eval {run.root}` redoes it"
                if changed
                else f"{what}top-1 {m['top1_error']:.2%}, top-5 {m['top5_error']:.2%} on {m['num_images']} images",
            }
        )
    state = rundir.lock_state(run.eval_lock)
    if state == "held":
        record = rundir.lock_holder(run.eval_lock) or {}
        out.append(
            {
                "stage": record.get("command", "eval"),
                "state": "running",
                "pid": record.get("pid"),
                "detail": f"pid {record.get('pid')} since {record.get('started')}",
            }
        )
    elif run.eval_failed.exists() or state == "stale":
        out.append(_idle({"stage": "eval"}, run.eval_failed, [run.eval_lock], ""))
    return out


def _changed_checkpoint(run: rundir.RunDir, metrics: Path, m: dict) -> str:
    """'best.pt changed' when the checkpoint an evaluation recorded (by SHA-256) is no longer the run's; ''
    otherwise. The hash is taken only for a checkpoint written after the evaluation (status stays a stat)."""
    recorded = m.get("checkpoint")
    if not recorded or "checkpoint_sha256" not in m:
        return ""
    path = Path(recorded)
    if path.parent.name == "checkpoints" and path.name in (run.best_checkpoint.name, run.last_checkpoint.name):
        path = run.checkpoints / path.name  # recorded relative to where eval ran
    if not path.exists() or path.stat().st_mtime <= metrics.stat().st_mtime:
        return ""
    return f"{path.name} changed" if rundir.file_sha256(path) != m["checkpoint_sha256"] else ""


def _ensemble(run: rundir.RunDir, manifest: dict) -> dict:
    return {
        "stage": "ensemble",
        "state": "done",
        "detail": f"{manifest['members']} members, top-1 {manifest['top1_error']:.2%}, "
        f"top-5 {manifest['top5_error']:.2%}",
    }


def _verify_checkpoints(run: rundir.RunDir) -> list[dict]:
    from alexctl.checkpoint import load_weights  # torch (~3 s to import): only `status --verify` of a run pays it

    out = []
    for path in sorted(run.checkpoints.glob("*.pt")) if run.checkpoints.is_dir() else []:
        try:
            load_weights(path)
        except UserError as e:
            out.append({"stage": f"checkpoint {path.name}", "state": "corrupt", "detail": str(e)})
    return out


def _live(locks: list[Path]) -> Path | None:
    return next((p for p in locks if rundir.lock_state(p) == "held"), None)


def _idle(stage: dict, failed: Path, locks: list[Path], partial_detail: str) -> dict:
    """Nothing runs: failed, stale, partial or missing."""
    if failed.exists():
        record = rundir.read_json(failed, "failure record")
        return {**stage, "state": "failed", "detail": f"{record.get('error')} ({record.get('time')})"}
    stale = [p for p in locks if rundir.lock_state(p) == "stale"]
    if stale:
        record = rundir.lock_holder(stale[0]) or {}
        if "error" in record:  # failed.json could not be written (a full disk): the lock's record holds the failure
            return {**stage, "state": "failed", "detail": f"{record['error']} ({record.get('updated')})"}
        return {
            **stage,
            "state": "stale",
            "detail": f"pid {record.get('pid')} died while holding {stale[0].name}; the next run takes the lock over",
        }
    if partial_detail:
        return {**stage, "state": "partial", "detail": partial_detail}
    return {**stage, "state": "missing", "detail": ""}
