"""alexctl.nets.kernel_grid: the conv1 grid (Figure 3) laid out as torchvision's make_grid lays it out."""

from __future__ import annotations

import pytest
import torch
from torchvision.utils import make_grid

from alexctl.nets.kernel_grid import kernel_grid, tile


@pytest.mark.parametrize("n, per_row", [(1, 16), (5, 16), (16, 16), (17, 16), (48, 16), (7, 3)])
def test_tile_is_torchvisions_make_grid(n, per_row):
    images = torch.rand(n, 3, 5, 4, generator=torch.Generator().manual_seed(n))
    expected = make_grid(images, nrow=per_row, padding=2, pad_value=1.0)
    torch.testing.assert_close(tile(images, per_row=per_row, padding=2), expected, rtol=0, atol=0)


def test_two_columns_put_the_first_half_above_the_second():
    weight = torch.zeros(4, 3, 2, 2)
    weight[:2, 0] = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # column 1: red rises to the right
    weight[2:, 2] = torch.tensor([[0.0, 0.0], [1.0, 1.0]])  # column 2: blue rises downwards
    grid = kernel_grid(weight, columns=2, padding=2)
    half = grid.shape[1] // 2
    for block, varies, flat in ((grid[:, :half], 0, 2), (grid[:, half:], 2, 0)):
        kernel = ~(block == 1).all(0)  # every pixel that is not the white padding
        assert set(block[varies][kernel].unique().tolist()) == {0.0, 1.0}
        assert set(block[flat][kernel].unique().tolist()) == {0.0}
