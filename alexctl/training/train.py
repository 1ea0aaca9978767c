"""`alexctl train`: the paper's network, learning rule and schedule on a preprocessed data directory.

    train():  data -> network, optimizer, schedule -> run directory (config.json) -> resume
              -> each epoch: train_one_epoch -> validate -> metrics row, checkpoints, schedule
              -> run.json

    train_one_epoch: batches -> random 224 crop + flip + PCA lighting - mean (on the device)
                     -> AlexNet -> cross-entropy -> the paper's SGD step

Exact resume: every random choice of a step (the augmentation's draws and dropout's masks)
comes from generators seeded by (seed, epoch, step, rank), and each epoch's sample order from
(seed, epoch). A checkpoint therefore needs only the model, the optimizer, the schedule and the
step it was taken at: a killed run started again from its last checkpoint computes exactly what
the uninterrupted run would have (bit for bit in --deterministic mode on the CPU).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alexctl import __version__, rundir
from alexctl.config import CheckpointOptions, ModelConfig, TrainConfig, to_dict
from alexctl.console import ProgressFactory, log, no_progress
from alexctl.data import augment
from alexctl.data.loader import rank_part
from alexctl.data.resident import open_source
from alexctl.device import (
    Runtime,
    all_reduce,
    all_reduce_array,
    autocast,
    compiled,
    configure,
    distributed,
    peers_watched,
    process_group,
    reading,
    synchronize,
)
from alexctl.errors import WorkFailed
from alexctl.inference.core import predict
from alexctl.metrics import cross_entropy, topk_correct
from alexctl.nets.build import runtime_model
from alexctl.nets.kernel_grid import grid_columns
from alexctl.schedule import parse_schedule
from alexctl.stop import StopSignals
from alexctl.training.optim import PaperSGD, build_optimizer, hold_for_compile
from alexctl.training.resume import (
    EpochSums,
    Progress,
    RunRecord,
    Saver,
    check_finite,
    check_ranks_agree,
    check_run_dir,
    config_record,
    prepare_run_dir,
    resume,
    resume_point,
    saved_state,
    summarise,
)
from alexctl.training.splits import TrainingData, load_training_data
from alexctl.training.tensorboard import Board, steps_per_epoch

VAL_BATCH = 256
HELD = {"decoded": "held decoded", "jpeg": "held as JPEG", "disk": "read from disk"}  # alexctl.data.resident


def train(
    data_dir: Path,
    run_dir: Path,
    model_config: ModelConfig,
    config: TrainConfig,
    runtime: Runtime,
    checkpointing: CheckpointOptions = CheckpointOptions(),
    progress: ProgressFactory = no_progress,
    command: list[str] | None = None,
) -> dict:
    """Train (or resume, or report a finished) run in `run_dir`; returns the `--json` summary.

    Everything that can be refused (data, settings, a run directory holding another run, ranks that
    disagree on any of these) is checked before the run directory is touched."""
    with (
        process_group(runtime),
        peers_watched(runtime),
    ):  # a rank lost before the run directory's lock: one sentence, not recorded
        return _train(data_dir, run_dir, model_config, config, runtime, checkpointing, progress, command)


def _train(data_dir, run_dir, model_config, config, runtime, checkpointing, progress, command) -> dict:
    started = time.monotonic()
    configure(runtime)
    data = load_training_data(Path(data_dir), model_config, config)
    identities = {f"{s} split": data.describe()[f"{s}_identity"][:12] for s in ("train", "val")}  # of the shards
    check_ranks_agree(runtime, {"the data": identities, "the settings": {**to_dict(model_config), **to_dict(config)}})
    torch.manual_seed(config.seed)  # the initial weights
    net = runtime_model(model_config, data.num_classes, runtime)
    optimizer = build_optimizer(
        net,
        rule=config.update_rule,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        decay_biases=config.decay_biases,
    )
    schedule = parse_schedule(config.schedule, config.lr)
    step = make_train_step(distributed(net, runtime), optimizer, runtime)
    augmenter = Augmenter.of(data, model_config, config, runtime)
    run = rundir.RunDir(Path(run_dir))
    record = config_record(data.describe(), model_config, config, runtime, command)
    check_run_dir(run, record)
    with (
        rundir.DirectoryLock(run.lock, "train") if runtime.leader else nullcontext() as lock,
        rundir.failures_recorded(run.failed, "train", enabled=runtime.leader, lock=lock),
        peers_watched(runtime),  # recorded as the failure it is
        StopSignals() as stop,
        open_source(data.train, **reading(runtime)) as train_source,
        open_source(data.val, **reading(runtime)) as val_source,
        Board(
            run.tensorboard,
            steps_per_epoch=steps_per_epoch(len(data.indices), config.batch_size),
            columns=grid_columns(model_config.arch, model_config.columns),
            enabled=runtime.leader,
        ) as board,
    ):
        saved = saved_state(run)
        check_ranks_agree(runtime, {"the resume point": resume_point(saved)})
        if runtime.leader:
            prepare_run_dir(run, record)
        state = resume(run, saved, net, optimizer, schedule, runtime)
        del saved
        held = {"train": describe_source(train_source), "val": describe_source(val_source)}
        if runtime.leader:
            log(first_line(run.root, state, config.epochs, len(data.indices), held))
        board.start(state, net)
        saver = Saver(
            run,
            net,
            optimizer,
            schedule,
            state,
            about=RunRecord(
                model_config,
                list(data.train.classes.wnids),
                list(data.train.classes.names),
                augmenter.mean_image,
                data.describe(),
            ),
            runtime=runtime,
            options=checkpointing,
            lock=lock,
        )
        while state.epoch < config.epochs:
            epoch = state.epoch + 1
            schedule.apply(optimizer)
            batches = data.epoch_batches(config.batch_size, config.seed, epoch)
            seen = seen_before(data, batches, state.current.step, runtime)
            todo = sum(len(b) for b in batches[state.current.step :])
            with (progress if runtime.leader else no_progress)(f"epoch {epoch}/{config.epochs}", todo) as bar:
                train_one_epoch(
                    step,
                    train_source,
                    batches,
                    augmenter,
                    epoch=epoch,
                    sums=state.current,
                    seen=seen,
                    runtime=runtime,
                    seed=config.seed,
                    between_steps=board.watch(saver.between_steps(epoch, config.epochs, batches, stop, bar), epoch),
                )
            val = validate(net, data, val_source, augmenter.mean_image, runtime)
            row, improved = end_of_epoch(state, data, epoch, schedule, val, seen, runtime)
            board.end_of_epoch(row, final=epoch == config.epochs)
            saver.end_of_epoch(epoch, val, row, improved, final=epoch == config.epochs)
            if runtime.leader:
                log(describe_row(row, config.epochs, chance=1 - 1 / data.num_classes))
        summary = {
            **summarise(run, state, started, data.num_classes),
            "splits": held,
            "tensorboard": str(run.tensorboard) if board.enabled else None,
        }
        if runtime.leader:
            rundir.write_json(
                run.manifest, {"kind": "train-run", "alexctl_version": __version__, "created": rundir.now(), **summary}
            )
    return summary


# ---------------------------------------------------------------- one epoch


class Augmenter:
    """The section 4.1 training transform of a uint8 batch on the device: a random (or the center) crop, a
    random reflection, PCA lighting, minus the training set's mean image."""

    def __init__(
        self,
        stats: dict[str, np.ndarray],
        *,
        crop: int,
        lighting_std: float,
        flip: bool,
        random_crop: bool,
        runtime: Runtime,
    ) -> None:
        # (3, S, S) float32 on the device: the training set's mean image, subtracted from every image (section 2).
        self.mean_image = augment.mean_image_tensor(stats["mean_image"], runtime.primary)
        self.lighting = (
            augment.Lighting.from_stats(stats["eigenvalues"], stats["eigenvectors"], std=lighting_std)
            if lighting_std > 0
            else None
        )
        self.crop, self.flip, self.random, self.runtime = crop, flip, random_crop, runtime

    @staticmethod
    def of(data: TrainingData, model_config: ModelConfig, config: TrainConfig, runtime: Runtime) -> "Augmenter":
        return Augmenter(
            data.stats,
            crop=model_config.input_size,
            lighting_std=config.lighting_std,
            flip=config.flip,
            random_crop=config.train_crop == "random",
            runtime=runtime,
        )

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment.train_batch(
            images,
            self.mean_image,
            crop=self.crop,
            generator=generator,
            lighting=self.lighting,
            flip=self.flip,
            random_crop=self.random,
            memory_format=self.runtime.memory_format,
            dtype=self.runtime.dtype,  # bf16 with bf16 precision: half the bytes the step reads, as autocast casts
        )


