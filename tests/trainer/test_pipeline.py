"""End-to-end training runs: synthetic data, and the real subset vs the original."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import onnxruntime
import pytest

import schemas
import trainer.pipeline
from trainer.data import load_csv, split
from trainer.errors import TrainerError, TrainingError
from trainer.model import TrainedModel
from trainer.pipeline import RunResult, TrainOptions, run
from trainer.report import PLOT_FILES
from trainer.synthetic import FEATURE_COLUMNS

# Allowed shortfall of the default recipe against the original one trained beside it
# on the real subset, for run-to-run jitter at one seed: the original's test PR-AUC
# at seed 0 moved by 0.0007 when only the order of its training rows changed, and
# one fraud of the 78 in the test split is 0.013 recall. Measured over seeds 0-2 the
# default leads by 0.002-0.008 PR-AUC and catches as many frauds or one more.
_PR_AUC_MARGIN = 0.003
_RECALL_MARGIN = 1 / 78

_SYNTHETIC_ROWS = 20_000


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    out_dir = tmp_path_factory.mktemp("model")
    return run(
        TrainOptions(out_dir=out_dir, synthetic_rows=_SYNTHETIC_ROWS, epochs=2, seed=0)
    )


def test_run_writes_every_artifact(synthetic_run: RunResult) -> None:
    names = {path.name for path in synthetic_run.out_dir.iterdir()}

    expected = {"model.onnx", "model.json", "report.json", "report.md"}
    assert expected | set(PLOT_FILES.values()) <= names
    for plot in PLOT_FILES.values():
        assert (synthetic_run.out_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_json_satisfies_its_schema(synthetic_run: RunResult) -> None:
    written = json.loads((synthetic_run.out_dir / "model.json").read_text())

    jsonschema.validate(
        written,
        schemas.load("model_metadata"),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("threshold", 1.0),
        ("onnx_sha256", "not-hex"),
        ("model_version", "yesterday"),
        ("created_at", "2026-12-04 15:30"),
        ("format_version", 2),
    ],
    ids=["threshold-1", "digest", "version", "created-at", "format"],
)
def test_schema_rejects_a_broken_model_json(
    synthetic_run: RunResult, field: str, value: object
) -> None:
    broken = {**synthetic_run.metadata, field: value}

    with pytest.raises(jsonschema.ValidationError, match=field):
        jsonschema.validate(broken, schemas.load("model_metadata"))


def test_model_json_describes_the_exported_model(synthetic_run: RunResult) -> None:
    written = json.loads((synthetic_run.out_dir / "model.json").read_text())
    onnx_bytes = (synthetic_run.out_dir / "model.onnx").read_bytes()
    digest = hashlib.sha256(onnx_bytes).hexdigest()

    assert written["onnx_sha256"] == digest
    assert written["model_version"].endswith("-" + digest[:8])
    assert written["features"] == list(FEATURE_COLUMNS)
    assert written["input_name"] == "features"
    assert written["output_name"] == "fraud_probability"
    assert written["training_data"] == {
        "source": "synthetic",
        "sha256": None,
        "rows": _SYNTHETIC_ROWS,
        "seed": 0,
    }
    # Refit on the whole training part: train counts the validation rows too.
    assert written["rows"] == {"train": 16_000, "validation": 3_200, "test": 4_000}
    assert written["threshold_policy"]["kind"] == "target"
    assert written["threshold_policy"]["min_precision"] == 0.9
    assert written["metrics"]["at_threshold"]["threshold"] == written["threshold"]
    assert written["versions"]["tf2onnx"]


def test_reported_test_metrics_match_the_onnx_model(synthetic_run: RunResult) -> None:
    # Recompute the test confusion matrix from the exported file alone.
    from trainer.data import from_synthetic

    parts = split(from_synthetic(_SYNTHETIC_ROWS, seed=0))
    session = onnxruntime.InferenceSession(str(synthetic_run.out_dir / "model.onnx"))
    (scores,) = session.run(None, {"features": parts.x_test})
    alerts = scores[:, 0] >= synthetic_run.metadata["threshold"]
    fraud = parts.y_test == 1

    matrix = synthetic_run.metadata["metrics"]["at_threshold"]["confusion_matrix"]
    assert matrix["tp"] == int(np.sum(alerts & fraud))
    assert matrix["fp"] == int(np.sum(alerts & ~fraud))


def test_report_states_both_thresholds_and_the_real_rate_precision(
    synthetic_run: RunResult,
) -> None:
    written = json.loads((synthetic_run.out_dir / "report.json").read_text())
    markdown = (synthetic_run.out_dir / "report.md").read_text()

    for key in ("at_threshold", "at_0_5"):
        figures = written["test"][key]
        assert set(figures["confusion_matrix"]) == {"tn", "fp", "fn", "tp"}
        assert 0.0 <= figures["precision_at_real_fraud_rate"] <= 1.0
    assert written["test"]["at_0_5"]["threshold"] == 0.5
    assert len(written["history"]["val_loss"]) == written["training"]["epochs_run"]
    assert "threshold 0.5" in markdown
    seen = written["test_rows_seen_in_training"]
    assert f"exact copy in training or validation: {seen['rows']} " in markdown
    assert "precision at the real fraud rate 0.173%" in markdown


def test_synthetic_model_separates_well_but_not_perfectly(
    synthetic_run: RunResult,
) -> None:
    pr_auc = synthetic_run.metadata["metrics"]["pr_auc"]

    assert 0.3 < pr_auc < 0.99


def test_real_subset_model_reaches_the_original_recall_and_pr_auc(
    creditcard_csv: Path, tmp_path: Path
) -> None:
    # The original configuration by its recipe's defaults: the whole training
    # part, no class weights, 10 epochs of batch 100, threshold 0.5.
    original = run(
        TrainOptions(
            out_dir=tmp_path / "original", data=creditcard_csv, recipe="original"
        )
    ).metadata
    result = run(TrainOptions(out_dir=tmp_path / "default", data=creditcard_csv))
    metrics = result.metadata["metrics"]

    assert original["threshold"] == 0.5
    assert original["rows"] == {"train": 6_056, "validation": 0, "test": 1_514}
    assert result.metadata["rows"] == {
        "train": 6_056,
        "validation": 1_212,
        "test": 1_514,
    }
    assert metrics["pr_auc"] >= original["metrics"]["pr_auc"] - _PR_AUC_MARGIN
    assert (
        metrics["at_threshold"]["recall"]
        >= original["metrics"]["at_threshold"]["recall"] - _RECALL_MARGIN
    )
    assert result.metadata["training_data"]["sha256"] == load_csv(creditcard_csv).sha256


@dataclasses.dataclass
class _TrainCall:
    rows: int
    validation_rows: int | None
    recipe: str
    epochs: int
    best_epoch: int


@pytest.fixture
def train_calls(monkeypatch: pytest.MonkeyPatch) -> list[_TrainCall]:
    """Record every training the pipeline starts, then let it train."""
    calls: list[_TrainCall] = []
    real_train = trainer.pipeline.train

    def recording(
        x: np.ndarray,
        y: np.ndarray,
        validation: tuple[np.ndarray, np.ndarray] | None = None,
        **kwargs: Any,
    ) -> TrainedModel:
        trained = real_train(x, y, validation, **kwargs)
        calls.append(
            _TrainCall(
                rows=len(y),
                validation_rows=None if validation is None else len(validation[1]),
                recipe=kwargs["recipe"],
                epochs=kwargs["epochs"],
                best_epoch=trained.best_epoch,
            )
        )
        return trained

    monkeypatch.setattr(trainer.pipeline, "train", recording)
    return calls


def test_original_recipe_trains_once_on_every_training_row_at_threshold_0_5(
    tmp_path: Path, train_calls: list[_TrainCall]
) -> None:
    result = run(
        TrainOptions(
            out_dir=tmp_path, synthetic_rows=5_000, recipe="original", epochs=1
        )
    )

    assert train_calls == [_TrainCall(4_000, None, "original", 1, 1)]
    assert result.metadata["rows"] == {"train": 4_000, "validation": 0, "test": 1_000}
    assert result.metadata["threshold"] == 0.5
    policy = result.metadata["threshold_policy"]
    assert policy["kind"] == "fixed"
    assert policy["chosen_on"] == "none"
    assert "no held-out rows" in policy["note"]
    assert result.report["validation"] is None
    assert "no held-out rows" in (tmp_path / "report.md").read_text()


def test_original_recipe_trains_ten_epochs_by_default() -> None:
    assert TrainOptions(out_dir=Path("m"), recipe="original").resolved_epochs() == 10


def test_original_recipe_refuses_a_threshold_target(tmp_path: Path) -> None:
    options = TrainOptions(
        out_dir=tmp_path / "m",
        synthetic_rows=5_000,
        recipe="original",
        min_precision=0.9,
    )

    with pytest.raises(
        TrainerError, match="no threshold target with recipe 'original'"
    ):
        run(options)
    assert not (tmp_path / "m").exists()


def test_improved_recipe_refits_on_the_whole_training_part_for_the_best_epochs(
    tmp_path: Path, train_calls: list[_TrainCall]
) -> None:
    result = run(TrainOptions(out_dir=tmp_path, synthetic_rows=5_000, epochs=2))

    selection, refit = train_calls
    assert (selection.rows, selection.validation_rows) == (3_200, 800)
    assert (refit.rows, refit.validation_rows) == (4_000, None)
    assert refit.recipe == selection.recipe == "improved"
    assert refit.epochs == selection.best_epoch
    assert result.metadata["rows"] == {"train": 4_000, "validation": 800, "test": 1_000}
    assert result.report["training"]["refit"]["epochs"] == selection.best_epoch
    assert result.metadata["threshold_policy"]["chosen_on"] == "validation"
    assert "refit" in result.metadata["threshold_policy"]["note"]


def test_improved_recipe_without_refit_exports_the_selection_model(
    tmp_path: Path, train_calls: list[_TrainCall]
) -> None:
    result = run(
        TrainOptions(out_dir=tmp_path, synthetic_rows=5_000, epochs=2, refit=False)
    )

    assert [(call.rows, call.validation_rows) for call in train_calls] == [(3_200, 800)]
    assert result.metadata["rows"] == {"train": 3_200, "validation": 800, "test": 1_000}
    assert result.report["training"]["refit"] is None
    assert "note" not in result.metadata["threshold_policy"]


def test_diverged_training_stops_before_anything_is_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def nan_scores(model: object, features: np.ndarray) -> np.ndarray:
        return np.full(len(features), np.nan, dtype=np.float32)

    monkeypatch.setattr(trainer.pipeline, "predict", nan_scores)

    with pytest.raises(TrainingError, match="non-finite score.*validation rows"):
        run(TrainOptions(out_dir=tmp_path, synthetic_rows=3_000, epochs=1))
    assert not (tmp_path / "model.onnx").exists()
    assert not (tmp_path / "model.json").exists()


def test_nan_in_the_training_history_is_written_as_null(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_train = trainer.pipeline.train

    def diverged_once(*args: Any, **kwargs: Any) -> TrainedModel:
        trained = real_train(*args, **kwargs)
        history = {
            **trained.history,
            "loss": [float("nan"), *trained.history["loss"][1:]],
        }
        return dataclasses.replace(trained, history=history)

    monkeypatch.setattr(trainer.pipeline, "train", diverged_once)

    run(TrainOptions(out_dir=tmp_path, synthetic_rows=3_000, epochs=2, refit=False))

    written = json.loads((tmp_path / "report.json").read_text())
    assert written["history"]["loss"][0] is None
    assert (tmp_path / "model.json").exists()
