"""alexctl/training/optim.py: the paper's SGD rule (section 5), and its state held for a compiled step."""

import copy

import pytest
import torch
from torch._dynamo.utils import counters

from alexctl import device
from alexctl.config import RuntimeOptions
from alexctl.schedule import parse_schedule
from alexctl.training.optim import PaperSGD, build_optimizer, hold_for_compile
from alexctl.training.train import make_train_step


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def _batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def _train(net, opt, batches, lrs=None):
    for i, (x, y) in enumerate(batches):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[i]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def test_paper_sgd_matches_the_formula_through_an_lr_change():
    net = _net()
    reference = [p.detach().clone().double() for p in net.parameters()]
    velocity = [torch.zeros_like(w) for w in reference]
    opt = PaperSGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    lrs = [0.1, 0.1, 0.1, 0.01, 0.01, 0.001]
    for lr, (x, y) in zip(lrs, _batches(len(lrs))):
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        grads = [p.grad.double() for p in net.parameters()]  # gradient at the current weights
        opt.step()
        for w, v, g in zip(reference, velocity, grads):
            v.mul_(0.9).add_(-0.01 * lr * w - lr * g)  # v <- 0.9 v - wd lr w - lr g
            w.add_(v)  # w <- w + v
        for p, w in zip(net.parameters(), reference):
            torch.testing.assert_close(p.detach().double(), w, rtol=0, atol=1e-6)
            p.data.copy_(w)  # keep the two trajectories on the same gradients
    for p, v in zip(net.parameters(), velocity):
        torch.testing.assert_close(opt.state[p]["momentum_buffer"].double(), v, rtol=0, atol=1e-6)


@pytest.mark.parametrize("weight_decay", [0.0, 0.0005])
def test_paper_sgd_equals_torch_sgd_while_lr_is_constant(weight_decay):
    a, b = _net(), _net()
    paper = PaperSGD(a.parameters(), lr=0.05, momentum=0.9, weight_decay=weight_decay)
    torch_sgd = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9, weight_decay=weight_decay)
    batches = _batches(6)
    _train(a, paper, batches)
    _train(b, torch_sgd, batches)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
        # The known relation: the paper's buffer holds steps, PyTorch's holds gradients.
        v_paper = paper.state[pa]["momentum_buffer"]
        v_torch = torch_sgd.state[pb]["momentum_buffer"]
        torch.testing.assert_close(v_paper, -0.05 * v_torch, rtol=1e-5, atol=1e-7)


def test_paper_sgd_differs_from_torch_sgd_after_an_lr_change():
    a, b = _net(), _net()
    paper = PaperSGD(a.parameters(), lr=0.1, weight_decay=0.0)
    torch_sgd = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    batches, lrs = _batches(4), [0.1, 0.1, 0.1, 0.01]
    _train(a, paper, batches, lrs)
    _train(b, torch_sgd, batches, lrs)
    gap = max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))
    assert gap > 1e-3


def test_paper_sgd_skips_params_without_grad():
    w, frozen = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
    opt = PaperSGD([w, frozen], lr=0.1, weight_decay=0.0)
    w.grad = torch.ones(2, 2)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((2, 2), 0.9))
    torch.testing.assert_close(frozen.detach(), torch.ones(2))
    assert frozen not in opt.state


def test_paper_sgd_state_dict_round_trip_continues_identically():
    net = _net()
    opt = PaperSGD(net.parameters())
    batches = _batches(8)
    _train(net, opt, batches[:4])
    saved_net, saved_opt = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    assert set(saved_opt["state"][0]) == {"momentum_buffer"}
    _train(net, opt, batches[4:])

    resumed = _net(seed=123)
    resumed.load_state_dict(saved_net)
    resumed_opt = PaperSGD(resumed.parameters(), lr=0.5)  # hyper-parameters come from the state dict
    resumed_opt.load_state_dict(saved_opt)
    _train(resumed, resumed_opt, batches[4:])
    for p, q in zip(net.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


class _TinyConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 2)


