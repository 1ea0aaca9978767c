"""`alexctl train`: the paper's network, learning rule and schedule on a preprocessed data directory.

    shards -> random 224 crop + flip + PCA lighting - mean (on the device) -> AlexNet -> SGD step
    every epoch: center-crop validation -> metrics.jsonl -> lr schedule -> checkpoints

Exact resume: every random choice of a step (the augmentation's draws and dropout's
masks) comes from a generator seeded by (seed, epoch, step, rank), and each epoch's
sample order from (seed, epoch). A checkpoint therefore needs only the model, the
optimizer, the schedule and the step it was taken at: a killed run started again from
its last checkpoint computes exactly what the uninterrupted run would have (bit for bit
in --deterministic mode on the CPU).
"""

from __future__ import annotations

import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alexctl import __version__, rundir
from alexctl import device as device_ops
from alexctl.checkpoint import CHECKPOINT_FORMAT
from alexctl.config import ModelConfig, TrainConfig, from_dict, to_dict
from alexctl.console import ProgressFactory, log, no_progress
from alexctl.data import augment
from alexctl.data.loader import Split, batch_loader, epoch_batches, load_split, rank_part, to_device
from alexctl.errors import UserError, WorkFailed
from alexctl.metrics import cross_entropy, topk_correct
from alexctl.model import build_model
from alexctl.optim import build_optimizer, parse_schedule
from alexctl.predict import predict

VAL_BATCH = 256


@dataclass
class Checkpointing:
    keep: int = 2  # older epoch checkpoints kept besides last.pt and best.pt
    minutes: float = 30.0  # save last.pt mid-epoch this often (0: only at epoch ends)
    steps: int = 0  # ...or every this many steps (0: off)


@dataclass
class _Epoch:
    """Running sums of the epoch in progress (saved in mid-epoch checkpoints)."""

    step: int = 0
    loss: float = 0.0
    correct: int = 0
    samples: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(step=self.step, loss=self.loss, correct=self.correct, samples=self.samples, seconds=self.seconds)


@dataclass
class _State:
    epoch: int = 0  # epochs completed
    best_top1: float | None = None
    best_top5: float | None = None
    best_epoch: int | None = None
    current: _Epoch = field(default_factory=_Epoch)
    resumed_from: dict | None = None


def train(data_dir: Path, run_dir: Path, model_config: ModelConfig, config: TrainConfig,
          runtime: device_ops.Runtime, checkpointing: Checkpointing = Checkpointing(),
          progress: ProgressFactory = no_progress, command: list[str] | None = None) -> dict:
    """Train (or resume, or report a finished) run in `run_dir`; returns the `--json` summary."""
    started = time.monotonic()
    device_ops.init_distributed(runtime)
    device_ops.configure(runtime)
    run = rundir.RunDir(Path(run_dir))
    leader = runtime.rank == 0
    train_split, val_split = load_split(data_dir, "train"), load_split(data_dir, "val")
    if val_split.num_classes != train_split.num_classes:
        raise UserError(f"{data_dir}: the val split has {val_split.num_classes} classes and train "
                        f"{train_split.num_classes}; preprocess val with the train split's class list.")
    stats = rundir.load_npz(rundir.DataDir(Path(data_dir)).stats, "statistics file")
    record = _record(data_dir, train_split, val_split, model_config, config, runtime, command)
    with rundir.DirectoryLock(run.lock, "train") if leader else nullcontext() as lock:
        if leader:
            rundir.remove_temporaries(run.root)
            rundir.clear_failure(run.failed)
            _check_or_write_config(run, record)
        session = _Session(run, train_split, val_split, stats, model_config, config, runtime, checkpointing, progress)
        session.lock = lock
        try:
            return session.run(started)
        except WorkFailed as e:
            if leader:
                rundir.record_failure(run.failed, "train", str(e))
            raise


