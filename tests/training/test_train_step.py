"""What a training step computes, on the CPU: the paper's net and update rule fit a batch of real photos,
the step compiles whole and trains as eager, and one step of `alexctl train` feeds the net the section 4.1
augmentation that was asked for, and only that."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import torch
import torch.nn.functional as F
import webdataset as wds

from helpers import TINY, invoke


@pytest.fixture(scope="module")
def data(slice_data) -> Path:
    return slice_data


def test_the_paper_net_and_update_rule_fit_a_batch_of_real_photos(imagenette_slice):
    """The learning machinery works: eight real photos of four classes, center crops minus their mean,
    the paper's SGD rule (batch-size-scaled lr), 40 steps: the loss goes from ~ln 4 to ~0."""
    from alexctl.config import ModelConfig
    from alexctl.data import augment, transform
    from alexctl.nets.model import build_model
    from alexctl.training.optim import build_optimizer

    wnids = sorted(p.name for p in imagenette_slice.iterdir())[:4]
    photos = [(label, path) for label, w in enumerate(wnids) for path in sorted((imagenette_slice / w).iterdir())[:2]]
    pixels = torch.from_numpy(np.stack([transform.prepare(p.read_bytes(), 256).pixels for _, p in photos]))
    images = pixels.permute(0, 3, 1, 2).contiguous()
    x = augment.center_crop(images, images.float().mean(0), crop=224)
    y = torch.tensor([label for label, _ in photos])
    torch.manual_seed(0)
    net = build_model(ModelConfig(width=0.25, dropout=0.0), 4)
    optimizer = build_optimizer(net, lr=0.003)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert 1.0 < losses[0] < 2.5
    assert losses[-1] < 0.05
    assert (net.eval()(x).argmax(1) == y).all()


@pytest.mark.parametrize("arch, size", [("alexnet", 224), ("cifar", 24)])
def test_the_train_step_compiles_whole_and_trains_as_eager(arch, size):
    """--compile: the forward and loss as one graph, the paper's SGD update as another, with no graph break
    (fullgraph) under Inductor's decompositions and partitioner, and the same numbers as eager."""
    from alexctl import device
    from alexctl.config import ModelConfig, RuntimeOptions
    from alexctl.nets.build import runtime_model
    from alexctl.training.optim import build_optimizer
    from alexctl.training.train import make_train_step

    config = ModelConfig(arch=arch, width=0.125, dropout=0.0)
    steps = []
    for compiled in (False, True):
        runtime = device.resolve(RuntimeOptions(devices="cpu", workers=0, compile=compiled))
        torch.manual_seed(0)
        net = runtime_model(config, 10, runtime)
        optimizer = build_optimizer(net, lr=0.01)
        steps.append((net, make_train_step(net, optimizer, runtime, backend="aot_eager_decomp_partition")))
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(4, 3, size, size, generator=g) * 50, torch.randint(0, 10, (4,), generator=g)
        (loss_e, hits_e), (loss_c, hits_c) = [step(x, y, 0.25) for _, step in steps]
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-4)
        assert int(hits_c) == int(hits_e)
    for (name, a), b in zip(steps[0][0].state_dict().items(), steps[1][0].state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)


# ---------------------------------------------------------------- what one training step feeds the net


def train_images(data: Path) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """The train split read back without alexctl's loader: (M, 3, 256, 256) uint8 images decoded with
    libjpeg-turbo from the shards' bytes, the stored (3, 256, 256) float32 mean image, and the stored
    eigenvalues (3,) and eigenvectors (3, 3) of the pixel covariance (0..255 units)."""
    shards = sorted(str(p) for p in (data / "train").glob("*.tar"))
    jpegs = [jpg for (jpg,) in wds.WebDataset(shards, shardshuffle=False).to_tuple("jpg")]
    images = torch.from_numpy(np.stack([simplejpeg.decode_jpeg(j, colorspace="RGB") for j in jpegs]))
    stats = np.load(data / "stats.npz")
    mean = torch.from_numpy(stats["mean_image"].astype(np.float32)).permute(2, 0, 1)
    return images.permute(0, 3, 1, 2).contiguous(), mean.contiguous(), stats["eigenvalues"], stats["eigenvectors"]


