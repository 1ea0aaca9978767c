"""alexctl.nets.build: the network on a runtime (devices, layout, kernels), fresh or from weights."""

from __future__ import annotations

import torch

from alexctl import device
from alexctl.config import ModelConfig, RuntimeOptions
from alexctl.device import forward_of
from alexctl.nets.build import runtime_model


def resolve(**options) -> device.Runtime:
    return device.resolve(RuntimeOptions(**options))


def test_runtime_model_puts_the_net_on_the_runtime():
    runtime = resolve(devices="cpu", channels_last="on", lrn_impl="reference", conv_form="split")
    net = runtime_model(ModelConfig(width=0.125), 10, runtime)
    assert net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert {m.impl for m in net.modules() if hasattr(m, "impl")} == {"reference"}
    assert net.implementations == {"lrn": "reference", "conv": "split"}
    again = runtime_model(ModelConfig(width=0.125), 10, resolve(devices="cpu"), net.state_dict())
    x = torch.randn(2, 3, 224, 224)
    net.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), net(x.contiguous(memory_format=torch.channels_last)), rtol=1e-4, atol=1e-6)
    assert forward_of(net, runtime) is net  # no compile, no DDP: the net itself
