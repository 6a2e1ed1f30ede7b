"""Threshold choice on validation scores and the metrics of a threshold."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.threshold import (
    REAL_FRAUD_RATE,
    choose,
    evaluate,
    fixed,
    precision_at_rate,
    ranking_metrics,
)

# Ten rows, highest score first: frauds at ranks 1, 2, 3, 5, 8.
_SCORES = np.array([0.99, 0.95, 0.90, 0.80, 0.70, 0.60, 0.50, 0.40, 0.20, 0.10])
_LABELS = np.array([1, 1, 1, 0, 1, 0, 0, 1, 0, 0])


def test_most_recall_with_the_precision_target_is_chosen() -> None:
    choice = choose(_LABELS, _SCORES, min_precision=0.8, max_false_alarms_per_10k=None)

    # Top 5 gives precision 4/5 = 0.8 and recall 4/5; top 8 only 5/8.
    assert 0.60 < choice.threshold <= 0.70
    assert choice.policy["target_met"] is True
    assert choice.policy["validation"]["recall"] == pytest.approx(0.8)
    assert choice.policy["validation"]["precision"] == pytest.approx(0.8)


def test_no_false_alarm_is_added_once_recall_stops_growing() -> None:
    labels = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    scores = np.linspace(0.95, 0.40, num=12)

    # Alerting on all 12 would still meet precision 0.75, at no gain in recall.
    choice = choose(labels, scores, min_precision=0.75, max_false_alarms_per_10k=None)

    assert (scores >= choice.threshold).sum() == 9
    assert choice.policy["validation"]["recall"] == 1.0


def test_alert_budget_limits_false_alarms() -> None:
    # 5 legitimate rows: one false alarm is 2,000 per 10,000.
    choice = choose(_LABELS, _SCORES, min_precision=0.5, max_false_alarms_per_10k=0.0)

    assert 0.80 < choice.threshold <= 0.90
    assert choice.policy["validation"]["false_alarms_per_10k"] == 0.0
    assert choice.policy["max_false_alarms_per_10k"] == 0.0


def test_unreachable_target_falls_back_to_best_f1_and_says_so() -> None:
    labels = np.array([0, 1, 0, 1, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])

    choice = choose(labels, scores, min_precision=0.99, max_false_alarms_per_10k=None)

    assert choice.policy["target_met"] is False
    assert 0.0 < choice.threshold < 1.0


def test_tied_scores_are_never_split_by_the_threshold() -> None:
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.7, 0.7, 0.1])

    choice = choose(labels, scores, min_precision=0.6, max_false_alarms_per_10k=None)
    alerts = scores >= choice.threshold

    assert alerts[1] == alerts[2]


def test_chosen_threshold_reproduces_the_recorded_validation_figures() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(5_000) < 0.05).astype(np.int8)
    scores = np.clip(rng.normal(0.3 + 0.4 * labels, 0.15), 0, 1).astype(np.float32)

    choice = choose(labels, scores, min_precision=0.9, max_false_alarms_per_10k=50.0)
    found = evaluate(labels, scores, choice.threshold)

    recorded = choice.policy["validation"]
    assert found["precision"] == pytest.approx(recorded["precision"])
    assert found["recall"] == pytest.approx(recorded["recall"])
    assert found["false_alarms_per_10k"] <= 50.0


def test_saturated_scores_keep_the_threshold_inside_zero_and_one() -> None:
    labels = np.array([1, 1, 0, 0])
    scores = np.array([1.0, 1.0, 0.0, 0.0], dtype=np.float32)

    choice = choose(labels, scores, min_precision=0.9, max_false_alarms_per_10k=None)

    assert 0.0 < choice.threshold < 1.0
    assert (scores >= choice.threshold).tolist() == [True, True, False, False]


def test_fixed_threshold_is_recorded_as_fixed() -> None:
    choice = fixed(0.5)

    assert choice.threshold == 0.5
    assert choice.policy["kind"] == "fixed"


def test_evaluate_counts_alerts_at_or_above_the_threshold() -> None:
    result = evaluate(_LABELS, _SCORES, 0.70)

    assert result["confusion_matrix"] == {"tn": 4, "fp": 1, "fn": 1, "tp": 4}
    assert result["precision"] == pytest.approx(0.8)
    assert result["recall"] == pytest.approx(0.8)
    assert result["f1"] == pytest.approx(0.8)
    assert result["false_alarms_per_10k"] == pytest.approx(2_000.0)


def test_evaluate_without_alerts_reports_zero_precision() -> None:
    result = evaluate(_LABELS, _SCORES, 0.999)

    assert result["precision"] == 0.0
    assert result["recall"] == 0.0
    assert result["precision_at_real_fraud_rate"] == 0.0


def test_precision_at_the_real_rate_follows_the_base_rate_formula() -> None:
    # Recall 0.8 and one false alarm per 1,000 legitimate rows.
    expected = (0.8 * REAL_FRAUD_RATE) / (
        0.8 * REAL_FRAUD_RATE + 0.001 * (1 - REAL_FRAUD_RATE)
    )

    assert precision_at_rate(0.8, 0.001) == pytest.approx(expected)
    assert precision_at_rate(0.8, 0.0) == 1.0


def test_ranking_metrics_of_a_perfect_ranking_are_one() -> None:
    labels = np.array([0, 0, 1, 1])
    result = ranking_metrics(labels, np.array([0.1, 0.2, 0.8, 0.9]))

    assert result == {"roc_auc": 1.0, "pr_auc": 1.0}


def test_few_validation_frauds_are_recorded_and_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    choice = choose(_LABELS, _SCORES, min_precision=0.8, max_false_alarms_per_10k=None)

    assert choice.policy["validation"]["frauds"] == 5
    assert choice.policy["validation"]["legitimate"] == 5
    assert "only 5 fraud row(s) in validation" in caplog.text
