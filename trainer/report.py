"""The training report: ``report.json``, ``report.md`` and PNG plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve  # noqa: E402

__all__ = ["PLOT_FILES", "write"]

logger = logging.getLogger(__name__)

PLOT_FILES = {
    "history": "training_history.png",
    "confusion_matrix": "confusion_matrix.png",
    "precision_recall": "precision_recall.png",
}

_CLASS_NAMES = ("Legitimate", "Fraudulent")
_DPI = 110


def write(
    out_dir: Path,
    report: dict[str, Any],
    *,
    history: dict[str, list[float]],
    y_test: np.ndarray,
    test_scores: np.ndarray,
) -> None:
    """Write ``report.json``, ``report.md`` and the plots into ``out_dir``."""
    (out_dir / "report.json").write_text(
        json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    (out_dir / "report.md").write_text(_markdown(report), encoding="utf-8")
    _plot_history(
        history, report["training"]["best_epoch"], out_dir / PLOT_FILES["history"]
    )
    chosen = report["test"]["at_threshold"]
    _plot_confusion(
        chosen["confusion_matrix"], out_dir / PLOT_FILES["confusion_matrix"]
    )
    _plot_precision_recall(
        y_test, test_scores, chosen, out_dir / PLOT_FILES["precision_recall"]
    )
    logger.info("report written dir=%s", out_dir)


def _markdown(report: dict[str, Any]) -> str:
    test = report["test"]
    policy = report["threshold_policy"]
    training = report["training"]
    refit = training["refit"]
    lines = [
        "# Fraud model training report",
        "",
        f"- Model version: `{report['model_version']}`",
        f"- Recipe: {report['recipe']}; epochs run {training['epochs_run']}"
        f" of {training['epochs']} (weights of epoch {training['best_epoch']}), "
        f"batch size {training['batch_size']}, seed {training['seed']}",
        "- Exported model: "
        + (
            f"refit on the whole training part ({refit['rows']} rows) for "
            f"{refit['epochs']} epochs, the number chosen on the validation slice"
            if refit
            else f"the one trained above, on {report['rows']['train']} rows"
        ),
        f"- Fraud class weight: {_class_weight(training['class_weight'])}"
        " (training loss includes it; validation loss does not)",
        f"- Training time: {training['seconds']:.1f} s"
        + (f" ({refit['seconds']:.1f} s of it the refit)" if refit else ""),
        f"- Data: {report['data']['source']} ({report['data']['rows']} rows; "
        f"train {report['rows']['train']}, validation {report['rows']['validation']}"
        f", test {report['rows']['test']})",
        f"- Test rows with an exact copy in training or validation: "
        f"{report['test_rows_seen_in_training']['rows']} "
        f"({report['test_rows_seen_in_training']['frauds']} fraud); test figures "
        "count them as unseen",
        f"- Threshold: {report['threshold']:.6f} ({policy['kind']}"
        + (
            f"; min precision {policy['min_precision']}, max false alarms per 10k "
            f"{_budget(policy['max_false_alarms_per_10k'])}, target met on "
            "validation: "
            f"{policy['target_met']})"
            if policy["kind"] == "target"
            else ")"
        ),
    ]
    if "note" in policy:
        lines.append(f"- How the threshold was set: {policy['note']}")
    lines += [
        "",
        "## Test split",
        "",
        f"ROC-AUC {test['roc_auc']:.4f}, PR-AUC (average precision) "
        f"{test['pr_auc']:.4f}.",
        "",
        "| | chosen threshold | threshold 0.5 |",
        "|---|---|---|",
    ]
    chosen, half = test["at_threshold"], test["at_0_5"]
    rows = [
        ("threshold", "threshold", "{:.6f}"),
        ("true positives (fraud caught)", "tp", "{:d}"),
        ("false negatives (fraud missed)", "fn", "{:d}"),
        ("false positives (false alarms)", "fp", "{:d}"),
        ("true negatives", "tn", "{:d}"),
        ("precision", "precision", "{:.4f}"),
        ("recall", "recall", "{:.4f}"),
        ("F1", "f1", "{:.4f}"),
        ("false alarms per 10,000 legitimate", "false_alarms_per_10k", "{:.1f}"),
        (
            "precision at the real fraud rate 0.173%",
            "precision_at_real_fraud_rate",
            "{:.4f}",
        ),
    ]
    for label, key, fmt in rows:
        left = chosen["confusion_matrix"].get(key, chosen.get(key))
        right = half["confusion_matrix"].get(key, half.get(key))
        lines.append(f"| {label} | {fmt.format(left)} | {fmt.format(right)} |")
    lines += [
        "",
        "Precision at the real fraud rate restates the test recall and false-alarm "
        "rate at 0.173% fraud, the share in the full public dataset.",
        "",
        f"![training history]({PLOT_FILES['history']})",
        f"![confusion matrix]({PLOT_FILES['confusion_matrix']})",
        f"![precision-recall curve]({PLOT_FILES['precision_recall']})",
        "",
    ]
    return "\n".join(lines)


def _budget(limit: float | None) -> str:
    return "unlimited" if limit is None else f"{limit:g}"


def _class_weight(weights: dict[int, float] | None) -> str:
    if not weights:
        return "1 (none)"
    return f"{weights[1]:.2f}"


def _plot_history(history: dict[str, list[float]], best_epoch: int, path: Path) -> None:
    epochs = np.arange(1, len(history["loss"]) + 1)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, title in (
        (axes[0], "accuracy", "Accuracy"),
        (axes[1], "loss", "Loss"),
    ):
        axis.plot(epochs, history[key], marker="o", label="training")
        if f"val_{key}" in history:
            axis.plot(epochs, history[f"val_{key}"], marker="o", label="validation")
        axis.axvline(best_epoch, color="grey", linestyle=":", label="weights kept")
        axis.set_title(f"{title} per epoch")
        axis.set_xlabel("epoch")
        axis.set_ylabel(key)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)


def _plot_confusion(matrix: dict[str, int], path: Path) -> None:
    cells = np.array([[matrix["tn"], matrix["fp"]], [matrix["fn"], matrix["tp"]]])
    figure, axis = plt.subplots(figsize=(6, 4.5))
    image = axis.imshow(cells, cmap="Blues")
    figure.colorbar(image, ax=axis)
    axis.set_xticks([0, 1], labels=_CLASS_NAMES)
    axis.set_yticks([0, 1], labels=_CLASS_NAMES)
    axis.set_xlabel("predicted")
    axis.set_ylabel("actual")
    axis.set_title("Test confusion matrix, chosen threshold")
    middle = cells.max() / 2
    for row in range(2):
        for col in range(2):
            colour = "white" if cells[row, col] > middle else "black"
            axis.text(col, row, str(cells[row, col]), ha="center", color=colour)
    figure.tight_layout()
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)


def _plot_precision_recall(
    labels: np.ndarray, scores: np.ndarray, chosen: dict[str, Any], path: Path
) -> None:
    precision, recall, _ = precision_recall_curve(labels, scores)
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    axis.plot(recall, precision, label="test")
    axis.scatter(
        [chosen["recall"]],
        [chosen["precision"]],
        color="red",
        zorder=3,
        label=f"chosen threshold {chosen['threshold']:.4f}",
    )
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_xlim(0.0, 1.02)
    axis.set_ylim(0.0, 1.02)
    axis.set_title("Precision-recall curve (test)")
    axis.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)
