"""The checkpoint files `alexctl train` writes and eval, ensemble, report and bench read.

A checkpoint is a torch.save dict (docs/run-directory.md): the weights in the canonical
one-device form (loadable by either device layout), the model's configuration, the class
count and list, the training data's mean image, and, in last.pt, everything a resume needs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from alexctl import rundir
from alexctl.config import ModelConfig, from_dict
from alexctl.errors import UserError
from alexctl.model import build_model

CHECKPOINT_FORMAT = 1


def load_weights(path: Path) -> dict:
    """A checkpoint written by train (best.pt, last.pt or epoch-N.pt), checked for its format."""
    ckpt = rundir.load_torch(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "model" not in ckpt:
        raise UserError(f"{path} is not an alexctl checkpoint.")
    return ckpt


def model_from_checkpoint(ckpt: dict, devices: list[str] | None = None) -> torch.nn.Module:
    net = build_model(from_dict(ModelConfig, ckpt["model_config"]), ckpt["num_classes"], devices)
    net.load_state_dict(ckpt["model"])
    return net
