"""`alexctl train`: settings from the defaults, the run's own config.json (a resume), a --config file
and the command line, in that order; then alexctl.training.train.train."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from alexctl.cli.options import (
    CHECKPOINT_EPOCHS,
    CHECKPOINT_MINUTES,
    CHECKPOINT_STEPS,
    DATA,
    JSON,
    KEEP,
    MODEL,
    OPTIMISATION,
    emit,
    error_line,
    given,
    pick,
    runtime_options,
    with_runtime,
)
from alexctl.config import (
    Activation,
    AlphaReading,
    Arch,
    CheckpointOptions,
    DropLayer,
    ModelConfig,
    Pooling,
    TrainConfig,
    TrainCrop,
    UpdateRule,
)
from alexctl.console import progress

_M, _T = ModelConfig(), TrainConfig()


@with_runtime()
def command(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(
        ...,
        metavar="RUN_DIR",
        help="Run directory: config, metrics.jsonl, checkpoints "
        "(created if missing). An existing run resumes with its own settings.",
    ),
    data: Path = typer.Option(
        None,
        "--data",
        metavar="DIR",
        rich_help_panel=DATA,
        show_default=False,
        help="Data directory written by `alexctl preprocess` (train and val splits); "
        "a resumed run reads it from its config.json.",
    ),
    config_file: Path = typer.Option(
        None,
        "--config",
        metavar="FILE",
        rich_help_panel=DATA,
        show_default=False,
        help="Training settings from a TOML or JSON file (keys as the options, e.g. "
        "lr = 0.005), or another run's config.json; the command line overrides it.",
    ),
    subset: int = typer.Option(
        _T.subset,
        "--subset",
        metavar="N",
        rich_help_panel=DATA,
        help="Train on a seeded, class-balanced subset of N training images (0: all).",
    ),
    arch: Arch = typer.Option(
        _M.arch,
        "--arch",
        rich_help_panel=MODEL,
        help="alexnet (224x224 crops of 256x256 images) or cifar (the paper's 4-layer "
        "CIFAR-10 net, 24x24 crops of 32x32 images).",
    ),
    lrn: bool = typer.Option(
        _M.lrn,
        "--lrn/--no-lrn",
        rich_help_panel=MODEL,
        help="Local response normalisation after conv1 and conv2 (3.3).",
    ),
    lrn_alpha: AlphaReading = typer.Option(
        _M.lrn_alpha,
        "--lrn-alpha",
        rich_help_panel=MODEL,
        help="code: k + alpha/n * sum (the released code, Caffe, torch); paper: k + alpha * sum (the printed formula).",
    ),
    pooling: Pooling = typer.Option(
        _M.pooling, "--pooling", rich_help_panel=MODEL, help="overlapping: 3x3 stride 2 (3.4); plain: 2x2 stride 2."
    ),
    activation: Activation = typer.Option(
        _M.activation, "--activation", rich_help_panel=MODEL, help="relu (3.1) or tanh."
    ),
    columns: int = typer.Option(
        _M.columns,
        "--columns",
        metavar="N",
        rich_help_panel=MODEL,
        help="2: the two-column net (3.2); 1: one column with half the kernels.",
    ),
    width: float = typer.Option(
        _M.width,
        "--width",
        metavar="X",
        rich_help_panel=MODEL,
        help="Multiplies every layer's kernels and units (1.0 is the paper's net).",
    ),
    dropout: float = typer.Option(
        _M.dropout, "--dropout", metavar="P", rich_help_panel=MODEL, help="Dropout on fc6 and fc7 outputs (4.2)."
    ),
    drop_layer: DropLayer = typer.Option(
        _M.drop_layer,
        "--drop-layer",
        metavar="LAYER",
        rich_help_panel=MODEL,
        help="Leave out conv3, conv4 or conv5 (section 7: about 2 points of top-1 lost); the next "
        "layer takes its input.",
    ),
    epochs: int = typer.Option(
        _T.epochs,
        "--epochs",
        metavar="N",
        rich_help_panel=OPTIMISATION,
        help="Epochs to train in all (raise it to train a finished run further).",
    ),
    batch_size: int = typer.Option(
        _T.batch_size, "--batch-size", metavar="N", rich_help_panel=OPTIMISATION, help="Global batch size (5)."
    ),
    lr: float = typer.Option(
        _T.lr, "--lr", metavar="X", rich_help_panel=OPTIMISATION, help="Initial learning rate (5)."
    ),
    momentum: float = typer.Option(_T.momentum, "--momentum", metavar="X", rich_help_panel=OPTIMISATION),
    weight_decay: float = typer.Option(_T.weight_decay, "--weight-decay", metavar="X", rich_help_panel=OPTIMISATION),
    update_rule: UpdateRule = typer.Option(
        _T.update_rule,
        "--update-rule",
        rich_help_panel=OPTIMISATION,
        help="paper: v <- 0.9v - 0.0005 lr w - lr g; w <- w + v. pytorch: torch.optim.SGD.",
    ),
    decay_biases: bool = typer.Option(
        _T.decay_biases,
        "--decay-biases/--no-decay-biases",
        rich_help_panel=OPTIMISATION,
        help="Also decay biases (the released code does not).",
    ),
    schedule: str = typer.Option(
        _T.schedule,
        "--schedule",
        metavar="SPEC",
        rich_help_panel=OPTIMISATION,
        help="plateau[:PATIENCE] (divide by 10 when val error stops improving, at most 3 "
        "times), step:E1,E2,... or constant.",
    ),
    lighting_std: float = typer.Option(
        _T.lighting_std,
        "--lighting-std",
        metavar="X",
        rich_help_panel=OPTIMISATION,
        help="PCA colour augmentation alpha std (4.1); 0 switches it off.",
    ),
    flip: bool = typer.Option(
        _T.flip, "--flip/--no-flip", rich_help_panel=OPTIMISATION, help="Random horizontal reflections (4.1)."
    ),
    train_crop: TrainCrop = typer.Option(
        _T.train_crop,
        "--train-crop",
        rich_help_panel=OPTIMISATION,
        help="random: a random patch per image per use (4.1); center: the center "
        "patch (no translations, as Figure 1's unregularised nets).",
    ),
    seed: int = typer.Option(
        _T.seed,
        "--seed",
        metavar="N",
        rich_help_panel=OPTIMISATION,
        help="Seeds the data order, augmentation, dropout and initialisation.",
    ),
    keep: int = KEEP,
    checkpoint_minutes: float = CHECKPOINT_MINUTES,
    checkpoint_steps: int = CHECKPOINT_STEPS,
    checkpoint_epochs: int = CHECKPOINT_EPOCHS,
    as_json: bool = JSON,
    **runtime,
) -> None:
    """Train the paper's network: random 224x224 crops and reflections, PCA colour augmentation,
    SGD with momentum 0.9 and weight decay 0.0005, lr 0.01 divided by 10 when the validation error
    stops improving. The same command again, or `alexctl train RUN_DIR` alone, resumes where it
    stopped; only --epochs and the runtime options may change on a resume.

    Examples:

    \b
        alexctl train runs/seed0 --data data/ --seed 0
        alexctl train runs/seed0
        alexctl train runs/seed1 --config runs/seed0/config.json --seed 1
        torchrun --nproc-per-node 8 -m alexctl train runs/ddp --data data/
    """
    from alexctl import device
    from alexctl.training.train import train

    data_dir, model_config, config = settings(run_dir, data, config_file, given(ctx))
    runtime = device.resolve(runtime_options(ctx.params))
    summary = train(
        data_dir,
        run_dir,
        model_config,
        config,
        runtime,
        pick(CheckpointOptions, ctx.params),
        progress=progress,
        command=sys.argv,
    )
    if runtime.rank != 0:
        return
    chance = 1 - 1 / summary["classes"]
    emit(
        summary,
        as_json,
        [
            f"{summary['run_dir']}: {summary['epochs_completed']} epochs, best val top-1 error "
            f"{error_line(summary['val_top1_error'], chance)}, top-5 {error_line(summary['val_top5_error'], None)}"
            + (f" (epoch {summary['best_epoch']})" if summary["best_epoch"] else ""),
            f"  best checkpoint {summary['checkpoint']}, metrics {summary['metrics']}",
        ],
        command="train",
        directory=run_dir,
    )


def settings(
    run_dir: Path, data: Path | None, config_file: Path | None, typed: dict
) -> tuple[Path, ModelConfig, TrainConfig]:
    """(data directory, model, training) from, in increasing priority: the paper's defaults, the run's own
    config.json (an existing run resumes with what it was started with), --config FILE, the command line.
    What differs from a run's saved settings is refused later by alexctl.training.train (epochs aside)."""
    from alexctl import rundir
    from alexctl.config import read_config_file
    from alexctl.errors import UserError

    layers: dict = {}
    saved_data = None
    run = rundir.RunDir(run_dir)
    if run.config.exists():
        saved = rundir.read_json(run.config, "run configuration")
        layers.update({**saved.get("model", {}), **saved.get("train", {})})
        saved_data = saved.get("data", {}).get("dir")
    from_file = read_config_file(config_file) if config_file is not None else {}
    file_data = from_file.pop("data", None)
    unknown = sorted(set(from_file) - _names(ModelConfig) - _names(TrainConfig))
    if unknown:  # a typo in the file is refused, not ignored
        raise UserError(f"--config {config_file}: unknown setting {unknown[0]!r}.")
    layers.update(from_file)
    layers.update(typed)
    data_dir = data or (Path(file_data) if file_data else None) or (Path(saved_data) if saved_data else None)
    if data_dir is None:
        raise UserError(f"{run_dir} is a new run: give --data DATA_DIR (a directory `alexctl preprocess` wrote).")
    return Path(data_dir), pick(ModelConfig, layers), pick(TrainConfig, layers)


def _names(cls) -> set[str]:
    from dataclasses import fields

    return {f.name for f in fields(cls)}
