"""Tiny ONNX models and events for worker tests, built without TensorFlow.

The model is a logistic regression over the contract's 29 features
(MatMul, Add, Sigmoid), written with its model.json next to it exactly as
fraud-train would write them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

FEATURES: tuple[str, ...] = tuple(f"V{i}" for i in range(1, 29)) + ("Amount",)
EVENT_TIME = "2026-12-04T15:30:00.250Z"


def weights(width: int = len(FEATURES)) -> np.ndarray:
    """Return deterministic weights: V1 dominates, the others nudge the score."""
    rng = np.random.default_rng(7)
    w = rng.normal(0.0, 0.05, size=(width, 1)).astype(np.float32)
    w[0, 0] = 1.5
    return w


def onnx_bytes(
    width: int = len(FEATURES),
    bias: float = -4.0,
    input_name: str = "features",
    output_name: str = "fraud_probability",
) -> bytes:
    """Return a serialised logistic-regression model over ``width`` inputs."""
    w = numpy_helper.from_array(weights(width), name="w")
    b = numpy_helper.from_array(np.array([bias], dtype=np.float32), name="b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [input_name, "w"], ["logit_raw"]),
            helper.make_node("Add", ["logit_raw", "b"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], [output_name]),
        ],
        "logreg",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 1])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_model_dir(
    directory: Path,
    threshold: float = 0.5,
    features: Sequence[str] = FEATURES,
    onnx_width: int | None = None,
    **overrides: Any,
) -> Path:
    """Write model.onnx and model.json into ``directory``; overrides patch the JSON."""
    directory.mkdir(parents=True, exist_ok=True)
    blob = onnx_bytes(onnx_width if onnx_width is not None else len(features))
    (directory / "model.onnx").write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    meta: dict[str, Any] = {
        "format_version": 1,
        "model_version": f"20261204T153000Z-{digest[:8]}",
        "created_at": "2026-12-04T15:30:00Z",
        "features": list(features),
        "input_name": "features",
        "output_name": "fraud_probability",
        "threshold": threshold,
        "threshold_policy": {"kind": "fixed", "value": threshold},
        "onnx_sha256": digest,
        "training_data": {"source": "synthetic", "sha256": None, "rows": 0, "seed": 0},
        "rows": {"train": 0, "validation": 0, "test": 0},
        "metrics": {},
        "versions": {"onnx": onnx.__version__},
    }
    meta.update(overrides)
    (directory / "model.json").write_text(json.dumps(meta, indent=2))
    return directory


def offline_scores(model_dir: Path, rows: np.ndarray) -> np.ndarray:
    """Score ``rows`` with a plain onnxruntime session, as an offline check would."""
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (out,) = session.run(None, {"features": rows.astype(np.float32)})
    return np.asarray(out).reshape(-1)


def feature_rows(count: int, fraud_every: int = 0, seed: int = 0) -> np.ndarray:
    """Return ``count`` float32 rows; every ``fraud_every``-th row scores high."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(0.0, 1.0, size=(count, len(FEATURES))).astype(np.float32)
    rows[:, 0] = np.clip(rows[:, 0], -1.0, 1.0)
    rows[:, -1] = np.round(rng.uniform(0.0, 200.0, size=count), 2)
    if fraud_every:
        rows[::fraud_every, 0] = 9.0
    return rows


def event(transaction_id: str, row: Sequence[float], **extra: Any) -> dict[str, Any]:
    """Return an event dict carrying ``row`` under the feature names."""
    body: dict[str, Any] = {"transaction_id": transaction_id, "event_time": EVENT_TIME}
    body.update({name: float(v) for name, v in zip(FEATURES, row, strict=True)})
    body.update(extra)
    return body
