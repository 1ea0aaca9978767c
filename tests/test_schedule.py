"""alexctl/schedule.py: the learning-rate schedules (section 5)."""

import json

import pytest
import torch

from alexctl.schedule import parse_schedule
from alexctl.training.optim import build_optimizer


def _run(schedule, errors):
    """Feed one validation error per epoch; return the epochs after which the lr changed."""
    return [epoch for epoch, err in enumerate(errors, start=1) if schedule.after_epoch(epoch, err)]


def test_plateau_reduces_after_patience_epochs_without_improvement():
    s = parse_schedule("plateau:2", 0.01)
    # best 0.50 at epoch 1; 0.4995 is not an improvement (< 0.001); epochs 2-3 are bad -> reduce after 3.
    errors = [0.50, 0.4995, 0.52, 0.45, 0.46, 0.47, 0.40]
    assert _run(s, errors) == [3, 6]
    assert s.reductions == 2 and s.lr == pytest.approx(0.0001)
    assert s.best_error == 0.40 and s.bad_epochs == 0


def test_plateau_resets_patience_after_a_reduction_and_stops_at_three():
    s = parse_schedule("plateau:3", 0.01)
    changed = _run(s, [0.5] * 20)  # never improves after epoch 1
    assert changed == [4, 7, 10]  # the counter restarts after each reduction; at most 3 (section 5)
    assert s.reductions == 3 and s.lr == pytest.approx(1e-5)


def test_plateau_default_patience_and_missing_validation():
    s = parse_schedule("plateau", 0.01)
    assert s.patience == 5
    errors = [0.5, None, 0.5, None, 0.5, 0.5, 0.5, 0.5]  # None: no validation that epoch, ignored
    assert _run(s, errors) == [8]


def test_step_and_constant_schedules():
    s = parse_schedule("step:2,5", 0.1)
    assert _run(s, [None] * 7) == [2, 5]
    assert s.lr == pytest.approx(0.001) and s.reductions == 2
    c = parse_schedule("constant", 0.1)
    assert _run(c, [0.9, 0.9, 0.9, 0.9]) == [] and c.lr == 0.1
    assert "constant" in c.describe() and "2, 5" in s.describe()


def test_apply_sets_every_group():
    opt = build_optimizer(torch.nn.Linear(3, 2))
    s = parse_schedule("step:1", 0.01)
    s.after_epoch(1, None)
    s.apply(opt)
    assert [g["lr"] for g in opt.param_groups] == [0.001, 0.001]


def test_schedule_state_round_trip_resumes_exactly():
    errors = [0.5, 0.5, 0.49, 0.48, 0.481, 0.48, 0.47, 0.47, 0.47, 0.3, 0.3, 0.3]
    full = parse_schedule("plateau:2", 0.01)
    expected = _run(full, errors)
    first = parse_schedule("plateau:2", 0.01)
    _run(first, errors[:5])
    state = json.loads(json.dumps(first.state_dict()))  # JSON-serialisable
    resumed = parse_schedule("plateau:2", 0.01)
    resumed.load_state_dict(state)
    later = [e for e, err in enumerate(errors, start=1) if e > 5 and resumed.after_epoch(e, err)]
    assert [e for e in expected if e <= 5] + later == expected
    assert resumed.state_dict() == full.state_dict() and resumed.lr == full.lr
    with pytest.raises(ValueError, match="step:3"):
        parse_schedule("step:3", 0.01).load_state_dict(state)
    with pytest.raises(ValueError, match="epoch 5"):
        resumed.after_epoch(5, 0.1)  # epochs must increase


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "plateau:",
        "plateau:0",
        "plateau:-1",
        "plateau:x",
        "step",
        "step:",
        "step:0,3",
        "step:5,3",
        "step:3,3",
        "step:1,,2",
        "cosine",
        "Constant",
    ],
)
def test_bad_specs_are_rejected(spec):
    with pytest.raises(ValueError, match=f"schedule {spec!r}"):
        parse_schedule(spec, 0.01)
