"""Fixtures of the worker tests: a model directory built with ``modelkit``."""

from __future__ import annotations

from pathlib import Path

import pytest
from modelkit import write_model_dir


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A valid model directory (logistic regression, threshold 0.5)."""
    return write_model_dir(tmp_path / "model")
