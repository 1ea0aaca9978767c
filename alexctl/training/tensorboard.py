"""Live training curves for TensorBoard: event files in RUN_DIR/tensorboard/, written by rank 0 as training goes.

    each epoch end             the epoch's metrics.jsonl row (EPOCH_TAGS: losses, errors, lr, images/s)
    every STEP_EVERY steps     the epoch so far (STEP_TAGS: mean loss and top-1 error of its training batches)
    epoch 1, every KERNELS_EVERY-th and the last epoch, and the initial weights
                               conv1/kernels: the conv1 kernel grid (Figure 3, alexctl.nets.kernel_grid)

`tensorboard --logdir runs/` then shows every run under runs/ side by side (run names are the folders).

One step axis for every tag: training steps (global batches) since the start of the run, so an epoch
end is at epoch x steps-per-epoch. A resumed run continues its curves without duplicate points: its writer
opens with purge_step = the step last.pt resumes from + 1, which tells TensorBoard to drop whatever the
interrupted process wrote after that step (the resumed run computes it again), and it writes only later
steps. Every write is flushed at once, so that what a checkpoint covers is on disk before the checkpoint.

TensorBoard is optional (`pip install 'alexctl[tensorboard]'`): without it training says so once and
carries on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from alexctl.console import log
from alexctl.nets.kernel_grid import conv1_weight, kernel_grid
from alexctl.training.resume import Progress

# TensorBoard tag -> metrics.jsonl key, written at each epoch end (the groups before "/" are TensorBoard's panels)
EPOCH_TAGS = {
    "loss/train": "train_loss",
    "loss/val": "val_loss",
    "error/train_top1": "train_top1_error",
    "error/val_top1": "val_top1_error",
    "error/val_top5": "val_top5_error",
    "lr": "lr",
    "images_per_second": "images_per_second",
}
STEP_TAGS = ("loss/train_epoch_so_far", "error/train_top1_epoch_so_far")
STEP_EVERY = 100  # steps between the epoch-so-far points (ImageNet at batch 128: 100 points an epoch)
KERNELS_EVERY = 5  # epochs between pictures of the conv1 kernels
KERNELS_TAG = "conv1/kernels"
MISSING = "TensorBoard curves are off: the tensorboard package is not installed (pip install 'alexctl[tensorboard]')."


class Board:
    """A run's TensorBoard writer. Disabled (every call does nothing) on ranks other than 0 and when
    tensorboard is not installed. The event file is opened at the first write, so a finished run started
    again writes nothing."""

    def __init__(self, folder: Path, *, steps_per_epoch: int, columns: int, enabled: bool) -> None:
        self.folder, self.steps_per_epoch, self.columns = Path(folder), steps_per_epoch, columns
        self.writer_class = _writer_class() if enabled else None
        self.enabled = self.writer_class is not None
        self.missing = enabled and not self.enabled  # said once, by start()
        self.writer = None
        self.resumed_at = 0  # the global step last.pt resumes from
        self.state: Progress | None = None
        self.net: torch.nn.Module | None = None

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def start(self, state: Progress, net: torch.nn.Module) -> None:
        """After the resume: where the curves continue from; a fresh run pictures its initial kernels."""
        if self.missing:
            log(MISSING)
        self.state, self.net = state, net
        self.resumed_at = state.epoch * self.steps_per_epoch + state.current.step
        if self.resumed_at == 0:
            self._kernels(0)

    def watch(self, between_steps: Callable, epoch: int) -> Callable:
        """`between_steps` (train_one_epoch's hook), which also writes the epoch-so-far points every STEP_EVERY
        steps (`flush` moves the device's running sums into the epoch's sums: one synchronisation)."""
        if not self.enabled:
            return between_steps

        def after(step: int, flush: Callable[[], None]) -> None:
            between_steps(step, flush)
            if step % STEP_EVERY == 0:
                flush()
                sums = self.state.current  # rank 0's samples (all ranks' up to the last mid-epoch save)
                at = (epoch - 1) * self.steps_per_epoch + step
                self._scalars(dict(zip(STEP_TAGS, (sums.loss / sums.samples, 1 - sums.correct / sums.samples))), at)

        return after

    def end_of_epoch(self, row: dict, final: bool) -> None:
        """The epoch's metrics row, and the kernels on the epochs that picture them. Called before the epoch's
        checkpoint is saved, so a crash between the two leaves points that the resume purges."""
        if not self.enabled:
            return
        epoch = row["epoch"]
        at = epoch * self.steps_per_epoch
        self._scalars({tag: row[key] for tag, key in EPOCH_TAGS.items() if row.get(key) is not None}, at)
        if epoch == 1 or epoch % KERNELS_EVERY == 0 or final:
            self._kernels(at)

    def _scalars(self, values: dict[str, float], step: int) -> None:
        writer = self._open(step)
        if writer is None:
            return
        for tag, value in values.items():
            if math.isfinite(value):
                writer.add_scalar(tag, value, step)
        writer.flush()

    def _kernels(self, step: int) -> None:
        writer = self._open(step)
        if writer is not None:
            writer.add_image(KERNELS_TAG, kernel_grid(conv1_weight(self.net), columns=self.columns), step)
            writer.flush()

    def _open(self, step: int):
        """The writer, opened at the first write; None for a step the resumed-from checkpoint already covers."""
        if not self.enabled or (step <= self.resumed_at and self.resumed_at > 0):
            return None
        if self.writer is None:
            purge = self.resumed_at + 1 if self.resumed_at else 0
            self.writer = self.writer_class(log_dir=str(self.folder), purge_step=purge)
        return self.writer


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Global batches in an epoch of `images` (the last may be short: alexctl.data.loader.epoch_batches)."""
    return -(-images // batch_size)


def _writer_class():
    """torch.utils.tensorboard.SummaryWriter, or None when tensorboard is not installed."""
    try:
        # Optional and heavy (tensorboard, protobuf): imported only by a run that writes curves.
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter
