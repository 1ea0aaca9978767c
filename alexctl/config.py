"""Every command's settings, validated in one home.

Each dataclass holds one group of settings with its allowed values (Literal types, ranges in
`setting(...)`) and its defaults (the paper's, from alexctl.paper). Building one checks it
(`__post_init__`): a bad value raises a UserError naming the option and the value, before
any command touches a file. The CLI's choices come from the Literal types, and a run
directory keeps the settings as JSON (`to_dict` / `from_dict`). This module imports no torch.
"""

from __future__ import annotations

import json
import math
import tomllib
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from alexctl import paper
from alexctl.errors import UserError
from alexctl.schedule import parse_schedule

Arch = Literal["alexnet", "cifar"]
AlphaReading = Literal["code", "paper"]
Pooling = Literal["overlapping", "plain"]
Activation = Literal["relu", "tanh"]
UpdateRule = Literal["paper", "pytorch"]
TrainCrop = Literal["random", "center"]
Precision = Literal["auto", "fp32", "bf16"]
Switch = Literal["auto", "on", "off"]
Decode = Literal["auto", "cpu", "gpu"]
Residency = Literal["auto", "disk", "jpeg", "decoded"]
LrnImpl = Literal["auto", "reference", "torch", "triton"]
ConvForm = Literal["auto", "groups", "split", "blockdiag"]
CropCount = Literal[10, 1]  # test-time patches per image (4.1)
DropLayer = Literal["none", "conv3", "conv4", "conv5"]


def setting(default, *, min=None, max=None, below=None, above=None):
    """A field with bounds: min <= value <= max, value < below, value > above."""
    return field(default=default, metadata={"min": min, "max": max, "below": below, "above": above})


def choices(alias) -> tuple:
    """The allowed values of a Literal type, e.g. choices(Arch) == ("alexnet", "cifar")."""
    return typing.get_args(alias)


class _Validated:
    """Checks every field against its type (Literal choices, bool, int, float) and its bounds."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            kind = hints[f.name]
            if typing.get_origin(kind) is Literal:
                if value not in typing.get_args(kind):
                    allowed = ", ".join(map(str, typing.get_args(kind)))
                    raise UserError(f"{flag(f.name)} {value!r} is not one of {allowed}.")
            elif kind is bool and not isinstance(value, bool):
                raise UserError(f"{flag(f.name)} {value!r} is not true or false.")
            elif kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise UserError(f"{flag(f.name)} {value!r} is not a whole number.")
            elif kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise UserError(f"{flag(f.name)} {value!r} is not a number.")
                if not math.isfinite(value):  # NaN passes every bound (all comparisons are false)
                    raise UserError(f"{flag(f.name)} {value} is not a finite number.")
                object.__setattr__(self, f.name, float(value))
            _check_bounds(f, getattr(self, f.name))


def _check_bounds(f, value) -> None:
    m = f.metadata
    if m.get("min") is not None and value < m["min"]:
        raise UserError(f"{flag(f.name)} {value} must be at least {m['min']}.")
    if m.get("max") is not None and value > m["max"]:
        raise UserError(f"{flag(f.name)} {value} must be at most {m['max']}.")
    if m.get("below") is not None and not value < m["below"]:
        raise UserError(f"{flag(f.name)} {value} must be below {m['below']}.")
    if m.get("above") is not None and not value > m["above"]:
        raise UserError(f"{flag(f.name)} {value} must be above {m['above']}.")


def flag(name: str) -> str:
    """The command-line spelling of a setting: lighting_std -> --lighting-std."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True, kw_only=True)
