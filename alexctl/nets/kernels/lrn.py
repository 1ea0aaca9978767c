"""Local response normalisation (section 3.3) in three implementations that compute the same function.

    b_i = a_i / (k + s * sum_{j in window(i)} a_j^2)^beta,  window(i) = [i - n//2, i + (n-1)//2]

clipped at the ends of the channel block (zero padding), with s = alpha / n (alpha_reading "code": the
authors' cuda-convnet, Caffe and torch.nn.LocalResponseNorm) or s = alpha ("paper": the printed formula).

- "reference": F.local_response_norm on (N*G, C/G, ...) blocks (what torch.nn.LocalResponseNorm computes).
  About seven kernels forward and an autograd graph that keeps their intermediates.
- "torch": the window sum as a few shifted adds in the accumulation dtype, powers by sqrt/rsqrt or
  exp/log (torch.pow is several times slower on the CPU), and a custom backward that saves only the input
  and recomputes the scale. Runs on any device.
- "triton": Triton kernels (alexctl.nets.kernels.lrn_triton): Caffe's channel walk for contiguous input, a
  [pixels x channels] tile for channels-last input; each tensor crosses DRAM once, and the backward
  recomputes the scale instead of saving it. "auto" uses them on CUDA where Triton can build them.

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

from alexctl.nets.kernels import lrn_triton, median_ms
from alexctl.paper import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE  # section 3.3: n=5, alpha=1e-4, beta=0.75, k=2

ALPHA_READINGS = ("code", "paper")
IMPLS = ("auto", "reference", "torch", "triton")


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

    impl "auto" is "triton" on CUDA where Triton can build its kernels, else "torch" (auto_impl).
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
        impl = auto_impl(x.is_cuda, x.dtype)
    if impl == "reference":
        return _reference(x, size=size, alpha=alpha, beta=beta, k=k, groups=groups, alpha_reading=alpha_reading)
    s = alpha / size if alpha_reading == "code" else alpha
    if impl == "torch":
        return _TorchLRN.apply(x, size, s, beta, k, groups)
    if reason := _triton_unavailable():
        raise ValueError(f"impl 'triton' cannot run here ({reason}); use impl 'torch'.")
    if x.dim() != 4 or x.dtype == torch.float64:
        raise ValueError(f"impl 'triton' takes 4-D float32/bfloat16/float16 input, not {x.dtype} {tuple(x.shape)}.")
    return torch.ops.alexctl.lrn_triton(x, size, s, beta, k, groups)


def auto_impl(cuda: bool, dtype: torch.dtype) -> str:
    """What "auto" means for an input on CUDA (or not) of `dtype`: "triton" where Triton can build its kernels
    here (probed once; if not, one warning says why), else "torch"."""
    if not cuda or dtype == torch.float64:
        return "torch"
    return "torch" if _triton_unavailable() else "triton"


# Called by Dynamo at trace time and its answer kept as a constant: the probe runs once, outside any graph.
# This is what torch._dynamo.assume_constant_result does (it sets this attribute and nothing else; a test
# checks that it still does), written out so that importing the network does not import Dynamo: ~2.6 s of
# CPU in every eval, predict, export and report process, which never compile (docs/dependencies.md).
_triton_unavailable = lrn_triton.unavailable
_triton_unavailable._dynamo_marked_constant = True


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
        impls = ("reference", "torch") + (("triton",) if auto_impl(device.type == "cuda", dtype) == "triton" else ())
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
