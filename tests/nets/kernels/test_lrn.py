"""alexctl/kernels/lrn.py: the "torch" and "triton" implementations against the reference (alexctl.nets.model's
computation), and the reference against the section 3.3 formula written out as a loop.

The Triton kernels run under Triton's interpreter in a fresh process: TRITON_INTERPRET=1 only takes effect
if it is set before triton is imported, and this process may have imported it already (torch.compile does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from alexctl.nets.kernels import lrn_triton
from alexctl.nets.kernels.lrn import auto_impl, benchmark, local_response_norm

REPO = Path(__file__).resolve().parents[2]
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
# Relative to the largest output or gradient (observed: 2e-7 in float32, 4.2e-3 in bfloat16). float32: both
# sides compute in float32, the sums in a different order. bfloat16: both round float32 results that differ
# in the last bits, so they differ by at most one bfloat16 unit in the last place (2^-7 relative at worst).
TOLERANCE = {torch.float32: 1e-6, torch.bfloat16: 2**-7}


def _input(shape, dtype=torch.float32, layout="contiguous", scale=3.0, seed=0):
    """Random values of both signs, a few units: a ReLU output would hide a sign error in the gradient."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * scale
    return x.to(dtype).contiguous(memory_format=LAYOUTS[layout])


def _forward_backward(x, dy, **kw):
    x = x.detach().clone().requires_grad_(True)
    y = local_response_norm(x, **kw)
    y.backward(dy)
    return y, x.grad


def _assert_close(actual, expected, rel):
    scale = expected.abs().max().item()
    error = (actual.double() - expected.double()).abs().max().item()
    assert error <= rel * scale, f"max error {error:.3g} against a largest value {scale:.3g}"


