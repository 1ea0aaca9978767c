"""`alexctl train`: settings from the defaults, the run's own config.json (a resume), a --config file
and the command line, in that order; then alexctl.training.train.train."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from alexctl.cli.options import (
    DATA,
    MODEL,
    OPTIMISATION,
    C,
    ChannelsLast,
    CheckpointEpochs,
    CheckpointMinutes,
    CheckpointSteps,
    Compile,
    ConvFormOption,
    CudaGraphs,
    DecodeOption,
    Deterministic,
    Devices,
    Json,
    Keep,
    LrnImplOption,
    PrecisionOption,
    R,
    ResidencyOption,
    Workers,
    emit,
    error_line,
    given,
)
from alexctl.config import (
    Activation,
    AlphaReading,
    Arch,
    CheckpointOptions,
    DropLayer,
    ModelConfig,
    Pooling,
    RuntimeOptions,
    TrainConfig,
    TrainCrop,
    UpdateRule,
    from_dict,
)
from alexctl.console import progress

_M, _T = ModelConfig(), TrainConfig()


RunDirArg = Annotated[
    Path,
    typer.Argument(
        metavar="RUN_DIR",
        help="Run directory: config, metrics.jsonl, checkpoints "
        "(created if missing). An existing run resumes with its own settings.",
    ),
]
Data = Annotated[
    Path,
    typer.Option(
        "--data",
        metavar="DIR",
        rich_help_panel=DATA,
        show_default=False,
        help="Data directory written by `alexctl preprocess` (train and val splits); "
        "a resumed run reads it from its config.json.",
    ),
]
ConfigFile = Annotated[
    Path,
    typer.Option(
        "--config",
        metavar="FILE",
        rich_help_panel=DATA,
        show_default=False,
        help="Training settings from a TOML or JSON file (keys as the options, e.g. "
        "lr = 0.005), or another run's config.json; the command line overrides it.",
    ),
]
Subset = Annotated[
    int,
    typer.Option(
        "--subset",
        metavar="N",
        rich_help_panel=DATA,
        help="Train on a seeded, class-balanced subset of N training images (0: all).",
    ),
]
ArchOption = Annotated[
    Arch,
    typer.Option(
        "--arch",
        rich_help_panel=MODEL,
        help="alexnet (224x224 crops of 256x256 images) or cifar (the paper's 4-layer "
        "CIFAR-10 net, 24x24 crops of 32x32 images).",
    ),
]
Lrn = Annotated[
    bool,
    typer.Option(
        "--lrn/--no-lrn", rich_help_panel=MODEL, help="Local response normalisation after conv1 and conv2 (3.3)."
    ),
]
LrnAlpha = Annotated[
    AlphaReading,
    typer.Option(
        "--lrn-alpha",
        rich_help_panel=MODEL,
        help="code: k + alpha/n * sum (the released code, Caffe, torch); paper: k + alpha * sum (the printed formula).",
    ),
]
PoolingOption = Annotated[
    Pooling,
    typer.Option("--pooling", rich_help_panel=MODEL, help="overlapping: 3x3 stride 2 (3.4); plain: 2x2 stride 2."),
]
ActivationOption = Annotated[
    Activation,
    typer.Option("--activation", rich_help_panel=MODEL, help="relu (3.1) or tanh."),
]
Columns = Annotated[
    int,
    typer.Option(
        "--columns",
        metavar="N",
        rich_help_panel=MODEL,
        help="2: the two-column net (3.2); 1: one column with half the kernels.",
    ),
]
Width = Annotated[
    float,
    typer.Option(
        "--width",
        metavar="X",
        rich_help_panel=MODEL,
        help="Multiplies every layer's kernels and units (1.0 is the paper's net).",
    ),
]
Dropout = Annotated[
    float,
    typer.Option("--dropout", metavar="P", rich_help_panel=MODEL, help="Dropout on fc6 and fc7 outputs (4.2)."),
]
DropLayerOption = Annotated[
    DropLayer,
    typer.Option(
        "--drop-layer",
        metavar="LAYER",
        rich_help_panel=MODEL,
        help="Leave out conv3, conv4 or conv5 (section 7: about 2 points of top-1 lost); the next "
        "layer takes its input.",
    ),
]
Epochs = Annotated[
    int,
    typer.Option(
        "--epochs",
        metavar="N",
        rich_help_panel=OPTIMISATION,
        help="Epochs to train in all (raise it to train a finished run further).",
    ),
]
BatchSize = Annotated[
    int,
    typer.Option("--batch-size", metavar="N", rich_help_panel=OPTIMISATION, help="Global batch size (5)."),
]
Lr = Annotated[
    float,
    typer.Option("--lr", metavar="X", rich_help_panel=OPTIMISATION, help="Initial learning rate (5)."),
]
Momentum = Annotated[
    float,
    typer.Option("--momentum", metavar="X", rich_help_panel=OPTIMISATION),
]
WeightDecay = Annotated[
    float,
    typer.Option("--weight-decay", metavar="X", rich_help_panel=OPTIMISATION),
]
UpdateRuleOption = Annotated[
    UpdateRule,
    typer.Option(
        "--update-rule",
        rich_help_panel=OPTIMISATION,
        help="paper: v <- 0.9v - 0.0005 lr w - lr g; w <- w + v. pytorch: torch.optim.SGD.",
    ),
]
DecayBiases = Annotated[
    bool,
    typer.Option(
        "--decay-biases/--no-decay-biases",
        rich_help_panel=OPTIMISATION,
        help="Also decay biases (the released code does not).",
    ),
]
Schedule = Annotated[
    str,
    typer.Option(
        "--schedule",
        metavar="SPEC",
        rich_help_panel=OPTIMISATION,
        help="plateau[:PATIENCE] (divide by 10 when val error stops improving, at most 3 "
        "times), step:E1,E2,... or constant.",
    ),
]
LightingStd = Annotated[
    float,
    typer.Option(
        "--lighting-std",
        metavar="X",
        rich_help_panel=OPTIMISATION,
        help="PCA colour augmentation alpha std (4.1); 0 switches it off.",
    ),
]
Flip = Annotated[
    bool,
    typer.Option("--flip/--no-flip", rich_help_panel=OPTIMISATION, help="Random horizontal reflections (4.1)."),
]
TrainCropOption = Annotated[
    TrainCrop,
    typer.Option(
        "--train-crop",
        rich_help_panel=OPTIMISATION,
        help="random: a random patch per image per use (4.1); center: the center "
        "patch (no translations, as Figure 1's unregularised nets).",
    ),
]
Seed = Annotated[
    int,
    typer.Option(
        "--seed",
        metavar="N",
        rich_help_panel=OPTIMISATION,
        help="Seeds the data order, augmentation, dropout and initialisation.",
    ),
]


def command(
    ctx: typer.Context,
    run_dir: RunDirArg,
    data: Data = None,
    config_file: ConfigFile = None,
    subset: Subset = _T.subset,
    arch: ArchOption = _M.arch,
    lrn: Lrn = _M.lrn,
    lrn_alpha: LrnAlpha = _M.lrn_alpha,
    pooling: PoolingOption = _M.pooling,
    activation: ActivationOption = _M.activation,
    columns: Columns = _M.columns,
    width: Width = _M.width,
    dropout: Dropout = _M.dropout,
    drop_layer: DropLayerOption = _M.drop_layer,
    epochs: Epochs = _T.epochs,
    batch_size: BatchSize = _T.batch_size,
    lr: Lr = _T.lr,
    momentum: Momentum = _T.momentum,
    weight_decay: WeightDecay = _T.weight_decay,
    update_rule: UpdateRuleOption = _T.update_rule,
    decay_biases: DecayBiases = _T.decay_biases,
    schedule: Schedule = _T.schedule,
    lighting_std: LightingStd = _T.lighting_std,
    flip: Flip = _T.flip,
    train_crop: TrainCropOption = _T.train_crop,
    seed: Seed = _T.seed,
    keep: Keep = C.keep,
    checkpoint_minutes: CheckpointMinutes = C.checkpoint_minutes,
    checkpoint_steps: CheckpointSteps = C.checkpoint_steps,
    checkpoint_epochs: CheckpointEpochs = C.checkpoint_epochs,
    as_json: Json = False,
    devices: Devices = R.devices,
    precision: PrecisionOption = R.precision,
    channels_last: ChannelsLast = R.channels_last,
    compile: Compile = R.compile,
    cuda_graphs: CudaGraphs = R.cuda_graphs,
    decode: DecodeOption = R.decode,
    residency: ResidencyOption = R.residency,
    workers: Workers = R.workers,
    lrn_impl: LrnImplOption = R.lrn_impl,
    conv_form: ConvFormOption = R.conv_form,
    deterministic: Deterministic = R.deterministic,
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
    runtime = device.resolve(
        RuntimeOptions(
            devices=devices,
            precision=precision,
            channels_last=channels_last,
            compile=compile,
            cuda_graphs=cuda_graphs,
            decode=decode,
            residency=residency,
            workers=workers,
            lrn_impl=lrn_impl,
            conv_form=conv_form,
            deterministic=deterministic,
        )
    )
    summary = train(
        data_dir,
        run_dir,
        model_config,
        config,
        runtime,
        CheckpointOptions(
            keep=keep,
            checkpoint_minutes=checkpoint_minutes,
            checkpoint_steps=checkpoint_steps,
            checkpoint_epochs=checkpoint_epochs,
        ),
        progress=progress,
        command=sys.argv,
    )
    if runtime.rank == 0:  # the other ranks print nothing
        _print_summary(summary, as_json, run_dir)


def _print_summary(summary: dict, as_json: bool, run_dir: Path) -> None:
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
    return Path(data_dir), from_dict(ModelConfig, layers), from_dict(TrainConfig, layers)


def _names(cls) -> set[str]:
    from dataclasses import fields

    return {f.name for f in fields(cls)}
