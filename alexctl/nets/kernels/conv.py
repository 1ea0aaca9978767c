"""The grouped convolutions of the one-device net (conv2, conv4, conv5: groups=2, section 3.2) in three forms
that compute the same function; which is fastest depends on the GPU and cuDNN, so it is measured, not assumed.

- "groups": one F.conv2d(groups=2), as nn.Conv2d does. cuDNN has sent this to slow kernels that do not use
  the tensor cores in channels-last (pytorch#34977) and was slower than two convolutions (pytorch#73764).
- "split": two dense convolutions, one per column (the paper's two GPUs), outputs concatenated. In
  channels-last each half of the input is a channel slice, not dense: the convolution copies it first.
- "blockdiag": one dense convolution whose weight is block-diagonal: twice the FLOPs, one tensor-core GEMM.
  The weight is assembled from the real weights with torch.cat of zeros, so the off-diagonal blocks are
  constants: their gradient is dropped by cat's backward, no masking needed.

The parameters are always the (out, in/groups, k, k) weight and (out,) bias of nn.Conv2d(groups=2), so a
state dict does not depend on the form and loads into a plain nn.Conv2d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alexctl.nets.kernels import median_ms

FORMS = ("groups", "split", "blockdiag")


class ColumnConv2d(nn.Conv2d):
    """A groups=2 convolution whose computation form is switchable; parameters and state dict are exactly
    nn.Conv2d(groups=2)'s. Built like nn.Conv2d; `form` may be changed at any time (set_forms, choose_forms)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 2,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
        *,
        form: str = "groups",
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype
        )
        self.form = form

    @property
    def form(self) -> str:
        return self._form

    @form.setter
    def form(self, form: str) -> None:
        if form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, not {form!r}.")
        self._form = form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "groups":
            return super().forward(x)
        padding = self.padding
        if self.padding_mode != "zeros":  # as nn.Conv2d: pad explicitly, then convolve without padding
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        if self.form == "blockdiag":
            return F.conv2d(x, block_diagonal(self.weight, self.groups), self.bias, self.stride, padding, self.dilation)
        weights, biases = self.weight.chunk(self.groups), _chunks(self.bias, self.groups)
        columns = [
            F.conv2d(xi, wi, bi, self.stride, padding, self.dilation)
            for xi, wi, bi in zip(x.chunk(self.groups, dim=1), weights, biases)
        ]
        y = torch.cat(columns, dim=1)
        if x.is_contiguous(memory_format=torch.channels_last):  # keep the caller's layout (cat already does)
            y = y.contiguous(memory_format=torch.channels_last)
        return y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, form={self.form!r}"


def block_diagonal(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(out, in/groups, k, k) grouped weight -> (out, in, k, k) dense weight, zero off the diagonal blocks."""
    rows = []
    for g, block in enumerate(weight.chunk(groups)):  # block: (out/groups, in/groups, k, k)
        zeros = block.new_zeros(block.shape)
        rows.append(torch.cat([block if h == g else zeros for h in range(groups)], dim=1))
    return torch.cat(rows, dim=0)


def set_forms(model: nn.Module, forms: dict[str, str] | str) -> None:
    """Set the form of every ColumnConv2d in `model` (one string), or of those named (module name -> form)."""
    layers = dict(_column_convs(model))
    chosen = forms if isinstance(forms, dict) else dict.fromkeys(layers, forms)
    unknown = sorted(set(chosen) - set(layers))
    if unknown:
        raise ValueError(f"{', '.join(unknown)} is not a ColumnConv2d of this model (it has {', '.join(layers)}).")
    for name, form in chosen.items():
        layers[name].form = form


def choose_forms(
    model: nn.Module, example: torch.Tensor, *, forms: tuple[str, ...] = FORMS, warmup: int = 3, repeats: int = 10
) -> dict[str, dict]:
    """Time forward + backward of each form of each ColumnConv2d on its real input and set the fastest.

    The inputs are captured by forward hooks during one pass of `example` (moved to the model's device);
    call it under the autocast / layout the training will use, since those change the answer. Gradients
    are taken with torch.autograd.grad, so the model's .grad fields are left untouched.
    Returns {name: {"form": fastest, "ms": {form: median milliseconds}}}.
    """
    layers = _column_convs(model)
    if not layers:
        return {}
    inputs: dict[str, torch.Tensor] = {}

    def capture(name: str):
        def hook(module, args, output) -> None:  # returns None: a hook's return value replaces the output
            inputs.setdefault(name, args[0].detach())

        return hook

    hooks = [layer.register_forward_hook(capture(name)) for name, layer in layers]
    try:
        with torch.no_grad():
            model(example.to(next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    chosen = {}
    for name, layer in layers:
        ms = _time_forms(layer, inputs[name], forms, warmup, repeats)
        layer.form = min(ms, key=ms.get)
        chosen[name] = {"form": layer.form, "ms": ms}
    return chosen


def benchmark(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    input_shape: tuple[int, int, int, int],
    *,
    stride: int = 1,
    padding: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    forms: tuple[str, ...] = FORMS,
    warmup: int = 3,
    repeats: int = 10,
) -> dict[str, float]:
    """Median milliseconds of forward + backward (input, weight and bias gradients) of each form of one
    groups=2 convolution on a random (N, in_channels, H, W) input, e.g. conv2 of the paper:
    benchmark(96, 256, 5, (256, 96, 27, 27), padding=2, dtype=torch.bfloat16, device="cuda", channels_last=True).
    """
    layer = ColumnConv2d(in_channels, out_channels, kernel_size, stride, padding, device=device, dtype=dtype)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    layer = layer.to(memory_format=memory_format)
    x = torch.randn(input_shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    return _time_forms(layer, x, forms, warmup, repeats)


def _time_forms(
    layer: ColumnConv2d, x: torch.Tensor, forms: tuple[str, ...], warmup: int, repeats: int
) -> dict[str, float]:
    """Median ms of forward + backward of each form on input x; the layer's form is restored."""
    x = x.detach().requires_grad_(True)
    params = [p for p in (layer.weight, layer.bias) if p is not None]
    original, ms = layer.form, {}
    dy = None
    try:
        for form in forms:
            layer.form = form

            def step() -> None:
                nonlocal dy
                y = layer(x)
                dy = torch.randn_like(y) if dy is None else dy
                torch.autograd.grad(y, [x, *params], dy)

            ms[form] = median_ms(step, x.device, warmup=warmup, repeats=repeats)
    finally:
        layer.form = original
    return ms


def _column_convs(model: nn.Module) -> list[tuple[str, ColumnConv2d]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ColumnConv2d)]


def _chunks(bias: torch.Tensor | None, groups: int) -> list[torch.Tensor | None]:
    return list(bias.chunk(groups)) if bias is not None else [None] * groups
