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
    """A source of uint8 (n, 3, 32, 32) images whose pixels all equal the image's index."""

    def batches(self, batches):
        for b in batches:
            images = torch.tensor(b, dtype=torch.uint8)[:, None, None, None].expand(-1, 3, 32, 32).contiguous()
            yield images, torch.full((len(b),), -1), np.asarray(b)


def test_compute_is_averaged_over_each_images_crops_in_the_order_asked():
    mean = torch.zeros(3, 32, 32)
    calls = []

    def compute(patches):  # (n * crops, 3, 24, 24): its first pixel, and the patch's position among the crops
        calls.append(patches.shape[0])
        return torch.stack([patches[:, 0, 0, 0], torch.arange(len(patches), dtype=torch.float32) % 10], 1)

    order = np.array([7, 2, 9, 4, 0])
    out = infer(compute, _Images(), order, mean, crops=10, crop=24, runtime=RUNTIME, batch_size=2)
    assert out.shape == (5, 2) and out.dtype == np.float32
    assert out[:, 0].tolist() == order.tolist()  # each image's own crops, in the order of the indices
    assert np.allclose(out[:, 1], 4.5)  # the mean over positions 0..9: all ten crops, averaged
    assert calls == [20, 20, 10]  # batches of 2 images, 10 crops each


def test_one_batch_center_crop_is_the_mean_subtracted_middle():
    images = torch.arange(3 * 32 * 32, dtype=torch.int64).remainder(256).to(torch.uint8).view(1, 3, 32, 32)
    mean = torch.rand(3, 32, 32) * 255
    got = infer_batch(lambda p: p.flatten(1), images, mean, crops=1, crop=24, runtime=RUNTIME)
    expected = (images.float() - mean)[:, :, 4:28, 4:28].flatten(1)
    torch.testing.assert_close(got, expected)
