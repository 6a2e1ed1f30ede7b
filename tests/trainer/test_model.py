"""The network's built-in input scaling."""

from __future__ import annotations

import numpy as np

from trainer.model import build
from trainer.synthetic import generate


def test_scaling_standardises_with_the_training_mean_and_spread() -> None:
    rows = generate(2_000, seed=2).features.astype(np.float32)
    scaling = build(rows, seed=0).get_layer("standardise")

    scaled = np.asarray(scaling(rows))

    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(scaled.std(axis=0), 1.0, atol=1e-4)


def test_feature_constant_in_training_is_centred_not_blown_up() -> None:
    rows = generate(2_000, seed=2).features.astype(np.float32)
    rows[:, 27] = 0.25
    scaling = build(rows, seed=0).get_layer("standardise")
    later = rows[:1].copy()
    later[0, 27] = 1.25

    scaled = np.asarray(scaling(later))

    assert scaled[0, 27] == np.float32(1.0)
