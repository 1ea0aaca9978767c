"""alexctl/data/training.py: the samples a run trains on, and the checks made before training starts."""

from __future__ import annotations

import numpy as np

from alexctl.training.splits import balanced_subset


def test_a_balanced_subset_takes_every_class_alike_and_is_seeded():
    labels = np.repeat(np.arange(10), [3, 11, 11, 11, 11, 11, 11, 11, 11, 19])
    chosen = balanced_subset(labels, 25, seed=0)
    assert len(chosen) == 25 and len(set(chosen.tolist())) == 25 and np.all(np.diff(chosen) > 0)
    counts = np.bincount(labels[chosen], minlength=10)
    assert counts.max() - counts.min() <= 1  # balanced: 2 or 3 of every class
    assert np.array_equal(chosen, balanced_subset(labels, 25, seed=0))
    assert not np.array_equal(chosen, balanced_subset(labels, 25, seed=1))
    few = balanced_subset(labels, 60, seed=0)  # class 0 has only 3: the others make up the rest
    assert np.bincount(labels[few], minlength=10)[0] == 3 and len(few) == 60
    assert np.array_equal(balanced_subset(labels, 0, seed=0), np.arange(len(labels)))