class _Session:
    """One invocation of train: builds everything, resumes, loops over epochs."""

    def __init__(self, run, train_split: Split, val_split: Split, stats, model_config, config, runtime,
                 checkpointing, progress):
        self.dir, self.train_split, self.val_split = run, train_split, val_split
        self.model_config, self.config, self.runtime = model_config, config, runtime
        self.checkpointing, self.progress = checkpointing, progress
        self.leader = runtime.rank == 0
        devices = [str(d) for d in runtime.devices]
        try:
            self.net = build_model(model_config, train_split.num_classes, devices if len(devices) == 2 else None)
            self.schedule = parse_schedule(config.schedule, config.lr)
        except ValueError as e:
            raise UserError(f"bad training options: {e}") from None
        if len(devices) == 1:
            self.net.to(runtime.primary)
        if runtime.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.crop = self.net.input_size
        if self.crop > train_split.image_size:
            raise UserError(f"the {model_config.arch} net takes {self.crop}x{self.crop} crops, but the data's images "
                            f"are {train_split.image_size}x{train_split.image_size}; preprocess with --size "
                            f"{256 if self.crop == 224 else 32}.")
        self.optimizer = build_optimizer(self.net, rule=config.update_rule, lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay, decay_biases=config.decay_biases)
        # (3, S, S) float32 on the device: the training set's mean image, subtracted from every image (section 2).
        self.mean_image = augment.mean_image_tensor(stats["mean_image"], runtime.primary)
        self.lighting = (augment.Lighting.from_stats(stats["eigenvalues"], stats["eigenvectors"], std=config.lighting_std)
                         if config.lighting_std > 0 else None)
        self.model = self.net
        if runtime.world > 1:
            ids = [runtime.primary] if len(runtime.devices) == 1 and runtime.is_cuda else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        if runtime.compile:
            self.model = torch.compile(self.model)
        self.state = _State()
        self.stop_signal: int | None = None
        self.last_save = time.monotonic()
        self.lock: rundir.DirectoryLock | None = None  # the leader's: `alexctl status` reads its progress record
        self.last_report = 0.0

    # ------------------------------------------------------------ the loop

    def run(self, started: float) -> dict:
        if self.dir.last_checkpoint.exists():
            self._resume()
        rates = []
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while self.state.epoch < self.config.epochs:
                epoch = self.state.epoch + 1
                row = self._epoch(epoch)
                rates.append(row["images_per_second"])
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        summary = self._summary(started, rates)
        if self.leader:
            rundir.write_json(self.dir.manifest, {"kind": "train-run", "alexctl_version": __version__,
                                                  "created": rundir._now(), **summary})
        return summary

    def _epoch(self, epoch: int) -> dict:
        config, runtime = self.config, self.runtime
        self.schedule.apply(self.optimizer)
        lr = self.schedule.lr
        batches = epoch_batches(len(self.train_split), config.batch_size, seed=config.seed, epoch=epoch)
        current = self.state.current
        seen = np.zeros(len(self.train_split), np.int32)
        for b in batches[:current.step]:
            seen[rank_part(b, runtime.rank, runtime.world)] += 1
        self._train(epoch, batches, current, seen)
        train_time = current.seconds
        val_start = time.monotonic()
        val = self._validate()
        val_seconds = time.monotonic() - val_start
        totals = self._all_reduce([current.loss, current.correct, current.samples])
        seen_all = self._all_reduce_array(seen)
        if not (seen_all == 1).all():
            raise WorkFailed(f"epoch {epoch} did not see every training sample exactly once "
                             f"({int((seen_all == 0).sum())} missed, {int((seen_all > 1).sum())} repeated): a bug.")
        reduced = self.schedule.after_epoch(epoch, val["top1"])
        row = {
            "epoch": epoch, "lr": lr, "train_loss": totals[0] / totals[2], "train_top1_error": 1 - totals[1] / totals[2],
            "val_loss": val["loss"], "val_top1_error": val["top1"], "val_top5_error": val["top5"],
            "samples": int(totals[2]), "images_per_second": round(totals[2] / max(train_time, 1e-9), 2),
            "train_seconds": round(train_time, 3), "val_seconds": round(val_seconds, 3),
            "lr_reduced_after": reduced, "time": rundir._now(),
        }
        improved = self.state.best_top1 is None or val["top1"] < self.state.best_top1
        if improved:
            self.state.best_top1, self.state.best_top5, self.state.best_epoch = val["top1"], val["top5"], epoch
        self.state.epoch, self.state.current = epoch, _Epoch()
        if self.leader:
            # last.pt goes last: until it is written a resume redoes this epoch, identically.
            rundir.append_jsonl(self.dir.metrics, row)
            weights = self._weights(epoch, val)
            rundir.save_torch(self.dir.epoch_checkpoint(epoch), weights)
            if improved:
                rundir.save_torch(self.dir.best_checkpoint, weights)
            self._prune()
            self._save_last()
            log(f"epoch {epoch}/{config.epochs}: train loss {row['train_loss']:.4f}, train error "
                f"{row['train_top1_error']:.2%}, val top-1/top-5 error {val['top1']:.2%}/{val['top5']:.2%}, "
                f"lr {lr:g}{' (divided by 10 now)' if reduced else ''}, {row['images_per_second']:.1f} img/s")
        return row

    def _train(self, epoch: int, batches: list[np.ndarray], current: _Epoch, seen: np.ndarray) -> None:
        config, runtime = self.config, self.runtime
        mine = [rank_part(b, runtime.rank, runtime.world) for b in batches[current.step:]]
        loader = batch_loader(self.train_split, mine, workers=runtime.workers, decode=runtime.decode,
                              pin_memory=runtime.is_cuda)
        memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
        loss_sum = torch.zeros((), device=runtime.primary)
        correct = torch.zeros((), device=runtime.primary, dtype=torch.long)
        self.net.train()
        bar_factory = self.progress if self.leader else no_progress
        remaining = sum(len(b) for b in batches[current.step:])
        with bar_factory(f"epoch {epoch}/{config.epochs}", remaining) as bar:
            tick = time.monotonic()
            for images, labels, indices in loader:
                step = current.step + 1
                seed = _step_seed(config.seed, epoch, step, runtime.rank)
                generator = torch.Generator().manual_seed(seed)
                torch.manual_seed(seed + 1)  # dropout's masks
                x = to_device(images, runtime.primary)
                y = labels.to(runtime.primary, non_blocking=True)
                x = augment.train_batch(x, self.mean_image, crop=self.crop, generator=generator,
                                        lighting=self.lighting, flip=config.flip, memory_format=memory_format)
                with device_ops.autocast(runtime):
                    logits = self.model(x)
                batch_loss = F.cross_entropy(logits.float(), y, reduction="sum")
                # Each rank's sum over the global batch size, times the world size that DDP divides by:
                # the gradient of the global batch's mean loss, however the batch was split.
                (batch_loss * (runtime.world / len(batches[step - 1]))).backward()
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                loss_sum += batch_loss.detach()
                correct += (logits.detach().argmax(1) == y).sum()
                seen[indices.numpy()] += 1
                current.step = step
                current.samples += len(y)
                bar.advance(len(batches[step - 1]))
                if step % 20 == 0:
                    bar.note(f"loss {float(loss_sum) / max(current.samples, 1):.4f}")
                self._report_progress(epoch=epoch, epochs=config.epochs, step=step, steps=len(batches))
                if self._due_for_checkpoint(step) or self.stop_signal is not None:
                    current.loss += float(loss_sum)
                    current.correct += int(correct)
                    loss_sum.zero_()
                    correct.zero_()
                    now = time.monotonic()
                    current.seconds += now - tick
                    tick = now
                    if self.leader:
                        self._save_last()
                    if self.stop_signal is not None:
                        raise WorkFailed(
                            f"stopped by {signal.Signals(self.stop_signal).name} in epoch {epoch} at step {step}; "
                            f"saved {self.dir.last_checkpoint}: run the same command again to resume.")
            device_ops.synchronize(runtime)
            current.seconds += time.monotonic() - tick
            current.loss += float(loss_sum)
            current.correct += int(correct)

    def _validate(self) -> dict:
        runtime = self.runtime
        indices = np.arange(len(self.val_split))[runtime.rank::runtime.world]
        probs = predict(self.net, self.val_split, self.mean_image, crops=1, crop=self.crop, runtime=runtime,
                        batch_size=VAL_BATCH, indices=indices)
        labels = self.val_split.labels[indices]
        hits = topk_correct(probs, labels) if len(indices) else {1: 0, 5: 0}
        loss = cross_entropy(probs, labels) * len(indices) if len(indices) else 0.0
        top1, top5, loss_sum, n = self._all_reduce([hits[1], hits[5], loss, len(indices)])
        return {"top1": 1 - top1 / n, "top5": 1 - top5 / n, "loss": loss_sum / n}

    # ------------------------------------------------------------ checkpoints

    def _due_for_checkpoint(self, step: int) -> bool:
        c = self.checkpointing
        if c.steps and step % c.steps == 0:
            return True
        return bool(c.minutes) and time.monotonic() - self.last_save >= c.minutes * 60

    def _save_last(self) -> None:
        state = self.state
        rundir.save_torch(self.dir.last_checkpoint, {
            **self._weights(state.epoch, None),
            "kind": "resume",
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "train_config": to_dict(self.config),
            "devices": len(self.runtime.devices),
            "best": {"top1": state.best_top1, "top5": state.best_top5, "epoch": state.best_epoch},
            "current": state.current.to_dict(),
            "metrics_rows": state.epoch,
        })
        self.last_save = time.monotonic()

    def _weights(self, epoch: int, val: dict | None) -> dict:
        """What eval, ensemble and report need: the weights in canonical form and how to use them."""
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": "weights",
            "alexctl_version": __version__,
            "model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "model_config": to_dict(self.model_config),
            "num_classes": self.train_split.num_classes,
            "epoch": epoch,
            "val_top1_error": val["top1"] if val else None,
            "val_top5_error": val["top5"] if val else None,
            "mean_image": self.mean_image.cpu(),
            "data": {"dir": str(self.train_split.root.parent.resolve()), "train_identity": self.train_split.identity,
                     "val_identity": self.val_split.identity, "image_size": self.train_split.image_size,
                     "classes": list(self.train_split.classes.wnids)},
        }

    def _resume(self) -> None:
        ckpt = rundir.load_torch(self.dir.last_checkpoint)
        if ckpt.get("kind") != "resume" or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{self.dir.last_checkpoint} is not an alexctl resume checkpoint of this version.")
        if ckpt["devices"] != len(self.runtime.devices):
            raise UserError(f"{self.dir.root} was trained on {ckpt['devices']} device(s) per process; resume it with "
                            f"the same number in --devices (the optimizer's state is laid out per device).")
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        best = ckpt["best"]
        current = _Epoch(**ckpt["current"])
        self.state = _State(ckpt["epoch"], best["top1"], best["top5"], best["epoch"], current,
                            {"epoch": ckpt["epoch"], "step": current.step})
        if self.leader:
            rows = rundir.read_jsonl(self.dir.metrics)[: ckpt["metrics_rows"]]
            rundir.rewrite_jsonl(self.dir.metrics, rows)  # drop rows of epochs the checkpoint does not cover
            if self.state.epoch < self.config.epochs:
                log(f"resuming {self.dir.root} after epoch {ckpt['epoch']}"
                    + (f", step {current.step}" if current.step else ""))

    def _prune(self) -> None:
        epochs = sorted(self.dir.checkpoints.glob("epoch-*.pt"))
        for old in epochs[: max(0, len(epochs) - self.checkpointing.keep)]:
            old.unlink(missing_ok=True)

    # ------------------------------------------------------------ helpers

    def _report_progress(self, **where) -> None:
        """Every 10 s, rewrite the lock record with where training stands (for `alexctl status`)."""
        if self.lock is not None and time.monotonic() - self.last_report >= 10:
            self.last_report = time.monotonic()
            self.lock.update(**where)

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum  # acted on after the current step: the checkpoint is consistent

    def _all_reduce(self, values: list[float]) -> list[float]:
        if self.runtime.world == 1:
            return [float(v) for v in values]
        t = torch.tensor(values, dtype=torch.float64, device=self.runtime.primary)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def _all_reduce_array(self, values: np.ndarray) -> np.ndarray:
        if self.runtime.world == 1:
            return values
        t = torch.from_numpy(values).to(self.runtime.primary)
        torch.distributed.all_reduce(t)
        return t.cpu().numpy()

    def _summary(self, started: float, rates: list[float]) -> dict:
        rows = rundir.read_jsonl(self.dir.metrics)
        last = rows[-1] if rows else {}
        return {
            "run_dir": str(self.dir.root),
            "checkpoint": str(self.dir.best_checkpoint),
            "last_checkpoint": str(self.dir.last_checkpoint),
            "epochs_completed": self.state.epoch,
            "metrics": str(self.dir.metrics),
            "val_top1_error": self.state.best_top1,
            "val_top5_error": self.state.best_top5,
            "best_epoch": self.state.best_epoch,
            "last_val_top1_error": last.get("val_top1_error"),
            "last_val_top5_error": last.get("val_top5_error"),
            "images_per_second": round(float(np.median(rates)), 2) if rates else None,
            "resumed_from": self.state.resumed_from,
            "seconds": round(time.monotonic() - started, 3),
        }


