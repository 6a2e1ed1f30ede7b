"""The broker the fixtures provide is real: records survive a full round trip."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer

pytestmark = pytest.mark.integration

_RECORDS = 10_000
_PARTITIONS = 3
_DEADLINE_S = 120.0


def test_keyed_records_round_trip_through_a_consumer_group(kafka_bootstrap, make_topic):
    topic = make_topic(partitions=_PARTITIONS, prefix="roundtrip")
    sent = {
        f"key-{i:05d}".encode(): f"value-{i}-{'x' * (i % 97)}".encode()
        for i in range(_RECORDS)
    }

    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True}
    )
    failures: list[KafkaError] = []

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(err)

    for key, value in sent.items():
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0, "records still queued after 30 s"
    assert failures == []

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"{topic}-group",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: dict[bytes, bytes] = {}
    partitions_seen: set[int] = set()
    deadline = time.monotonic() + _DEADLINE_S
    try:
        while len(received) < _RECORDS and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=1.0):
                assert msg.error() is None, msg.error()
                assert msg.key() not in received, f"duplicate key {msg.key()!r}"
                received[msg.key()] = msg.value()
                partitions_seen.add(msg.partition())
    finally:
        consumer.close()

    assert len(received) == _RECORDS
    assert received == sent
    assert partitions_seen == set(range(_PARTITIONS))
