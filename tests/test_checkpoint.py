"""alexctl/checkpoint.py: the checkpoint format, written and read in one place."""

from __future__ import annotations

import pytest
import torch

from alexctl import checkpoint, rundir
from alexctl.config import ModelConfig, RuntimeOptions
from alexctl.errors import UserError
from alexctl.nets.build import model_from_checkpoint, runtime_model


def _record(epoch=3):
    from alexctl import device

    torch.manual_seed(0)
    net = runtime_model(ModelConfig(arch="cifar", width=0.25), 4, device.resolve(RuntimeOptions(devices="cpu")))
    return net, checkpoint.weights(
        net,
        ModelConfig(arch="cifar", width=0.25),
        classes=["a", "b", "c", "d"],
        class_names=["A", "B", "C", "D"],
        mean_image=torch.full((3, 32, 32), 120.0),
        data={"dir": "/d", "image_size": 32},
        epoch=epoch,
        val={"top1": 0.5, "top5": 0.1},
    )


def test_a_weights_record_rebuilds_the_same_network(tmp_path):
    net, record = _record()
    rundir.save_torch(tmp_path / "best.pt", record)
    loaded = checkpoint.load_weights(tmp_path / "best.pt")
    assert loaded["format"] == checkpoint.FORMAT and checkpoint.classes_of(loaded) == ["a", "b", "c", "d"]
    assert loaded["data"]["class_names"] == ["A", "B", "C", "D"] and loaded["val_top1_error"] == 0.5
    again = model_from_checkpoint(loaded).eval()
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(again(x), net.eval()(x))


def test_what_is_not_a_checkpoint_is_refused_by_name(tmp_path):
    rundir.save_torch(tmp_path / "foreign.pt", {"state_dict": {}})
    with pytest.raises(UserError, match="foreign.pt is not an alexctl checkpoint"):
        checkpoint.load_weights(tmp_path / "foreign.pt")
    _, record = _record()
    rundir.save_torch(tmp_path / "partial.pt", {k: v for k, v in record.items() if k != "mean_image"})
    with pytest.raises(UserError, match="incomplete alexctl checkpoint \\(no 'mean_image'\\)"):
        checkpoint.load_weights(tmp_path / "partial.pt")
    rundir.save_torch(tmp_path / "weights.pt", record)
    with pytest.raises(UserError, match="not an alexctl resume checkpoint"):
        checkpoint.load_resume(tmp_path / "weights.pt")


def test_epoch_checkpoints_keep_the_newest_and_keep_0_writes_none(tmp_path):
    run = rundir.RunDir(tmp_path)
    _, record = _record()
    for epoch in range(1, 5):
        checkpoint.save_epoch(run, record, epoch, keep=2)
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["epoch-0003.pt", "epoch-0004.pt"]
    checkpoint.save_epoch(run, record, 5, keep=0)
    assert list(run.checkpoints.iterdir()) == []
    checkpoint.save_resume(
        run, record, optimizer={}, schedule={}, devices=1, progress={"epoch": 3, "current": {"step": 7}}
    )
    assert rundir.read_json(run.last_summary)["step"] == 7 and checkpoint.load_resume(run.last_checkpoint)
