"""The conv1 kernels as one picture (the paper's Figure 3): drawn by `alexctl report` from a checkpoint and
by the TensorBoard writer during training, so both show the same grid."""

from __future__ import annotations

import math

import torch

KERNEL_PIXELS = 56  # conv1 kernels are enlarged (nearest) to about this many pixels a side


def kernel_grid(weight: torch.Tensor, *, columns: int, padding: int = 2) -> torch.Tensor:
    """(K, 3, k, k) conv1 weights -> (3, H, W) float image in [0, 1].

    Each kernel is scaled to its own min..max (per kernel: a kernel with small weights still shows its
    pattern; the figure compares shapes and colours, not magnitudes) and enlarged k -> ~56 px by nearest
    neighbour. With two columns, kernels [0, K/2) form the upper block and [K/2, K) the lower one, as
    Figure 3 puts GPU 1 above GPU 2; a block is rows of at most 16 kernels, on white.
    """
    w = weight.detach().float().cpu()
    low = w.amin(dim=(1, 2, 3), keepdim=True)
    span = w.amax(dim=(1, 2, 3), keepdim=True) - low
    # A constant kernel (all weights equal) has no pattern to show: mid-grey.
    w = torch.where(span > 0, (w - low) / span.clamp_min(1e-30), torch.full_like(w, 0.5))
    zoom = max(1, round(KERNEL_PIXELS / w.shape[-1]))
    w = w.repeat_interleave(zoom, dim=2).repeat_interleave(zoom, dim=3)
    blocks = w.chunk(2) if columns == 2 else (w,)
    grids = [tile(b, per_row=min(16, len(blocks[0])), padding=padding) for b in blocks]
    gap = torch.ones(3, 3 * zoom, grids[0].shape[2])  # a white band between the two columns' blocks
    return torch.cat([grids[0]] + [part for g in grids[1:] for part in (gap, g)], dim=1)


def grid_columns(arch: str, columns: int) -> int:
    """How many blocks the grid of a net has: the paper's net two, one per column; the one-column ablation
    and the CIFAR net one."""
    return int(columns) if arch == "alexnet" else 1


def conv1_weight(net: torch.nn.Module) -> torch.Tensor:
    """(K, 3, k, k): conv1's kernels of both columns, whatever the device layout (the state dict's
    canonical one-device form, as a checkpoint holds them)."""
    return net.state_dict()["conv1.weight"]


def tile(images: torch.Tensor, *, per_row: int, padding: int, pad_value: float = 1.0) -> torch.Tensor:
    """(N, C, h, w) -> (C, H, W): the images in rows of `per_row`, `padding` pixels of `pad_value` around
    each, as torchvision.utils.make_grid lays them out (a test compares the two; torchvision is not imported
    here, so that a training process need not pay the ~3 s of CPU it costs: docs/dependencies.md)."""
    n, c, h, w = images.shape
    if n == 1:
        return images[0]
    across = min(per_row, n)
    down = math.ceil(n / across)
    cell_h, cell_w = h + padding, w + padding
    grid = torch.full((c, cell_h * down + padding, cell_w * across + padding), pad_value, dtype=images.dtype)
    for i in range(n):
        row, col = divmod(i, across)
        y, x = row * cell_h + padding, col * cell_w + padding
        grid[:, y : y + h, x : x + w] = images[i]
    return grid
