"""Local response normalisation (section 3.3) in three implementations that compute the same function.

    b_i = a_i / (k + s * sum_{j in window(i)} a_j^2)^beta,  window(i) = [i - n//2, i + (n-1)//2]

clipped at the ends of the channel block (zero padding), with s = alpha / n (alpha_reading "code": the
authors' cuda-convnet, Caffe and torch.nn.LocalResponseNorm) or s = alpha ("paper": the printed formula).

- "reference": F.local_response_norm on (N*G, C/G, ...) blocks (what torch.nn.LocalResponseNorm computes).
  About seven kernels forward and an autograd graph that keeps their intermediates.
- "torch": the window sum as a few shifted adds in the accumulation dtype, powers by sqrt/rsqrt or
  exp/log (torch.pow is several times slower on the CPU), and a custom backward that saves only the input
  and recomputes the scale. Runs on any device.
- "triton": Caffe's CUDA LRN (src/caffe/layers/lrn_layer.cu) as two Triton kernels: one program per block
  of pixels walks the channels keeping running window sums, so each tensor crosses DRAM once while the
  window's channels stay in cache; the backward recomputes the scale instead of saving it.

All three accumulate in float32 (float64 for float64 input, "torch" only) and return the input's dtype.
"torch" and "triton" also return its memory format; the reference returns a contiguous tensor for
channels_last input with groups > 1 (its reshape to (N*G, C/G, ...) copies).
Gradient of the "torch" and "triton" backward, with S_i = k + s * sum_{j in window(i)} x_j^2:

    dx_i = dy_i * S_i^-beta - 2*s*beta * x_i * sum_{j: i in window(j)} dy_j * x_j * S_j^(-beta-1)

where i in window(j) iff j in [i - (n-1)//2, i + n//2] (the window reflected).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from alexctl.nets.kernels import median_ms
from alexctl.paper import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE  # section 3.3: n=5, alpha=1e-4, beta=0.75, k=2

ALPHA_READINGS = ("code", "paper")
IMPLS = ("auto", "reference", "torch", "triton")

try:  # importing triton touches no GPU; launching a kernel without one fails unless TRITON_INTERPRET=1
    import triton  # (set before this import: the interpreter runs the kernels with numpy on the CPU)
    import triton.language as tl
except ImportError:  # impl "triton" is then unavailable and "auto" means "torch"
    triton = tl = None


def local_response_norm(
    x: torch.Tensor,
    *,
    size: int = LRN_SIZE,
    alpha: float = LRN_ALPHA,
    beta: float = LRN_BETA,
    k: float = LRN_K,
    groups: int = 1,
    alpha_reading: str = "code",
    impl: str = "auto",
) -> torch.Tensor:
    """Section 3.3 across the channels of (N, C, H, W) x, in `groups` blocks the window never crosses.

    impl "auto" is "triton" on CUDA when triton is installed, else "torch"; see the module docstring.
    """
    if alpha_reading not in ALPHA_READINGS:
        raise ValueError(f"alpha_reading must be 'code' or 'paper', not {alpha_reading!r}.")
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, not {impl!r}.")
    if x.dim() < 3 or groups < 1 or x.shape[1] % groups:
        raise ValueError(f"a {tuple(x.shape)} input cannot be split into {groups} groups of channels.")
    if size < 1:
        raise ValueError(f"size must be at least 1, not {size}.")
    if impl == "auto":
        impl = "triton" if x.is_cuda and triton is not None and x.dtype != torch.float64 else "torch"
    if impl == "reference":
        return _reference(x, size=size, alpha=alpha, beta=beta, k=k, groups=groups, alpha_reading=alpha_reading)
    s = alpha / size if alpha_reading == "code" else alpha
    if impl == "torch":
        return _TorchLRN.apply(x, size, s, beta, k, groups)
    if triton is None:
        raise ValueError("impl 'triton' needs the triton package, which is not installed; use impl 'torch'.")
    if x.dim() != 4 or x.dtype == torch.float64:
        raise ValueError(f"impl 'triton' takes 4-D float32/bfloat16/float16 input, not {x.dtype} {tuple(x.shape)}.")
    return torch.ops.alexctl.lrn_triton(x, size, s, beta, k, groups)


def benchmark(
    shape: tuple[int, int, int, int],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    groups: int = 1,
    impls: tuple[str, ...] | None = None,
    warmup: int = 3,
    repeats: int = 10,
) -> dict[str, float]:
    """Median milliseconds of forward + backward of each implementation on one random (N, C, H, W) input.

    impls defaults to reference and torch, plus triton on CUDA. The input is ReLU-like (non-negative, a few
    units) so that the normalisation is not a constant factor.
    """
    device = torch.device(device)
    if impls is None:
        impls = ("reference", "torch") + (("triton",) if device.type == "cuda" and triton is not None else ())
    x = (torch.randn(shape, device=device).relu() * 5).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    dy = torch.randn_like(x)

    def step(impl: str) -> None:
        torch.autograd.grad(local_response_norm(x, groups=groups, impl=impl), x, dy)

    return {impl: median_ms(lambda impl=impl: step(impl), device, warmup=warmup, repeats=repeats) for impl in impls}


def _reference(x, *, size, alpha, beta, k, groups, alpha_reading):
    """The reference: torch's F.local_response_norm per block, the function the faster implementations are
    tested against."""
    # F.local_response_norm computes alpha * mean over the zero-padded window, i.e. alpha/n * sum.
    scale = alpha if alpha_reading == "code" else alpha * size
    shape = x.shape
    # (N, C, ...) -> (N*G, C/G, ...): each block becomes its own sample, so the window cannot cross it.
    # reshape, not view: a channels_last tensor cannot be viewed this way and is copied.
    wide = x.to(torch.promote_types(x.dtype, torch.float32))  # bfloat16/float16 -> float32, float64 stays
    blocks = wide.reshape(shape[0] * groups, shape[1] // groups, *shape[2:])
    y = F.local_response_norm(blocks, size, alpha=scale, beta=beta, k=k)
    return y.reshape(shape).to(x.dtype)


# ---------------------------------------------------------------------------------------------- "torch"


class _TorchLRN(torch.autograd.Function):
    """Saves only x; the backward recomputes the scale (one pass of window sums) instead of keeping it.

    Each step works in place or into a buffer no longer needed (two new tensors forward, three backward):
    on the CPU a fresh 5-20 MB tensor can cost more in page faults than the arithmetic done in it."""

    @staticmethod
    def forward(ctx, x, size, s, beta, k, groups):
        ctx.save_for_backward(x)
        ctx.constants = size, s, beta, k, groups
        w = _widen(x).unflatten(1, (groups, -1))  # (N, G, C/G, ...) view in the accumulation dtype
        squares = w * w
        scale = _window_sum(squares, size // 2, (size - 1) // 2).mul_(s).add_(k)  # S
        power = _power(scale, beta, out=scale, scratch=squares)  # S^-beta
        return power.mul_(w).flatten(1, 2).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        size, s, beta, k, groups = ctx.constants
        w = _widen(x).unflatten(1, (groups, -1))
        g = _widen(dy).unflatten(1, (groups, -1))
        squares = w * w
        scale = _window_sum(squares, size // 2, (size - 1) // 2).mul_(s).add_(k)  # S
        power = _power(scale, beta, out=squares, scratch=squares)  # S^-beta, over the dead squares
        t = scale.reciprocal_().mul_(power).mul_(w).mul_(g)  # dy_j * x_j * S_j^(-beta-1)
        # The sum over {j: i in window(j)}: the window reflected, (n-1)//2 before and n//2 after.
        dx = _window_sum(t, (size - 1) // 2, size // 2).mul_(w).mul_(-2.0 * s * beta).addcmul_(g, power)
        return dx.flatten(1, 2).to(x.dtype), None, None, None, None, None


def _widen(x: torch.Tensor) -> torch.Tensor:
    """bfloat16/float16 -> float32 (a copy), float32/float64 unchanged (the same tensor: never write to it).

    k + s * sum is about 2.0 plus a small term, which bfloat16's 8 bits of mantissa would round away."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _window_sum(t: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """out[:, :, i] = sum of t[:, :, i-before .. i+after] along dim 2, clipped at the block's ends.

    Shifted in-place adds on slices: one pass over memory per neighbour in any layout, no padding copy,
    and no cumsum (whose differences lose small sums next to large ones). add_ on the slice, not `+=`,
    which Python follows with a __setitem__ that copies the slice onto itself."""
    out = t.clone()
    for d in range(1, before + 1):
        out[:, :, d:].add_(t[:, :, :-d])
    for d in range(1, after + 1):
        out[:, :, :-d].add_(t[:, :, d:])
    return out


def _power(scale: torch.Tensor, beta: float, *, out: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """scale^-beta into `out`, which may be `scale`; `scratch` is overwritten (it may be `out`, not `scale`).

    beta = 0.75 (the paper's) as 1/sqrt(S * sqrt(S)), otherwise exp(-beta log S): both several times
    faster on the CPU than torch.pow, which does not vectorise a fractional exponent. Under torch.compile the
    same arithmetic without out= (Dynamo cannot trace out= into a channels-last buffer; Inductor fuses it)."""
    if torch.compiler.is_compiling():
        return (scale * scale.sqrt()).rsqrt() if beta == 0.75 else scale.log().mul(-beta).exp()
    if beta == 0.75:
        root = torch.sqrt(scale, out=scratch)
        return torch.mul(scale, root, out=out).rsqrt_()
    return torch.log(scale, out=out).mul_(-beta).exp_()


# --------------------------------------------------------------------------------------------- "triton"

# One program per BLOCK_PIXELS pixels of one group, walking that group's channels. Fixed (no autotune, so
# the kernels also run under TRITON_INTERPRET=1); not yet tuned on a GPU: 64 or 256 pixels and 2 or 8
# warps are the first alternatives to measure.
BLOCK_PIXELS, NUM_WARPS = 128, 4


@torch.library.custom_op("alexctl::lrn_triton", mutates_args=())
def _lrn_triton(x: torch.Tensor, size: int, s: float, beta: float, k: float, groups: int) -> torch.Tensor:
    """The forward kernel as an operator: opaque to torch.compile (no graph break), differentiable below."""
    y = torch.empty_like(x)
    _launch(_forward_kernel, x, None, y, size, s, beta, k, groups)
    return y


@_lrn_triton.register_fake
def _(x, size, s, beta, k, groups):
    return torch.empty_like(x)


@torch.library.custom_op("alexctl::lrn_triton_backward", mutates_args=())
def _lrn_triton_backward(
    x: torch.Tensor, dy: torch.Tensor, size: int, s: float, beta: float, k: float, groups: int
) -> torch.Tensor:
    dx = torch.empty_like(x)
    _launch(_backward_kernel, x, dy, dx, size, s, beta, k, groups)
    return dx


@_lrn_triton_backward.register_fake
def _(x, dy, size, s, beta, k, groups):
    return torch.empty_like(x)


def _setup_triton(ctx, inputs, output):
    x, size, s, beta, k, groups = inputs
    ctx.save_for_backward(x)
    ctx.constants = size, s, beta, k, groups


def _triton_grad(ctx, dy):
    (x,) = ctx.saved_tensors
    return torch.ops.alexctl.lrn_triton_backward(x, dy, *ctx.constants), None, None, None, None, None


_lrn_triton.register_autograd(_triton_grad, setup_context=_setup_triton)


def _launch(kernel, x, dy, out, size, s, beta, k, groups) -> None:
    """Run `kernel` over (N, C, H, W) tensors in any mix of contiguous and channels_last layouts, in place.

    The kernels address pixel p = (n, h*W + w) as n * stride_n + hw * stride_hw, which holds for both
    layouts without a copy. Another layout (a permuted or sliced tensor) is copied to contiguous first:
    one extra read and write of that tensor.
    """
    if not x.is_cuda and not _interpreted(kernel):
        raise ValueError(f"impl 'triton' runs on CUDA tensors (on the CPU under TRITON_INTERPRET=1), not {x.device}.")
    x = _pixel_addressable(x)
    dy = x if dy is None else _pixel_addressable(dy)
    target = out if _strides(out) is not None else torch.empty_like(out, memory_format=torch.contiguous_format)
    n, c, h, w = x.shape
    pixels = n * h * w
    grid = ((pixels + BLOCK_PIXELS - 1) // BLOCK_PIXELS, groups)
    kernel[grid](
        x,
        dy,
        target,
        pixels,
        h * w,
        *_strides(x),
        *_strides(dy),
        *_strides(target),
        c // groups,
        s,
        beta,
        k,
        BEFORE=size // 2,
        AFTER=(size - 1) // 2,
        BLOCK=BLOCK_PIXELS,
        num_warps=NUM_WARPS,
    )
    if target is not out:
        out.copy_(target)


def _interpreted(kernel) -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


def _strides(t: torch.Tensor) -> tuple[int, int, int] | None:
    """(stride_n, stride_c, stride_hw) when h and w flatten into one pixel index, else None."""
    if t.shape[2] > 1 and t.shape[3] > 1 and t.stride(2) != t.stride(3) * t.shape[3]:
        return None
    return t.stride(0), t.stride(1), t.stride(3) if t.shape[3] > 1 else t.stride(2)


def _pixel_addressable(t: torch.Tensor) -> torch.Tensor:
    return t if _strides(t) is not None else t.contiguous()


def _jit(fn):
    """triton.jit where triton is installed; elsewhere the plain function, never called."""
    return triton.jit(fn) if triton is not None else fn


@_jit
def _square(base, channel, stride, count, live):
    """x[channel]^2 in float32 for a block of pixels; 0 outside [0, count) (the zero padding)."""
    inside = live & (channel >= 0) & (channel < count)
    v = tl.load(base + channel * stride, mask=inside, other=0.0).to(tl.float32)
    return v * v


@_jit
def _slide(total, base, channel, stride, count, live, BEFORE: tl.constexpr, AFTER: tl.constexpr):
    """The window sum of `channel` from that of channel - 1: add the square entering, drop the one leaving."""
    return (
        total
        + _square(base, channel + AFTER, stride, count, live)
        - _square(base, channel - BEFORE - 1, stride, count, live)
    )


@_jit
def _group_base(ptr, stride_n, stride_c, stride_hw, n, hw, group, count):
    """Pointers to channel 0 of `group` for a block of pixels (int64 offsets: large batches overflow int32)."""
    return ptr + n * stride_n + hw * stride_hw + (group * count).to(tl.int64) * stride_c


@_jit
def _term(total, xb, db, c, sxc, sdc, count, live, s, beta, k):
    """dy_c * x_c * S_c^(-beta-1) for the window sum `total` of channel c (0 outside the group)."""
    inside = live & (c >= 0) & (c < count)
    xc = tl.load(xb + c * sxc, mask=inside, other=0.0).to(tl.float32)
    dc = tl.load(db + c * sdc, mask=inside, other=0.0).to(tl.float32)
    return dc * xc * tl.exp2((-beta - 1.0) * tl.log2(k + s * total))


@_jit
def _forward_kernel(
    x_ptr,
    unused_ptr,
    y_ptr,
    pixels,
    hw_size,
    sxn,
    sxc,
    sxhw,
    sdn,
    sdc,
    sdhw,
    syn,
    syc,
    syhw,
    count,
    s,
    beta,
    k,
    BEFORE: tl.constexpr,
    AFTER: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """y_c = x_c * (k + s * window sum)^-beta, walking the group's `count` channels."""
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < pixels
    n, hw = (p // hw_size).to(tl.int64), (p % hw_size).to(tl.int64)
    group = tl.program_id(1)
    xb = _group_base(x_ptr, sxn, sxc, sxhw, n, hw, group, count)
    yb = _group_base(y_ptr, syn, syc, syhw, n, hw, group, count)
    total = tl.zeros([BLOCK], dtype=tl.float32)
    for c in range(0, AFTER):  # the window of channel -1: channels 0 .. AFTER-1
        total += _square(xb, c, sxc, count, live)
    for c in range(0, count):
        total = _slide(total, xb, c, sxc, count, live, BEFORE, AFTER)
        xc = tl.load(xb + c * sxc, mask=live, other=0.0).to(tl.float32)
        y = xc * tl.exp2(-beta * tl.log2(k + s * total))
        tl.store(yb + c * syc, y.to(y_ptr.dtype.element_ty), mask=live)


@_jit
def _backward_kernel(
    x_ptr,
    dy_ptr,
    dx_ptr,
    pixels,
    hw_size,
    sxn,
    sxc,
    sxhw,
    sdn,
    sdc,
    sdhw,
    syn,
    syc,
    syhw,
    count,
    s,
    beta,
    k,
    BEFORE: tl.constexpr,
    AFTER: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """dx_i = dy_i S_i^-beta - 2 s beta x_i sum_{j=i-AFTER}^{i+BEFORE} dy_j x_j S_j^(-beta-1).

    Step c brings channel j = c into the running sum of terms and drops j = c - n; channel i = c - BEFORE is
    then complete. Three running window sums of squares give S at c, c - n and i, recomputed rather than
    stored: each is the same sequence of adds, so they agree up to rounding."""
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < pixels
    n, hw = (p // hw_size).to(tl.int64), (p % hw_size).to(tl.int64)
    group = tl.program_id(1)
    xb = _group_base(x_ptr, sxn, sxc, sxhw, n, hw, group, count)
    db = _group_base(dy_ptr, sdn, sdc, sdhw, n, hw, group, count)
    gb = _group_base(dx_ptr, syn, syc, syhw, n, hw, group, count)
    size = BEFORE + AFTER + 1
    lead = tl.zeros([BLOCK], dtype=tl.float32)  # window sum of channel c
    trail = tl.zeros([BLOCK], dtype=tl.float32)  # of channel c - size (zero while its window is before 0)
    mid = tl.zeros([BLOCK], dtype=tl.float32)  # of channel i = c - BEFORE
    terms = tl.zeros([BLOCK], dtype=tl.float32)  # sum of the terms of channels c - size + 1 .. c
    for c in range(0, AFTER):
        lead += _square(xb, c, sxc, count, live)
    for c in range(0, count + BEFORE):
        lead = _slide(lead, xb, c, sxc, count, live, BEFORE, AFTER)
        terms += _term(lead, xb, db, c, sxc, sdc, count, live, s, beta, k)
        trail = _slide(trail, xb, c - size, sxc, count, live, BEFORE, AFTER)
        terms -= _term(trail, xb, db, c - size, sxc, sdc, count, live, s, beta, k)
        i = c - BEFORE
        mid = _slide(mid, xb, i, sxc, count, live, BEFORE, AFTER)
        out = live & (i >= 0)
        xi = tl.load(xb + i * sxc, mask=out, other=0.0).to(tl.float32)
        di = tl.load(db + i * sdc, mask=out, other=0.0).to(tl.float32)
        dx = di * tl.exp2(-beta * tl.log2(k + s * mid)) - 2.0 * s * beta * xi * terms
        tl.store(gb + i * syc, dx.to(dx_ptr.dtype.element_ty), mask=out)
