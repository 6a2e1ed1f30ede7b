"""The worker refuses a model directory unless model.json and model.onnx agree."""

from __future__ import annotations

import json

import numpy as np
import pytest
from modelkit import FEATURES, feature_rows, offline_scores, write_model_dir

from worker.errors import ModelLoadError, SchemaMismatchError
from worker.model import load_model


def test_valid_model_scores_like_offline_onnxruntime(model_dir):
    model = load_model(model_dir, intra_op_threads=1)
    rows = feature_rows(50, fraud_every=5)

    np.testing.assert_array_equal(model.score(rows), offline_scores(model_dir, rows))
    assert model.info.features == FEATURES
    assert model.info.threshold == 0.5


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="expected a model directory"):
        load_model(tmp_path / "absent")


def test_missing_metadata_is_refused(model_dir):
    (model_dir / "model.json").unlink()
    with pytest.raises(ModelLoadError, match="found no such file"):
        load_model(model_dir)


def test_hash_mismatch_is_refused(model_dir):
    meta = json.loads((model_dir / "model.json").read_text())
    meta["onnx_sha256"] = "0" * 64
    (model_dir / "model.json").write_text(json.dumps(meta))
    with pytest.raises(SchemaMismatchError, match="sha256 0000"):
        load_model(model_dir)


def test_corrupt_onnx_with_matching_hash_is_refused(tmp_path):
    directory = write_model_dir(tmp_path / "m")
    import hashlib

    blob = b"not an onnx model"
    (directory / "model.onnx").write_bytes(blob)
    meta = json.loads((directory / "model.json").read_text())
    meta["onnx_sha256"] = hashlib.sha256(blob).hexdigest()
    (directory / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="onnxruntime refused it"):
        load_model(directory)


def test_feature_count_mismatch_is_refused(tmp_path):
    directory = write_model_dir(tmp_path / "m", features=FEATURES[:-1], onnx_width=29)
    with pytest.raises(SchemaMismatchError, match="lists 28 features"):
        load_model(directory)


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"input_name": "x"}, "names input 'x'"),
        ({"output_name": "y"}, "names output 'y'"),
        ({"threshold": 1.0}, "number in \\(0, 1\\)"),
        ({"features": ["V1", "V1"]}, "distinct"),
    ],
    ids=["input_name_absent", "output_name_absent", "threshold_one", "dup_features"],
)
def test_inconsistent_metadata_is_refused(tmp_path, patch, match):
    directory = write_model_dir(tmp_path / "m", **patch)
    with pytest.raises(ModelLoadError, match=match):
        load_model(directory)
