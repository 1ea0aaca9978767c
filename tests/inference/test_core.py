"""alexctl/predict.py: the one inference path: crops cut on the device, `compute` applied, averaged per image,
in the order asked, from any source."""

from __future__ import annotations

import numpy as np
import torch

from alexctl import device
from alexctl.config import RuntimeOptions
from alexctl.inference.core import infer, infer_batch

RUNTIME = device.resolve(RuntimeOptions(devices="cpu", workers=0))


class _Images:
    """A source of uint8 (n, 3, 32, 32) images that say where a patch was cut: channel 0 is the image's index,
    channel 1 the row and channel 2 the column of each pixel."""

    def batches(self, batches):
        for b in batches:
            images = torch.empty(len(b), 3, 32, 32, dtype=torch.uint8)
            images[:, 0] = torch.tensor(b, dtype=torch.uint8)[:, None, None]
            images[:, 1] = torch.arange(32, dtype=torch.uint8)[:, None]
            images[:, 2] = torch.arange(32, dtype=torch.uint8)[None, :]
            yield images, torch.full((len(b),), -1), np.asarray(b)


# The paper's ten 24 x 24 patches of a 32 x 32 image as (row, column) of each patch's top-left pixel: the four
# corners and the centre, then the same five reflected (their first column is the source's last).
TEN = {(0, 0), (0, 8), (8, 0), (8, 8), (4, 4), (0, 23), (0, 31), (8, 23), (8, 31), (4, 27)}


def where_cut(patches):
    """(n * crops, 3, 24, 24) -> (n * crops, 1 + 32 * 32): the image's index, then a one-hot of the patch's
    top-left (row, column), so that the average over an image's crops counts where they were cut."""
    corner = patches[:, :, 0, 0].round().long()  # (n * crops, 3): index, row, column
    where = torch.nn.functional.one_hot(corner[:, 1] * 32 + corner[:, 2], 32 * 32).float()
    return torch.cat([corner[:, :1].float(), where], 1)


def test_compute_is_averaged_over_each_images_crops_in_the_order_asked():
    mean = torch.zeros(3, 32, 32)
    calls = []

    def compute(patches):
        calls.append(patches.shape[0])
        return where_cut(patches)

    order = np.array([7, 2, 9, 4, 0])
    out = infer(compute, _Images(), order, mean, crops=10, crop=24, runtime=RUNTIME, batch_size=2)
    assert out.shape == (5, 1 + 32 * 32) and out.dtype == np.float32
    assert out[:, 0].tolist() == order.tolist()  # each image's own crops, in the order of the indices
    for row in out[:, 1:]:  # the ten patches of section 4.1, each once: a tenth of the average each
        assert {divmod(int(i), 32) for i in np.flatnonzero(row)} == TEN
        np.testing.assert_allclose(row[np.flatnonzero(row)], 0.1, rtol=1e-6)
    assert calls == [20, 20, 10]  # batches of 2 images, 10 crops each
    one = infer(compute, _Images(), order, mean, crops=1, crop=24, runtime=RUNTIME, batch_size=2)
    assert one[:, 0].tolist() == order.tolist() and (np.flatnonzero(one[0, 1:]) == [4 * 32 + 4]).all()  # the centre


def test_one_batch_center_crop_is_the_mean_subtracted_middle():
    images = torch.arange(3 * 32 * 32, dtype=torch.int64).remainder(256).to(torch.uint8).view(1, 3, 32, 32)
    mean = torch.rand(3, 32, 32) * 255
    got = infer_batch(lambda p: p.flatten(1), images, mean, crops=1, crop=24, runtime=RUNTIME)
    expected = (images.float() - mean)[:, :, 4:28, 4:28].flatten(1)
    torch.testing.assert_close(got, expected)