class PreprocessOptions(_Validated):
    size: int = setting(paper.IMAGE_SIZE, min=8)  # shorter side rescaled to this, then the central square (2)
    quality: int = setting(95, min=1, max=100)  # JPEG quality of the shard images
    shard_size: int = setting(1000, min=1)  # images per shard (about 30 MB at 256 px)
    seed: int = 0  # the class-mixed order of samples across shards
    holdout: float = setting(0.0, min=0.0, max=0.9)  # fraction of each class held out of train for val
    holdout_seed: int = 0  # which images are held out
    fast_decode: bool = True  # DCT-domain downscaling and libjpeg-turbo's fast paths (PSNR >= 35 dB)

    def shaping(self) -> dict:
        """The options that decide the shards' bytes."""
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class ModelConfig(_Validated):
    """The network and its ablation switches; defaults are the paper's (section 3)."""

    arch: Arch = "alexnet"  # alexnet (224x224 input) or cifar (the 4-layer CIFAR-10 net of Figure 1, 24x24)
    lrn: bool = True  # local response normalisation after conv1 and conv2 (3.3)
    lrn_alpha: AlphaReading = "code"  # code: k + alpha/n * sum (cuda-convnet, Caffe, torch); paper: k + alpha * sum
    pooling: Pooling = "overlapping"  # overlapping: 3x3 stride 2 (3.4); plain: 2x2 stride 2
    activation: Activation = "relu"  # relu (3.1) or tanh
    columns: int = setting(2, min=1, max=2)  # 2: the two-GPU net (3.2); 1: one column with half the kernels
    width: float = setting(1.0, above=0.0)  # multiplies every layer's kernel and unit count (1.0: the paper's)
    dropout: float = setting(paper.DROPOUT, min=0.0, below=1.0)  # on the outputs of fc6 and fc7 (4.2)
    drop_layer: DropLayer = "none"  # section 7's depth claim: AlexNet without this middle conv layer

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.drop_layer != "none" and self.arch != "alexnet":
            raise UserError(f"--drop-layer {self.drop_layer}: only --arch alexnet has section 7's middle layers.")

    @property
    def input_size(self) -> int:
        return paper.CROP_SIZE if self.arch == "alexnet" else 24

    @property
    def image_size(self) -> int:
        """The preprocessed image size this net's crops are cut from."""
        return paper.IMAGE_SIZE if self.arch == "alexnet" else 32


@dataclass(frozen=True, kw_only=True)
class TrainConfig(_Validated):
    """What a training run learns with (section 5). A resumed run must ask for the same, epochs aside."""

    epochs: int = setting(paper.EPOCHS, min=1)  # "roughly 90 cycles through the training set"
    batch_size: int = setting(paper.BATCH_SIZE, min=1)  # global: split across DDP ranks
    lr: float = setting(paper.LR, above=0.0)
    momentum: float = setting(paper.MOMENTUM, min=0.0, below=1.0)
    weight_decay: float = setting(paper.WEIGHT_DECAY, min=0.0)
    update_rule: UpdateRule = "paper"  # paper: v <- 0.9 v - wd lr w - lr g; w <- w + v.  pytorch: torch.optim.SGD
    decay_biases: bool = False  # the released code decays weights only
    schedule: str = "plateau"  # plateau[:PATIENCE], step:E1,E2,..., or constant (alexctl.schedule)
    lighting_std: float = setting(paper.LIGHTING_STD, min=0.0)  # PCA colour augmentation (4.1); 0: off
    flip: bool = True  # random horizontal reflections (4.1)
    train_crop: TrainCrop = "random"  # random: a random patch per image per use (4.1); center: no translation
    subset: int = setting(0, min=0)  # train on a seeded, class-balanced subset of this many images (0: all)
    seed: int = 0  # the data order, augmentation, dropout and initial weights

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            parse_schedule(self.schedule, self.lr)
        except ValueError as e:
            raise UserError(f"--schedule: {e}") from None

    def changed(self, other: "TrainConfig") -> list[str]:
        """The settings that differ from `other`, `epochs` aside (a run may be trained further)."""
        return [f.name for f in fields(self) if f.name != "epochs" and getattr(self, f.name) != getattr(other, f.name)]


@dataclass(frozen=True, kw_only=True)
class RuntimeOptions(_Validated):
    """Where and how a command runs the network (alexctl.device turns these into a Runtime)."""

    devices: str = "auto"  # auto, cpu, cuda:0, or two devices for the two-column split
    precision: Precision = "auto"  # bf16 autocast on CUDA, fp32 on the CPU
    channels_last: Switch = "auto"  # on for CUDA
    compile: bool = False  # torch.compile the training step's forward and loss, and evaluation's forward
    cuda_graphs: bool = False  # with compile on CUDA: mode "reduce-overhead" (CUDA graphs replay the step)
    decode: Decode = "auto"  # JPEG decoding for the disk path: loader workers (cpu) or nvJPEG (gpu)
    residency: Residency = "auto"  # where a split is held while it is read (alexctl.data.loader)
    workers: int = setting(-1, min=-1)  # data loader processes (-1: auto)
    deterministic: bool = False
    lrn_impl: LrnImpl = "auto"  # alexctl.nets.kernels.lrn
    conv_form: ConvForm = "auto"  # alexctl.nets.kernels.conv: the grouped convolutions' form


