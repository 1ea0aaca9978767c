"""alexctl/data/stats.py: exact, mergeable accumulators and the mean image / RGB PCA."""

from __future__ import annotations

import numpy as np

from alexctl.data.stats import StatsAccumulator, finish


def images(n: int, size: int = 16, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1, 1, 3))
    return [np.clip(b + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8) for b in base]


def test_statistics_match_a_direct_numpy_computation():
    batch = images(40)
    acc = StatsAccumulator.empty(16)
    for im in batch:
        acc.add_image(im)
    stats = finish(acc)
    stack = np.stack(batch).astype(np.float64)
    pixels = stack.reshape(-1, 3)
    assert np.allclose(stats["mean_image"], stack.mean(0), rtol=0, atol=1e-12)
    assert np.allclose(stats["channel_mean"], pixels.mean(0), rtol=0, atol=1e-9)
    assert np.allclose(stats["covariance"], np.cov(pixels.T, bias=True), rtol=1e-10, atol=1e-8)
    assert np.allclose(stats["channel_std"], pixels.std(0), rtol=1e-10)
    values, vectors = stats["eigenvalues"], stats["eigenvectors"]
    assert values[0] >= values[1] >= values[2] > 0
    for i in range(3):  # C p_i = lambda_i p_i, unit length
        assert np.allclose(stats["covariance"] @ vectors[:, i], values[i] * vectors[:, i], atol=1e-6)
        assert np.isclose(np.linalg.norm(vectors[:, i]), 1.0)
    assert int(stats["images"]) == 40


def test_merging_in_any_order_is_bit_identical():
    batch = images(30, seed=1)
    whole = StatsAccumulator.empty(16)
    for im in batch:
        whole.add_image(im)
    parts = [StatsAccumulator.empty(16) for _ in range(3)]
    for i, im in enumerate(batch):
        parts[i % 3].add_image(im)
    merged = StatsAccumulator.empty(16)
    for p in reversed(parts):
        merged.merge(p)
    a, b = finish(whole), finish(merged)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_round_trip_through_arrays():
    acc = StatsAccumulator.empty(16)
    for im in images(5, seed=2):
        acc.add_image(im)
    back = StatsAccumulator.from_arrays(acc.to_arrays())
    assert back.images == 5
    assert np.array_equal(back.image_sum, acc.image_sum) and np.array_equal(back.outer_sum, acc.outer_sum)