@pytest.mark.parametrize("rule, cls", [("paper", PaperSGD), ("pytorch", torch.optim.SGD)])
def test_build_optimizer_decays_weights_only_by_default(rule, cls):
    net = _TinyConvNet()
    opt = build_optimizer(net, rule=rule, lr=0.02, momentum=0.8, weight_decay=0.001)
    assert type(opt) is cls
    groups = {g["name"]: g for g in opt.param_groups}
    assert [p.shape for p in groups["weights"]["params"]] == [net.conv.weight.shape, net.fc.weight.shape]
    assert [p.shape for p in groups["biases"]["params"]] == [net.conv.bias.shape, net.fc.bias.shape]
    assert groups["weights"]["weight_decay"] == 0.001 and groups["biases"]["weight_decay"] == 0.0
    assert all(g["lr"] == 0.02 and g["momentum"] == 0.8 for g in opt.param_groups)
    if rule == "pytorch":
        assert all(g["nesterov"] is False for g in opt.param_groups)
    with_biases = build_optimizer(net, rule=rule, weight_decay=0.001, decay_biases=True)
    assert all(g["weight_decay"] == 0.001 for g in with_biases.param_groups)


def test_build_optimizer_paper_defaults_and_bad_rule():
    opt = build_optimizer(_TinyConvNet())
    assert {(g["lr"], g["momentum"]) for g in opt.param_groups} == {(0.01, 0.9)}
    assert opt.param_groups[0]["weight_decay"] == 0.0005
    with pytest.raises(ValueError, match="'adam'"):
        build_optimizer(_TinyConvNet(), rule="adam")


# ---------------------------------------------------------------- the compiled step (hold_for_compile)


def _conv_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3)
    )


def _compiled_epochs(compile_: bool):
    """3 epochs of batches 8, 8, 5 under schedule step:1,2 (the rate divided twice); (net, optimizer, graphs)."""
    runtime = device.resolve(RuntimeOptions(devices="cpu", workers=0, compile=compile_))
    net = _conv_net()
    optimizer = build_optimizer(net, lr=0.05)
    schedule = parse_schedule("step:1,2", 0.05)
    torch._dynamo.reset()
    counters.clear()
    step = make_train_step(net, optimizer, runtime, backend="aot_eager_decomp_partition")
    g = torch.Generator().manual_seed(1)
    for epoch in (1, 2, 3):
        schedule.apply(optimizer)
        for n in (8, 8, 5):  # a short last batch
            x, y = torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
            step(x, y, 1 / n)
        schedule.after_epoch(epoch, None)
    return net, optimizer, counters["stats"]["unique_graphs"]


def test_a_compiled_run_recompiles_nothing_when_the_rate_changes_or_the_last_batch_is_short():
    """Before: 4 recompiles (each new rate, the short batch) on top of the 2 graphs (forward, update)."""
    eager, eager_opt, _ = _compiled_epochs(False)
    net, optimizer, graphs = _compiled_epochs(True)
    assert graphs == 2
    assert [g["lr"].item() for g in optimizer.param_groups] == pytest.approx([0.0005, 0.0005])
    for a, b in zip(eager.parameters(), net.parameters()):  # the tensor-lr update is the float one's
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert all(isinstance(g["lr"], float) for g in eager_opt.param_groups)  # eager keeps Python floats


@pytest.mark.parametrize("rule", ["paper", "pytorch"])
def test_hold_for_compile_makes_the_state_first_and_keeps_the_checkpoint_format(rule):
    net = _conv_net()
    optimizer = build_optimizer(net, rule=rule, lr=0.05)
    hold_for_compile(optimizer)
    assert all(torch.equal(optimizer.state[p]["momentum_buffer"], torch.zeros_like(p)) for p in net.parameters())
    held = [g["lr"] for g in optimizer.param_groups]
    assert all(isinstance(t, torch.Tensor) and t.dim() == 0 and t.item() == pytest.approx(0.05) for t in held)
    saved = optimizer.state_dict()
    assert all(type(g["lr"]) is float for g in saved["param_groups"])  # the checkpoint format as before
    # A checkpoint of an eager run (floats) loads into the held tensors, in place.
    other = build_optimizer(_conv_net(), rule=rule, lr=0.005)
    optimizer.load_state_dict(other.state_dict())
    assert [g["lr"] for g in optimizer.param_groups] == held and held[0].item() == pytest.approx(0.005)
    # A zero buffer gives the lazily made one's steps exactly.
    lazy_net, held_net = _conv_net(), _conv_net()
    lazy, early = build_optimizer(lazy_net, rule=rule), build_optimizer(held_net, rule=rule)
    hold_for_compile(early)
    batches = [(torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))) for _ in range(3)]
    _train(lazy_net, lazy, batches)
    _train(held_net, early, batches)
    for a, b in zip(lazy_net.parameters(), held_net.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
