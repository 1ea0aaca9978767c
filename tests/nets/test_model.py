"""alexctl/model.py: the paper's shapes and parameter count, the
one-device and two-device layouts computing the same function, initialisation, and the ablations."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexctl import checkpoint, rundir
from alexctl.config import ModelConfig
from alexctl.errors import UserError
from alexctl.nets.build import model_from_checkpoint
from alexctl.nets.model import AlexNet, CifarNet, LocalResponseNorm, build_model, count_parameters

SMALL = ModelConfig(width=0.25)  # conv 24-64-96-96-64, fc 1024: fast on a CPU
CANONICAL_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


@pytest.fixture(scope="module")
def paper_net() -> AlexNet:
    torch.manual_seed(0)
    return AlexNet().eval()


def layer_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(kind, shape without batch) of every conv, pool and fully connected output, in call order;
    for a fully connected layer also its (flattened) input."""
    seen = []

    def record(module, inputs, output):
        kind = next(t.__name__ for t in (nn.Conv2d, nn.MaxPool2d, nn.Linear) if isinstance(module, t))
        if isinstance(module, nn.Linear):
            seen.append(("in", tuple(inputs[0].shape[1:])))
        seen.append((kind, tuple(output.shape[1:])))

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.Linear))]
    hooks = [m.register_forward_hook(record) for m in layers]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


# ---------------------------------------------------------------- the paper's net


def test_paper_net_parameter_count(paper_net):
    expected = (
        (96 * 3 * 11 * 11 + 96)  # conv1: 34,944
        + (256 * 48 * 5 * 5 + 256)  # conv2, each kernel sees its column's 48 maps: 307,456
        + (384 * 256 * 3 * 3 + 384)  # conv3, sees both columns: 885,120
        + (384 * 192 * 3 * 3 + 384)  # conv4: 663,936
        + (256 * 192 * 3 * 3 + 256)  # conv5: 442,624
        + (4096 * 9216 + 4096)  # fc6 over 256 * 6 * 6: 37,752,832
        + (4096 * 4096 + 4096)  # fc7: 16,781,312
        + (1000 * 4096 + 1000)  # fc8: 4,097,000
    )
    assert expected == 60_965_224  # "60 million parameters" (section 3)
    assert count_parameters(paper_net) == expected


def test_paper_net_layer_shapes(paper_net):
    assert paper_net.input_size == 224
    with pytest.raises(AttributeError):
        paper_net.input_size = 227
    conv, pool = "Conv2d", "MaxPool2d"
    assert layer_shapes(paper_net, torch.randn(1, 3, 224, 224)) == [
        (conv, (96, 55, 55)),
        (pool, (96, 27, 27)),
        (conv, (256, 27, 27)),
        (pool, (256, 13, 13)),
        (conv, (384, 13, 13)),
        (conv, (384, 13, 13)),
        (conv, (256, 13, 13)),
        (pool, (256, 6, 6)),
        ("in", (9216,)),
        ("Linear", (4096,)),
        ("in", (4096,)),
        ("Linear", (4096,)),
        ("in", (4096,)),
        ("Linear", (1000,)),
    ]


def test_canonical_state_dict_shapes(paper_net):
    shapes = {k: tuple(v.shape) for k, v in paper_net.state_dict().items()}
    assert list(shapes) == [f"{layer}.{p}" for layer in CANONICAL_LAYERS for p in ("weight", "bias")]
    assert shapes["conv1.weight"] == (96, 3, 11, 11)
    assert shapes["conv2.weight"] == (256, 48, 5, 5)
    assert shapes["conv3.weight"] == (384, 256, 3, 3)
    assert shapes["conv4.weight"] == (384, 192, 3, 3)
    assert shapes["conv5.weight"] == (256, 192, 3, 3)
    assert shapes["fc6.weight"] == (4096, 9216)
    assert shapes["fc7.weight"] == (4096, 4096)
    assert shapes["fc8.weight"] == (1000, 4096)


def test_initialisation_follows_section_5(paper_net):
    state = paper_net.state_dict()
    for layer in CANONICAL_LAYERS:
        w = state[f"{layer}.weight"]
        assert abs(w.std().item() - 0.01) < 3e-4, layer  # conv1 has 34,848 samples: sd of the estimate ~4e-5
        assert abs(w.mean().item()) < 3e-4, layer
        bias = 1.0 if layer in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert torch.equal(state[f"{layer}.bias"], torch.full_like(state[f"{layer}.bias"], bias)), layer


