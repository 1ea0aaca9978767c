"""Training-set statistics: the mean image the paper subtracts (section 2) and the RGB
PCA its colour augmentation uses (section 4.1).

Accumulators are exact integer sums of uint8 pixel values (int64): adding them is
associative, so shards processed in any order, by any number of workers or machines
(`--part`), merge to byte-identical statistics. Every partial sum stays below 2**53,
so the float64 finishing arithmetic starts from exact values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class StatsAccumulator:
    size: int
    images: int
    image_sum: np.ndarray  # (size, size, 3) int64: per-pixel sum over images
    outer_sum: np.ndarray  # (3, 3) int64: sum of x x^T over all pixels (x = RGB)

    @staticmethod
    def empty(size: int) -> "StatsAccumulator":
        return StatsAccumulator(size, 0, np.zeros((size, size, 3), np.int64), np.zeros((3, 3), np.int64))

    def add_image(self, pixels: np.ndarray) -> None:
        """pixels: (size, size, 3) uint8."""
        self.images += 1
        self.image_sum += pixels
        # Six dot products of the colour planes (faster than a skinny matrix product here);
        # exact, since each product is at most 255**2 and one image's sums stay far below 2**53.
        planes = np.ascontiguousarray(pixels.reshape(-1, 3).T, dtype=np.float64)
        for i in range(3):
            for j in range(i, 3):
                value = int(np.dot(planes[i], planes[j]))
                self.outer_sum[i, j] += value
                if i != j:
                    self.outer_sum[j, i] += value

    def merge(self, other: "StatsAccumulator") -> None:
        assert other.size == self.size
        self.images += other.images
        self.image_sum += other.image_sum
        self.outer_sum += other.outer_sum

    def to_arrays(self, prefix: str = "stats_") -> dict[str, np.ndarray]:
        return {
            f"{prefix}images": np.array(self.images, np.int64),
            f"{prefix}image_sum": self.image_sum,
            f"{prefix}outer_sum": self.outer_sum,
        }

    @staticmethod
    def from_arrays(arrays: dict[str, np.ndarray], prefix: str = "stats_") -> "StatsAccumulator":
        image_sum = arrays[f"{prefix}image_sum"]
        return StatsAccumulator(
            image_sum.shape[0],
            int(arrays[f"{prefix}images"]),
            image_sum.astype(np.int64),
            arrays[f"{prefix}outer_sum"].astype(np.int64),
        )


def finish(acc: StatsAccumulator) -> dict[str, np.ndarray]:
    """The statistics file's arrays, all float64 in 0..255 pixel units.

    mean_image   (size, size, 3)  subtracted from every image (section 2)
    channel_mean (3,), channel_std (3,)   per RGB channel over all pixels
    covariance   (3, 3)           of RGB pixel values over the training set
    eigenvalues  (3,)             of the covariance, largest first
    eigenvectors (3, 3)           columns p_i, matching eigenvalues
    images       ()               how many images the statistics cover
    """
    if acc.images == 0:
        raise ValueError("no images to compute statistics from")
    pixels = acc.images * acc.size * acc.size
    mean = acc.image_sum.sum(axis=(0, 1)) / pixels
    covariance = acc.outer_sum / pixels - np.outer(mean, mean)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    # eigh's signs are arbitrary; fix them (components sum positive) so files compare equal.
    eigenvectors = eigenvectors * np.where(eigenvectors.sum(0) < 0, -1.0, 1.0)
    return {
        "mean_image": acc.image_sum / acc.images,
        "channel_mean": mean,
        "channel_std": np.sqrt(np.diag(covariance)),
        "covariance": covariance,
        "eigenvalues": eigenvalues,
        "eigenvectors": eigenvectors,
        "images": np.array(acc.images, np.int64),
    }


def summary(stats: dict[str, np.ndarray]) -> dict:
    """The human-readable part of the statistics (stats.json)."""
    return {
        "images": int(stats["images"]),
        "size": int(stats["mean_image"].shape[0]),
        "channel_mean": stats["channel_mean"].round(4).tolist(),
        "channel_std": stats["channel_std"].round(4).tolist(),
        "covariance": stats["covariance"].round(4).tolist(),
        "eigenvalues": stats["eigenvalues"].round(4).tolist(),
        "eigenvectors": stats["eigenvectors"].round(6).tolist(),
    }
