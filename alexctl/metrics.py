"""Error rates as the paper reports them (section 6): top-1 and top-5 error, plus the per-class
views a researcher checks next (per-class accuracy, the most confused pairs)."""

from __future__ import annotations

import numpy as np


def topk_errors(probs: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Fraction of samples whose label is not among the k most probable classes, for each k.

    Ties are broken by class index (stable sort), so the result never depends on the platform.
    """
    if len(labels) == 0:
        return {k: float("nan") for k in ks}
    order = np.argsort(-probs, axis=1, kind="stable")
    return {k: float(1.0 - (order[:, :k] == labels[:, None]).any(axis=1).mean()) for k in ks}


def topk_correct(probs: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """How many samples have their label among the k most probable classes (summable across ranks)."""
    order = np.argsort(-probs, axis=1, kind="stable")
    return {k: int((order[:, :k] == labels[:, None]).any(axis=1).sum()) for k in ks}


def per_class_accuracy(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    """Top-1 accuracy of each class (None for a class with no samples)."""
    predicted = probs.argmax(1)
    out: list[float | None] = []
    for c in range(num_classes):
        mask = labels == c
        out.append(float((predicted[mask] == c).mean()) if mask.any() else None)
    return out


def most_confused(probs: np.ndarray, labels: np.ndarray, n: int = 10) -> list[dict]:
    """The n most frequent (true class, predicted class) mistakes, most frequent first."""
    predicted = probs.argmax(1)
    wrong = predicted != labels
    pairs, counts = np.unique(np.stack([labels[wrong], predicted[wrong]], 1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))[:n] if len(counts) else []
    return [{"true": int(pairs[i, 0]), "predicted": int(pairs[i, 1]), "count": int(counts[i])} for i in order]


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(label), the paper's objective, of averaged probabilities."""
    picked = probs[np.arange(len(labels)), labels].astype(np.float64)
    return float(-np.log(np.clip(picked, 1e-12, None)).mean()) if len(labels) else float("nan")
