"""ONNX export of the trained model, its parity check and ``model.json``.

The model is converted with ``tf2onnx.convert.from_function`` on a ``tf.function``
that wraps it: ``from_keras`` fails on Keras 3 models with a KeyError on an internal
tensor name. The wrapper returns a dict, which names the ONNX output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import keras
import numpy as np
import onnx
import onnxruntime
import tensorflow as tf
import tf2onnx

from trainer.errors import ExportError
from trainer.synthetic import FEATURE_COLUMNS

__all__ = [
    "FORMAT_VERSION",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ExportResult",
    "export_onnx",
    "library_versions",
    "model_version",
    "write_metadata",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
INPUT_NAME = "features"
OUTPUT_NAME = "fraud_probability"

# Opset 17 is supported by every onnxruntime release of the last years and has all
# the operators this network needs.
_OPSET = 17

# Largest accepted |Keras - onnxruntime| over the test rows. Both compute in
# float32; measured differences are near 2e-7, so 1e-5 only fails a broken export.
_PARITY_TOLERANCE = 1e-5

_PARITY_BATCH = 4096

_BATCH_DIM = "N"

_VERSIONED_LIBRARIES = (
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "numpy",
    "pandas",
    "scikit-learn",
)


@dataclass(frozen=True)
class ExportResult:
    """What the export wrote and how closely it matched Keras."""

    path: Path
    sha256: str
    max_abs_difference: float
    rows_compared: int


def export_onnx(model: keras.Model, path: Path, check_rows: np.ndarray) -> ExportResult:
    """Write ``model`` as ONNX to ``path`` and check it against Keras on ``check_rows``.

    Raises:
        ExportError: conversion failed, the graph's input or output differs from
            the contract, or some row differs by more than the tolerance.
    """
    # 1. convert
    signature = [
        tf.TensorSpec([None, len(FEATURE_COLUMNS)], tf.float32, name=INPUT_NAME)
    ]

    @tf.function(input_signature=signature)
    def serve(features: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: model(features, training=False)}

    try:
        proto, _ = tf2onnx.convert.from_function(
            serve, input_signature=signature, opset=_OPSET
        )
    except Exception as exc:
        raise ExportError(f"tf2onnx could not convert the model: {exc}") from exc
    proto.doc_string = "fraudstream fraud classifier: raw features in, probability out"
    # tf2onnx gives the input's and the output's batch sizes unrelated generated
    # names; one name says they are the same N.
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = _BATCH_DIM
    payload = proto.SerializeToString()

    # 2. check the graph, its interface and its numbers before writing
    try:
        onnx.checker.check_model(proto)
        session = onnxruntime.InferenceSession(
            payload, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ExportError(
            f"the converted ONNX graph is invalid or onnxruntime cannot load it: {exc}"
        ) from exc
    _check_interface(session)
    difference = _max_difference(model, session, check_rows)
    if not difference <= _PARITY_TOLERANCE:
        raise ExportError(
            f"ONNX output differs from Keras by up to {difference:.3g} over "
            f"{len(check_rows)} rows; expected at most {_PARITY_TOLERANCE:g}. "
            "Check the tf2onnx and onnxruntime versions against the ones recorded "
            "in the last good model.json"
        )

    # 3. write
    path.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    logger.info(
        "onnx exported path=%s sha256=%s max_abs_difference=%.3g rows=%d",
        path,
        digest[:12],
        difference,
        len(check_rows),
    )
    return ExportResult(path, digest, difference, len(check_rows))


def model_version(created_at: datetime, onnx_sha256: str) -> str:
    """Return the version string: UTC creation time and the ONNX digest's start."""
    return f"{created_at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{onnx_sha256[:8]}"


def library_versions() -> dict[str, str]:
    """Return the versions of Python and the libraries that shaped the model."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_metadata(path: Path, content: dict[str, Any]) -> None:
    """Write ``model.json``; NaN or infinity is refused, as JSON has neither."""
    path.write_text(
        json.dumps(content, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )


def _check_interface(session: onnxruntime.InferenceSession) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    found_in = [(i.name, i.shape) for i in inputs]
    found_out = [(o.name, o.shape) for o in outputs]
    ok = (
        len(inputs) == 1
        and inputs[0].name == INPUT_NAME
        and len(inputs[0].shape) == 2
        and inputs[0].shape[1] == len(FEATURE_COLUMNS)
        and not isinstance(inputs[0].shape[0], int)
        and len(outputs) == 1
        and outputs[0].name == OUTPUT_NAME
        and list(outputs[0].shape)[1:] == [1]
    )
    if not ok:
        raise ExportError(
            f"exported graph has inputs {found_in} and outputs {found_out}; expected "
            f"one input {INPUT_NAME!r} of shape [N, {len(FEATURE_COLUMNS)}] and one "
            f"output {OUTPUT_NAME!r} of shape [N, 1]"
        )


def _max_difference(
    model: keras.Model, session: onnxruntime.InferenceSession, rows: np.ndarray
) -> float:
    if len(rows) == 0:
        raise ExportError("no rows to check the ONNX export against; need at least 1")
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    expected = np.asarray(model.predict(rows, batch_size=_PARITY_BATCH, verbose=0))
    found = np.concatenate(
        [
            session.run(
                [OUTPUT_NAME], {INPUT_NAME: rows[start : start + _PARITY_BATCH]}
            )[0]
            for start in range(0, len(rows), _PARITY_BATCH)
        ]
    )
    if found.shape != expected.shape:
        raise ExportError(
            f"ONNX output has shape {found.shape} for {len(rows)} rows; expected "
            f"{expected.shape}"
        )
    return float(np.max(np.abs(found.astype(np.float64) - expected)))