def test_two_device_initialisation_follows_section_5():
    state = AlexNet(10, ["cpu", "cpu"], SMALL).state_dict()
    assert [k for k in state if k.endswith(".bias") and bool((state[k] == 1).all())] == [
        "conv2.bias",
        "conv4.bias",
        "conv5.bias",
        "fc6.bias",
        "fc7.bias",
    ]
    assert all(bool((state[f"{layer}.bias"] == 0).all()) for layer in ("conv1", "conv3", "fc8"))
    assert abs(state["fc6.weight"].std().item() - 0.02) < 6e-4  # 0.01 / sqrt(width 0.25): see the next test


def test_a_narrower_net_starts_with_the_paper_nets_activation_scale():
    """Width w: conv1 keeps N(0, 0.01); later layers see w times the fan-in and get 0.01 / sqrt(w)."""
    torch.manual_seed(0)
    state = AlexNet(10, config=ModelConfig(width=0.25)).state_dict()
    assert abs(state["conv1.weight"].std().item() - 0.01) < 3e-4
    for layer in ("conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        assert abs(state[f"{layer}.weight"].std().item() - 0.02) < 1e-3, layer

    def conv4_scale(width):
        torch.manual_seed(0)
        net = AlexNet(10, config=ModelConfig(width=width)).eval()
        seen = {}
        net.conv4.register_forward_hook(lambda m, i, o: seen.setdefault("out", o - m.bias[None, :, None, None]))
        with torch.no_grad():
            net(torch.randn(4, 3, 224, 224) * 70)
        return seen["out"].std().item()

    assert 0.7 < conv4_scale(0.25) / conv4_scale(1.0) < 1.4


def test_forward_is_fc8_of_fc7_and_dropout_only_trains():
    torch.manual_seed(1)
    model, x = AlexNet(10, config=SMALL), torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        model.train()
        train_features = model.last_hidden(x)  # "eval semantics" even in train mode
        noisy = [model(x) for _ in range(2)]
        model.eval()
        assert train_features.shape == (2, 1024)
        assert torch.equal(train_features, model.last_hidden(x))
        assert torch.allclose(model(x), model.fc8(model.last_hidden(x)))
        assert not torch.allclose(noisy[0], noisy[1])  # dropout is on in train mode
        assert (train_features >= 0).all() and (train_features > 0).any()  # post-ReLU


# ---------------------------------------------------------------- one device vs two devices


def canonical_grads(model: AlexNet) -> dict[str, torch.Tensor]:
    """Gradients under canonical names: the two columns' halves concatenated along dim 0."""
    grads = {name: p.grad for name, p in model.named_parameters()}
    if not model.split:
        return grads
    merged = {}
    for name, grad in grads.items():
        if name.startswith("columns.0."):
            merged[name.removeprefix("columns.0.")] = torch.cat([grad, grads["columns.1." + name[10:]]])
        elif not name.startswith("columns.1."):
            merged[name] = grad
    return merged


def test_two_device_layout_computes_the_same_function():
    torch.manual_seed(5)
    one, two = AlexNet(10, None, SMALL).eval(), AlexNet(10, ["cpu", "cpu"], SMALL).eval()
    state = one.state_dict()
    two.load_state_dict(state)
    assert [(k, v.shape) for k, v in two.state_dict().items()] == [(k, v.shape) for k, v in state.items()]
    assert all(torch.equal(two.state_dict()[k], v) for k, v in state.items())
    # output channels [0, C/2) are column 0's, [C/2, C) column 1's
    assert torch.equal(two.columns[0].conv2.weight, state["conv2.weight"][:32])
    assert torch.equal(two.columns[1].conv2.weight, state["conv2.weight"][32:])
    assert two.columns[1].conv3.weight.shape == (48, 64, 3, 3)  # conv3 sees both columns' 2 x 32 maps

    # float64: with N(0, 0.01) weights the lower layers' gradients are sums with heavy cancellation, and
    # float32 gets them only to a few per cent (in either layout); float64 shows the layouts agree exactly.
    x, labels = torch.randn(2, 3, 224, 224, dtype=torch.float64), torch.tensor([1, 7])
    outputs = []
    for model in (one.double(), two.double()):
        out = model(x)
        F.cross_entropy(out * 10, labels).backward()
        outputs.append(out.detach())
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-12, atol=1e-12)
    g1, g2 = canonical_grads(one), canonical_grads(two)
    assert g1.keys() == g2.keys() == state.keys()
    for name, grad in g1.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(g2[name], grad, rtol=1e-9, atol=1e-9 * grad.abs().max().item(), msg=name)


