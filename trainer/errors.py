"""Exceptions raised by the trainer; all derive from ``TrainerError``."""

from __future__ import annotations

import logging

__all__ = ["DataValidationError", "ExportError", "TrainerError"]

logger = logging.getLogger(__name__)


class TrainerError(Exception):
    """Root of every error the trainer reports to its user."""


class DataValidationError(TrainerError):
    """The training data cannot be read or breaks a rule of the input schema."""


class ExportError(TrainerError):
    """The ONNX export failed or does not reproduce the Keras model."""
