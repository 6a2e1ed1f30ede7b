"""Synthetic transactions: schema, determinism, fraud share and separability."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.synthetic import FEATURE_COLUMNS, FRAUD_RATE, generate


def test_feature_columns_are_v1_to_v28_then_amount() -> None:
    assert FEATURE_COLUMNS == tuple(f"V{i}" for i in range(1, 29)) + ("Amount",)


def test_arrays_have_the_contract_shapes_and_types() -> None:
    data = generate(1_000, seed=3)

    assert data.features.shape == (1_000, 29)
    assert data.features.dtype == np.float64
    assert data.time.shape == (1_000,)
    assert data.time.dtype == np.float64
    assert data.labels.shape == (1_000,)
    assert data.labels.dtype == np.int8
    assert len(data) == 1_000


def test_same_seed_gives_identical_rows() -> None:
    first, second = generate(5_000, seed=7), generate(5_000, seed=7)

    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.time, second.time)


def test_different_seeds_give_different_rows() -> None:
    assert not np.array_equal(generate(500, 1).features, generate(500, 2).features)


def test_time_starts_at_zero_and_never_decreases() -> None:
    time = generate(10_000, seed=0).time

    assert time[0] == 0.0
    assert np.all(np.diff(time) >= 0.0)


def test_amounts_are_non_negative_with_cents() -> None:
    amount = generate(20_000, seed=0).features[:, -1]

    assert amount.min() >= 0.0
    np.testing.assert_allclose(amount, np.round(amount, 2), rtol=0, atol=1e-9)


def test_values_are_finite() -> None:
    assert np.isfinite(generate(20_000, seed=0).features).all()


@pytest.mark.parametrize("n_rows", [2, 100, 100_000], ids=["two", "hundred", "100k"])
def test_fraud_share_matches_the_real_rate_and_both_classes_exist(n_rows: int) -> None:
    labels = generate(n_rows, seed=0).labels

    assert set(np.unique(labels)) == {0, 1}
    if n_rows >= 100_000:
        assert labels.mean() == pytest.approx(FRAUD_RATE, rel=0.01)


def test_zero_rows_gives_empty_arrays() -> None:
    data = generate(0)

    assert data.features.shape == (0, 29)
    assert data.labels.shape == (0,)


def test_negative_row_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="n_rows must be >= 0"):
        generate(-1)


def test_classes_separate_well_but_not_perfectly() -> None:
    # A linear score along the fraud direction stands in for a trained model here;
    # the trainer's end-to-end test covers a real one.
    data = generate(200_000, seed=1)
    components = data.features[:, :28] / data.features[:, :28].std(axis=0)
    fraud_mean = components[data.labels == 1].mean(axis=0)
    score = components @ fraud_mean
    fraud_scores = score[data.labels == 1]
    legit_scores = score[data.labels == 0]

    # ROC-AUC via the rank-sum identity: chance that a fraud outscores a legit row.
    ranks = np.argsort(np.argsort(np.concatenate([fraud_scores, legit_scores])))
    n_fraud, n_legit = len(fraud_scores), len(legit_scores)
    auc = (ranks[:n_fraud].sum() + n_fraud - n_fraud * (n_fraud + 1) / 2) / (
        n_fraud * n_legit
    )
    assert 0.9 < auc < 0.999
