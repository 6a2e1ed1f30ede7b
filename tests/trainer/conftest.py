"""Trainer test settings: TensorFlow's C++ log quiet below warnings."""

from __future__ import annotations

import os

# Must be set before TensorFlow is first imported, which happens when a test module
# imports the trainer's model or export code.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