@dataclass(frozen=True, kw_only=True)
class CheckpointOptions(_Validated):
    keep: int = setting(2, min=0)  # older epoch checkpoints kept besides last.pt and best.pt
    checkpoint_minutes: float = setting(30.0, min=0.0)  # save last.pt mid-epoch this often (0: epoch ends only)
    checkpoint_steps: int = setting(0, min=0)  # ...or every this many steps (0: off)
    checkpoint_epochs: int = setting(1, min=1)  # epoch-end checkpoints every N epochs, and after the last


@dataclass(frozen=True, kw_only=True)
class InferenceOptions(_Validated):
    """How a trained network is run on images (eval, ensemble, predict, export): the paper's test-time crops
    (4.1) and which checkpoint."""

    crops: CropCount = 10  # 10: the four corners, the center and their reflections (4.1); 1: the center alone
    checkpoint: str = "best"  # best, last, or a checkpoint file (an ensemble's members: best or last)
    batch_size: int = setting(64, min=1)  # images per batch; each gives `crops` patches

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.checkpoint.strip():
            raise UserError("--checkpoint '' names no checkpoint: give best, last or a checkpoint file.")

    def member_checkpoint(self) -> str:
        """The checkpoint each member of an ensemble contributes: best or last (a file names one run's)."""
        if self.checkpoint not in ("best", "last"):
            raise UserError(f"--checkpoint {self.checkpoint}: an ensemble takes best or last from each member.")
        return self.checkpoint


def to_dict(obj) -> dict:
    return asdict(obj)


def from_dict(cls, data: dict, *, strict: bool = False, where: str = ""):
    """Build a settings dataclass from JSON. Keys it does not know are ignored (files written by a
    newer version), or with `strict` refused (a typo in a --config file)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if strict and unknown:
        raise UserError(f"{where or cls.__name__}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))}).")
    return cls(**{k: v for k, v in data.items() if k in known})


def defaults(cls) -> dict:
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def read_config_file(path: Path) -> dict[str, Any]:
    """Training settings from a TOML or JSON file: flat keys (`lr = 0.005`, `data = "data/"`), [model] and
    [train] tables, or a run's config.json (its model, train and data directory). A file of another shape
    (a list where a table belongs, a table where a value belongs, tables nested thousands deep) is refused
    naming the file and the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"--config {path} cannot be read: {e.strerror or e}.") from None
    except UnicodeDecodeError as e:
        raise UserError(f"--config {path} is not UTF-8 text (byte {e.start}).") from None
    form = "JSON" if path.suffix.lower() == ".json" else "TOML"
    try:
        data = json.loads(text) if form == "JSON" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"--config {path} is not valid {form}: {e}.") from None
    except RecursionError:
        raise UserError(f"--config {path} nests its tables or lists too deep to be a settings file.") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path} does not hold a table of settings.")
    if data.get("kind") == "train-config":  # a run's config.json: start another run like it
        model, train, source = (_table(path, data, key) for key in ("model", "train", "data"))
        return _values(path, {**model, **train, "data": source.get("dir")}, "")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):  # [model] / [train] tables
            flat.update(_values(path, value, f"{key}."))
        else:
            flat.update(_values(path, {key: value}, ""))
    return flat


def _table(path: Path, data: dict, key: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise UserError(f"--config {path}: {key!r} is {type(value).__name__} {value!r:.40}, not a table.")
    return value


def _values(path: Path, table: dict, prefix: str) -> dict[str, Any]:
    """The table's settings, keys spelled with underscores; each one a plain value (the data directory a path)."""
    out = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name == "data" and not (value is None or isinstance(value, str)):
            raise UserError(f"--config {path}: {prefix}{key} is {value!r:.40}, not the path of a data directory.")
        if isinstance(value, (dict, list)):
            raise UserError(
                f"--config {path}: {prefix}{key} holds a {'table' if isinstance(value, dict) else 'list'}, not a value."
            )
        out[name] = value
    return out
