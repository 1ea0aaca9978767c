"""alexctl.nets.build: the network on a runtime (devices, layout, kernels), fresh or from weights."""

from __future__ import annotations

import subprocess
import sys

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


def test_a_command_that_never_compiles_imports_neither_dynamo_nor_torchvision():
    """Each eval, predict, export or report process would pay ~2.6 s of CPU for torch._dynamo and ~3 s for
    torchvision; the LRN marks its Triton probe constant for Dynamo as assume_constant_result would."""
    code = (
        "import sys, alexctl.nets.build, alexctl.inference.evaluate, alexctl.reporting.report, "
        "alexctl.training.train; print(sorted(m for m in ('torch._dynamo', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    import torch._dynamo

    from alexctl.nets.kernels import lrn

    def probe():
        return None

    torch._dynamo.assume_constant_result(probe)
    assert vars(probe) == {"_dynamo_marked_constant": True}  # all the decorator does, so the marker is the same
    assert lrn._triton_unavailable._dynamo_marked_constant is True
