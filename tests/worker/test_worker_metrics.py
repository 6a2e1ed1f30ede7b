"""Metrics carry the contract's names and the HTTP server answers health probes."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from worker.http import MetricsServer
from worker.metrics import BulkHistogram, Metrics


def test_bulk_histogram_counts_arrays_like_single_observations():
    registry = CollectorRegistry()
    hist = BulkHistogram("x_seconds", "doc", (0.1, 1.0), registry)

    hist.observe_many(np.array([0.05, 0.1, 0.5, 3.0]))
    hist.observe(0.2)

    assert registry.get_sample_value("x_seconds_bucket", {"le": "0.1"}) == 2
    assert registry.get_sample_value("x_seconds_bucket", {"le": "1.0"}) == 4
    assert registry.get_sample_value("x_seconds_bucket", {"le": "+Inf"}) == 5
    assert registry.get_sample_value("x_seconds_count") == 5
    assert registry.get_sample_value("x_seconds_sum") == pytest.approx(3.85)


def test_metric_names_follow_the_contract():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.consumer_lag.labels("t", "0").set(3)
    metrics.model_info.labels("v1", "0.5").set(1)

    names = {m.name for m in registry.collect()}
    assert {
        "fraud_worker_events_consumed",
        "fraud_worker_alerts",
        "fraud_worker_dead_letters",
        "fraud_worker_batches",
        "fraud_worker_batch_size_events",
        "fraud_worker_inference_seconds",
        "fraud_worker_end_to_end_latency_seconds",
        "fraud_worker_consumer_lag_events",
        "fraud_worker_model_info",
        "fraud_worker_commits",
        "fraud_worker_produce_errors",
        "fraud_worker_ready",
    } <= names
    assert (
        registry.get_sample_value(
            "fraud_worker_dead_letters_total", {"reason": "not_json"}
        )
        == 0
    )


def test_http_server_serves_metrics_health_and_readiness():
    registry = CollectorRegistry()
    Metrics(registry).events_consumed.inc(3)
    ready = {"value": False}
    server = MetricsServer("127.0.0.1", 0, registry, lambda: ready["value"])
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        body = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert "fraud_worker_events_consumed_total 3.0" in body
        assert urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(f"{base}/readyz", timeout=5)
        ready["value"] = True
        assert urllib.request.urlopen(f"{base}/readyz", timeout=5).status == 200
    finally:
        server.stop()
