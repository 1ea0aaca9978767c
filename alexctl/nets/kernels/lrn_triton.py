"""The "triton" LRN (alexctl.nets.kernels.lrn): Triton kernels behind two custom operators, and a probe of whether
Triton can build them here.

Two kernel shapes, chosen by the input's layout, so that each reads memory along its contiguous axis:

- contiguous (N, C, H, W): Caffe's CUDA LRN (src/caffe/layers/lrn_layer.cu). One program per block of pixels
  walks the group's channels keeping running window sums; neighbouring threads read neighbouring pixels of one
  channel plane, and the window's channels stay in cache.
- channels-last (CUDA's default here): a [pixels x channels] tile per program. A pixel's channels are
  contiguous, so a warp reads whole lines; one thread per pixel walking the channels would read addresses
  C x 2 bytes apart across a warp (192 B for conv1 in bf16), far off the memory roofline (gpu-notes.md,
  "First contact"). The window sums are shifted tile loads (L1 hits after the first), the backward's
  reflected sum recomputes its neighbours' scales the same way: each tensor still crosses DRAM once.

Both backwards recompute the scale instead of saving it. Triton needs a C compiler and Python's headers to
build its launcher; `unavailable()` probes that once, and "auto" then falls back to the torch LRN with one
warning rather than crashing every run.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
import warnings
from pathlib import Path

import torch

try:  # importing triton touches no GPU; launching a kernel without one fails unless TRITON_INTERPRET=1
    import triton  # (set before this import: the interpreter runs the kernels with numpy on the CPU)
    import triton.language as tl
except ImportError:  # impl "triton" is then unavailable and "auto" means "torch"
    triton = tl = None

# Elements of one channels-last tile (pixels x the group's channels rounded up to a power of two): 16 fp32
# registers per thread and tensor at 4 warps. Not yet tuned on a GPU.
TILE = 2048
_probed: list[str] = []  # the probe's answer, once asked


def unavailable() -> str:
    """ "" if Triton can build and run the kernels here; otherwise why not, as a phrase. Probed once per process;
    where a GPU would have used them, a reason is also one warning."""
    if not _probed:
        _probed.append(_probe())
        if _probed[0] and torch.cuda.is_available():
            warnings.warn(
                f"alexctl: the Triton LRN cannot run here ({_probed[0]}); using the torch LRN.", RuntimeWarning, 2
            )
    return _probed[0]


def _probe() -> str:
    if triton is None:
        return "the triton package is not installed"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return ""  # the interpreter builds nothing
    if why := compiler_missing() or headers_missing():
        return why
    if torch.cuda.is_available():
        try:  # build and run one small kernel: whatever else is missing shows here, once
            x = torch.ones((1, 4, 2, 2), device="cuda")
            torch.ops.alexctl.lrn_triton(x, 3, 1e-4, 0.75, 2.0, 1)
            torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001 - any failure means: do not use Triton in this process
            return f"a test kernel failed: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
    return ""


def c_compiler() -> str | None:
    """The C compiler Triton builds its launcher with, as triton.runtime.build picks it: $CC, else gcc, else
    clang; None if there is none."""
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")
    return shutil.which(cc) if cc else None


def compiler_missing() -> str:
    if c_compiler() is None:
        cc = os.environ.get("CC")
        return f"no C compiler for Triton's launcher ({'$CC=' + cc if cc else 'no $CC, gcc or clang'})"
    return ""


def python_header() -> Path:
    """Python.h of this Python's install scheme, which Triton's launcher includes."""
    scheme = sysconfig.get_default_scheme()
    return (
        Path(sysconfig.get_paths(scheme="posix_prefix" if scheme == "posix_local" else scheme)["include"]) / "Python.h"
    )


def headers_missing() -> str:
    return "" if python_header().exists() else f"no Python headers ({python_header()} is missing)"


# Contiguous input: one program per BLOCK_PIXELS pixels of one group, walking that group's channels. Fixed (no
# autotune, so the kernels also run under TRITON_INTERPRET=1); not yet tuned on a GPU: 64 or 256 pixels and 2
# or 8 warps are the first alternatives to measure.
BLOCK_PIXELS, NUM_WARPS = 128, 4


@torch.library.custom_op("alexctl::lrn_triton", mutates_args=())
def _lrn_triton(x: torch.Tensor, size: int, s: float, beta: float, k: float, groups: int) -> torch.Tensor:
    """The forward kernel as an operator: opaque to torch.compile (no graph break), differentiable below."""
    y = torch.empty_like(x)
    _launch(FORWARD, x, None, y, size, s, beta, k, groups)
    return y


@_lrn_triton.register_fake
def _(x, size, s, beta, k, groups):
    return torch.empty_like(x)


@torch.library.custom_op("alexctl::lrn_triton_backward", mutates_args=())
def _lrn_triton_backward(
    x: torch.Tensor, dy: torch.Tensor, size: int, s: float, beta: float, k: float, groups: int
) -> torch.Tensor:
    dx = torch.empty_like(x)
    _launch(BACKWARD, x, dy, dx, size, s, beta, k, groups)
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


def _launch(kernels, x, dy, out, size, s, beta, k, groups) -> None:
    """Run kernels[0] (channels walked) or kernels[1] (a [pixels x channels] tile, for channels-last x) over
    (N, C, H, W) tensors in any mix of contiguous and channels_last layouts, into `out`.

    The kernels address pixel p = (n, h*W + w) as n * stride_n + hw * stride_hw, which holds for both
    layouts without a copy. Another layout (a permuted or sliced tensor) is copied to contiguous first:
    one extra read and write of that tensor.
    """
    if not x.is_cuda and not _interpreted(kernels[0]):
        raise ValueError(f"impl 'triton' runs on CUDA tensors (on the CPU under TRITON_INTERPRET=1), not {x.device}.")
    x = _pixel_addressable(x)
    dy = x if dy is None else _pixel_addressable(dy)
    target = out if _strides(out) is not None else torch.empty_like(out, memory_format=torch.contiguous_format)
    n, c, h, w = x.shape
    pixels, count = n * h * w, c // groups
    tiled = x.stride(1) == 1 and c > 1  # channels-last: a pixel's channels are contiguous
    block_c = triton.next_power_of_2(count)
    block = max(1, TILE // block_c) if tiled else BLOCK_PIXELS
    grid = ((pixels + block - 1) // block, groups)
    shape = dict(BLOCK_C=block_c) if tiled else {}
    kernels[tiled][grid](
        x,
        dy,
        target,
        pixels,
        h * w,
        *_strides(x),
        *_strides(dy),
        *_strides(target),
        count,
        s,
        beta,
        k,
        BEFORE=size // 2,
        AFTER=(size - 1) // 2,
        BLOCK=block,
        **shape,
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


# ------------------------------------------------------------------------------ channels-last: [pixels x channels]


@_jit
def _tile_window(xb, c, sxc, count, live, BEFORE: tl.constexpr, AFTER: tl.constexpr):
    """(k + s *) the window sum of squares of channels c (a [1, BLOCK_C] row of indices, possibly shifted) for a
    [BLOCK, 1] column of pixels: one shifted tile load per neighbour, zero outside [0, count)."""
    total = tl.zeros(live.shape, dtype=tl.float32) + tl.zeros(c.shape, dtype=tl.float32)
    for d in tl.static_range(BEFORE + AFTER + 1):
        j = c + (d - BEFORE)
        v = tl.load(xb + j * sxc, mask=live & (j >= 0) & (j < count), other=0.0).to(tl.float32)
        total += v * v
    return total


@_jit
def _tile_pixels(x_ptr, sxn, sxhw, pixels, hw_size, group, count, sxc, BLOCK: tl.constexpr):
    """([BLOCK, 1] pointers to channel 0 of `group` for this program's pixels, [BLOCK, 1] live mask)."""
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    n, hw = (p // hw_size).to(tl.int64), (p % hw_size).to(tl.int64)
    base = x_ptr + n * sxn + hw * sxhw + (group * count).to(tl.int64) * sxc
    return base[:, None], (p < pixels)[:, None]


@_jit
def _forward_tile_kernel(
    x_ptr, unused_ptr, y_ptr, pixels, hw_size, sxn, sxc, sxhw, sdn, sdc, sdhw, syn, syc, syhw, count, s, beta, k,
    BEFORE: tl.constexpr, AFTER: tl.constexpr, BLOCK: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """y_c = x_c * (k + s * window sum)^-beta for a [BLOCK pixels x BLOCK_C channels] tile of one group."""
    group = tl.program_id(1)
    xb, live = _tile_pixels(x_ptr, sxn, sxhw, pixels, hw_size, group, count, sxc, BLOCK)
    yb, _ = _tile_pixels(y_ptr, syn, syhw, pixels, hw_size, group, count, syc, BLOCK)
    c = tl.arange(0, BLOCK_C)[None, :]
    inside = live & (c < count)
    scale = k + s * _tile_window(xb, c, sxc, count, live, BEFORE, AFTER)
    xc = tl.load(xb + c * sxc, mask=inside, other=0.0).to(tl.float32)
    y = xc * tl.exp2(-beta * tl.log2(scale))
    tl.store(yb + c * syc, y.to(y_ptr.dtype.element_ty), mask=inside)


@_jit
def _backward_tile_kernel(
    x_ptr, dy_ptr, dx_ptr, pixels, hw_size, sxn, sxc, sxhw, sdn, sdc, sdhw, syn, syc, syhw, count, s, beta, k,
    BEFORE: tl.constexpr, AFTER: tl.constexpr, BLOCK: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """dx_i = dy_i S_i^-beta - 2 s beta x_i sum_{j=i-AFTER}^{i+BEFORE} dy_j x_j S_j^(-beta-1), for a tile; each
    S_j recomputed from shifted loads (the same adds in the same order as S_i's, so they agree exactly)."""
    group = tl.program_id(1)
    xb, live = _tile_pixels(x_ptr, sxn, sxhw, pixels, hw_size, group, count, sxc, BLOCK)
    db, _ = _tile_pixels(dy_ptr, sdn, sdhw, pixels, hw_size, group, count, sdc, BLOCK)
    gb, _ = _tile_pixels(dx_ptr, syn, syhw, pixels, hw_size, group, count, syc, BLOCK)
    c = tl.arange(0, BLOCK_C)[None, :]
    terms = tl.zeros([BLOCK, BLOCK_C], dtype=tl.float32)
    for e in tl.static_range(BEFORE + AFTER + 1):
        j = c + (e - AFTER)
        there = live & (j >= 0) & (j < count)
        xj = tl.load(xb + j * sxc, mask=there, other=0.0).to(tl.float32)
        dj = tl.load(db + j * sdc, mask=there, other=0.0).to(tl.float32)
        sj = k + s * _tile_window(xb, j, sxc, count, live, BEFORE, AFTER)
        terms += dj * xj * tl.exp2((-beta - 1.0) * tl.log2(sj))
    inside = live & (c < count)
    xi = tl.load(xb + c * sxc, mask=inside, other=0.0).to(tl.float32)
    di = tl.load(db + c * sdc, mask=inside, other=0.0).to(tl.float32)
    si = k + s * _tile_window(xb, c, sxc, count, live, BEFORE, AFTER)
    dx = di * tl.exp2(-beta * tl.log2(si)) - 2.0 * s * beta * xi * terms
    tl.store(gb + c * syc, dx.to(dx_ptr.dtype.element_ty), mask=inside)


FORWARD, BACKWARD = (_forward_kernel, _forward_tile_kernel), (_backward_kernel, _backward_tile_kernel)
