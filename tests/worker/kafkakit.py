"""Real-broker helpers for worker tests: produce events, read outputs, run a worker."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from worker.app import Worker
from worker.config import load_settings
from worker.metrics import Metrics
from worker.model import load_model

_COMMITTED_ATTEMPTS = 20


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    partition: int | None = None,
) -> int:
    """Produce (key, value) pairs and wait for every ack; return how many."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    errors: list[Any] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    count = 0
    for key, value in records:
        kwargs: dict[str, Any] = {"on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(topic, value, key, **kwargs)
        producer.poll(0)
        count += 1
    assert producer.flush(30) == 0, "test producer could not flush"
    assert errors == [], errors
    return count


def read(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout_s: float = 30.0,
    settle_s: float = 0.5,
) -> list[Any]:
    """Read a topic from the start (read_committed) until ``expected`` records came
    and ``settle_s`` passed without more, or the timeout; return the messages."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.2)
            good = [m for m in batch if m.error() is None]
            if good:
                out.extend(good)
                quiet_since = time.monotonic()
            elif len(out) >= expected and time.monotonic() - quiet_since >= settle_s:
                break
    finally:
        consumer.close()
    return out


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    """Return the committed offset of each partition for ``group`` (-1001 = none)."""
    # read_committed (librdkafka's default) asks for stable offsets only, and the broker
    # holds such a request while a transaction with offsets in it is open: after a
    # kill -9 mid-transaction, until the transaction times out. Committed offsets are
    # what the tests want, so do not wait for pending ones.
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_uncommitted",
        }
    )
    wanted = [TopicPartition(topic, p) for p in range(partitions)]
    try:
        # Right after a broker restart the group coordinator may still be loading;
        # such errors are retriable and pass within seconds.
        for _ in range(_COMMITTED_ATTEMPTS - 1):
            try:
                tps = consumer.committed(wanted, timeout=10)
                break
            except KafkaException as exc:
                if not exc.args[0].retriable() and exc.args[0].code() not in (
                    KafkaError.NOT_COORDINATOR,
                    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                    KafkaError.COORDINATOR_NOT_AVAILABLE,
                ):
                    raise
                time.sleep(0.5)
        else:
            tps = consumer.committed(wanted, timeout=10)
    finally:
        consumer.close()
    return [tp.offset for tp in tps]


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until true; fail with ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class RunningWorker:
    """A worker running in a thread of the test process."""

    worker: Worker
    registry: CollectorRegistry
    thread: threading.Thread
    outcome: dict[str, Any] = field(default_factory=dict)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value


def worker_argv(
    bootstrap: str, model_dir: Path, input_topic: str, group: str, **flags: Any
) -> list[str]:
    """Return fraud-worker arguments for a test; ``flags`` become ``--flag value``."""
    argv = [
        "--model", str(model_dir),
        "--bootstrap-servers", bootstrap,
        "--input-topic", input_topic,
        "--group-id", group,
        "--max-batch-wait-ms", "20",
        "--commit-interval-ms", "200",
        "--metrics-host", "127.0.0.1",
        "--metrics-port", "0",
    ]  # fmt: skip
    for name, value in flags.items():
        if name == "X":
            for item in value:
                argv += ["-X", item]
        else:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


@contextmanager
def running_worker(argv: Sequence[str]) -> Iterator[RunningWorker]:
    """Run a worker in a thread; stop it and wait for it on exit."""
    settings = load_settings(list(argv), environ={})
    registry = CollectorRegistry()
    worker = Worker(settings, load_model(settings.model_dir), Metrics(registry))
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["code"] = worker.run()
        except BaseException as exc:  # reported to the test through ``outcome``
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="worker-under-test", daemon=True)
    running = RunningWorker(worker, registry, thread, outcome)
    thread.start()
    try:
        yield running
    finally:
        worker.stop()
        thread.join(60)
        assert not thread.is_alive(), "worker did not stop within 60 s"