def make_train_step(
    model, optimizer: torch.optim.Optimizer, runtime: Runtime, *, backend: str | None = None
) -> Callable:
    """(x, y, scale) -> (loss sum, top-1 hits), both 0-d tensors on the device, after one SGD step.

    The loss is summed and the gradient scaled by `scale` = world size / global batch, so that DDP's
    average over ranks gives the gradient of the global batch's mean loss however the batch was split.
    With --compile, the forward and the loss are one compiled graph (its backward compiled with it) and the
    optimizer's update another; with one process both are compiled whole (fullgraph: a graph break is an
    error, which tests/training/test_train_step.py checks on the CPU with `backend`). DDP's buckets break the graph on
    purpose, so under torchrun the forward is compiled without fullgraph. Neither recompiles when the rate
    changes or the last batch is short (tests/training/test_optim.py).
    """

    def forward_and_loss(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(runtime):
            logits = model(x)
        return F.cross_entropy(logits.float(), y, reduction="sum"), (logits.argmax(1) == y).sum()

    if runtime.compile:
        hold_for_compile(optimizer)  # momentum buffers made here, the lr a tensor: no recompile when it changes
    forward = compiled(forward_and_loss, runtime, fullgraph=runtime.world == 1, backend=backend)
    # torch.optim.SGD breaks its own graph on purpose (torch/optim/optimizer.py: _use_grad); PaperSGD is whole.
    update = compiled(optimizer.step, runtime, fullgraph=isinstance(optimizer, PaperSGD), backend=backend)

    def step(x: torch.Tensor, y: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        if runtime.compile:  # the batch size symbolic from the first step: a short last batch does not recompile
            torch._dynamo.maybe_mark_dynamic(x, 0)
            torch._dynamo.maybe_mark_dynamic(y, 0)
        loss, correct = forward(x, y)
        (loss * scale).backward()
        update()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach(), correct

    return step


def train_one_epoch(
    step: Callable,
    source,
    batches: list[np.ndarray],
    augmenter: Augmenter,
    *,
    epoch: int,
    sums: EpochSums,
    seen: np.ndarray,
    runtime: Runtime,
    seed: int,
    between_steps: Callable[[int, Callable[[], None]], None],
) -> None:
    """Train on batches[sums.step:] (this rank's share of each), adding to `sums` and counting in
    `seen` how often each train sample was used.

    `between_steps(step, flush)` runs after every step: it may save a checkpoint (after calling
    `flush`, which moves the device-side sums into `sums`) or stop."""
    loss_sum = torch.zeros((), device=runtime.primary)
    correct = torch.zeros((), device=runtime.primary, dtype=torch.long)
    tick = [time.monotonic()]

    def flush() -> None:
        sums.loss += float(loss_sum)
        sums.correct += int(correct)
        loss_sum.zero_()
        correct.zero_()
        now = time.monotonic()
        sums.seconds += now - tick[0]
        tick[0] = now

    mine = [rank_part(b, runtime.rank, runtime.world) for b in batches[sums.step :]]
    for images, labels, indices in source.batches(mine):
        n = sums.step + 1
        generator = torch.Generator().manual_seed(step_seed(seed, epoch, n, runtime.rank))
        torch.manual_seed(step_seed(seed, epoch, n, runtime.rank) + 1)  # dropout's masks
        batch_loss, batch_correct = step(augmenter(images, generator), labels, runtime.world / len(batches[n - 1]))
        loss_sum += batch_loss
        correct += batch_correct
        seen[indices] += 1
        sums.step, sums.samples = n, sums.samples + len(indices)
        between_steps(n, flush)
    synchronize(runtime)
    flush()


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1, np.uint64)[0] >> 1)


