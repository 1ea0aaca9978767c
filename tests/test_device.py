"""alexctl/device.py: the runtime choices, their clean fallback on a machine without CUDA, the one place that
puts a network on the runtime, and the distributed helpers with one process."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

from alexctl import device
from alexctl.config import RuntimeOptions
from alexctl.errors import UserError

TESTS = Path(__file__).parent


def resolve(**options) -> device.Runtime:
    return device.resolve(RuntimeOptions(**options))


def test_auto_on_this_machine():
    runtime = resolve()
    if torch.cuda.is_available():
        assert runtime.is_cuda and runtime.precision == "bf16" and runtime.channels_last
    else:
        assert runtime.devices == (torch.device("cpu"),)
        assert runtime.precision == "fp32" and not runtime.channels_last and runtime.decode == "cpu"
        assert runtime.describe()["device_name"].startswith("CPU")
    assert runtime.workers >= 1 and runtime.rank == 0 and runtime.world == 1
    assert runtime.describe()["torch"] == torch.__version__


def test_two_cpu_devices_and_explicit_choices():
    runtime = resolve(devices="cpu,cpu", precision="bf16", channels_last="on", workers=0)
    assert len(runtime.devices) == 2 and runtime.precision == "bf16" and runtime.channels_last and runtime.workers == 0
    assert runtime.memory_format == torch.channels_last and runtime.dtype == torch.bfloat16
    with device.autocast(runtime):
        y = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert y.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"devices": "cpu,cpu,cpu"}, "give one or two"),
        ({"devices": "gpu7"}, "device names"),
        ({"devices": "meta"}, "cpu and cuda"),
    ],
)
def test_bad_device_lists_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        resolve(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a CPU-only machine gives")
def test_cuda_requests_on_a_cpu_machine_say_so():
    with pytest.raises(UserError, match="no CUDA device"):
        resolve(devices="cuda:0")
    with pytest.raises(UserError, match="needs a CUDA device"):
        resolve(devices="cpu", decode="gpu")


def test_torchrun_environment_is_read(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert device.distributed_env() == (3, 4, 1)
    runtime = resolve(devices="cpu")
    assert runtime.rank == 3 and runtime.world == 4 and not runtime.leader


def test_reductions_with_one_process_are_the_values():
    runtime = resolve(devices="cpu")
    assert device.all_reduce([1, 2.5], runtime) == [1.0, 2.5]
    assert np.array_equal(device.all_reduce_array(np.arange(3), runtime), np.arange(3))
    assert device.any_rank(True, runtime) and not device.any_rank(False, runtime)


def test_the_process_group_is_destroyed_when_training_raises(monkeypatch):
    """Left to the interpreter's exit, gloo's threads can abort it (exit -6, "terminate called without an active
    exception") after the documented error line: the group must be gone once the block is left, raising or not.
    A real gloo group of one rank, entered as a rank of a torchrun job is."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    runtime = dataclasses.replace(resolve(devices="cpu"), world=2)  # a torchrun rank: the group is made
    with pytest.raises(UserError, match="disagree"):
        with device.process_group(runtime):
            assert torch.distributed.is_initialized()
            raise UserError("rank 1 and rank 0 disagree on the data")
    assert not torch.distributed.is_initialized()
    with device.process_group(runtime):
        assert torch.distributed.get_backend() == "gloo"
    assert not torch.distributed.is_initialized()
    with device.process_group(resolve(devices="cpu")):  # one process: no group at all
        assert not torch.distributed.is_initialized()


def _threads() -> set[str]:
    """The ids of this process's threads (a thread names itself only once it runs: ids, not names, are certain)."""
    return set(os.listdir("/proc/self/task"))


def _refuse_after_wrapping(runtime) -> None:
    """What train does before it refuses a resume point: wrap the net for DDP (the wrapper holds the group) and
    gather from the ranks, then raise, leaving both in this frame's locals."""
    net = device.distributed(torch.nn.Linear(2, 2), runtime)
    agreed = [None]
    torch.distributed.all_gather_object(agreed, {"last.pt": "epoch 1 step 0"})
    raise UserError(f"rank 1 and rank 0 disagree on the resume point ({agreed}, {type(net).__name__})")


def _refusal_in_this_process() -> None:
    """The refusal of a torchrun rank, as train meets it: a real one-rank gloo group (DDP wraps for world > 1, so
    the runtime says 2), the DDP net and a gather in the refusing frame. Prints the group's threads still alive
    while the refusal is handled."""
    assert "torch._dynamo" not in sys.modules  # as in `alexctl train`: DDP imports it once the group exists
    runtime = dataclasses.replace(resolve(devices="cpu"), world=2)
    before = _threads()
    try:
        with device.process_group(runtime):
            group = _threads() - before  # the group's threads: gloo's transport loop and workers, the store's
            assert group
            _refuse_after_wrapping(runtime)
    except UserError as refused:  # held, as the CLI holds it while it prints its sentence and exits
        assert "DistributedDataParallel" in str(refused)
        names = [entry.name for entry in traceback.extract_tb(refused.__traceback__)]
        assert names[-1] == "_refuse_after_wrapping", names  # the traceback itself is kept whole
        alive = {t: (Path("/proc/self/task") / t / "comm").read_text().strip() for t in group & _threads()}
        print(json.dumps({"group": len(group), "alive": alive}))


def test_no_gloo_thread_outlives_the_group_when_a_rank_refuses():
    """Gloo threads that outlive the group can abort the rank at the interpreter's exit: one of them, releasing a
    gather's tensors, did ("terminate called without an active exception", exit -6 after rank 1's error line).
    Two things kept them: the refusal's traceback, whose frames hold the DDP wrapper and so the group, and
    torch._dynamo imported after the group was made (DDP imports it). A fresh interpreter, so that torch._dynamo
    is not yet imported, as in `alexctl train`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1"}
    script = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_device; test_device._refusal_in_this_process()"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    threads = json.loads(done.stdout.splitlines()[-1])
    assert threads["group"] >= 2 and not threads["alive"], f"the group's threads outlived it: {threads}"
