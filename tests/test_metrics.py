"""alexctl/metrics.py: top-1 / top-5 error as the paper reports them, with ties broken by class index."""

from __future__ import annotations

import numpy as np

from alexctl.metrics import cross_entropy, most_confused, per_class_accuracy, topk_correct, topk_errors


def test_topk_errors_and_ties():
    probs = np.array(
        [
            [0.1, 0.6, 0.3, 0, 0, 0],  # label 1: top-1 hit
            [0.5, 0.5, 0, 0, 0, 0],  # tie 0/1, broken by index: predicts 0; label 1 in top-5
            [0.2, 0.2, 0.2, 0.2, 0.2, 0],  # label 5 (p=0) is 6th: a top-5 miss
            [0, 0, 0, 0, 0.1, 0.9],
        ]
    )  # label 5: hit
    labels = np.array([1, 1, 5, 5])
    assert topk_errors(probs, labels) == {1: 0.5, 5: 0.25}
    assert topk_correct(probs, labels) == {1: 2, 5: 3}
    assert np.isnan(topk_errors(probs[:0], labels[:0])[1])


def test_per_class_accuracy_and_the_most_confused_pairs():
    probs = np.eye(3)[[0, 1, 1, 2, 1, 0]]
    labels = np.array([0, 1, 2, 2, 2, 1])
    assert per_class_accuracy(probs, labels, 4) == [1.0, 0.5, 1 / 3, None]
    assert most_confused(probs, labels, 2) == [
        {"true": 2, "predicted": 1, "count": 2},
        {"true": 1, "predicted": 0, "count": 1},
    ]


def test_cross_entropy_is_the_mean_negative_log_probability():
    probs = np.array([[0.5, 0.5], [0.25, 0.75]])
    assert abs(cross_entropy(probs, np.array([0, 1])) - (-np.log(0.5) - np.log(0.75)) / 2) < 1e-12
    assert cross_entropy(np.array([[1.0, 0.0]]), np.array([1])) == -np.log(1e-12)  # clipped, finite
