"""Exceptions raised by the worker; every one derives from ``FraudWorkerError``."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeliveryError",
    "FencedError",
    "FraudWorkerError",
    "KafkaAuthError",
    "KafkaFatalError",
    "KafkaTlsError",
    "ModelLoadError",
    "SchemaMismatchError",
]


class FraudWorkerError(Exception):
    """Root of every error the worker raises on purpose."""


class ConfigError(FraudWorkerError):
    """A setting is missing, malformed or contradicts another one."""


class ModelLoadError(FraudWorkerError):
    """The model directory cannot be read, or model.onnx is corrupt."""


class SchemaMismatchError(ModelLoadError):
    """model.onnx and model.json disagree (hash, names or feature count)."""


class DeliveryError(FraudWorkerError):
    """The broker refused an output record; the worker stops instead of skipping it."""


class KafkaFatalError(FraudWorkerError):
    """librdkafka reported an error the client cannot recover from."""


class FencedError(KafkaFatalError):
    """Another instance took over this transactional id; this one must stop."""


class KafkaAuthError(ConfigError):
    """The broker refused this client's credentials; a retry cannot fix that."""


class KafkaTlsError(ConfigError):
    """The broker's TLS certificate failed verification; a retry cannot fix that."""
