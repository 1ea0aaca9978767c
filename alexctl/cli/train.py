"""`alexctl train`: parse the flags into ModelConfig, TrainConfig and a Runtime, run alexctl.train."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer

from alexctl.cli.options import CHANNELS_LAST, COMPILE, DECODE, DEVICES, JSON, LOADER_WORKERS, PRECISION, emit
from alexctl.config import ModelConfig, TrainConfig
from alexctl.console import progress

_M, _T = ModelConfig(), TrainConfig()


class Arch(str, Enum):
    alexnet = "alexnet"
    cifar = "cifar"


class AlphaReading(str, Enum):
    code = "code"
    paper = "paper"


class Pooling(str, Enum):
    overlapping = "overlapping"
    plain = "plain"


class Activation(str, Enum):
    relu = "relu"
    tanh = "tanh"


class UpdateRule(str, Enum):
    paper = "paper"
    pytorch = "pytorch"


def command(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="Run directory: config, metrics.jsonl, checkpoints (created if missing)."),
    data: Path = typer.Option(..., "--data", help="Data directory written by `alexctl preprocess` (train and val splits)."),
    arch: Arch = typer.Option(Arch(_M.arch), "--arch", help="alexnet (224x224 crops of 256x256 images) or cifar "
                              "(the paper's 4-layer CIFAR-10 net, 24x24 crops of 32x32 images)."),
    lrn: bool = typer.Option(_M.lrn, "--lrn/--no-lrn", help="Local response normalisation after conv1 and conv2 (3.3)."),
    lrn_alpha: AlphaReading = typer.Option(AlphaReading(_M.lrn_alpha), "--lrn-alpha",
                                           help="code: k + alpha/n * sum (the released code, Caffe, torch); "
                                                "paper: k + alpha * sum (the printed formula)."),
    pooling: Pooling = typer.Option(Pooling(_M.pooling), "--pooling", help="overlapping: 3x3 stride 2 (3.4); plain: 2x2 stride 2."),
    activation: Activation = typer.Option(Activation(_M.activation), "--activation", help="relu (3.1) or tanh."),
    columns: int = typer.Option(_M.columns, "--columns", min=1, max=2,
                                help="2: the two-column net (3.2); 1: one column with half the kernels."),
    width: float = typer.Option(_M.width, "--width", min=0.01, help="Multiplies every layer's kernels and units "
                                "(1.0 is the paper's net; smaller for CPU tests and demos)."),
    dropout: float = typer.Option(_M.dropout, "--dropout", min=0.0, max=0.99, help="Dropout on fc6 and fc7 outputs (4.2)."),
    epochs: int = typer.Option(_T.epochs, "--epochs", min=1, help="Epochs to train in all (raise it to train a finished run further)."),
    batch_size: int = typer.Option(_T.batch_size, "--batch-size", min=1, help="Global batch size (5)."),
    lr: float = typer.Option(_T.lr, "--lr", min=0.0, help="Initial learning rate (5)."),
    momentum: float = typer.Option(_T.momentum, "--momentum", min=0.0, max=1.0),
    weight_decay: float = typer.Option(_T.weight_decay, "--weight-decay", min=0.0),
    update_rule: UpdateRule = typer.Option(UpdateRule(_T.update_rule), "--update-rule",
                                           help="paper: v <- 0.9v - 0.0005 lr w - lr g; w <- w + v. pytorch: torch.optim.SGD."),
    decay_biases: bool = typer.Option(_T.decay_biases, "--decay-biases", help="Also decay biases (the released code does not)."),
    schedule: str = typer.Option(_T.schedule, "--schedule", help="plateau[:PATIENCE] (divide by 10 when val error stops "
                                 "improving, at most 3 times), step:E1,E2,... or constant."),
    lighting_std: float = typer.Option(_T.lighting_std, "--lighting-std", min=0.0,
                                       help="PCA colour augmentation alpha std (4.1); 0 switches it off."),
    flip: bool = typer.Option(_T.flip, "--flip/--no-flip", help="Random horizontal reflections (4.1)."),
    seed: int = typer.Option(_T.seed, "--seed", help="Seeds the data order, augmentation, dropout and initialisation."),
    devices: str = DEVICES,
    precision: str = PRECISION,
    channels_last: str = CHANNELS_LAST,
    compile_model: bool = COMPILE,
    decode: str = DECODE,
    workers: int = LOADER_WORKERS,
    deterministic: bool = typer.Option(False, "--deterministic", help="Deterministic kernels: a resumed run ends bit-identical on the CPU."),
    keep: int = typer.Option(2, "--keep", min=0, help="Epoch checkpoints kept besides last.pt and best.pt."),
    checkpoint_minutes: float = typer.Option(30.0, "--checkpoint-minutes", min=0.0, help="Save last.pt mid-epoch this often (0: off)."),
    checkpoint_steps: int = typer.Option(0, "--checkpoint-steps", min=0, help="Save last.pt every N steps (0: off)."),
    as_json: bool = JSON,
) -> None:
    """Train the paper's network: random 224x224 crops and reflections, PCA colour augmentation,
    SGD with momentum 0.9 and weight decay 0.0005, lr 0.01 divided by 10 when the validation error
    stops improving. Running the same command again resumes where it stopped.

    Examples:

    \b
        alexctl train runs/seed0 --data data/ --seed 0
        torchrun --nproc-per-node 8 -m alexctl train runs/ddp --data data/
    """
    from alexctl import device
    from alexctl.train import Checkpointing, train

    model_config = ModelConfig(arch.value, lrn, lrn_alpha.value, pooling.value, activation.value, columns, width, dropout)
    config = TrainConfig(epochs, batch_size, lr, momentum, weight_decay, update_rule.value, decay_biases, schedule,
                         lighting_std, flip, seed)
    runtime = device.resolve(devices, precision=precision, channels_last=channels_last, compile=compile_model,
                             decode=decode, workers=workers, deterministic=deterministic)
    import torch

    torch.manual_seed(seed)  # the initial weights
    summary = train(data, run_dir, model_config, config, runtime, Checkpointing(keep, checkpoint_minutes, checkpoint_steps),
                    progress=progress, command=sys.argv)
    if runtime.rank != 0:
        return
    best = summary["val_top1_error"]
    emit(summary, as_json, [
        f"{summary['run_dir']}: {summary['epochs_completed']} epochs, best val top-1/top-5 error "
        + (f"{best:.2%}/{summary['val_top5_error']:.2%} (epoch {summary['best_epoch']})" if best is not None else "n/a"),
        f"  best checkpoint {summary['checkpoint']}, metrics {summary['metrics']}",
    ])