def validate(net: torch.nn.Module, data: TrainingData, source, mean_image: torch.Tensor, runtime: Runtime) -> dict:
    """Center-crop top-1 and top-5 error and mean loss on the val split, each rank taking every world-th image."""
    indices = np.arange(len(data.val))[runtime.rank :: runtime.world]
    started = time.monotonic()
    probs = predict(net, source, indices, mean_image, crops=1, runtime=runtime, batch_size=VAL_BATCH)
    labels = data.val.labels[indices]
    hits = topk_correct(probs, labels) if len(indices) else {1: 0, 5: 0}
    loss = cross_entropy(probs, labels) * len(indices) if len(indices) else 0.0
    top1, top5, loss_sum, n = all_reduce([hits[1], hits[5], loss, len(indices)], runtime)
    return {"top1": 1 - top1 / n, "top5": 1 - top5 / n, "loss": loss_sum / n, "seconds": time.monotonic() - started}


# ---------------------------------------------------------------- the end of an epoch


def seen_before(data: TrainingData, batches: list[np.ndarray], step: int, runtime: Runtime) -> np.ndarray:
    """(len(train),) int32: this rank's samples of the first `step` batches, counted once (a resumed epoch)."""
    seen = np.zeros(len(data.train), np.int32)
    for b in batches[:step]:
        seen[rank_part(b, runtime.rank, runtime.world)] += 1
    return seen


