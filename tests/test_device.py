"""alexctl/device.py: the runtime choices and their clean fallback on a machine without CUDA."""

from __future__ import annotations

import pytest
import torch

from alexctl import device
from alexctl.errors import UserError


def test_auto_on_this_machine():
    runtime = device.resolve()
    if torch.cuda.is_available():
        assert runtime.is_cuda and runtime.precision == "bf16" and runtime.channels_last
    else:
        assert runtime.devices == (torch.device("cpu"),)
        assert runtime.precision == "fp32" and not runtime.channels_last and runtime.decode == "cpu"
    assert runtime.workers >= 1 and runtime.rank == 0 and runtime.world == 1


def test_two_cpu_devices_and_explicit_choices():
    runtime = device.resolve("cpu,cpu", precision="bf16", channels_last="on", workers=0)
    assert len(runtime.devices) == 2 and runtime.precision == "bf16" and runtime.channels_last and runtime.workers == 0
    with device.autocast(runtime):
        y = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert y.dtype == torch.bfloat16


@pytest.mark.parametrize("kwargs,message", [
    ({"devices": "cpu,cpu,cpu"}, "give one or two"),
    ({"devices": "gpu7"}, "device names"),
    ({"precision": "fp8"}, "--precision"),
    ({"channels_last": "maybe"}, "--channels-last"),
    ({"decode": "fpga"}, "--decode"),
])
def test_bad_choices_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        device.resolve(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a CPU-only machine gives")
def test_cuda_requests_on_a_cpu_machine_say_so():
    with pytest.raises(UserError, match="no CUDA device"):
        device.resolve("cuda:0")
    with pytest.raises(UserError, match="needs a CUDA device"):
        device.resolve("cpu", decode="gpu")


def test_torchrun_environment_is_read(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert device.distributed_env() == (3, 4, 1)
    runtime = device.resolve("cpu")
    assert runtime.rank == 3 and runtime.world == 4
