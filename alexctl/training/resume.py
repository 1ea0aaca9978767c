"""A training run's state on disk and how it continues after a stop, a kill or a crash.

    config.json   what the run trains, on what and how; checked against every later invocation
    last.pt       the weights, optimizer, schedule and Progress (below): what a resume needs
    epoch-N.pt, best.pt, metrics.jsonl
                  written at each epoch end, in an order that keeps them in agreement with last.pt

The Saver decides when to save (every --checkpoint-minutes or --checkpoint-steps, when a stop is
asked for, at each epoch end); resume() loads last.pt into the network, optimizer and schedule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from alexctl import __version__, checkpoint, rundir
from alexctl.config import CheckpointOptions, ModelConfig, TrainConfig, to_dict
from alexctl.device import Runtime, all_reduce, gathered
from alexctl.errors import UserError, WorkFailed
from alexctl.stop import StopSignals


@dataclass
class EpochSums:
    """Running sums of the epoch in progress. In a mid-epoch checkpoint they are the sums over all ranks."""

    step: int = 0  # global batches done
    loss: float = 0.0  # summed cross-entropy
    correct: int = 0  # top-1 hits on the augmented training batches
    samples: int = 0
    seconds: float = 0.0  # training time (validation excluded)


@dataclass
class Progress:
    """Where the run stands: what last.pt saves besides the weights, optimizer and schedule."""

    epoch: int = 0  # epochs completed
    best_top1: float | None = None
    best_top5: float | None = None
    best_epoch: int | None = None
    rows: list[dict] = field(default_factory=list)  # metrics.jsonl, one row per completed epoch
    current: EpochSums = field(default_factory=EpochSums)
    resumed_from: dict | None = None

    def to_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "best_top1": self.best_top1,
            "best_top5": self.best_top5,
            "best_epoch": self.best_epoch,
            "rows": self.rows,
            "current": asdict(self.current),
        }

    @staticmethod
    def from_dict(saved: dict) -> "Progress":
        return Progress(
            saved["epoch"],
            saved["best_top1"],
            saved["best_top5"],
            saved["best_epoch"],
            list(saved["rows"] or []),
            EpochSums(**saved["current"]),
        )


def save_due(options: CheckpointOptions, last_save: float, step: int) -> tuple[bool, bool]:
    """(a time-based save is due on this rank, a step-based save is due on every rank) after `step`."""
    by_time = bool(options.checkpoint_minutes) and time.monotonic() - last_save >= options.checkpoint_minutes * 60
    return by_time, bool(options.checkpoint_steps) and step % options.checkpoint_steps == 0


@dataclass(frozen=True)
class RunRecord:
    """What every checkpoint of a run says about itself besides the weights (alexctl.checkpoint.weights)."""

    model_config: ModelConfig
    classes: list[str]  # wnids, in the order of the outputs
    class_names: list[str]
    mean_image: Any  # (3, S, S) float32 tensor, 0..255 units: what the net's inputs had subtracted
    data: dict  # the data directory's identity (alexctl.training.splits)

    def weights(self, net, epoch: int, val: dict | None) -> dict:
        return checkpoint.weights(
            net,
            self.model_config,
            classes=self.classes,
            class_names=self.class_names,
            mean_image=self.mean_image,
            data=self.data,
            epoch=epoch,
            val=val,
        )


class Saver:
    """What is saved when: last.pt mid-epoch (every --checkpoint-minutes or --checkpoint-steps, and on a stop);
    at every --checkpoint-epochs-th epoch end and after the last, the epoch's checkpoint, best.pt, last.pt; the
    metrics row after every epoch. The best weights wait in host memory until the next save of last.pt, which
    writes them first, so best.pt always matches last.pt's progress (a sub-second GPU epoch would otherwise
    spend its time writing three 244 MB files). Under DDP the ranks agree (an all-reduce every AGREE_EVERY
    steps) to save and stop at the same step; a mid-epoch save gathers all ranks' running sums into rank 0's."""

    AGREE_EVERY = 20  # steps between the ranks' agreements on time-based saves and stops (DDP only)
    REPORT_SECONDS = 10  # how often the lock record (what `status` shows) is rewritten

    def __init__(
        self,
        run: rundir.RunDir,
        net,
        optimizer,
        schedule,
        state: Progress,
        *,
        about: RunRecord,
        runtime: Runtime,
        options: CheckpointOptions,
        lock,
    ) -> None:
        self.run, self.net, self.optimizer, self.schedule, self.state = run, net, optimizer, schedule, state
        self.about = about
        self.runtime, self.options, self.lock = runtime, options, lock
        self.last_save = self.last_report = time.monotonic()
        self.unsaved_best: dict | None = None  # the best epoch's weights, not yet in best.pt (rank 0 only)

    def between_steps(self, epoch: int, epochs: int, batches: list[np.ndarray], stop: StopSignals, bar) -> Callable:
        def after(step: int, flush: Callable[[], None]) -> None:
            bar.advance(len(batches[step - 1]))
            self._report(epoch=epoch, epochs=epochs, step=step, steps=len(batches))
            due, stopping = save_due(self.options, self.last_save, step), stop.requested
            if self.runtime.world > 1:
                if step % self.AGREE_EVERY and not due[1]:
                    return
                agreed = all_reduce([float(due[0]), float(stopping)], self.runtime, op="max")
                due, stopping = (agreed[0] > 0, due[1]), agreed[1] > 0
            if due[0] or due[1] or stopping:
                flush()
                self._save_mid_epoch()
                if step % 100 == 0 or stopping:
                    bar.note(f"loss {self.state.current.loss / max(self.state.current.samples, 1):.4f}")
                if stopping:
                    raise WorkFailed(
                        f"stopped by {stop.name or 'a signal on another rank'} in epoch {epoch} at step "
                        f"{step}; saved {self.run.last_checkpoint}: run the same command again to resume."
                    )

        return after

    def _save_mid_epoch(self) -> None:
        sums = self.state.current
        loss, correct, samples = all_reduce([sums.loss, sums.correct, sums.samples], self.runtime)
        check_finite(loss, self.state.epoch + 1, sums.step)  # every rank sees the same sum
        if self.runtime.leader:  # rank 0 keeps the sums of all ranks; the others count on from zero
            sums.loss, sums.correct, sums.samples = loss, int(correct), int(samples)
            self._save_last()
        else:
            sums.loss, sums.correct, sums.samples = 0.0, 0, 0
        self.last_save = time.monotonic()

    def end_of_epoch(self, epoch: int, val: dict, row: dict, improved: bool, final: bool) -> None:
        """On a save: epoch-N.pt, best.pt, last.pt (holding the metrics rows), then the metrics row; otherwise
        the metrics row alone. A crash anywhere leaves last.pt and metrics.jsonl in agreement after the next
        resume (which rewrites the rows from last.pt and redoes the epochs after it)."""
        due = final or epoch % self.options.checkpoint_epochs == 0
        if self.runtime.leader:
            record = self.about.weights(self.net, epoch, val) if improved or due else None
            if improved:
                self.unsaved_best = record
            if due:
                checkpoint.save_epoch(self.run, record, epoch, keep=self.options.keep)
                self._save_last(record)
            rundir.append_jsonl(self.run.metrics, row)
        if due:
            self.last_save = time.monotonic()

    def _save_last(self, record: dict | None = None) -> None:
        if self.unsaved_best is not None:  # before last.pt, whose progress names this epoch as the best
            checkpoint.save_best(self.run, self.unsaved_best)
            self.unsaved_best = None
        checkpoint.save_resume(
            self.run,
            record or self.about.weights(self.net, self.state.epoch, None),
            optimizer=self.optimizer.state_dict(),
            schedule=self.schedule.state_dict(),
            progress=self.state.to_dict(),
            devices=len(self.runtime.devices),
        )

    def _report(self, **where) -> None:
        """Every few seconds, rewrite the lock record with where training stands (for `alexctl status`)."""
        if self.runtime.leader and time.monotonic() - self.last_report >= self.REPORT_SECONDS:
            self.last_report = time.monotonic()
            self.lock.update(**where)


def check_finite(loss_sum: float, epoch: int, step: int) -> None:
    """A training loss that turned NaN or infinite stops the run (exit 1, recorded) before it is saved: the weights
    it would save are lost, and every later epoch would train them on. Called with the sum over all ranks, so that
    every rank stops at the same step."""
    if not math.isfinite(loss_sum):
        raise WorkFailed(
            f"the training loss became {loss_sum} in epoch {epoch} (by step {step}): the network diverged, and "
            "nothing of it was saved; train with a lower --lr (or --weight-decay) in a new run directory."
        )


def check_ranks_agree(runtime: Runtime, facts: dict[str, dict]) -> None:
    """Under torchrun each node may read its own copy of RUN_DIR and DATA_DIR (separate disks), so before the
    first step the ranks compare what they are about to train: `facts` maps what is compared ("the data") to
    its parts ({"train split": identity, ...}). A difference is refused on every rank at once (exit 2), naming
    the rank and the parts, before a step trains mismatched ranks into the run's checkpoints."""
    everyone = gathered(facts, runtime)
    for rank, theirs in enumerate(everyone[1:], 1):
        for what, ours in everyone[0].items():
            differ = [
                f"{k}: {theirs[what].get(k)!r} on rank {rank}, {v!r} on rank 0"
                for k, v in ours.items()
                if theirs[what].get(k) != v
            ]
            if differ:
                raise UserError(
                    f"rank {rank} and rank 0 disagree on {what} ({'; '.join(differ[:3])}): every node must read the "
                    "same RUN_DIR and DATA_DIR (a shared disk, or identical copies) to train or resume one run."
                )


