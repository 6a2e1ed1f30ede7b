"""Exceptions raised by the trainer; all derive from ``TrainerError``."""

from __future__ import annotations

import logging

__all__ = [
    "DataValidationError",
    "ExportError",
    "OutputError",
    "TrainerError",
    "TrainingError",
]

logger = logging.getLogger(__name__)


class TrainerError(Exception):
    """Root of every error the trainer reports to its user."""


class DataValidationError(TrainerError):
    """The training data cannot be read or breaks a rule of the input schema."""


class ExportError(TrainerError):
    """The ONNX export failed or does not reproduce the Keras model."""


class TrainingError(TrainerError):
    """Training produced a model whose scores are not usable."""


class OutputError(TrainerError):
    """A file of the model directory or the synthetic CSV cannot be written."""