def placements(fed: torch.Tensor, images: torch.Tensor, mean: torch.Tensor) -> list[tuple]:
    """Where each fed (3, 224, 224) patch came from: (image, x, y, flipped, (3,) shift) such that
    patch = reflect?(images[image] - mean)[:, y:y+224, x:x+224] + shift[c], found by search (its 2 x 8
    corner against every origin of every image and its reflection, the best few checked on the whole patch)."""
    m, crop = len(images), fed.shape[-1]
    centred = images.float() - mean
    candidates = torch.cat([centred, centred.flip(-1)])  # (2M, 3, 256, 256): the images, then their reflections
    span = images.shape[-1] - crop + 1  # 33 origins per axis
    corners = F.unfold(candidates[:, :, : span + 1, : span + 7], (2, 8)).view(2 * m, 3, 16, span * span)
    mean_c, mean_cc = corners.mean(2), (corners * corners).mean(2)  # (2M, 3, 33 * 33)
    found = []
    for patch in fed:
        corner = patch[:, :2, :8].reshape(3, 16)
        # The variance of (corner - candidate) over each channel's 16 pixels, for every candidate at once:
        # zero where they differ by a constant per channel (the lighting shift).
        mean_pc = torch.einsum("ck,nckl->ncl", corner, corners) / 16
        mean_p, mean_pp = corner.mean(1)[None, :, None], (corner * corner).mean(1)[None, :, None]
        spread = (mean_pp - 2 * mean_pc + mean_cc - (mean_p - mean_c) ** 2).sum(1).flatten()
        order = spread.topk(50, largest=False).indices
        for k in order.tolist():
            c, at = divmod(k, span * span)
            y, x = divmod(at, span)
            rest = patch - candidates[c, :, y : y + crop, x : x + crop]
            shift = rest.flatten(1).median(1).values
            if (rest - shift[:, None, None]).abs().max() < 1e-3:
                flipped = c >= m
                found.append((c % m, (span - 1 - x) if flipped else x, y, flipped, shift.numpy()))
                break
        else:
            raise AssertionError("a patch fed to the net is no crop of a training image minus the mean image")
    return found


def fed_in_one_step(data: Path, run: Path, *flags: str) -> list[tuple[int, int, int, bool, np.ndarray]]:
    """Train one step of 16 real photos and return where each patch the net was fed came from."""
    fed = []

    def first_input(module, inputs):  # every module's pre-hook: the net and its first layer see the same batch
        x = inputs[0]
        if module.training and x.ndim == 4 and x.shape[1] == 3 and not any(x is f for f in fed):
            fed.append(x)

    hook = torch.nn.modules.module.register_module_forward_pre_hook(first_input)
    try:
        invoke(
            "train", run, "--data", data, "--epochs", "1", "--subset", "16", "--seed", "5", *TINY, *flags, check=True
        )
    finally:
        hook.remove()
    assert len(fed) == 1 and fed[0].shape == (16, 3, 224, 224), [f.shape for f in fed]
    images, mean, _, _ = train_images(data)
    return placements(fed[0].detach(), images, mean)


def test_one_training_step_feeds_the_net_the_papers_augmentation_and_only_what_is_asked(data, tmp_path):
    """Section 4.1 as the trainer wires it, seen at the net's input: random crops, reflections and PCA
    lighting when on; each one gone when switched off, and nothing else changed (the same draws)."""
    _, _, eigenvalues, eigenvectors = train_images(data)
    paper = fed_in_one_step(data, tmp_path / "paper")
    origins = {(x, y) for _, x, y, _, _ in paper}
    assert len(origins) > 8 and all(0 <= x <= 32 and 0 <= y <= 32 for x, y in origins)  # translations
    assert 0 < sum(flipped for *_, flipped, _ in paper) < 16  # some images reflected, some not
    shifts = np.stack([shift for *_, shift in paper])  # (16, 3) levels added to every pixel of each image
    assert (np.abs(shifts).max(1) > 0.01).all() and len({tuple(np.round(s, 3)) for s in shifts}) == 16
    # shift = 255 V (alpha * lambda / 255^2): the alphas behind the shifts are N(0, 0.1) draws
    alphas = (shifts / 255.0) @ eigenvectors / (eigenvalues / 255.0**2)
    assert 0.03 < alphas.std() < 0.3 and np.abs(alphas).max() < 0.6, alphas

    fixed = fed_in_one_step(data, tmp_path / "fixed", "--no-flip", "--train-crop", "center")
    assert [p[0] for p in fixed] == [p[0] for p in paper]  # the same images in the same order
    assert all((x, y, flipped) == (16, 16, False) for _, x, y, flipped, _ in fixed)  # centre patches, none reflected
    np.testing.assert_allclose(np.stack([p[4] for p in fixed]), shifts, atol=1e-3)  # the same lighting

    plain = fed_in_one_step(data, tmp_path / "plain", "--lighting-std", "0")
    assert [p[:4] for p in plain] == [p[:4] for p in paper]  # the same crops and reflections
    assert np.abs(np.stack([p[4] for p in plain])).max() < 1e-3  # and no lighting