def _paper_formula(x, size, alpha, beta, k, groups, alpha_reading):
    """Section 3.3 channel by channel, the window clipped at each group's ends."""
    s = alpha / size if alpha_reading == "code" else alpha
    per = x.shape[1] // groups
    out = torch.empty_like(x)
    for i in range(x.shape[1]):
        first, last = i // per * per, i // per * per + per - 1
        window = x[:, max(first, i - size // 2) : min(last, i + (size - 1) // 2) + 1]
        out[:, i] = x[:, i] / (k + s * (window**2).sum(1)) ** beta
    return out


@pytest.mark.parametrize("alpha_reading", ["code", "paper"])
@pytest.mark.parametrize("groups,size", [(1, 5), (2, 5), (2, 4)])
def test_reference_is_the_paper_formula(alpha_reading, groups, size):
    x = _input((2, 12, 3, 3), torch.float64)
    expected = _paper_formula(x, size, 0.5, 0.75, 2.0, groups, alpha_reading)
    y = local_response_norm(x, size=size, alpha=0.5, groups=groups, alpha_reading=alpha_reading, impl="reference")
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


CASES = [  # (shape, groups, size): tiny C, C not divisible by 5, the paper's conv1 channels in two columns
    ((4, 3, 5, 5), 1, 5),
    ((2, 10, 6, 7), 1, 5),
    ((2, 10, 6, 7), 2, 5),
    ((2, 96, 5, 5), 2, 5),
    ((2, 14, 4, 4), 2, 4),  # an even window: before and after the channel differ, the backward reflects it
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("alpha_reading", ["code", "paper"])
@pytest.mark.parametrize("alpha", [1e-4, 1.0], ids=["paper-alpha", "strong"])
@pytest.mark.parametrize("shape,groups,size", CASES)
def test_torch_matches_reference(shape, groups, size, alpha, alpha_reading, layout, dtype):
    # The paper's alpha barely changes the output of inputs of a few units; alpha 1 makes the window matter.
    x = _input(shape, dtype, layout, scale=30.0 if alpha < 1 else 3.0)
    dy = _input(shape, dtype, layout, seed=1)
    kw = dict(size=size, alpha=alpha, groups=groups, alpha_reading=alpha_reading)
    y_ref, dx_ref = _forward_backward(x, dy, impl="reference", **kw)
    y, dx = _forward_backward(x, dy, impl="torch", **kw)
    _assert_close(y, y_ref, TOLERANCE[dtype])
    _assert_close(dx, dx_ref, TOLERANCE[dtype])
    for t in (y, dx):
        assert t.dtype == dtype and t.is_contiguous(memory_format=LAYOUTS[layout])


def test_torch_gradient_with_a_gradient_in_another_layout():
    x = _input((2, 10, 4, 4), layout="channels_last")
    dy = _input((2, 10, 4, 4), seed=1)  # contiguous
    _, dx_ref = _forward_backward(x, dy, impl="reference", alpha=1.0)
    _, dx = _forward_backward(x, dy, impl="torch", alpha=1.0)
    _assert_close(dx, dx_ref, 1e-6)


@pytest.mark.parametrize("beta", [0.75, 0.6])  # the paper's beta has its own power code (sqrt, rsqrt)
@pytest.mark.parametrize("groups,size", [(1, 5), (2, 5), (2, 4)])
def test_torch_backward_passes_gradcheck(groups, size, beta):
    x = _input((2, 8, 3, 3), torch.float64).requires_grad_(True)
    for alpha_reading in ("code", "paper"):
        assert torch.autograd.gradcheck(
            lambda t, alpha_reading=alpha_reading: local_response_norm(
                t, size=size, alpha=0.5, beta=beta, k=1.5, groups=groups, alpha_reading=alpha_reading, impl="torch"
            ),
            (x,),
        )


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_torch_matches_reference_at_other_constants(layout):
    x, dy = _input((2, 12, 4, 5), layout=layout), _input((2, 12, 4, 5), layout=layout, seed=1)
    kw = dict(size=3, alpha=0.7, beta=0.6, k=1.0, groups=2)
    y_ref, dx_ref = _forward_backward(x, dy, impl="reference", **kw)
    y, dx = _forward_backward(x, dy, impl="torch", **kw)
    _assert_close(y, y_ref, TOLERANCE[torch.float32])
    _assert_close(dx, dx_ref, TOLERANCE[torch.float32])


def test_torch_saves_only_the_input():
    """The scale is recomputed in the backward, not kept: one saved tensor, x itself."""
    saved = []
    x = _input((2, 10, 4, 4)).requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        local_response_norm(x, impl="torch")
    assert len(saved) == 1 and saved[0] is x


def test_auto_is_torch_on_the_cpu():
    x = _input((2, 10, 4, 4))
    assert torch.equal(local_response_norm(x), local_response_norm(x, impl="torch"))


@pytest.mark.parametrize(
    "kw,culprit",
    [
        ({"impl": "cuda"}, "'cuda'"),
        ({"alpha_reading": "printed"}, "'printed'"),
        ({"groups": 3}, "3 groups"),
    ],
)
def test_bad_arguments_name_the_value(kw, culprit):
    with pytest.raises(ValueError, match=culprit):
        local_response_norm(_input((2, 10, 4, 4)), **kw)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="the kernels run on the CPU when interpreted")
def test_triton_on_the_cpu_says_it_needs_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        local_response_norm(_input((2, 10, 4, 4)), impl="triton")


class _Net(nn.Module):
    def __init__(self, impl):
        super().__init__()
        self.conv, self.impl = nn.Conv2d(3, 10, 3, padding=1), impl

    def forward(self, x):
        return local_response_norm(torch.relu(self.conv(x)), impl=self.impl, groups=2, alpha=1.0).mean((2, 3))


def test_torch_compiles_without_graph_break():
    torch.manual_seed(0)
    net, x = _Net("torch"), _input((2, 3, 6, 6))
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager_decomp_partition")
    grads = []
    for f in (net, compiled):
        net.zero_grad()
        y = f(x)
        y.square().sum().backward()
        grads.append((y, net.conv.weight.grad.clone()))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-5, atol=1e-6)


def test_benchmark_times_each_cpu_implementation():
    ms = benchmark((2, 10, 4, 4), warmup=1, repeats=2)
    assert set(ms) == {"reference", "torch"} and all(v > 0 for v in ms.values())


@pytest.fixture
def probe(monkeypatch):
    """lrn_triton's probe not yet run, outside the interpreter."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(lrn_triton, "_probed", [])
    return monkeypatch


@pytest.mark.skipif(lrn_triton.triton is None, reason="the probe's checks after the import need triton")
def test_the_triton_probe_names_what_is_missing(probe, tmp_path):
    probe.setenv("CC", str(tmp_path / "no-such-cc"))
    assert lrn_triton._probe() == f"no C compiler for Triton's launcher ($CC={tmp_path / 'no-such-cc'})"
    probe.delenv("CC")
    probe.setenv("PATH", str(tmp_path))  # no gcc, no clang
    assert lrn_triton._probe() == "no C compiler for Triton's launcher (no $CC, gcc or clang)"
    probe.undo()
    probe.delenv("TRITON_INTERPRET", raising=False)
    probe.setattr(lrn_triton.sysconfig, "get_paths", lambda scheme=None: {"include": str(tmp_path)})
    assert lrn_triton._probe() == f"no Python headers ({tmp_path / 'Python.h'} is missing)"


def test_auto_falls_back_to_torch_with_one_warning_when_triton_cannot_build(probe):
    probe.setattr(lrn_triton, "_probe", lambda: "no C compiler for Triton's launcher (no $CC, gcc or clang)")
    probe.setattr(lrn_triton.torch.cuda, "is_available", lambda: True)  # a GPU machine, where it matters
    with pytest.warns(RuntimeWarning, match=r"Triton LRN cannot run here \(no C compiler.*using the torch LRN") as w:
        assert auto_impl(True, torch.bfloat16) == "torch"
        assert auto_impl(True, torch.float32) == "torch"  # probed once: no second warning
    assert len(w) == 1
    with pytest.raises(ValueError, match="no C compiler"):  # asked for by name: refused, with the reason
        local_response_norm(_input((2, 10, 4, 4)), impl="triton")
    probe.setattr(lrn_triton, "_probed", [""])
    assert auto_impl(True, torch.bfloat16) == "triton" and auto_impl(False, torch.float32) == "torch"


def test_auto_is_decided_outside_a_compiled_graph(probe):
    """The probe runs once at trace time and its answer is a constant: fullgraph holds either way."""
    probe.setattr(lrn_triton, "_probed", ["no C compiler"])
    torch._dynamo.reset()
    f = torch.compile(lambda x: x * (2 if auto_impl(True, x.dtype) == "triton" else 3), fullgraph=True, backend="eager")
    assert f(torch.ones(2)).tolist() == [3, 3]


# ----------------------------------------------------------------------------- Triton, interpreted

INTERPRETED = textwrap.dedent("""
    import json, os
    import torch
    from torch import nn
    from alexctl.nets.kernels import lrn, lrn_triton

    assert os.environ["TRITON_INTERPRET"] == "1"
    results = {"interpreted": type(lrn_triton._forward_kernel).__name__ == "InterpretedFunction"}

    class Spy:  # counts the launches of a kernel and their programs
        def __init__(self, kernel):
            self.kernel, self.launches, self.programs = kernel, 0, 0

        def __getitem__(self, grid):
            self.launches, self.programs = self.launches + 1, self.programs + grid[0] * grid[1]
            return self.kernel[grid]

    spies = [Spy(k) for k in (*lrn_triton.FORWARD, *lrn_triton.BACKWARD)]
    lrn_triton.FORWARD, lrn_triton.BACKWARD = (spies[0], spies[1]), (spies[2], spies[3])
    lrn_triton._interpreted = lambda kernel: True  # the spies stand in front of interpreted kernels

    def run(x, dy, impl, groups, size):
        x = x.detach().clone().requires_grad_(True)
        y = lrn.local_response_norm(x, impl=impl, groups=groups, size=size, alpha=1.0)
        y.backward(dy)
        return y, x.grad

    def error(a, b):  # relative to the largest value of b
        a, b = a.double(), b.double()
        return ((a - b).abs().max() / b.abs().max()).item()

    # (shape, groups, size, layout, kernel): "walk" for contiguous x, "tile" for channels-last x. Blocks: the walk
    # takes 128 pixels, the tile 2048 // next_power_of_2(C / groups) pixels: the 6x6 and 9x9 cases span several.
    cases = [((2, 10, 5, 5), 1, 5, "contiguous", "walk"), ((2, 10, 5, 5), 1, 5, "channels_last", "tile"),
             ((2, 96, 5, 5), 2, 5, "contiguous", "walk"), ((2, 96, 6, 6), 2, 5, "channels_last", "tile"),
             ((2, 10, 9, 9), 1, 5, "contiguous", "walk"),  # 162 pixels: two blocks
             ((2, 14, 3, 4), 2, 4, "mixed", "tile"),  # mixed: x channels_last, dy contiguous; an even window
             ((2, 10, 4, 4), 2, 5, "bfloat16", "walk"),  # loaded as bfloat16, computed in float32, stored as such
             ((2, 96, 6, 6), 1, 5, "bfloat16 channels_last", "tile")]  # conv1's LRN as CUDA runs it, 5 tiles
    torch.manual_seed(0)
    for shape, groups, size, layout, kernel in cases:
        x, dy = torch.randn(shape) * 3, torch.randn(shape)
        if "bfloat16" in layout:
            x, dy = x.bfloat16(), dy.bfloat16()
        if layout not in ("contiguous", "bfloat16"):
            x = x.contiguous(memory_format=torch.channels_last)
        if "channels_last" in layout:
            dy = dy.contiguous(memory_format=torch.channels_last)
        y_ref, dx_ref = run(x, dy, "reference", groups, size)
        before = [(spy.launches, spy.programs) for spy in spies]
        y, dx = run(x, dy, "triton", groups, size)
        ran = [(spy.launches - a, spy.programs - b) for spy, (a, b) in zip(spies, before)]
        results[f"{shape} groups={groups} size={size} {layout}"] = {
            "forward": error(y, y_ref), "backward": error(dx, dx_ref), "kernel": kernel, "ran": ran,
            "layout": y.stride() == dx.stride() == x.stride()}  # the reference keeps no layout when groups > 1

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 10, 3, padding=1)

        def forward(self, x):
            return lrn.local_response_norm(torch.relu(self.conv(x)), impl="triton", groups=2, alpha=1.0).mean((2, 3))

    net, x = Net(), torch.randn(2, 3, 5, 5)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager_decomp_partition")
    outs = []
    for f in (net, compiled):
        net.zero_grad()
        y = f(x)
        y.square().sum().backward()
        outs.append((y, net.conv.weight.grad.clone()))
    results["compiled"] = {"forward": error(outs[1][0], outs[0][0]), "backward": error(outs[1][1], outs[0][1])}
    print("RESULTS", json.dumps(results))
