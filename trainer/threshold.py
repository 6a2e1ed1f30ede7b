"""Choosing the alert threshold on validation scores, and scoring a threshold.

An event raises an alert when its fraud probability is at or above the threshold.
The chosen threshold gives the most recall on the validation slice among those that
keep precision at or above a target and, when a budget is set, false alarms at or
below a number per 10,000 legitimate transactions; among equal recalls, the fewest
alerts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = [
    "REAL_FRAUD_RATE",
    "ThresholdChoice",
    "choose",
    "evaluate",
    "fixed",
    "precision_at_rate",
    "ranking_metrics",
]

logger = logging.getLogger(__name__)

# Fraud share of the full public dataset; precision is restated at this rate because
# the data a model is evaluated on is often far richer in fraud than real traffic.
REAL_FRAUD_RATE = 0.001727

# Thresholds stay strictly inside (0, 1), as the model metadata requires; a score
# of exactly 1.0 (a saturated float32 sigmoid) still reaches the highest one.
_LOWEST_THRESHOLD = 1e-6
_HIGHEST_THRESHOLD = 1.0 - 2**-24

# Below this many validation frauds one fraud moves recall by more than 5 points, so
# the chosen threshold mostly reflects chance; the run goes on with a warning.
_FEW_FRAUDS = 20


@dataclass(frozen=True)
class ThresholdChoice:
    """A chosen threshold and how it was chosen."""

    threshold: float
    policy: dict[str, Any]


def choose(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    min_precision: float,
    max_false_alarms_per_10k: float | None,
) -> ThresholdChoice:
    """Choose the threshold with the most validation recall that meets the targets.

    When no threshold meets them, the one with the best F1 among those within the
    alert budget (or among all, without a budget) is taken and the policy records
    ``target_met: false``.
    """
    # 1. alert counts for every distinct cut, highest scores first
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order].astype(np.float64)
    sorted_labels = labels[order].astype(np.int64)
    true_alerts = np.cumsum(sorted_labels)
    false_alerts = np.cumsum(1 - sorted_labels)
    # A cut after position k is only possible where the next score is lower.
    cut = np.flatnonzero(np.append(np.diff(sorted_scores) < 0, True))
    tp, fp = true_alerts[cut], false_alerts[cut]
    frauds = int(sorted_labels.sum())
    legit = len(sorted_labels) - frauds
    if frauds < _FEW_FRAUDS:
        logger.warning(
            "only %d fraud row(s) in validation; the threshold chosen on them is "
            "unreliable, train on data with at least %d validation frauds",
            frauds,
            _FEW_FRAUDS,
        )

    # 2. which cuts meet the targets
    precision = tp / (tp + fp)
    recall = tp / max(frauds, 1)
    per_10k = fp / max(legit, 1) * 10_000
    within_budget = np.ones_like(precision, dtype=bool)
    if max_false_alarms_per_10k is not None:
        within_budget = per_10k <= max_false_alarms_per_10k
    feasible = within_budget & (precision >= min_precision)

    # 3. most recall among feasible cuts, and of those the one with fewest alerts
    # (a cut past the last fraud caught only adds false alarms); otherwise the
    # best F1 within the budget
    target_met = bool(feasible.any())
    if target_met:
        most_recall = recall[feasible].max()
        best = int(np.flatnonzero(feasible & (recall == most_recall))[0])
    else:
        both = precision + recall
        f1 = np.divide(
            2 * precision * recall, both, out=np.zeros_like(both), where=both > 0
        )
        candidates = np.flatnonzero(within_budget)
        if candidates.size == 0:
            candidates = np.array([0])
        best = int(candidates[np.argmax(f1[candidates])])
        logger.warning(
            "no threshold meets min_precision=%.3f max_false_alarms_per_10k=%s on "
            "validation; taking the best F1 instead (precision=%.3f recall=%.3f)",
            min_precision,
            max_false_alarms_per_10k,
            precision[best],
            recall[best],
        )

    position = int(cut[best])
    threshold = _between(sorted_scores, position)
    policy = {
        "kind": "target",
        "rule": "alert when fraud_probability >= threshold; most validation recall "
        "with precision >= min_precision and false alarms per 10,000 legitimate "
        "<= max_false_alarms_per_10k",
        "min_precision": min_precision,
        "max_false_alarms_per_10k": max_false_alarms_per_10k,
        "chosen_on": "validation",
        "target_met": target_met,
        "validation": {
            "frauds": frauds,
            "legitimate": legit,
            "precision": float(precision[best]),
            "recall": float(recall[best]),
            "false_alarms_per_10k": float(per_10k[best]),
        },
    }
    logger.info(
        "threshold chosen threshold=%.6f target_met=%s val_precision=%.3f "
        "val_recall=%.3f",
        threshold,
        target_met,
        precision[best],
        recall[best],
    )
    return ThresholdChoice(threshold, policy)


def fixed(threshold: float, note: str | None = None) -> ThresholdChoice:
    """Return a threshold set beforehand rather than chosen on data."""
    policy: dict[str, Any] = {
        "kind": "fixed",
        "rule": "alert when fraud_probability >= threshold",
        "chosen_on": "none",
    }
    if note is not None:
        policy["note"] = note
    return ThresholdChoice(threshold, policy)


def evaluate(
    labels: np.ndarray, scores: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Return the confusion matrix and rates of alerting at ``threshold``."""
    alerts = scores >= threshold
    fraud = labels == 1
    tp = int(np.sum(alerts & fraud))
    fp = int(np.sum(alerts & ~fraud))
    fn = int(np.sum(~alerts & fraud))
    tn = int(np.sum(~alerts & ~fraud))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    false_alarm_rate = fp / (fp + tn) if fp + tn else 0.0
    return {
        "threshold": float(threshold),
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_alarms_per_10k": false_alarm_rate * 10_000,
        "precision_at_real_fraud_rate": precision_at_rate(recall, false_alarm_rate),
    }


def ranking_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Return the threshold-free ROC-AUC and PR-AUC (average precision)."""
    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "pr_auc": float(average_precision_score(labels, scores)),
    }


def precision_at_rate(
    recall: float, false_alarm_rate: float, fraud_rate: float = REAL_FRAUD_RATE
) -> float:
    """Restate precision at another fraud share from recall and false-alarm rate."""
    true_share = recall * fraud_rate
    false_share = false_alarm_rate * (1.0 - fraud_rate)
    if true_share + false_share == 0.0:
        return 0.0
    return true_share / (true_share + false_share)


def _between(sorted_scores: np.ndarray, position: int) -> float:
    """Return a threshold that alerts on rows up to ``position`` and no further."""
    lowest_alerted = float(sorted_scores[position])
    if position + 1 < len(sorted_scores):
        threshold = (lowest_alerted + float(sorted_scores[position + 1])) / 2
    else:
        threshold = lowest_alerted
    # float32 scores compare against the float64 threshold in the worker; keep the
    # midpoint no higher than the lowest alerted score so that row still alerts.
    threshold = min(threshold, lowest_alerted)
    return min(max(threshold, _LOWEST_THRESHOLD), _HIGHEST_THRESHOLD)
