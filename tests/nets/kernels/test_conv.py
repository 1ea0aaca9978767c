"""alexctl/kernels/conv.py: the three forms of a groups=2 convolution compute the same function and gradients,
keep nn.Conv2d(groups=2)'s state dict, compile without a graph break, and choose_forms measures each."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alexctl.nets.kernels.conv import FORMS, ColumnConv2d, block_diagonal, choose_forms, set_forms

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def _layer(form="groups", seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(in_channels=8, out_channels=12, kernel_size=3, stride=1, padding=1) | kw
    layer = ColumnConv2d(**args, form=form)
    nn.init.normal_(layer.bias)  # nn.Conv2d starts them near 0: make a misplaced bias visible
    return layer


def _input(layout="contiguous", shape=(2, 8, 7, 6), seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).contiguous(memory_format=LAYOUTS[layout])


def _forward_backward(layer, x, dy_seed=2):
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(dy_seed))
    grads = torch.autograd.grad(y, [x, layer.weight, layer.bias], dy)
    return y, grads


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("form", ["split", "blockdiag"])
@pytest.mark.parametrize("geometry", [dict(), dict(kernel_size=5, stride=2, padding=2)], ids=["3x3", "5x5s2"])
def test_forms_compute_the_same_function_and_gradients(form, layout, geometry):
    layer, x = _layer(**geometry), _input(layout)
    y_ref, grads_ref = _forward_backward(layer, x)
    layer.form = form
    y, grads = _forward_backward(layer, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for name, g, g_ref in zip(("input", "weight", "bias"), grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    assert y.is_contiguous(memory_format=LAYOUTS[layout])
    assert grads[1].shape == layer.weight.shape == (12, 4, *layer.kernel_size)


def test_groups_form_is_nn_conv2d():
    layer, x = _layer(), _input()
    plain = nn.Conv2d(8, 12, 3, padding=1, groups=2)
    plain.load_state_dict(layer.state_dict())
    assert torch.equal(layer(x), plain(x))


def test_block_diagonal_weight_and_its_gradient():
    w = torch.randn(6, 2, 3, 3, requires_grad=True)
    dense = block_diagonal(w, 2)
    assert dense.shape == (6, 4, 3, 3)
    assert torch.equal(dense[:3, :2], w[:3]) and torch.equal(dense[3:, 2:], w[3:])
    assert not dense[:3, 2:].any() and not dense[3:, :2].any()
    # A gradient everywhere on the dense weight reaches the real weights only from the diagonal blocks.
    g = torch.arange(dense.numel(), dtype=torch.float32).reshape(dense.shape)
    (grad,) = torch.autograd.grad(dense, w, g)
    assert torch.equal(grad, torch.cat([g[:3, :2], g[3:, 2:]]))


def test_state_dict_is_the_grouped_convs_in_every_form():
    reference = nn.Conv2d(8, 12, 3, padding=1, groups=2).state_dict()
    layers = {form: _layer(form, seed=i) for i, form in enumerate(FORMS)}
    x = _input()
    for form, layer in layers.items():
        state = layer.state_dict()
        assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in reference.items()}, form
    # Saved from one form, loaded into each other form and into a plain grouped nn.Conv2d: the same function.
    source = layers["blockdiag"]
    expected = source(x)
    for target in [*layers.values(), nn.Conv2d(8, 12, 3, padding=1, groups=2)]:
        target.load_state_dict(source.state_dict())
        torch.testing.assert_close(target(x), expected, rtol=1e-5, atol=1e-5)
    assert source.form == "blockdiag" and layers["split"].form == "split"  # loading does not change the form


@pytest.mark.parametrize("form", FORMS)
def test_forms_compile_without_graph_break(form):
    layer, x = _layer(form), _input("channels_last")
    y_ref, grads_ref = _forward_backward(layer, x)
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager_decomp_partition")
    y, grads = _forward_backward(compiled, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)


def test_form_must_be_known():
    with pytest.raises(ValueError, match="'winograd'"):
        _layer("winograd")
    layer = _layer()
    with pytest.raises(ValueError, match="'dense'"):
        layer.form = "dense"
    assert "form='groups'" in repr(layer)


class _TwoColumns(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = ColumnConv2d(8, 12, 3, padding=1)
        self.conv3 = ColumnConv2d(12, 6, 3, stride=2)

    def forward(self, x):
        return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))


def test_set_forms_by_name_or_for_all():
    net = _TwoColumns()
    set_forms(net, "split")
    assert (net.conv2.form, net.conv3.form) == ("split", "split")
    set_forms(net, {"conv3": "blockdiag"})
    assert (net.conv2.form, net.conv3.form) == ("split", "blockdiag")
    with pytest.raises(ValueError, match="conv1"):
        set_forms(net, {"conv1": "split"})


def test_choose_forms_times_every_form_of_every_layer():
    net = _TwoColumns()
    chosen = choose_forms(net, torch.randn(2, 3, 9, 9), warmup=1, repeats=2)
    assert set(chosen) == {"conv2", "conv3"}
    for name, result in chosen.items():
        assert set(result["ms"]) == set(FORMS) and all(ms > 0 for ms in result["ms"].values())
        assert result["form"] in FORMS and getattr(net, name).form == result["form"]
        assert result["ms"][result["form"]] == min(result["ms"].values())
    assert all(p.grad is None for p in net.parameters())  # timing leaves the model's gradients alone
