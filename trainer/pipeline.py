"""One training run from data to model directory."""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from trainer import data as data_module
from trainer import export, report, threshold
from trainer.errors import OutputError, TrainerError, TrainingError
from trainer.model import Recipe, predict, train
from trainer.synthetic import FEATURE_COLUMNS, generate

__all__ = ["RunResult", "TrainOptions", "run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """Everything one run needs; ``data`` or ``synthetic_rows`` names the input."""

    out_dir: Path
    data: Path | None = None
    synthetic_rows: int | None = None
    synthetic_csv: Path | None = None
    recipe: Recipe = "improved"
    epochs: int = 10
    batch_size: int = 100
    seed: int = 0
    min_precision: float = 0.90
    max_false_alarms_per_10k: float | None = None
    fixed_threshold: float | None = None


@dataclass(frozen=True)
class RunResult:
    """The files a run wrote and their main contents."""

    out_dir: Path
    metadata: dict[str, Any]
    report: dict[str, Any]


def run(options: TrainOptions) -> RunResult:
    """Train, evaluate, export and report into ``options.out_dir``.

    ``model.json`` is written last, so a directory with it holds a complete model.

    Note:
        A run overwrites the files of an earlier run in the same directory one by
        one; a worker reading that directory meanwhile can see a new
        ``model.onnx`` beside the old ``model.json`` and refuse it on the digest
        check. Training into a fresh directory and switching to it avoids that.

    Raises:
        TrainerError: bad options or data, or a failed export.
    """
    created = not options.out_dir.exists()
    _prepare_out_dir(options.out_dir)
    try:
        return _run(options)
    except TrainerError:
        # A failed run into a new directory leaves no empty directory behind.
        if created and not any(options.out_dir.iterdir()):
            options.out_dir.rmdir()
        raise


def _run(options: TrainOptions) -> RunResult:
    # 1. data
    dataset = _load(options)
    parts = data_module.split(dataset)
    logger.info("split rows=%s", parts.row_counts())
    seen = parts.test_rows_seen_in_training()
    if seen["rows"]:
        logger.warning(
            "test rows with an exact copy in training or validation rows=%d "
            "frauds=%d; test figures are optimistic by up to that many rows",
            seen["rows"],
            seen["frauds"],
        )

    # 2. train
    trained = train(
        parts.x_train,
        parts.y_train,
        parts.x_val,
        parts.y_val,
        recipe=options.recipe,
        epochs=options.epochs,
        batch_size=options.batch_size,
        seed=options.seed,
    )

    # 3. threshold on validation, metrics on test
    val_scores = predict(trained.model, parts.x_val)
    test_scores = predict(trained.model, parts.x_test)
    _check_finite(val_scores, "validation")
    _check_finite(test_scores, "test")
    if options.fixed_threshold is not None:
        choice = threshold.fixed(options.fixed_threshold)
    else:
        choice = threshold.choose(
            parts.y_val,
            val_scores,
            min_precision=options.min_precision,
            max_false_alarms_per_10k=options.max_false_alarms_per_10k,
        )
    test_metrics: dict[str, Any] = {
        **threshold.ranking_metrics(parts.y_test, test_scores),
        "at_threshold": threshold.evaluate(parts.y_test, test_scores, choice.threshold),
        "at_0_5": threshold.evaluate(parts.y_test, test_scores, 0.5),
    }
    chosen = test_metrics["at_threshold"]
    logger.info(
        "test pr_auc=%.4f roc_auc=%.4f recall=%.4f precision=%.4f "
        "false_alarms_per_10k=%.1f",
        test_metrics["pr_auc"],
        test_metrics["roc_auc"],
        chosen["recall"],
        chosen["precision"],
        chosen["false_alarms_per_10k"],
    )

    # 4. export and describe
    try:
        exported = export.export_onnx(
            trained.model, options.out_dir / "model.onnx", parts.x_test
        )
    except OSError as exc:
        raise _output_error(exc, options.out_dir) from exc
    created_at = datetime.now(UTC).replace(microsecond=0)
    version = export.model_version(created_at, exported.sha256)
    training_data = {
        "source": dataset.source,
        "sha256": dataset.sha256,
        "rows": len(dataset),
        "seed": dataset.seed,
    }
    metadata = {
        "format_version": export.FORMAT_VERSION,
        "model_version": version,
        "created_at": created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "features": list(FEATURE_COLUMNS),
        "input_name": export.INPUT_NAME,
        "output_name": export.OUTPUT_NAME,
        "threshold": choice.threshold,
        "threshold_policy": choice.policy,
        "onnx_sha256": exported.sha256,
        "training_data": training_data,
        "rows": parts.row_counts(),
        "metrics": test_metrics,
        "versions": export.library_versions(),
    }
    summary = {
        "model_version": version,
        "recipe": options.recipe,
        "training": {
            "epochs": options.epochs,
            "epochs_run": trained.epochs_run,
            "best_epoch": trained.best_epoch,
            "batch_size": options.batch_size,
            "seed": options.seed,
            "class_weight": trained.class_weight,
            "seconds": trained.seconds,
        },
        "data": training_data,
        "rows": parts.row_counts(),
        "test_rows_seen_in_training": seen,
        "threshold": choice.threshold,
        "threshold_policy": choice.policy,
        "validation": threshold.ranking_metrics(parts.y_val, val_scores),
        "test": test_metrics,
        "export": {
            "max_abs_difference": exported.max_abs_difference,
            "rows_compared": exported.rows_compared,
        },
        "history": _json_history(trained.history),
    }

    # 5. write the report, then model.json last
    try:
        report.write(
            options.out_dir,
            summary,
            history=trained.history,
            y_test=parts.y_test,
            test_scores=test_scores,
        )
        export.write_metadata(options.out_dir / "model.json", metadata)
    except OSError as exc:
        raise _output_error(exc, options.out_dir) from exc
    logger.info("model written dir=%s model_version=%s", options.out_dir, version)
    return RunResult(options.out_dir, metadata, summary)


def _load(options: TrainOptions) -> data_module.Dataset:
    if (options.data is None) == (options.synthetic_rows is None):
        raise TrainerError(
            "give exactly one data source: --data PATH.csv or --synthetic N"
        )
    if options.data is not None:
        return data_module.load_csv(options.data)
    assert options.synthetic_rows is not None
    dataset = data_module.from_synthetic(options.synthetic_rows, options.seed)
    if options.synthetic_csv is not None:
        rows = generate(options.synthetic_rows, seed=options.seed)
        try:
            data_module.write_csv(rows, options.synthetic_csv)
        except OSError as exc:
            raise OutputError(
                f"cannot write the synthetic CSV {options.synthetic_csv}: "
                f"{exc.strerror or exc}; expected a writable file path, pass "
                "another --synthetic-csv"
            ) from exc
        logger.info("synthetic rows written path=%s", options.synthetic_csv)
    return dataset


def _prepare_out_dir(out_dir: Path) -> None:
    """Create the model directory and prove it writable, before any training."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise OutputError(
            f"cannot write the model directory {out_dir}: {exc.strerror or exc}; "
            "expected a writable directory or a path where one can be created, "
            "pass another --out"
        ) from exc


def _output_error(exc: OSError, out_dir: Path) -> OutputError:
    where = exc.filename or out_dir
    return OutputError(
        f"cannot write {where}: {exc.strerror or exc}; expected the model "
        f"directory {out_dir} to stay writable during the run"
    )


def _json_history(history: dict[str, list[float]]) -> dict[str, list[float | None]]:
    """Return the per-epoch values with NaN or infinity, which JSON lacks, as None.

    A diverged epoch can leave NaN in the history while early stopping restores
    the weights of an earlier, sound epoch.
    """
    return {
        key: [value if math.isfinite(value) else None for value in values]
        for key, values in history.items()
    }


def _check_finite(scores: np.ndarray, part: str) -> None:
    """Raise when training left the model giving NaN or infinite scores."""
    bad = int(np.count_nonzero(~np.isfinite(scores)))
    if bad:
        raise TrainingError(
            f"the trained model gives {bad} non-finite score(s) on the {len(scores)} "
            f"{part} rows; expected probabilities in [0, 1]. Training diverged: "
            "check the data for extreme values, or train with fewer --epochs"
        )
