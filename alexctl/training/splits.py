"""What a training run reads: the train and val splits of a data directory, checked against each other and
the network before any training starts, their statistics, and the training samples used (all, or a seeded
class-balanced --subset)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexctl import rundir
from alexctl.config import ModelConfig, TrainConfig
from alexctl.data.loader import Split, epoch_batches, load_split
from alexctl.errors import UserError


@dataclass
class TrainingData:
    """The train and val splits of a data directory, their statistics, and the training samples used."""

    root: Path
    train: Split
    val: Split
    stats: dict[str, np.ndarray]  # stats.npz: mean_image (S, S, 3), eigenvalues (3,), eigenvectors (3, 3), ...
    indices: np.ndarray  # (n,) the train split's samples this run trains on: all, or the --subset

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def epoch_batches(self, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
        """The global batches of `epoch` (sample indices of the train split), seeded by (seed, epoch)."""
        return [self.indices[b] for b in epoch_batches(len(self.indices), batch_size, seed=seed, epoch=epoch)]

    def describe(self) -> dict:
        return {
            "dir": str(self.root.resolve()),
            "train_identity": self.train.identity,
            "val_identity": self.val.identity,
            "classes": self.num_classes,
            "image_size": self.train.image_size,
            "train_images": len(self.train),
            "val_images": len(self.val),
            "trained_images": len(self.indices),
        }


def load_training_data(data_dir: Path, model_config: ModelConfig, config: TrainConfig) -> TrainingData:
    """Both splits, checked against each other and the network before any training starts."""
    train, val = load_split(data_dir, "train"), load_split(data_dir, "val")
    if train.classes.wnids != val.classes.wnids:
        raise UserError(
            f"{data_dir}: the val split has {val.num_classes} classes and train {train.num_classes}, "
            "or another order; preprocess val into the same data directory as train, or with "
            f"--classes {rundir.DataDir(data_dir).classes}."
        )
    for split in (train, val):
        if len(split.labels) and not 0 <= split.labels.min() <= split.labels.max() < split.num_classes:
            raise UserError(
                f"{split.root} holds labels outside 0..{split.num_classes - 1}: its index does not match "
                "classes.json; preprocess it again with --force."
            )
    if model_config.input_size > train.image_size:
        raise UserError(
            f"the {model_config.arch} net takes {model_config.input_size}x{model_config.input_size} crops, "
            f"but {data_dir} holds {train.image_size}x{train.image_size} images; preprocess with --size "
            f"{model_config.image_size}, or choose --arch {'cifar' if train.image_size < 224 else 'alexnet'}."
        )
    if len(train) == 0 or len(val) == 0:
        raise UserError(f"{data_dir}: the {'train' if len(train) == 0 else 'val'} split holds no images.")
    if config.subset > len(train):
        raise UserError(f"--subset {config.subset} is larger than the train split ({len(train)} images).")
    stats = rundir.load_npz(rundir.DataDir(data_dir).stats, "statistics file")
    return TrainingData(data_dir, train, val, stats, balanced_subset(train.labels, config.subset, config.seed))


def balanced_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` sample indices, as equal a share of every class as the classes allow, chosen by a seeded
    shuffle within each class; every index (0: no subset). Sorted, so the epoch order stays seeded."""
    if size == 0 or size >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, 0x5B5E7])
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    take, left = [0] * len(by_class), size
    while left:  # round-robin over the classes that still have images: balanced, and exactly `size`
        for c, members in enumerate(by_class):
            if left and take[c] < len(members):
                take[c] += 1
                left -= 1
    return np.sort(np.concatenate([m[:k] for m, k in zip(by_class, take)]))