# Pixel-scale inputs (centred raw RGB values reach +-255): with N(0, 0.01) weights, unit-scale inputs leave the
# LRN's denominator at k, and an LRN whose neighbourhood crosses the column boundary would change the output by
# less than the tolerance (5e-7 against 2e-3 at this scale, measured at width 0.125).
PIXEL_SCALE = 255.0


def lrn_across_columns(net: AlexNet) -> AlexNet:
    """The net with every LRN summing across the column boundary (one group): the bug the layouts must show."""
    for module in net.modules():
        if isinstance(module, LocalResponseNorm):
            module.groups = 1
    return net


def test_state_dicts_move_between_layouts_through_a_file():
    torch.manual_seed(6)
    x, config = torch.randn(1, 3, 224, 224) * PIXEL_SCALE, ModelConfig(width=0.125)
    for source_devices, target_devices in ((None, ["cpu", "cpu"]), (["cpu", "cpu"], None)):
        source, target = AlexNet(10, source_devices, config).eval(), AlexNet(10, target_devices, config).eval()
        assert not torch.allclose(source(x), target(x))  # different random draws before loading
        buffer = io.BytesIO()
        torch.save(source.state_dict(), buffer)
        buffer.seek(0)
        target.load_state_dict(torch.load(buffer))
        torch.testing.assert_close(target(x), source(x), rtol=1e-5, atol=1e-6)
    # The comparison can tell: one LRN across the column boundary moves the output far past its tolerance.
    crossed = lrn_across_columns(AlexNet(10, None, config).eval())
    crossed.load_state_dict(source.state_dict())
    assert (crossed(x) - source(x)).abs().max() > 1e-4


def test_two_device_layout_inside_a_parent_module():
    parent = nn.Sequential(AlexNet(10, ["cpu", "cpu"], SMALL))
    keys = list(parent.state_dict())
    assert keys[:2] == ["0.conv1.weight", "0.conv1.bias"] and keys[-1] == "0.fc8.bias" and len(keys) == 16
    fresh = nn.Sequential(AlexNet(10, ["cpu", "cpu"], SMALL))
    fresh.load_state_dict(parent.state_dict())
    assert torch.equal(fresh[0].columns[1].fc7.weight, parent[0].columns[1].fc7.weight)


def test_two_device_layout_at_full_width(paper_net):
    two = AlexNet(devices=["cpu", "cpu"]).eval()
    two.load_state_dict(paper_net.state_dict())
    x = torch.randn(1, 3, 224, 224) * PIXEL_SCALE
    with torch.no_grad():
        expected = paper_net(x)
        torch.testing.assert_close(two(x), expected, rtol=1e-5, atol=1e-5)
        crossed = lrn_across_columns(AlexNet().eval())
        crossed.load_state_dict(paper_net.state_dict())
        assert (crossed(x) - expected).abs().max() > 1e-4  # the comparison can tell the columns' LRN apart


# ---------------------------------------------------------------- ablations


def conv_kernels(model: AlexNet) -> list[int]:
    return [model.state_dict()[f"conv{i}.weight"].shape[0] for i in range(1, 6)]


@pytest.mark.parametrize(
    "switch",
    [
        dict(lrn=False),
        dict(lrn_alpha="paper"),
        dict(pooling="plain"),
        dict(activation="tanh"),
        dict(columns=1),
        dict(dropout=0.0),
    ],  # fmt: skip
)
def test_each_ablation_builds_and_classifies(switch):
    config = ModelConfig(width=0.25, **switch)
    model = build_model(config, num_classes=7).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 224, 224))
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    norms = [m for m in model.modules() if isinstance(m, LocalResponseNorm)]
    assert len(norms) == (0 if config.lrn is False else 1)
    assert all(n.alpha_reading == config.lrn_alpha and n.groups == config.columns for n in norms)


def test_plain_pooling_keeps_the_map_sizes():
    model = AlexNet(10, config=ModelConfig(width=0.25, pooling="plain"))
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(2, 2)]
    sizes = [shape[-1] for kind, shape in layer_shapes(model, torch.randn(1, 3, 224, 224)) if kind == "MaxPool2d"]
    assert sizes == [27, 13, 6]


