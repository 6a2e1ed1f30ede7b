"""The broker the benchmark runs against, its private topics and the events in them.

The broker is ``KAFKA_BOOTSTRAP_SERVERS`` when set, else the local launcher in
``deploy/kafka/localkafka.py``; a broker this module starts is stopped again, one
that was already running is left alone.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.errors import BrokerError

__all__ = [
    "Topics",
    "broker",
    "encode_events",
    "LoadGenerator",
    "fill_topic",
]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent

_TOPIC_TIMEOUT_S = 30.0
_FLUSH_TIMEOUT_S = 120.0
# The filler is not measured: large batches and lz4 fill 200,000 events in seconds.
_FILL_CONFIG: dict[str, str | int | bool] = {
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 1_000_000,
    "compression.type": "lz4",
    "enable.idempotence": True,
}
# The paced load stamps each event when produce() is called; a short linger keeps
# the generator's own batching delay (part of every latency measured) near 1 ms.
_LOAD_CONFIG: dict[str, str | int | bool] = {
    "linger.ms": 1,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 1_000_000,
    "enable.idempotence": True,
}
# Bursts per second of the paced load; at 50,000 events/s that is 250 per burst.
_BURSTS_PER_S = 200
# When librdkafka's queue is full, serve delivery reports this long and retry.
_QUEUE_FULL_WAIT_S = 0.05


def _load_launcher() -> ModuleType:
    path = ROOT / "deploy" / "kafka" / "localkafka.py"
    spec = importlib.util.spec_from_file_location("localkafka", path)
    if spec is None or spec.loader is None:
        raise BrokerError(f"expected the local Kafka launcher at {path}, found none")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("localkafka", module)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """Yield a bootstrap address; stop the local broker afterwards if started here.

    Raises:
        BrokerError: no address given and the local launcher could not start one.
    """
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    if given:
        logger.info("broker from KAFKA_BOOTSTRAP_SERVERS=%s", given)
        yield given
        return
    launcher = _load_launcher()
    local = launcher.Broker.from_env()
    try:
        started = bool(launcher.up(local))
    except launcher.LauncherError as exc:
        raise BrokerError(
            f"expected a Kafka broker, found none and could not start the local one "
            f"({exc}); set KAFKA_BOOTSTRAP_SERVERS or run make kafka-up"
        ) from exc
    logger.info("broker %s at %s", "started" if started else "found", local.bootstrap)
    try:
        yield str(local.bootstrap)
    finally:
        if started:
            launcher.stop(local)
            logger.info("local broker stopped (this run started it)")


class Topics:
    """Creates uniquely named topics for one run and deletes them at ``close()``."""

    def __init__(self, bootstrap: str, run_id: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.run_id = run_id or f"{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self._admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
        self._created: list[str] = []
        self._counter = itertools.count()

    def create(self, role: str, partitions: int) -> str:
        """Create ``bench-<run>-<role>-<n>`` with ``partitions``; return its name."""
        name = f"bench-{self.run_id}-{role}-{next(self._counter)}"
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1)
        futures = self._admin.create_topics([topic], operation_timeout=_TOPIC_TIMEOUT_S)
        try:
            futures[name].result(timeout=_TOPIC_TIMEOUT_S)
        except Exception as exc:
            raise BrokerError(
                f"expected to create topic {name} at {self.bootstrap}, the broker "
                f"refused ({exc}); check that it accepts topic creation"
            ) from exc
        self._created.append(name)
        return name

    def close(self) -> None:
        """Delete every topic this object created; failures are only logged."""
        if not self._created:
            return
        for name, future in self._admin.delete_topics(self._created).items():
            try:
                future.result(timeout=_TOPIC_TIMEOUT_S)
            except Exception as exc:
                logger.warning("topic %s not deleted: %s", name, exc)
        self._created.clear()


def encode_events(count: int, seed: int) -> list[tuple[bytes, bytes]]:
    """Return ``count`` (key, value) pairs as ``fraud-replay`` would send them."""
    from worker.replay import (
        DEFAULT_START_TIME,
        EventEncoder,
        parse_rfc3339,
        synthetic_source,
    )

    source = synthetic_source(count, seed=seed)
    encoder = EventEncoder(source.name, parse_rfc3339(DEFAULT_START_TIME))
    pairs: list[tuple[bytes, bytes]] = []
    for index, row in enumerate(source.rows):
        tid, value = encoder.encode(index, row)
        pairs.append((tid.encode(), value))
    return pairs


def _produce(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(_QUEUE_FULL_WAIT_S)


def _flush(producer: Producer, topic: str) -> None:
    left = producer.flush(_FLUSH_TIMEOUT_S)
    if left:
        raise BrokerError(
            f"expected every event delivered to {topic}, found {left} still queued "
            f"after {_FLUSH_TIMEOUT_S:.0f} s; check the broker's health"
        )


def fill_topic(
    bootstrap: str, topic: str, events: Sequence[tuple[bytes, bytes]]
) -> None:
    """Produce ``events`` into ``topic`` as fast as possible and wait for delivery."""
    producer = Producer({"bootstrap.servers": bootstrap, **_FILL_CONFIG})
    for key, value in events:
        _produce(producer, topic, key, value)
    _flush(producer, topic)


class LoadGenerator:
    """A paced producer, connected and given its producer id before any timing.

    librdkafka stamps each event when ``produce()`` is called, so an event sent
    before the producer has its connection and idempotent producer id would carry
    that set-up time into the measured latency; ``__init__`` waits for both.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._producer = Producer({"bootstrap.servers": bootstrap, **_LOAD_CONFIG})
        self._producer.list_topics(topic, timeout=_TOPIC_TIMEOUT_S)

    def offer(
        self, events: Sequence[tuple[bytes, bytes]], rate: float, duration_s: float
    ) -> tuple[int, float]:
        """Produce at ``rate`` events/s for ``duration_s``, cycling through ``events``.

        Returns:
            (events sent, seconds the sending took); the sending falls behind the
            rate only when this process cannot keep up, which the caller can see.
        """
        producer, topic = self._producer, self.topic
        total = int(rate * duration_s)
        burst = max(1, int(rate / _BURSTS_PER_S))
        pool = len(events)
        sent = 0
        start = time.monotonic()
        while sent < total:
            due = start + sent / rate
            while (delay := due - time.monotonic()) > 0:
                producer.poll(delay)
            end = min(sent + burst, total)
            for k in range(sent, end):
                key, value = events[k % pool]
                _produce(producer, topic, key, value)
            sent = end
            producer.poll(0)
        elapsed = time.monotonic() - start
        _flush(producer, topic)
        return sent, elapsed

    def close(self) -> None:
        """Deliver what is queued."""
        _flush(self._producer, self.topic)