""")


@pytest.fixture(scope="module")
def interpreted() -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", INTERPRETED], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULTS "))


def test_triton_kernels_ran_interpreted(interpreted):
    assert interpreted["interpreted"] is True


def test_triton_matches_reference_forward_and_backward(interpreted):
    cases = {name: r for name, r in interpreted.items() if name not in ("interpreted", "compiled")}
    assert len(cases) == 8
    for name, r in cases.items():
        # float32: the interpreter's numpy exp2/log2 against ATen's pow; bfloat16: one unit in the last place.
        tolerance = 2**-7 if "bfloat16" in name else 5e-6
        assert r["forward"] < tolerance and r["backward"] < tolerance and r["layout"], (name, r)
        # One forward and one backward launch, of the kernel the layout calls for: [walk fwd, tile fwd, walk bwd,
        # tile bwd] as (launches, programs).
        tiled = r["kernel"] == "tile"
        assert [launches for launches, _ in r["ran"]] == [1 - tiled, tiled, 1 - tiled, tiled], (name, r)
    several = {  # programs per launch where the input spans several blocks
        "(2, 96, 6, 6) groups=2 size=5 channels_last": 3 * 2,  # 72 pixels / 32 per tile, 2 groups
        "(2, 10, 9, 9) groups=1 size=5 contiguous": 2,  # 162 pixels / 128
        "(2, 96, 6, 6) groups=1 size=5 bfloat16 channels_last": 5,  # 72 pixels / 16 per tile (128 channels)
    }
    for name, programs in several.items():
        assert max(p for _, p in cases[name]["ran"]) == programs, (name, cases[name])


def test_triton_compiles_without_graph_break(interpreted):
    # fullgraph=True raises on a graph break; the op is opaque to the compiler, so the values are the eager ones.
    assert interpreted["compiled"] == {"forward": 0.0, "backward": 0.0}


# ---------------------------------------------------------------- against the printed formula (section 3.3)


def lrn_printed(a: torch.Tensor, groups: int, reading: str, n=5, alpha=1e-4, beta=0.75, k=2.0) -> torch.Tensor:
    """Section 3.3's formula, one channel at a time; the sum stays inside the channel's group."""
    channels = a.shape[1]
    per_group = channels // groups
    s = alpha / n if reading == "code" else alpha
    b = torch.empty_like(a)
    for i in range(channels):
        first, last = i // per_group * per_group, i // per_group * per_group + per_group - 1
        total = sum(a[:, j] ** 2 for j in range(max(first, i - n // 2), min(last, i + n // 2) + 1))
        b[:, i] = a[:, i] / (k + s * total) ** beta
    return b


@pytest.mark.parametrize("impl", ["reference", "torch"])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("reading", ["code", "paper"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_lrn_matches_printed_formula(impl, groups, reading, channels_last):
    torch.manual_seed(2)
    a = torch.randn(2, 12, 5, 4, dtype=torch.float64) * 40  # large enough that the denominator matters
    x = a.to(memory_format=torch.channels_last) if channels_last else a
    expected = lrn_printed(a, groups, reading)
    got = local_response_norm(x, groups=groups, alpha_reading=reading, impl=impl)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(got, a / 2**0.75, rtol=1e-3)  # the normalisation did something


def test_lrn_default_is_torch_and_the_papers_reading_is_stronger():
    torch.manual_seed(3)
    x = torch.randn(2, 16, 6, 6) * 30
    reference = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(x)
    torch.testing.assert_close(local_response_norm(x), reference)
    assert (local_response_norm(x, alpha_reading="paper").abs() <= local_response_norm(x).abs()).all()
    assert not torch.allclose(local_response_norm(x, alpha_reading="paper"), reference, rtol=1e-2)


def test_lrn_neighbourhood_stays_in_its_group():
    x = torch.zeros(1, 8, 1, 1)
    x[0, 3], x[0, 4] = 1.0, 1000.0  # the last map of group 0 and its neighbour, the first of group 1
    alone = 1.0 / (2.0 + 1e-4 / 5 * 1.0) ** 0.75
    assert local_response_norm(x, groups=2)[0, 3].item() == pytest.approx(alone, rel=1e-6)
    crossed = 1.0 / (2.0 + 1e-4 / 5 * (1.0 + 1000.0**2)) ** 0.75
    assert local_response_norm(x, groups=1)[0, 3].item() == pytest.approx(crossed, rel=1e-6)


def test_lrn_gradient_and_low_precision():
    torch.manual_seed(4)
    x = (torch.randn(2, 8, 3, 3, dtype=torch.float64) * 20).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, groups=2, alpha_reading="paper"), (x,))
    bf16 = local_response_norm(x.detach().bfloat16(), groups=2)
    assert bf16.dtype == torch.bfloat16
    exact = lrn_printed(x.detach().bfloat16().double(), 2, "code")
    torch.testing.assert_close(bf16.double(), exact, rtol=8e-3, atol=1e-3)
    with pytest.raises(ValueError, match="'printed'"):
        local_response_norm(x, alpha_reading="printed")


# ---------------------------------------------------------------- on CUDA (`alexctl gpu-check`'s cuda-tests step)

PAPER_LRN_SHAPES = [(128, 96, 55, 55), (128, 256, 27, 27)]  # after conv1 and conv2, the recipe's batch 128


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("shape", PAPER_LRN_SHAPES, ids=["conv1", "conv2"])
def test_cuda_triton_matches_reference_at_the_paper_nets_shapes_in_bf16_channels_last(shape, groups):
    """The layout CUDA trains in (bf16, channels-last) at the real shapes: many blocks, both directions."""
    x = _input(shape, torch.bfloat16, "channels_last").cuda()
    dy = _input(shape, torch.bfloat16, "channels_last", seed=1).cuda()
    y, dx = _forward_backward(x, dy, groups=groups, impl="triton")
    y0, dx0 = _forward_backward(x.double(), dy.double(), groups=groups, impl="reference")
    assert y.dtype == dx.dtype == torch.bfloat16
    assert y.is_contiguous(memory_format=torch.channels_last)
    _assert_close(y, y0, TOLERANCE[torch.bfloat16])
    _assert_close(dx, dx0, TOLERANCE[torch.bfloat16])