def test_tanh_replaces_every_relu():
    seen = {}
    for activation in ("relu", "tanh"):
        model = AlexNet(10, config=ModelConfig(width=0.25, activation=activation)).eval()
        outputs = []
        model.act.register_forward_hook(lambda m, i, o, outputs=outputs: outputs.append(o))
        with torch.no_grad():
            model(torch.randn(1, 3, 224, 224))
        assert len(outputs) == 7  # conv1..conv5, fc6, fc7
        seen[activation] = (model, min(o.min().item() for o in outputs))
    assert not any(isinstance(m, nn.ReLU) for m in seen["tanh"][0].modules())
    assert seen["tanh"][1] < 0 <= seen["relu"][1]


def test_one_column_net_of_section_3_2():
    model = AlexNet(config=ModelConfig(columns=1))
    assert conv_kernels(model) == [48, 128, 192, 192, 256]
    assert [model.fc6.out_features, model.fc7.out_features] == [4096, 4096]
    assert all(m.groups == 1 for m in model.modules() if isinstance(m, nn.Conv2d))
    assert (
        count_parameters(model)
        == (
            (48 * 3 * 121 + 48)
            + (128 * 48 * 25 + 128)
            + (192 * 128 * 9 + 192)
            + (192 * 192 * 9 + 192)
            + (256 * 192 * 9 + 256)
            + (4096 * 9216 + 4096)
            + (4096 * 4096 + 4096)
            + (1000 * 4096 + 1000)
        )
        == 59_798_312
    )  # the footnote: about the two-column net's 61 M


@pytest.mark.parametrize(
    ("width", "columns", "kernels", "units"),
    [(0.25, 2, [24, 64, 96, 96, 64], 1024), (0.5, 1, [24, 64, 96, 96, 128], 2048), (0.001, 2, [4, 4, 4, 4, 4], 4)],
)
def test_width_scales_every_layer(width, columns, kernels, units):
    model = AlexNet(5, config=ModelConfig(width=width, columns=columns))
    assert conv_kernels(model) == kernels
    assert model.last_hidden(torch.randn(1, 3, 224, 224)).shape == (1, units)
    assert model.state_dict()["fc6.weight"].shape == (units, kernels[-1] * 36)


def test_channels_last_autocast_and_compile():
    torch.manual_seed(7)
    model, x = AlexNet(10, config=ModelConfig(width=0.125)).eval(), torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        reference = model(x)
        fast = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(fast(x.to(memory_format=torch.channels_last)), reference, rtol=1e-4, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x.to(memory_format=torch.channels_last))
        assert low.dtype == torch.bfloat16
        torch.testing.assert_close(low.float(), reference, rtol=0.05, atol=0.05 * reference.abs().max().item())
        # fullgraph: no graph breaks, so no data-dependent Python control flow in the forward
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x), reference, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- the CIFAR-10 net


def test_cifar_net_shapes_and_parameter_count():
    model = CifarNet().eval()
    assert model.input_size == 24
    assert (
        count_parameters(model)
        == ((64 * 3 * 5 * 5 + 64) + (64 * 64 * 5 * 5 + 64) + (128 * 64 * 3 * 3 + 128) + (10 * 128 * 3 * 3 + 10))
        == 192_714
    )
    conv, pool = "Conv2d", "MaxPool2d"
    assert layer_shapes(model, torch.randn(1, 3, 24, 24)) == [
        (conv, (64, 24, 24)), (pool, (64, 12, 12)), (conv, (64, 12, 12)), (pool, (64, 6, 6)),
        (conv, (128, 6, 6)), (pool, (128, 3, 3)), ("in", (1152,)), ("Linear", (10,)),
    ]  # fmt: skip
    assert model.last_hidden(torch.randn(4, 3, 24, 24)).shape == (4, 1152)
    for layer in (model.conv1, model.conv2, model.conv3, model.fc):
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
        assert abs(layer.weight.std().item() - 0.01) < 1e-3


@pytest.mark.parametrize(
    "switch",
    [
        dict(lrn=False),
        dict(lrn_alpha="paper"),
        dict(pooling="plain"),
        dict(activation="tanh"),
        dict(width=0.5),
        dict(dropout=0.0),
    ],  # fmt: skip
)
def test_cifar_ablations(switch):
    config = ModelConfig(arch="cifar", **switch)
    model = build_model(config, num_classes=10)
    assert isinstance(model, CifarNet)
    assert model(torch.randn(3, 3, 24, 24)).shape == (3, 10)
    assert any(isinstance(m, LocalResponseNorm) for m in model.modules()) == config.lrn
    assert any(isinstance(m, nn.Tanh) for m in model.modules()) == (config.activation == "tanh")
    assert model.conv3.out_channels == round(128 * config.width)