def resume_point(saved: dict | None) -> dict:
    """Where a rank would resume (check_ranks_agree's part of `saved_state`)."""
    if saved is None:
        return {"last.pt": "none: a fresh start"}
    progress = saved["progress"]
    return {
        "last.pt": f"epoch {progress['epoch']} step {progress['current']['step']}",
        "best epoch": progress["best_epoch"],
    }


def saved_state(run: rundir.RunDir) -> dict | None:
    """last.pt read whole (None for a fresh start): read before the run directory is touched, so a damaged
    checkpoint is refused with the directory as it was."""
    return checkpoint.load_resume(run.last_checkpoint) if run.last_checkpoint.exists() else None


def resume(run: rundir.RunDir, ckpt: dict | None, net, optimizer, schedule, runtime: Runtime) -> Progress:
    """The progress saved in `ckpt` (saved_state), with the weights, optimizer and schedule loaded; a fresh
    start without it."""
    if ckpt is None:
        if runtime.leader and run.metrics.exists():
            rundir.rewrite_jsonl(run.metrics, [])  # rows of a start that never saved: this start redoes them
        return Progress()
    if ckpt["devices"] != len(runtime.devices):
        raise UserError(
            f"{run.root} was trained on {ckpt['devices']} device(s) per process; resume it with the same "
            "number in --devices (the optimizer's state is laid out per device)."
        )
    net.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    schedule.load_state_dict(ckpt["schedule"])
    saved = ckpt["progress"]
    if saved["rows"] is None:  # format 1 kept the rows in metrics.jsonl only
        saved = {**saved, "rows": rundir.read_jsonl(run.metrics)[: saved["metrics_rows"]]}
    state = Progress.from_dict(saved)
    state.resumed_from = {"epoch": state.epoch, "step": state.current.step}
    if not runtime.leader:  # rank 0 holds the sums of all ranks (Saver._save_mid_epoch)
        state.current = EpochSums(step=state.current.step, seconds=state.current.seconds)
    if runtime.leader:
        rundir.rewrite_jsonl(run.metrics, state.rows)  # drop rows the checkpoint does not cover, restore missing ones
    return state


