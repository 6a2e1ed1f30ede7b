"""Variant a, the passthrough ceiling: consume and produce the same bytes.

No decoding, no model: each record's value and key go unchanged to the output topic.
Consumer and producer are configured as the worker's (idempotent producer, acks=all,
linger 1 ms, a 1 ms consume wait while outputs await acks), and the process serves the
worker's metric names (``fraud_worker_events_consumed_total``,
``fraud_worker_end_to_end_latency_seconds``, ``fraud_worker_ready``) so that the
benchmark measures it exactly as it measures the worker.

Acknowledgements are counted without a Python callback per record: the producer
reports only errors, and ``len(producer)`` drops as records are acknowledged. Batches
retire in consumption order once that many records are acknowledged; latency runs from
each record's Kafka timestamp to the poll that saw its batch retire, as in the worker.

With ``--consume-only`` nothing is produced and each batch retires as soon as it is
consumed: the latency of the broker and the consumer alone, the floor under every
subject's latency on this machine.

Usage::

    python -m bench.passthrough --bootstrap-servers HOST:PORT --group-id G \
        --input-topic IN --output-topic OUT --metrics-port PORT
"""

from __future__ import annotations

import argparse
import collections
import logging
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, Producer
from prometheus_client import CollectorRegistry, start_http_server

from worker.metrics import Metrics

__all__ = ["main"]

logger = logging.getLogger("bench.passthrough")

# Offsets are committed this often, like the worker's default commit interval.
_COMMIT_INTERVAL_S = 1.0
# As in the worker: while outputs await acks, consume waits at most this long, and
# the producer lingers 1 ms.
_ACK_POLL_S = 0.001
_LINGER_MS = 1
_FLUSH_TIMEOUT_S = 30.0
_QUEUE_FULL_WAIT_S = 0.05


class _Passthrough:
    def __init__(self, args: argparse.Namespace, metrics: Metrics) -> None:
        self.args = args
        self.metrics = metrics
        self.stopping = False
        self.failed: KafkaError | None = None
        self.consumer = Consumer(
            {
                "bootstrap.servers": args.bootstrap_servers,
                "group.id": args.group_id,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "client.id": "bench-passthrough",
            }
        )
        self.producer = Producer(
            {
                "bootstrap.servers": args.bootstrap_servers,
                "linger.ms": _LINGER_MS,
                "enable.idempotence": True,
                "acks": "all",
                "delivery.report.only.error": True,
                "on_delivery": self._on_error,
                "client.id": "bench-passthrough",
            }
        )

    def _on_error(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.failed = err

    def _on_assign(self, _consumer: Consumer, partitions: list[Any]) -> None:
        self.metrics.ready.set(1 if partitions else 0)

    def run(self) -> int:
        args = self.args
        consumer, producer = self.consumer, self.producer
        consumer.subscribe([args.input_topic], on_assign=self._on_assign)
        produce = producer.produce
        output = args.output_topic
        consume_only = args.consume_only
        wait_s = args.max_batch_wait_ms / 1000.0
        pending: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        produced = 0
        next_commit = time.monotonic() + _COMMIT_INTERVAL_S
        while not self.stopping:
            timeout = min(wait_s, _ACK_POLL_S) if pending else wait_s
            messages = consumer.consume(args.max_batch_size, timeout)
            if messages:
                stamps = []
                for message in messages:
                    if message.error() is not None:
                        continue
                    stamps.append(message.timestamp()[1])
                    if consume_only:
                        continue
                    while True:
                        try:
                            produce(output, message.value(), message.key())
                            break
                        except BufferError:
                            producer.poll(_QUEUE_FULL_WAIT_S)
                produced += len(stamps)
                pending.append((produced, np.asarray(stamps, dtype=np.int64)))
                self.metrics.events_consumed.inc(len(messages))
            producer.poll(0)
            if self.failed is not None:
                logger.error("output refused: %s", self.failed)
                return 1
            acked = produced - len(producer)
            if pending and pending[0][0] <= acked:
                now = time.time()
                while pending and pending[0][0] <= acked:
                    _, batch = pending.popleft()
                    latency = now - batch.astype(np.float64) / 1000.0
                    self.metrics.end_to_end_latency.observe_many(
                        np.maximum(latency, 0.0)
                    )
            if time.monotonic() >= next_commit:
                next_commit = time.monotonic() + _COMMIT_INTERVAL_S
                if produced:
                    try:
                        consumer.commit(asynchronous=True)
                    except Exception as exc:
                        logger.warning("commit failed: %s", exc)
        producer.flush(_FLUSH_TIMEOUT_S)
        consumer.close()
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.passthrough",
        description="Consume and re-produce the same bytes; the benchmark's ceiling.",
    )
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--group-id", required=True)
    parser.add_argument("--input-topic", required=True)
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=512)
    parser.add_argument("--max-batch-wait-ms", type=int, default=5)
    parser.add_argument(
        "--consume-only",
        action="store_true",
        help="produce nothing; latency of broker and consumer alone",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT; return the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    start_http_server(args.metrics_port, addr="127.0.0.1", registry=registry)
    passthrough = _Passthrough(args, metrics)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        passthrough.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return passthrough.run()


if __name__ == "__main__":
    sys.exit(main())