# ---------------------------------------------------------------- build_model


def test_build_model_picks_the_architecture():
    assert type(build_model(ModelConfig(width=0.1), 10)) is AlexNet
    assert type(build_model(ModelConfig(arch="cifar"), 10)) is CifarNet
    assert build_model(ModelConfig(width=0.1), 10, ["cpu", "cpu"]).split


@pytest.mark.parametrize(
    ("switch", "devices", "culprit"),
    [
        (dict(columns=1), ["cpu", "cpu"], "two devices"),
        (dict(arch="cifar"), ["cpu", "cpu"], "two devices"),
        (dict(), ["cpu", "cpu", "cpu"], "not 3"),
    ],
)
def test_build_model_rejects_layouts_it_cannot_take(switch, devices, culprit):
    with pytest.raises(ValueError, match=culprit):
        build_model(ModelConfig(**switch), 10, devices)  # bad settings themselves: tests/test_config.py


def test_implementations_change_how_not_what():
    from alexctl.nets.kernels.conv import ColumnConv2d
    from alexctl.nets.model import set_implementations

    torch.manual_seed(8)
    model, x = AlexNet(10, config=ModelConfig(width=0.125)).eval(), torch.randn(2, 3, 224, 224)
    convs = [m for m in model.modules() if isinstance(m, ColumnConv2d)]
    assert [c.groups for c in convs] == [2, 2, 2]  # conv2, conv4, conv5 (section 3.2)
    for conv in convs:  # section 5 sets these biases to 1: distinct values show a half given the other's
        nn.init.normal_(conv.bias)
    with torch.no_grad():
        set_implementations(model, lrn="reference", conv="groups")
        reference = model(x)
        for lrn, conv in (("torch", "split"), ("torch", "blockdiag"), ("reference", "split")):
            assert set_implementations(model, lrn=lrn, conv=conv) == {"lrn": lrn, "conv": conv}
            torch.testing.assert_close(model(x), reference, rtol=1e-4, atol=1e-6)
    assert all(c.form == "split" for c in convs)


def test_constructors_refuse_a_config_for_the_other_arch():
    with pytest.raises(ValueError, match="'cifar'"):
        AlexNet(config=ModelConfig(arch="cifar"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_two_column_layout_on_one_device_computes_the_same_function():
    """Both columns on cuda:0 (what `--devices cuda:0,cuda:0` builds): the one-device net's outputs and gradients."""
    torch.manual_seed(5)
    one = AlexNet(10, None, SMALL).cuda()
    two = AlexNet(10, ["cuda:0", "cuda:0"], SMALL)
    two.load_state_dict(one.state_dict())
    assert {p.device for p in two.parameters()} == {torch.device("cuda:0")}
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64, device="cuda")
    labels = torch.tensor([1, 7], device="cuda")
    outputs = []
    for model in (one.double().eval(), two.double().eval()):  # float64: no TF32, no cancellation noise
        out = model(x)
        F.cross_entropy(out * 10, labels).backward()
        outputs.append(out.detach())
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-9, atol=1e-9)
    g1, g2 = canonical_grads(one), canonical_grads(two)
    for name, grad in g1.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(g2[name], grad, rtol=1e-7, atol=1e-7 * grad.abs().max().item(), msg=name)


# ---------------------------------------------------------------- depth (section 7)

# The paper's net without each middle layer, at 1000 classes (docs/paper.md): the removed layer's parameters
# go, the next layer sees the maps the removed one saw, and without conv5 fc6 sees pool5 of conv4's 384 maps.
PAPER_CONV3 = 384 * 256 * 3 * 3 + 384  # 885,120
PAPER_CONV4 = 384 * 192 * 3 * 3 + 384  # 663,936
PAPER_CONV5 = 256 * 192 * 3 * 3 + 256  # 442,624
PAPER_FC6 = 4096 * 256 * 6 * 6 + 4096  # 37,752,832
DROPPED_PARAMETERS = {
    # conv4 now sees its column's 128 conv2 maps, not conv3's 192
    "conv3": 60_965_224 - PAPER_CONV3 - PAPER_CONV4 + (384 * 128 * 3 * 3 + 384),
    "conv4": 60_965_224 - PAPER_CONV4,  # conv5 sees its column's 192 conv3 maps, as before
    "conv5": 60_965_224 - PAPER_CONV5 - PAPER_FC6 + (4096 * 384 * 6 * 6 + 4096),  # fc6 over 384 * 6 * 6
}


