"""In-memory stand-ins for confluent-kafka clients, for loop tests without a broker.

They follow the calls the worker makes and nothing more: a scripted consumer whose
``consume`` plays back steps, and a producer that acknowledges outputs only when the
test releases them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TopicPartition


@dataclass
class FakeMessage:
    """The subset of ``confluent_kafka.Message`` the worker reads."""

    topic_name: str
    partition_id: int
    offset_value: int
    payload: bytes | None
    key_bytes: bytes | None = None
    timestamp_ms: int = 1_700_000_000_000

    def error(self) -> None:
        return None

    def value(self) -> bytes | None:
        return self.payload

    def key(self) -> bytes | None:
        return self.key_bytes

    def topic(self) -> str:
        return self.topic_name

    def partition(self) -> int:
        return self.partition_id

    def offset(self) -> int:
        return self.offset_value

    def timestamp(self) -> tuple[int, int]:
        return (1, self.timestamp_ms)


class FakeProducer:
    """Queues outputs; ``release`` acknowledges (or refuses) them."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.pending: list[tuple[str, Callable[[Any, Any], None]]] = []
        self.delivered: list[str] = []
        self.ack_on_flush = True

    def produce(self, topic: str, value: Any, key: Any, **kwargs: Any) -> None:
        self.pending.append((topic, kwargs["on_delivery"]))

    def release(self, error: Any = None) -> None:
        pending, self.pending = self.pending, []
        for topic, callback in pending:
            self.delivered.append(topic)
            callback(error, None)

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        if self.ack_on_flush:
            self.release()
        return len(self.pending)


class FakeConsumer:
    """Plays back ``steps``: each is a list of messages or a callable run instead."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.steps: list[Any] = []
        self.commits: list[dict[tuple[str, int], int]] = []
        self.callbacks: dict[str, Any] = {}
        self.closed = False

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        if not self.steps:
            return []
        step = self.steps.pop(0)
        if callable(step):
            step()
            return []
        return list(step)

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def get_watermark_offsets(
        self, tp: TopicPartition, cached: bool
    ) -> tuple[int, int]:
        return (0, -1)

    def close(self) -> None:
        self.closed = True