# ---------------------------------------------------------------- the run directory


def config_record(
    data: dict, model_config: ModelConfig, config: TrainConfig, runtime: Runtime, command: list[str] | None
) -> dict:
    """config.json: what this run trains, on what (`data`: TrainingData.describe()), and how (the runtime,
    with torch, CUDA and the device's name)."""
    return {
        "kind": "train-config",
        "alexctl_version": __version__,
        "created": rundir.now(),
        "command": command,
        "model": to_dict(model_config),
        "train": to_dict(config),
        "data": data,
        "runtime": runtime.describe(),
    }


def check_run_dir(run: rundir.RunDir, record: dict) -> None:
    """A run directory trains one thing: other data or other settings are refused, and so is an --epochs
    below the epochs already trained. Nothing is written here."""
    if run.root.exists() and not run.root.is_dir():
        raise UserError(f"{run.root} is a file, not a run directory.")
    if not run.config.exists():
        return
    saved = rundir.read_json(run.config, "run configuration")
    if saved.get("kind") != "train-config":
        raise UserError(f"{run.config} is not an alexctl training configuration.")
    problems = [
        f"model {k} {saved['model'].get(k)!r} -> {v!r}"
        for k, v in record["model"].items()
        if saved["model"].get(k) != v
    ]
    old, new = (TrainConfig(**{**to_dict(TrainConfig()), **saved["train"]}), TrainConfig(**record["train"]))
    problems += [f"{k} {getattr(old, k)!r} -> {getattr(new, k)!r}" for k in new.changed(old)]
    if any(saved["data"].get(k) != record["data"][k] for k in ("train_identity", "val_identity")):
        problems.append(f"data directory {saved['data']['dir']} -> {record['data']['dir']} (other shards)")
    if problems:
        raise UserError(
            f"{run.root} holds a run with other settings ({'; '.join(problems)}); "
            "use a new run directory, or the original settings to resume."
        )
    done = completed_epochs(run)
    if record["train"]["epochs"] < done:
        raise UserError(
            f"{run.root} has already trained {done} epochs; --epochs {record['train']['epochs']} "
            f"would not include them (ask for {done} or more)."
        )