@pytest.mark.parametrize("dropped", ["conv3", "conv4", "conv5"])
def test_a_net_without_a_middle_layer_keeps_the_rest_consistent(dropped):
    net = AlexNet(config=ModelConfig(drop_layer=dropped))
    assert count_parameters(net) == DROPPED_PARAMETERS[dropped]
    assert DROPPED_PARAMETERS == {"conv3": 59_858_920, "conv4": 60_301_288, "conv5": 79_396_968}
    state = net.state_dict()
    assert [k for k in state if k.endswith(".weight")] == [
        f"{name}.weight" for name in CANONICAL_LAYERS if name != dropped
    ]
    shapes = {n: tuple(state[f"{n}.weight"].shape) for n in ("conv3", "conv4", "conv5", "fc6") if n != dropped}
    expected = {
        "conv3": {"conv4": (384, 128, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216)},
        "conv4": {"conv3": (384, 256, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216)},
        "conv5": {"conv3": (384, 256, 3, 3), "conv4": (384, 192, 3, 3), "fc6": (4096, 13824)},
    }[dropped]
    assert shapes == expected
    # Section 5's biases of 1 stay on the layers that had them.
    assert all(state[f"{name}.bias"].eq(1).all() for name in ("conv4", "conv5", "fc6") if name != dropped)


def test_without_conv3_the_columns_meet_only_at_fc6():
    torch.manual_seed(3)
    config = ModelConfig(width=0.25, drop_layer="conv3")
    net = AlexNet(10, None, config).eval()
    grouped = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 2]
    assert grouped == ["conv2", "conv4", "conv5"]
    # Column 1's half of pool5 does not move when column 0's conv2 kernels change: no conv sees both columns.
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        before = net._conv3_5(net, net._conv1_2(net, x))
        net.conv2.weight[:32].normal_()
        after = net._conv3_5(net, net._conv1_2(net, x))
    half = before.shape[1] // 2
    assert torch.equal(after[:, half:], before[:, half:]) and not torch.equal(after[:, :half], before[:, :half])


@pytest.mark.parametrize("dropped", ["conv3", "conv5"])
def test_two_device_layout_without_a_middle_layer_computes_the_same_function(dropped):
    torch.manual_seed(4)
    config = ModelConfig(width=0.25, drop_layer=dropped)
    one, two = AlexNet(10, None, config).eval(), AlexNet(10, ["cpu", "cpu"], config).eval()
    two.load_state_dict(one.state_dict())
    assert not hasattr(two.columns[0], dropped) and not hasattr(one, dropped)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(two(x), one(x), rtol=1e-5, atol=1e-6)
    assert [k for k in two.state_dict()] == [k for k in one.state_dict()]


def test_a_checkpoint_without_a_middle_layer_rebuilds_itself(tmp_path):
    torch.manual_seed(7)
    config = ModelConfig(width=0.125, drop_layer="conv4", columns=1)
    net = AlexNet(5, None, config).eval()
    record = checkpoint.weights(
        net,
        config,
        classes=list("abcde"),
        class_names=list("ABCDE"),
        mean_image=torch.zeros(3, 256, 256),
        data={"dir": "/d", "image_size": 256},
        epoch=1,
        val=None,
    )
    rundir.save_torch(tmp_path / "best.pt", record)
    loaded = checkpoint.load_weights(tmp_path / "best.pt")
    assert loaded["model_config"]["drop_layer"] == "conv4"
    again = model_from_checkpoint(loaded).eval()
    assert again.middle == ("conv3", "conv5")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(again(x), net(x))
    # A checkpoint from before the option (no drop_layer in its config) is the whole net.
    del loaded["model_config"]["drop_layer"]
    assert checkpoint.model_config_of(loaded).drop_layer == "none"


def test_drop_layer_is_alexnets_alone():
    with pytest.raises(UserError, match="--drop-layer conv3: only --arch alexnet"):
        ModelConfig(arch="cifar", drop_layer="conv3")
    with pytest.raises(UserError, match="--drop-layer 'conv6' is not one of none, conv3, conv4, conv5"):
        ModelConfig(drop_layer="conv6")
