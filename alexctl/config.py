"""Each command's settings as a dataclass: the CLI fills them from flags, the run directory
keeps them as JSON, and a resumed job compares them with what it is asked to do now."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class PreprocessOptions:
    size: int = 256  # shorter side rescaled to this, then the central size x size patch (section 2)
    quality: int = 95  # JPEG quality of the shard images
    shard_size: int = 1000  # images per shard (about 30 MB at 256 px)
    seed: int = 0  # the class-mixed order of samples across shards
    holdout: float = 0.0  # fraction of each class held out of train and kept for val (0: none)
    holdout_seed: int = 0  # which images are held out
    fast_decode: bool = True  # DCT-domain downscaling and libjpeg-turbo's fast paths (PSNR >= 35 dB)

    def shaping(self) -> dict:
        """The options that decide the shards' bytes."""
        return asdict(self)


def to_dict(obj) -> dict:
    return asdict(obj)


def from_dict(cls, data: dict):
    """Build a dataclass from JSON, ignoring keys it does not know (files from newer versions)."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ModelConfig:
    """The network and its ablation switches; defaults are the paper's (section 3)."""

    arch: str = "alexnet"  # "alexnet" (224x224 input) or "cifar" (the paper's 4-layer CIFAR-10 net, 24x24 input)
    lrn: bool = True  # local response normalisation after conv1 and conv2 (3.3)
    lrn_alpha: str = "code"  # "code": k + alpha/n * sum (cuda-convnet, Caffe, torch); "paper": k + alpha * sum
    pooling: str = "overlapping"  # "overlapping": 3x3 stride 2 (3.4); "plain": 2x2 stride 2
    activation: str = "relu"  # "relu" (3.1) or "tanh"
    columns: int = 2  # 2: the two-GPU net (3.2); 1: the one-column net with half the kernels
    width: float = 1.0  # multiplies every layer's kernel and unit count (1.0 is the paper's net)
    dropout: float = 0.5  # on the outputs of fc6 and fc7 (4.2)


@dataclass(frozen=True)
class TrainConfig:
    """What a training run learns with (section 5). A resumed run must ask for the same, epochs aside."""

    epochs: int = 90  # "roughly 90 cycles through the training set"
    batch_size: int = 128  # global: split across DDP ranks
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    update_rule: str = "paper"  # "paper": v <- 0.9 v - wd lr w - lr g; w <- w + v.  "pytorch": torch.optim.SGD
    decay_biases: bool = False  # the released code decays weights only
    schedule: str = "plateau"  # divide by 10 when val error stops improving (at most 3x); or step:E1,E2 / constant
    lighting_std: float = 0.1  # PCA colour augmentation alpha ~ N(0, 0.1); 0 switches it off
    flip: bool = True  # random horizontal reflections
    seed: int = 0

    def resumable_with(self, other: "TrainConfig") -> list[str]:
        """The settings that differ, ignoring `epochs` (a finished run may be trained further)."""
        return [f.name for f in fields(self) if f.name != "epochs" and getattr(self, f.name) != getattr(other, f.name)]
