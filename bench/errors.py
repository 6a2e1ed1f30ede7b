"""Exceptions of the benchmark; one root, ``BenchError``."""

from __future__ import annotations

import logging

__all__ = ["BenchError", "BrokerError", "SubjectError"]

logger = logging.getLogger(__name__)


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says what failed and what to do."""


class BrokerError(BenchError):
    """No usable Kafka broker, or a topic could not be created or filled."""


class SubjectError(BenchError):
    """A measured process (worker, passthrough, Keras baseline) failed or stalled."""
