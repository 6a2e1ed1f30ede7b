"""The worker against a real broker: alerts, dead letters, commits and metrics."""

from __future__ import annotations

import time
import urllib.request

import jsonschema
import numpy as np
import orjson
import pytest
from kafkakit import (
    committed,
    produce,
    read,
    running_worker,
    wait_for,
    worker_argv,
)
from modelkit import event, feature_rows, offline_scores
from test_decode import BAD_EVENTS

import schemas
from worker.errors import DeliveryError
from worker.http import MetricsServer

pytestmark = pytest.mark.integration

_PARTITIONS = 3


def _events(rows: np.ndarray, prefix: str) -> list[tuple[bytes, bytes]]:
    records = []
    for i, row in enumerate(rows):
        tid = f"{prefix}-{i:05d}"
        records.append((tid.encode(), orjson.dumps(event(tid, row, card_id="c"))))
    return records


def test_known_rows_produce_exactly_the_offline_alerts(
    kafka_bootstrap, make_topic, model_dir
):
    source = make_topic(partitions=_PARTITIONS, prefix="tx")
    alerts_topic = make_topic(prefix="alerts")
    rows = feature_rows(3000, fraud_every=37, seed=5)
    produce(kafka_bootstrap, source, _events(rows, "e"))
    scores = offline_scores(model_dir, rows)
    expected = {
        f"e-{i:05d}": float(s) for i, s in enumerate(scores.tolist()) if s >= 0.5
    }
    assert 50 < len(expected) < 200
    group = f"{source}-g"
    argv = worker_argv(
        kafka_bootstrap, model_dir, source, group, alerts_topic=alerts_topic
    )

    with running_worker(argv) as run:
        wait_for(
            lambda: (
                sum(committed(kafka_bootstrap, group, source, _PARTITIONS)) == len(rows)
            ),
            60,
            "every offset committed",
        )
        assert run.sample("fraud_worker_events_consumed_total") == len(rows)
        assert run.sample("fraud_worker_alerts_total") == len(expected)

    messages = read(kafka_bootstrap, alerts_topic, len(expected))
    alerts = [orjson.loads(m.value()) for m in messages]
    assert {a["transaction_id"]: a["score"] for a in alerts} == expected
    assert len(alerts) == len(expected)
    schema = schemas.load("alert")
    for message, alert in zip(messages, alerts, strict=True):
        jsonschema.validate(alert, schema)
        assert message.key() == alert["transaction_id"].encode()
        assert alert["event_time"] == "2026-12-04T15:30:00.250Z"
        assert alert["source"]["topic"] == source
    assert run.outcome == {"code": 0}


def test_every_bad_kind_lands_in_the_dlq_while_the_worker_carries_on(
    kafka_bootstrap, make_topic, model_dir
):
    source = make_topic(prefix="tx")
    alerts_topic = make_topic(prefix="alerts")
    dlq = make_topic(prefix="dlq")
    group = f"{source}-g"
    bad = [(name.encode(), value) for name, (value, _) in BAD_EVENTS.items()]
    fraud_row = feature_rows(1, fraud_every=1, seed=1)
    argv = worker_argv(
        kafka_bootstrap,
        model_dir,
        source,
        group,
        alerts_topic=alerts_topic,
        dlq_topic=dlq,
        max_event_bytes=4096,
    )

    with running_worker(argv) as run:
        server = MetricsServer("127.0.0.1", 0, run.registry, lambda: run.worker.ready)
        server.start()
        try:
            produce(kafka_bootstrap, source, bad, partition=0)
            produce(kafka_bootstrap, source, _events(fraud_row, "after"), partition=0)
            wait_for(
                lambda: committed(kafka_bootstrap, group, source, 1)[0] == len(bad) + 1,
                60,
                "all events committed",
            )
            url = f"http://127.0.0.1:{server.port}"
            body = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
            ready = urllib.request.urlopen(f"{url}/readyz", timeout=5).status
        finally:
            server.stop()
        assert run.worker.ready

    assert ready == 200
    assert f"fraud_worker_events_consumed_total {len(bad) + 1}.0" in body
    assert "fraud_worker_alerts_total 1.0" in body
    for reason in {r for _, r in BAD_EVENTS.values()}:
        count = sum(1 for _, r in BAD_EVENTS.values() if r == reason)
        assert f'fraud_worker_dead_letters_total{{reason="{reason}"}} {count}.0' in body

    letters = read(kafka_bootstrap, dlq, len(bad))
    assert len(letters) == len(bad)
    schema = schemas.load("dead_letter")
    for offset, message in enumerate(letters):
        name = message.key().decode()
        value, reason = BAD_EVENTS[name]
        headers = {k: v.decode() for k, v in message.headers()}
        jsonschema.validate(headers, schema)
        assert headers["fraudstream.reason"] == reason, name
        assert headers["fraudstream.source.offset"] == str(offset)
        assert message.value() == value
    alerts = read(kafka_bootstrap, alerts_topic, 1)
    assert [orjson.loads(m.value())["transaction_id"] for m in alerts] == [
        "after-00000"
    ]