def completed_epochs(run: rundir.RunDir) -> int:
    """Epochs last.pt covers, read from its small summary (0 when nothing was saved)."""
    if not run.last_summary.exists():
        return 0
    return int(rundir.read_json(run.last_summary, "checkpoint summary").get("epoch", 0))


def prepare_run_dir(run: rundir.RunDir, record: dict) -> None:
    """Under the run's lock: clear what a killed or failed attempt left, then write or update config.json.
    Changing --epochs is allowed and recorded in config.json's `epochs_changed`."""
    check_run_dir(run, record)  # again, now that this process holds the lock
    rundir.remove_temporaries(run.root)
    rundir.clear_failure(run.failed)
    if not run.config.exists():
        rundir.write_json(run.config, record)
        return
    saved = rundir.read_json(run.config, "run configuration")
    before, after = saved["train"]["epochs"], record["train"]["epochs"]
    if before != after:
        history = saved.get("epochs_changed", []) + [
            {"from": before, "to": after, "time": rundir.now(), "command": record["command"]}
        ]
        rundir.write_json(
            run.config, {**saved, "train": {**saved["train"], "epochs": after}, "epochs_changed": history}
        )


def summarise(run: rundir.RunDir, state: Progress, started: float, classes: int) -> dict:
    last = state.rows[-1] if state.rows else {}
    rates = [r["images_per_second"] for r in state.rows if r.get("images_per_second")]
    return {
        "run_dir": str(run.root),
        "classes": classes,
        "checkpoint": str(run.best_checkpoint),
        "last_checkpoint": str(run.last_checkpoint),
        "epochs_completed": state.epoch,
        "metrics": str(run.metrics),
        "val_top1_error": state.best_top1,
        "val_top5_error": state.best_top5,
        "best_epoch": state.best_epoch,
        "last_val_top1_error": last.get("val_top1_error"),
        "last_val_top5_error": last.get("val_top5_error"),
        "images_per_second": round(float(np.median(rates)), 2) if rates else None,
        "resumed_from": state.resumed_from,
        "seconds": round(time.monotonic() - started, 3),
    }
