"""ONNX export: interface, dynamic batch, parity with Keras, failure on mismatch."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import onnxruntime
import pytest

from trainer import export
from trainer.errors import ExportError
from trainer.model import build, predict
from trainer.synthetic import generate

# Largest |Keras - onnxruntime| accepted here, the export's own limit.
_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return generate(3_000, seed=11).features.astype(np.float32)


@pytest.fixture(scope="module")
def model(rows: np.ndarray) -> keras.Model:
    labels = generate(3_000, seed=11).labels.astype(np.float32)
    built = build(rows, seed=0)
    built.fit(rows, labels, epochs=1, batch_size=100, verbose=0)
    return built


def test_export_has_the_contract_interface(
    model: keras.Model, rows: np.ndarray, tmp_path: Path
) -> None:
    result = export.export_onnx(model, tmp_path / "model.onnx", rows)
    session = onnxruntime.InferenceSession(str(result.path))

    (given,) = session.get_inputs()
    (output,) = session.get_outputs()
    assert given.name == "features"
    assert given.type == "tensor(float)"
    assert given.shape == ["N", 29]
    assert output.name == "fraud_probability"
    assert output.shape == ["N", 1]


def test_export_matches_keras_on_every_row_for_any_batch_size(
    model: keras.Model, rows: np.ndarray, tmp_path: Path
) -> None:
    result = export.export_onnx(model, tmp_path / "model.onnx", rows)
    session = onnxruntime.InferenceSession(str(result.path))
    expected = predict(model, rows)

    assert result.max_abs_difference <= _TOLERANCE
    assert result.rows_compared == len(rows)
    for size in (1, 7, 512):
        (found,) = session.run(None, {"features": rows[:size]})
        assert found.shape == (size, 1)
        np.testing.assert_allclose(
            found[:, 0], expected[:size], rtol=0, atol=_TOLERANCE
        )


def test_export_takes_raw_values_because_scaling_is_inside(
    model: keras.Model, rows: np.ndarray, tmp_path: Path
) -> None:
    result = export.export_onnx(model, tmp_path / "model.onnx", rows)
    session = onnxruntime.InferenceSession(str(result.path))
    large_amount = rows[:1].copy()
    large_amount[0, -1] = 20_000.0

    (plain,) = session.run(None, {"features": rows[:1]})
    (changed,) = session.run(None, {"features": large_amount})
    assert plain[0, 0] != changed[0, 0]
    assert 0.0 <= changed[0, 0] <= 1.0


def test_recorded_digest_is_the_file_digest(
    model: keras.Model, rows: np.ndarray, tmp_path: Path
) -> None:
    result = export.export_onnx(model, tmp_path / "model.onnx", rows)

    assert result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()


def test_parity_failure_stops_the_export_and_writes_nothing(
    model: keras.Model,
    rows: np.ndarray,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(export, "_PARITY_TOLERANCE", -1.0)
    path = tmp_path / "model.onnx"

    with pytest.raises(ExportError, match="ONNX output differs from Keras"):
        export.export_onnx(model, path, rows)
    assert not path.exists()


def test_model_version_is_utc_time_and_digest_prefix() -> None:
    created = datetime(2026, 12, 4, 15, 30, 0, tzinfo=UTC)

    assert export.model_version(created, "1a2b3c4d" + "0" * 56) == (
        "20261204T153000Z-1a2b3c4d"
    )


def test_library_versions_name_the_conversion_stack() -> None:
    versions = export.library_versions()

    for name in ("python", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy"):
        assert versions[name]


def test_metadata_with_nan_is_refused_rather_than_written_as_invalid_json(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        export.write_metadata(tmp_path / "model.json", {"metrics": float("nan")})
