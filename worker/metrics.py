"""The worker's Prometheus metrics, registered on a registry passed in.

Histograms here are ``BulkHistogram`` collectors: they take a whole numpy array in
one call, so the end-to-end latency of every event can be recorded at the cost of one
``searchsorted`` per batch instead of one Python call per event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from worker.decode import REASONS

__all__ = ["BulkHistogram", "Metrics"]

logger = logging.getLogger(__name__)

_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_INFERENCE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.075, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class BulkHistogram(Collector):
    """A histogram that accepts single values or arrays of values."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None,
    ) -> None:
        self._name = name
        self._doc = documentation
        self._bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self._bounds) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe(self, value: float) -> None:
        """Record one value."""
        slot = int(np.searchsorted(self._bounds, value, side="left"))
        with self._lock:
            self._counts[slot] += 1
            self._sum += value

    def observe_many(self, values: np.ndarray) -> None:
        """Record every value of a 1-D array."""
        if values.size == 0:
            return
        slots = np.searchsorted(self._bounds, values, side="left")
        counts = np.bincount(slots, minlength=len(self._counts))
        total = float(values.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def snapshot(self) -> tuple[int, float]:
        """Return (count, sum) of everything observed so far."""
        with self._lock:
            return int(self._counts.sum()), self._sum

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        bounds = [floatToGoString(b) for b in self._bounds.tolist()] + ["+Inf"]
        family = HistogramMetricFamily(
            self._name,
            self._doc,
            buckets=list(zip(bounds, cumulative, strict=True)),
            sum_value=total,
        )
        yield family


class Metrics:
    """Every metric of the worker; names follow the shared contract."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_consumed = Counter(
            "fraud_worker_events_consumed",
            "Events taken from the input topic.",
            registry=registry,
        )
        self.alerts = Counter(
            "fraud_worker_alerts", "Alerts produced.", registry=registry
        )
        self.dead_letters = Counter(
            "fraud_worker_dead_letters",
            "Events sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in REASONS:
            self.dead_letters.labels(reason)
        self.batches = Counter(
            "fraud_worker_batches", "Micro-batches processed.", registry=registry
        )
        self.batch_size = BulkHistogram(
            "fraud_worker_batch_size_events",
            "Events per micro-batch.",
            _BATCH_SIZE_BUCKETS,
            registry,
        )
        self.inference_seconds = BulkHistogram(
            "fraud_worker_inference_seconds",
            "Wall time of one onnxruntime call over a batch.",
            _INFERENCE_BUCKETS,
            registry,
        )
        self.end_to_end_latency = BulkHistogram(
            "fraud_worker_end_to_end_latency_seconds",
            "From an event's Kafka timestamp until its batch's outputs are "
            "acknowledged (every event, alert or not).",
            _LATENCY_BUCKETS,
            registry,
        )
        self.consumer_lag = Gauge(
            "fraud_worker_consumer_lag_events",
            "High watermark minus the next offset to process, per partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.model_info = Gauge(
            "fraud_worker_model_info",
            "The loaded model (value is always 1).",
            ["model_version", "threshold"],
            registry=registry,
        )
        self.commits = Counter(
            "fraud_worker_commits",
            "Offset commits (or committed transactions) the broker accepted.",
            registry=registry,
        )
        self.produce_errors = Counter(
            "fraud_worker_produce_errors",
            "Output records the broker did not acknowledge.",
            registry=registry,
        )
        self.ready = Gauge(
            "fraud_worker_ready",
            "1 when the model is loaded and partitions are assigned.",
            registry=registry,
        )