def end_of_epoch(
    state: Progress, data: TrainingData, epoch: int, schedule, val: dict, seen: np.ndarray, runtime: Runtime
) -> tuple[dict, bool]:
    """The epoch's metrics row, after checking that every sample was seen exactly once; the schedule and
    the best epoch move on. Returns (row, whether this epoch is the best so far)."""
    sums = state.current
    loss, correct, samples = all_reduce([sums.loss, sums.correct, sums.samples], runtime)
    check_finite(loss, epoch, sums.step)  # before anything of the epoch is saved
    seen = all_reduce_array(seen, runtime)
    expected = np.zeros(len(data.train), np.int32)
    expected[data.indices] = 1
    if not np.array_equal(seen, expected):
        raise WorkFailed(
            f"epoch {epoch} did not see every training sample exactly once "
            f"({int(((seen == 0) & (expected == 1)).sum())} missed, {int((seen > expected).sum())} "
            "repeated or foreign): a bug."
        )
    lr = schedule.lr
    reduced = schedule.after_epoch(epoch, val["top1"])
    row = {
        "epoch": epoch,
        "lr": lr,
        "train_loss": loss / samples,
        "train_top1_error": 1 - correct / samples,
        "val_loss": val["loss"],
        "val_top1_error": val["top1"],
        "val_top5_error": val["top5"],
        "samples": int(samples),
        "images_per_second": round(samples / max(sums.seconds, 1e-9), 2),
        "train_seconds": round(sums.seconds, 3),
        "val_seconds": round(val["seconds"], 3),
        "lr_reduced_after": reduced,
        "time": rundir.now(),
    }
    improved = state.best_top1 is None or val["top1"] < state.best_top1
    if improved:
        state.best_top1, state.best_top5, state.best_epoch = val["top1"], val["top5"], epoch
    state.epoch, state.current = epoch, EpochSums()
    state.rows.append(row)
    return row, improved


def describe_source(source) -> dict:
    """Where a split's images are held while training, and why (alexctl.data.resident): for --json and run.json."""
    return {"images": len(source.split), "residency": source.residency, "reason": source.reason}


def first_line(root: Path, state: Progress, epochs: int, images: int, held: dict) -> str:
    """What this invocation does, in one short line (the splits' residency reasons are in --json and run.json)."""
    if state.epoch >= epochs:
        return f"{root}: {state.epoch} of {epochs} epochs trained; nothing to do (raise --epochs to train further)."
    where = f" from step {state.current.step}" if state.current.step else ""
    start = f"resuming at epoch {state.epoch + 1}{where}" if state.epoch or where else "epoch 1"
    return (
        f"{root}: {start} of {epochs}, {images:,} training images {HELD[held['train']['residency']]}, "
        f"{held['val']['images']:,} val {HELD[held['val']['residency']]}."
    )


def describe_row(row: dict, epochs: int, chance: float) -> str:
    return (
        f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f}, train error "
        f"{row['train_top1_error']:.2%}, val top-1/top-5 error {row['val_top1_error']:.2%}/"
        f"{row['val_top5_error']:.2%} (chance {chance:.2%}), lr {row['lr']:g}"
        f"{' (divided by 10 now)' if row['lr_reduced_after'] else ''}, {row['images_per_second']:.1f} img/s"
    )
