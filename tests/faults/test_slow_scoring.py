"""Scoring that takes most of ``max.poll.interval.ms`` causes no rebalance storm.

The worker runs in the test process with a model whose every call sleeps first, so a
batch takes a known time; ``max.poll.interval.ms`` is lowered through the worker's
librdkafka pass-through. Assignments and revocations are counted from the worker's
log records.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pytest
from faultkit import Tally, kafkakit, modelkit, report, wait_until_committed
from prometheus_client import CollectorRegistry

from worker.app import Worker
from worker.config import load_settings
from worker.metrics import Metrics
from worker.model import Model, load_model

pytestmark = pytest.mark.integration

# librdkafka wants max.poll.interval.ms >= session.timeout.ms, whose broker minimum
# is 6 s.
_POLL_INTERVAL_MS = 7_000
_BATCH = 50
# Each batch takes this share of max.poll.interval.ms in the model call alone.
_NEAR_SHARE = 0.7


class _SlowModel:
    """Delegates to a real model but sleeps ``delay_s`` before every scoring call."""

    def __init__(self, model: Model, delay_s: float) -> None:
        self._model = model
        self._delay_s = delay_s
        self.info = model.info
        self.width = model.width
        self.calls = 0

    def score(self, matrix: np.ndarray) -> np.ndarray:
        self.calls += 1
        time.sleep(self._delay_s)
        return self._model.score(matrix)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines)


@contextmanager
def _worker_with(argv: list[str], model: Any) -> Iterator[dict[str, Any]]:
    settings = load_settings(argv, environ={})
    worker = Worker(settings, cast(Model, model), Metrics(CollectorRegistry()))
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["code"] = worker.run()
        except BaseException as exc:  # reported to the test through ``outcome``
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="slow-worker", daemon=True)
    thread.start()
    try:
        yield outcome
    finally:
        worker.stop()
        thread.join(60)
        assert not thread.is_alive(), "worker did not stop within 60 s"


def _run_slow(
    bootstrap: str,
    make_topic: Callable[..., str],
    tmp_path: Path,
    delay_s: float,
    batches: int,
    run_for_s: float | None = None,
) -> tuple[Tally, _Records, int]:
    """Score ``batches`` batches with a model call of ``delay_s``; run until every
    offset is committed, or for ``run_for_s`` seconds when given."""
    source = make_topic(prefix="slow-in")
    scores = make_topic(prefix="slow-scores")
    group = f"{source}-g"
    events = batches * _BATCH
    rows = modelkit.feature_rows(events, seed=3)
    kafkakit.produce(
        bootstrap,
        source,
        (
            (f"s-{i}".encode(), orjson.dumps(modelkit.event(f"s-{i}", row)))
            for i, row in enumerate(rows)
        ),
    )
    model_dir = modelkit.write_model_dir(tmp_path / "model")
    argv = kafkakit.worker_argv(
        bootstrap,
        model_dir,
        source,
        group,
        scores_topic=scores,
        alerts_topic=make_topic(prefix="slow-alerts"),
        dlq_topic=make_topic(prefix="slow-dlq"),
        max_batch_size=_BATCH,
        X=[
            "consumer.session.timeout.ms=6000",
            "consumer.heartbeat.interval.ms=1000",
            f"consumer.max.poll.interval.ms={_POLL_INTERVAL_MS}",
        ],
    )
    slow = _SlowModel(load_model(model_dir), delay_s)
    records = _Records()
    app_logger = logging.getLogger("worker.app")
    app_logger.addHandler(records)
    app_logger.setLevel(logging.INFO)
    try:
        with _worker_with(argv, slow) as outcome:

            def still_running() -> None:
                assert "error" not in outcome, outcome

            if run_for_s is None:
                wait_until_committed(
                    bootstrap,
                    group,
                    source,
                    1,
                    events,
                    timeout_s=batches * delay_s * 3 + 60,
                    also=still_running,
                )
            else:
                time.sleep(run_for_s)
                still_running()
            # Shutdown revokes the partitions too; only count what came before it.
            before_stop = list(records.lines)
        assert outcome.get("code") == 0, outcome
    finally:
        app_logger.removeHandler(records)
    records.lines = before_stop
    tally = Tally.of(bootstrap, source, scores)
    return tally, records, slow.calls


def test_scoring_near_the_poll_interval_keeps_one_assignment(
    kafka_bootstrap, make_topic, tmp_path
):
    delay_s = _NEAR_SHARE * _POLL_INTERVAL_MS / 1000
    tally, records, calls = _run_slow(
        kafka_bootstrap, make_topic, tmp_path, delay_s, batches=4
    )
    report(
        "slow scoring",
        "at-least-once",
        calls,
        tally,
        delay_s=delay_s,
        assignments=records.count("partitions assigned"),
        revocations=records.count("partitions revoked"),
        lost=records.count("partitions lost"),
    )

    assert tally.missing == 0 and tally.duplicates == 0
    assert records.count("partitions assigned") == 1, records.lines
    assert records.count("partitions revoked") == 0, records.lines
    assert records.count("partitions lost") == 0, records.lines
    assert records.count("poll interval") == 0, records.lines


@pytest.mark.slow
def test_scoring_past_the_poll_interval_is_seen_as_rebalances(
    kafka_bootstrap, make_topic, tmp_path
):
    """The control: the same counters do see the storm once batches overrun.

    Every batch then outlasts the group membership, so its offsets are never
    committed and the worker scores the first batch over and over; the run is
    stopped after a fixed time instead of waiting for completion.
    """
    delay_s = 1.3 * _POLL_INTERVAL_MS / 1000
    tally, records, calls = _run_slow(
        kafka_bootstrap, make_topic, tmp_path, delay_s, batches=3, run_for_s=30.0
    )
    report(
        "scoring past max.poll.interval.ms (control)",
        "at-least-once",
        calls,
        tally,
        delay_s=delay_s,
        assignments=records.count("partitions assigned"),
        revocations=records.count("partitions revoked"),
        lost=records.count("partitions lost"),
    )

    assert records.count("partitions assigned") > 1, records.lines
    assert records.count("partitions lost") >= 1, records.lines
    assert tally.duplicates > 0