def test_no_offset_is_committed_while_alerts_cannot_be_delivered(
    kafka_bootstrap, make_topic, kafka_admin, model_dir
):
    """The alerts topic does not exist yet and the producer may not create it, so
    librdkafka holds the alerts; the worker must commit nothing past them until the
    topic appears and the alerts are acknowledged."""
    from confluent_kafka.admin import NewTopic

    source = make_topic(prefix="tx")
    missing = f"{source}-alerts-later"
    group = f"{source}-g"
    legit = feature_rows(40, seed=2)
    produce(kafka_bootstrap, source, _events(legit, "legit"))
    argv = worker_argv(
        kafka_bootstrap,
        model_dir,
        source,
        group,
        alerts_topic=missing,
        X=["producer.allow.auto.create.topics=false"],
    )

    with running_worker(argv) as run:
        wait_for(
            lambda: committed(kafka_bootstrap, group, source, 1) == [40],
            60,
            "legit events committed",
        )
        produce(kafka_bootstrap, source, _events(feature_rows(1, 1, seed=3), "fraud"))
        produce(kafka_bootstrap, source, _events(legit[:10], "more"))
        wait_for(
            lambda: run.sample("fraud_worker_events_consumed_total") == 51,
            30,
            "the fraud event consumed",
        )
        for _ in range(3):
            run.thread.join(1.0)
            assert committed(kafka_bootstrap, group, source, 1) == [40]
        assert run.sample("fraud_worker_alerts_total") == 1

        kafka_admin.create_topics([NewTopic(missing, 1, 1)])[missing].result(30)
        wait_for(
            lambda: committed(kafka_bootstrap, group, source, 1) == [51],
            40,
            "commits resume once the alert is acknowledged",
        )
    assert run.outcome == {"code": 0}
    alerts = read(kafka_bootstrap, missing, 1)
    assert [orjson.loads(m.value())["transaction_id"] for m in alerts] == [
        "fraud-00000"
    ]
    kafka_admin.delete_topics([missing])


def test_refused_alert_stops_the_worker_before_committing_past_it(
    kafka_bootstrap, make_topic, model_dir
):
    """An alerts topic whose max.message.bytes is below any alert makes the broker
    refuse it for good: the worker stops, and offsets stay before that batch."""
    source = make_topic(prefix="tx")
    tiny = make_topic(prefix="alerts", **{"max.message.bytes": "64"})
    group = f"{source}-g"
    legit = feature_rows(30, seed=4)
    produce(kafka_bootstrap, source, _events(legit, "legit"))
    argv = worker_argv(kafka_bootstrap, model_dir, source, group, alerts_topic=tiny)

    with running_worker(argv) as run:
        wait_for(
            lambda: committed(kafka_bootstrap, group, source, 1) == [30],
            60,
            "legit events committed",
        )
        produce(kafka_bootstrap, source, _events(feature_rows(1, 1, seed=3), "fraud"))
        produce(kafka_bootstrap, source, _events(legit[:10], "more"))
        run.thread.join(30)
        assert not run.thread.is_alive(), "worker kept running after a refusal"

    assert isinstance(run.outcome.get("error"), DeliveryError)
    assert (
        "MSG_SIZE_TOO_LARGE" in str(run.outcome["error"])
        or "too large" in str(run.outcome["error"]).lower()
    )
    assert run.sample("fraud_worker_produce_errors_total") == 1
    assert committed(kafka_bootstrap, group, source, 1) == [30]


def test_stop_with_a_sixty_second_batch_wait_is_prompt_and_keeps_the_batch(
    kafka_bootstrap, make_topic, model_dir
):
    source = make_topic(prefix="tx")
    group = f"{source}-g"
    produce(kafka_bootstrap, source, _events(feature_rows(5, seed=8), "slow"))
    argv = worker_argv(
        kafka_bootstrap, model_dir, source, group, max_batch_wait_ms=60000
    )

    with running_worker(argv) as run:
        wait_for(lambda: run.worker.ready, 60, "partitions assigned")
        # The five events reach the batch being gathered; it is not full, so only
        # the 60 s wait or stop() ends it.
        time.sleep(3)
        asked = time.monotonic()
        run.worker.stop()
        run.thread.join(30)
        took = time.monotonic() - asked

    assert took < 5.0
    assert run.outcome == {"code": 0}
    assert committed(kafka_bootstrap, group, source, 1) == [5]