def _step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1, np.uint64)[0] >> 1)


def _record(data_dir, train_split, val_split, model_config, config, runtime, command) -> dict:
    return {
        "kind": "train-config",
        "alexctl_version": __version__,
        "created": rundir._now(),
        "command": command,
        "model": to_dict(model_config),
        "train": to_dict(config),
        "data": {"dir": str(Path(data_dir).resolve()), "train_identity": train_split.identity,
                 "val_identity": val_split.identity, "classes": train_split.num_classes,
                 "image_size": train_split.image_size, "train_images": len(train_split),
                 "val_images": len(val_split)},
        "runtime": runtime.describe(),
    }


def _check_or_write_config(run: rundir.RunDir, record: dict) -> None:
    """A run directory trains one thing: resuming with other data or other settings is refused."""
    if not run.config.exists():
        rundir.write_json(run.config, record)
        return
    saved = rundir.read_json(run.config, "run configuration")
    problems = []
    if saved["model"] != record["model"]:
        problems += [f"model {k} {saved['model'].get(k)!r} -> {v!r}" for k, v in record["model"].items()
                     if saved["model"].get(k) != v]
    old, new = from_dict(TrainConfig, saved["train"]), from_dict(TrainConfig, record["train"])
    problems += [f"{k} {getattr(old, k)!r} -> {getattr(new, k)!r}" for k in new.resumable_with(old)]
    for key in ("train_identity", "val_identity"):
        if saved["data"][key] != record["data"][key]:
            problems.append(f"data directory {saved['data']['dir']} -> {record['data']['dir']} (other shards)")
            break
    if problems:
        raise UserError(f"{run.root} holds a run with other settings ({'; '.join(problems)}); "
                        "use a new run directory, or the original settings to resume.")
    if saved["train"]["epochs"] != record["train"]["epochs"]:
        rundir.write_json(run.config, {**saved, "train": record["train"]})  # training further is allowed
