"""Load a model directory and score float32 feature matrices with onnxruntime."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from worker.errors import ModelLoadError, SchemaMismatchError

__all__ = ["Model", "ModelInfo", "load_model"]

logger = logging.getLogger(__name__)

_REQUIRED_KEYS = (
    "format_version",
    "model_version",
    "features",
    "input_name",
    "output_name",
    "threshold",
    "onnx_sha256",
)
_SHA256 = re.compile(r"[0-9a-f]{64}")
# The element type the worker feeds (float32) and reads back.
_FLOAT_TENSOR = "tensor(float)"
# Rows of the probe batch scored at load; two rows catch an output that is not one
# value per row (e.g. two class probabilities) before any event is consumed.
_PROBE_ROWS = 2


@dataclass(frozen=True)
class ModelInfo:
    """What the worker needs from model.json."""

    model_version: str
    features: tuple[str, ...]
    input_name: str
    output_name: str
    threshold: float
    onnx_sha256: str


class Model:
    """An onnxruntime session plus the metadata that describes its input."""

    def __init__(self, info: ModelInfo, session: ort.InferenceSession) -> None:
        self.info = info
        self._session = session
        self._outputs = [info.output_name]
        self._input = info.input_name

    @property
    def width(self) -> int:
        """Number of features per row."""
        return len(self.info.features)

    def score(self, matrix: np.ndarray) -> np.ndarray:
        """Return the fraud probability of each row of a float32 (n, width) matrix."""
        (out,) = self._session.run(self._outputs, {self._input: matrix})
        result: np.ndarray = np.asarray(out, dtype=np.float32).reshape(-1)
        return result


def _read_metadata(path: Path) -> ModelInfo:
    try:
        meta: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(
            f"expected {path} written by fraud-train, found no such file; "
            "point --model at a directory holding model.onnx and model.json"
        ) from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(
            f"expected {path} to hold a JSON object, found unreadable content "
            f"({exc}); re-export the model with fraud-train"
        ) from exc
    if not isinstance(meta, dict):
        raise ModelLoadError(
            f"expected {path} to hold a JSON object, found {type(meta).__name__}; "
            "re-export the model with fraud-train"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        raise ModelLoadError(
            f"expected {path} to have keys {', '.join(_REQUIRED_KEYS)}, found "
            f"{', '.join(missing)} missing; re-export the model with fraud-train"
        )
    if meta["format_version"] != 1 or isinstance(meta["format_version"], bool):
        raise ModelLoadError(
            f"expected format_version 1 in {path}, found "
            f"{meta['format_version']!r}; use a worker that reads that format or "
            "re-export the model with this version's fraud-train"
        )
    for key in ("model_version", "input_name", "output_name"):
        if not isinstance(meta[key], str) or not meta[key]:
            raise ModelLoadError(
                f"expected {key!r} in {path} to be a non-empty string, found "
                f"{meta[key]!r}; re-export the model with fraud-train"
            )
    digest = meta["onnx_sha256"]
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest.lower()):
        raise ModelLoadError(
            f"expected 'onnx_sha256' in {path} to be 64 hex digits, found "
            f"{digest!r}; re-export the model with fraud-train"
        )
    features = meta["features"]
    if (
        not isinstance(features, list)
        or not features
        or not all(isinstance(f, str) and f for f in features)
        or len(set(features)) != len(features)
    ):
        raise ModelLoadError(
            f"expected 'features' in {path} to be a non-empty list of distinct "
            f"names, found {features!r}; re-export the model with fraud-train"
        )
    threshold = meta["threshold"]
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0 < threshold < 1
    ):
        raise ModelLoadError(
            f"expected 'threshold' in {path} to be a number in (0, 1), found "
            f"{threshold!r}; fix model.json or pass --threshold"
        )
    return ModelInfo(
        model_version=meta["model_version"],
        features=tuple(features),
        input_name=meta["input_name"],
        output_name=meta["output_name"],
        threshold=float(threshold),
        onnx_sha256=digest.lower(),
    )


def _check_signature(
    session: ort.InferenceSession, info: ModelInfo, where: Path
) -> None:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if info.input_name not in inputs:
        raise SchemaMismatchError(
            f"model.json names input {info.input_name!r}, model.onnx in {where} has "
            f"inputs {sorted(inputs)}; re-export so that both agree"
        )
    if len(inputs) != 1:
        raise SchemaMismatchError(
            f"expected model.onnx in {where} to take one input, "
            f"{info.input_name!r}, found inputs {sorted(inputs)}; the worker feeds "
            "only the feature matrix, so re-export with that single input"
        )
    if info.output_name not in outputs:
        raise SchemaMismatchError(
            f"model.json names output {info.output_name!r}, model.onnx in {where} has "
            f"outputs {sorted(outputs)}; re-export so that both agree"
        )
    feature_input = inputs[info.input_name]
    shape = feature_input.shape
    width = shape[-1] if len(shape) == 2 else None
    if width != len(info.features):
        raise SchemaMismatchError(
            f"model.json lists {len(info.features)} features, model.onnx in {where} "
            f"takes input shape {shape}; re-export so that the width equals the "
            "feature count"
        )
    output = outputs[info.output_name]
    for role, arg in (("input", feature_input), ("output", output)):
        if arg.type != _FLOAT_TENSOR:
            raise SchemaMismatchError(
                f"expected {role} {arg.name!r} of model.onnx in {where} to be "
                f"{_FLOAT_TENSOR}, found {arg.type}; re-export with float32 "
                f"{role}s"
            )
    out_shape = output.shape
    if not (len(out_shape) == 1 or (len(out_shape) == 2 and out_shape[1] == 1)):
        raise SchemaMismatchError(
            f"expected output {info.output_name!r} of model.onnx in {where} to hold "
            f"one probability per row ([N, 1]), found shape {out_shape}; re-export "
            "with a single fraud-probability column"
        )


def _probe(model: Model, where: Path) -> None:
    """Score a batch of zeros: the model must return one value per row."""
    rows = np.zeros((_PROBE_ROWS, model.width), dtype=np.float32)
    try:
        (out,) = model._session.run(model._outputs, {model._input: rows})
    except Exception as exc:
        raise ModelLoadError(
            f"expected model.onnx in {where} to score a float32 batch of shape "
            f"{rows.shape}, onnxruntime failed ({exc}); re-export the model with "
            "fraud-train"
        ) from exc
    found = np.shape(out)
    if found not in ((_PROBE_ROWS,), (_PROBE_ROWS, 1)):
        raise SchemaMismatchError(
            f"expected model.onnx in {where} to return one score per row, shape "
            f"({_PROBE_ROWS}, 1) for {_PROBE_ROWS} rows, found {found}; re-export "
            "with a single fraud-probability column"
        )
    scores = np.asarray(out, dtype=np.float64).reshape(-1)
    if not np.all((scores >= 0.0) & (scores <= 1.0)):
        raise SchemaMismatchError(
            f"expected model.onnx in {where} to return probabilities in [0, 1], "
            f"found {float(scores[0])!r} for a row of zeros; a model that ends in "
            "logits needs its sigmoid: re-export it with fraud-train"
        )


def load_model(model_dir: Path, intra_op_threads: int = 1) -> Model:
    """Load and verify ``model_dir``; refuse it unless model.json matches model.onnx.

    Raises:
        ModelLoadError: a file is missing, unreadable or not a valid ONNX model.
        SchemaMismatchError: the sha256, the input/output names or the input width
            differ from model.json.
    """
    if not model_dir.is_dir():
        raise ModelLoadError(
            f"expected a model directory, found nothing at {model_dir}; point --model "
            "at the directory written by fraud-train --out"
        )
    info = _read_metadata(model_dir / "model.json")
    onnx_path = model_dir / "model.onnx"
    try:
        blob = onnx_path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(
            f"expected {onnx_path}, found it unreadable ({exc.strerror}); "
            "re-export the model with fraud-train"
        ) from exc
    digest = hashlib.sha256(blob).hexdigest()
    if digest != info.onnx_sha256:
        raise SchemaMismatchError(
            f"model.json expects model.onnx sha256 {info.onnx_sha256}, found "
            f"{digest} in {onnx_path}; the files come from different exports or "
            "model.onnx is damaged: copy both from the same fraud-train run"
        )

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            blob, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ModelLoadError(
            f"expected a valid ONNX model in {onnx_path}, onnxruntime refused it "
            f"({exc}); re-export the model with fraud-train"
        ) from exc
    _check_signature(session, info, model_dir)
    model = Model(info, session)
    _probe(model, model_dir)
    logger.info(
        "model loaded version=%s features=%d threshold=%.4f",
        info.model_version,
        len(info.features),
        info.threshold,
    )
    return model
