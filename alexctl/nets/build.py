"""The network a command runs: built on a runtime (its devices, memory layout, LRN and grouped-convolution
forms), fresh or from a checkpoint's weights."""

from __future__ import annotations

import torch

from alexctl.checkpoint import model_config_of
from alexctl.config import ModelConfig, RuntimeOptions
from alexctl.device import EXAMPLE_BATCH, Runtime, autocast, resolve
from alexctl.nets import model


def runtime_model(config: ModelConfig, num_classes: int, runtime: Runtime, state_dict: dict | None = None):
    """The network `config` describes, on the runtime's devices, in its memory layout, with its LRN and
    grouped-convolution implementations; loaded from `state_dict` when given (canonical form)."""
    devices = [str(d) for d in runtime.devices]
    net = model.build_model(config, num_classes, devices if len(devices) == 2 else None)
    if state_dict is not None:
        net.load_state_dict(state_dict)
    if len(devices) == 1:
        net.to(runtime.primary)
    if runtime.channels_last:
        net.to(memory_format=torch.channels_last)
    example = None
    if runtime.conv_form == "auto" and runtime.is_cuda and len(devices) == 1:
        # Which form of the grouped convolutions is fastest is measured here, on this device, in this precision.
        example = torch.randn(EXAMPLE_BATCH, 3, config.input_size, config.input_size, device=runtime.primary)
        example = example.contiguous(memory_format=runtime.memory_format)
    with autocast(runtime):
        chosen = model.set_implementations(net, lrn=runtime.lrn_impl, conv=runtime.conv_form, example=example)
    net.implementations = chosen  # what was chosen, for logs and benchmarks
    return net


def model_from_checkpoint(ckpt: dict, runtime: Runtime | None = None) -> torch.nn.Module:
    """The checkpoint's network with its weights: on the runtime (alexctl.device.Runtime) or, without one, on the CPU."""
    runtime = runtime or resolve(RuntimeOptions(devices="cpu", workers=0))
    return runtime_model(model_config_of(ckpt), ckpt["num_classes"], runtime, ckpt["model"])
