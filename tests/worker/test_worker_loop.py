"""The run loop with in-memory clients: commits follow acknowledgements exactly."""

from __future__ import annotations

import threading
import time

import orjson
import pytest
from confluent_kafka import KafkaError, TopicPartition
from fakes import FakeConsumer, FakeMessage, FakeProducer
from modelkit import event, feature_rows
from prometheus_client import CollectorRegistry

from worker.app import Worker
from worker.config import load_settings
from worker.errors import DeliveryError, KafkaFatalError, KafkaTlsError
from worker.metrics import Metrics
from worker.model import load_model

_TOPIC = "tx"


def _messages(partition: int, first: int, count: int, fraud_at: int = -1) -> list:
    rows = feature_rows(count, seed=partition + first)
    if fraud_at >= 0:
        rows[fraud_at, 0] = 9.0
    return [
        FakeMessage(
            _TOPIC,
            partition,
            first + i,
            orjson.dumps(event(f"p{partition}-{first + i}", row)),
        )
        for i, row in enumerate(rows)
    ]


@pytest.fixture
def harness(model_dir):
    settings = load_settings(
        ["--model", str(model_dir), "--input-topic", _TOPIC, "--metrics-port", "-1"],
        environ={},
    )
    consumer = FakeConsumer({})
    producer = FakeProducer({})
    registry = CollectorRegistry()
    worker = Worker(
        settings,
        load_model(model_dir),
        Metrics(registry),
        consumer_factory=lambda config: consumer,
        producer_factory=lambda config: producer,
    )
    return worker, consumer, producer, registry


def _assign(worker, consumer, *partitions):
    consumer.callbacks["on_assign"](
        consumer, [TopicPartition(_TOPIC, p) for p in partitions]
    )


def test_revocation_commits_acknowledged_offsets_and_nothing_more(harness):
    worker, consumer, producer, registry = harness
    producer.ack_on_flush = False
    consumer.steps = [
        lambda: _assign(worker, consumer, 0, 1),
        _messages(0, 0, 5),
        _messages(1, 0, 4, fraud_at=2),
        lambda: consumer.callbacks["on_revoke"](
            consumer, [TopicPartition(_TOPIC, 0), TopicPartition(_TOPIC, 1)]
        ),
        worker.stop,
    ]

    worker.run()

    # Partition 0's batch had no outputs and nothing before it: safe. Partition 1's
    # alert was never acknowledged, so its offsets were never committed.
    assert consumer.commits == [{(_TOPIC, 0): 5}]
    assert registry.get_sample_value("fraud_worker_alerts_total") == 1
    assert consumer.closed


def test_later_batches_wait_for_an_earlier_unacknowledged_alert(harness):
    worker, consumer, producer, _ = harness
    producer.ack_on_flush = False
    consumer.steps = [
        lambda: _assign(worker, consumer, 0),
        _messages(0, 0, 3, fraud_at=0),
        _messages(0, 3, 3),
        lambda: worker._commit(asynchronous=False),
        producer.release,
        lambda: worker._commit(asynchronous=False),
        worker.stop,
    ]

    worker.run()

    assert consumer.commits == [{(_TOPIC, 0): 6}]


def test_refused_alert_stops_the_loop_after_committing_the_safe_prefix(harness):
    worker, consumer, producer, registry = harness
    producer.ack_on_flush = False
    consumer.steps = [
        lambda: _assign(worker, consumer, 0),
        _messages(0, 0, 4),
        _messages(0, 4, 4, fraud_at=1),
        lambda: producer.release(error="MSG_SIZE_TOO_LARGE"),
        _messages(0, 8, 4),
    ]

    with pytest.raises(DeliveryError, match="MSG_SIZE_TOO_LARGE"):
        worker.run()

    assert consumer.commits[-1] == {(_TOPIC, 0): 4}
    assert all(c[(_TOPIC, 0)] <= 4 for c in consumer.commits)
    assert registry.get_sample_value("fraud_worker_produce_errors_total") == 1


def test_output_refused_while_stopping_is_logged_once_with_its_count(harness, caplog):
    worker, consumer, producer, registry = harness
    producer.ack_on_flush = False
    consumer.steps = [
        lambda: _assign(worker, consumer, 0),
        _messages(0, 0, 4, fraud_at=1),
        worker.stop,
    ]
    # The shutdown flush is where the broker's refusal arrives.
    producer.flush = lambda _timeout=0: producer.release(error="TOPIC_AUTH_FAILED")

    with caplog.at_level("ERROR", logger="worker.app"):
        assert worker.run() == 0

    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1
    assert "count=1 first: TOPIC_AUTH_FAILED" in refused[0]
    assert all((_TOPIC, 0) not in c for c in consumer.commits)
    assert registry.get_sample_value("fraud_worker_produce_errors_total") == 1


def test_failed_async_commit_is_sent_again(harness):
    worker, consumer, _, _ = harness
    consumer.steps = [
        lambda: _assign(worker, consumer, 0),
        _messages(0, 0, 2),
        lambda: worker._commit(asynchronous=True),
        lambda: worker._on_commit("coordinator moved", [TopicPartition(_TOPIC, 0, 2)]),
        lambda: worker._commit(asynchronous=True),
        lambda: worker._commit(asynchronous=True),
        # Confirmed, so the last (synchronous) commit at shutdown need not resend it.
        lambda: worker._on_commit(None, [TopicPartition(_TOPIC, 0, 2)]),
        worker.stop,
    ]

    worker.run()

    assert consumer.commits == [{(_TOPIC, 0): 2}, {(_TOPIC, 0): 2}]


_HANDSHAKE = "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: "


def test_unverifiable_broker_certificate_stops_the_loop_naming_the_ca_setting(
    harness,
):
    worker, consumer, _, _ = harness
    failure = KafkaError(
        KafkaError._SSL,
        _HANDSHAKE + "error:0A000086:SSL routines::certificate verify failed",
    )
    consumer.steps = [lambda: worker._on_error(failure)]

    with pytest.raises(KafkaTlsError, match="ssl.ca.location .* not logged"):
        worker.run()


def test_tls_error_other_than_verification_is_retried(harness):
    worker, consumer, _, _ = harness
    dropped = KafkaError(KafkaError._SSL, _HANDSHAKE + "Disconnected")
    consumer.steps = [lambda: worker._on_error(dropped), [], worker.stop]

    assert worker.run() == 0


class _TxnProducer(FakeProducer):
    """A transactional producer whose transaction calls succeed and are recorded."""

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        if not name.endswith("_transaction") and name != "init_transactions":
            raise AttributeError(name)
        return lambda *_args: self.calls.append(name)


class _FullQueueTxnProducer(_TxnProducer):
    """A transactional producer whose queue never has room."""

    def __init__(self, config: dict, on_third_poll) -> None:
        super().__init__(config)
        self.polls = 0
        self.on_third_poll = on_third_poll

    def produce(self, topic, value, key, **kwargs) -> None:
        raise BufferError("Local: Queue full")

    def poll(self, _timeout: float = 0) -> int:
        self.polls += 1
        if self.polls == 3:
            self.on_third_poll()
        if self.polls > 200:
            raise RuntimeError("still retrying a full queue")
        return 0


def test_stop_on_a_full_queue_aborts_the_transaction_and_commits_nothing(
    model_dir, monkeypatch
):
    monkeypatch.setattr("worker.app._QUEUE_FULL_WAIT_S", 0.0)
    settings = load_settings(
        [
            "--model",
            str(model_dir),
            "--input-topic",
            _TOPIC,
            "--metrics-port",
            "-1",
            "--processing-guarantee",
            "exactly-once",
            "--instance-id",
            "full",
        ],
        environ={},
    )
    consumer = FakeConsumer({})
    producer = _FullQueueTxnProducer({}, on_third_poll=lambda: worker.stop())
    worker = Worker(
        settings,
        load_model(model_dir),
        Metrics(CollectorRegistry()),
        consumer_factory=lambda config: consumer,
        producer_factory=lambda config: producer,
    )
    consumer.steps = [lambda: _assign(worker, consumer, 0), _messages(0, 0, 3, 1)]

    assert worker.run() == 0

    assert producer.calls[-1] == "abort_transaction"
    assert "send_offsets_to_transaction" not in producer.calls
    assert "commit_transaction" not in producer.calls


def test_fatal_error_on_a_full_queue_stops_the_loop_without_committing(
    harness, monkeypatch
):
    monkeypatch.setattr("worker.app._QUEUE_FULL_WAIT_S", 0.0)
    worker, consumer, producer, _ = harness
    fatal = KafkaError(KafkaError._FATAL, "idempotence broken", fatal=True)
    polls = []

    def full(*_args, **_kwargs):
        raise BufferError("Local: Queue full")

    def poll(_timeout=0):
        polls.append(_timeout)
        if len(polls) == 3:
            worker._on_error(fatal)
        if len(polls) > 200:
            raise RuntimeError("still retrying a full queue")
        return 0

    producer.produce = full
    producer.poll = poll
    consumer.steps = [lambda: _assign(worker, consumer, 0), _messages(0, 0, 3, 1)]

    with pytest.raises(KafkaFatalError, match="idempotence broken"):
        worker.run()

    assert len(polls) == 3
    assert all((_TOPIC, 0) not in c for c in consumer.commits)


class _IdleConsumer(FakeConsumer):
    """Idle like librdkafka on a quiet topic once its steps are played.

    Each call then blocks for its timeout (at most 10 s) and returns nothing.
    """

    def consume(self, num_messages: int, timeout: float) -> list:
        if self.steps:
            return super().consume(num_messages, timeout)
        time.sleep(min(timeout, 10.0))
        return []


def _threaded_worker(model_dir, consumer, producer, *flags):
    settings = load_settings(
        ["--model", str(model_dir), "--input-topic", _TOPIC, "--metrics-port", "-1"]
        + list(flags),
        environ={},
    )
    registry = CollectorRegistry()
    worker = Worker(
        settings,
        load_model(model_dir),
        Metrics(registry),
        consumer_factory=lambda config: consumer,
        producer_factory=lambda config: producer,
    )
    outcome: dict = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault("code", worker.run()), daemon=True
    )
    return worker, registry, thread, outcome


@pytest.mark.parametrize(
    "guarantee", ["at-least-once", "exactly-once"], ids=["at_least_once", "eos"]
)
def test_stop_is_prompt_with_a_sixty_second_batch_wait(model_dir, guarantee):
    consumer = _IdleConsumer({})
    worker, _, thread, outcome = _threaded_worker(
        model_dir,
        consumer,
        _TxnProducer({}),
        "--max-batch-wait-ms",
        "60000",
        "--processing-guarantee",
        guarantee,
        "--instance-id",
        "slow",
    )
    consumer.steps = [lambda: _assign(worker, consumer, 0)]
    thread.start()
    deadline = time.monotonic() + 10
    while not worker.ready and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)

    asked = time.monotonic()
    worker.stop()
    thread.join(30)

    assert not thread.is_alive()
    assert time.monotonic() - asked < 3.0
    assert outcome == {"code": 0}


def test_records_arriving_across_consume_calls_fill_one_batch(model_dir):
    consumer = _IdleConsumer({})
    worker, registry, thread, outcome = _threaded_worker(
        model_dir,
        consumer,
        FakeProducer({}),
        "--max-batch-wait-ms",
        "60000",
        "--max-batch-size",
        "4",
    )
    consumer.steps = [
        lambda: _assign(worker, consumer, 0),
        *([m] for m in _messages(0, 0, 4)),
        worker.stop,
    ]

    thread.start()
    thread.join(30)

    assert outcome == {"code": 0}
    assert registry.get_sample_value("fraud_worker_batches_total") == 1
    assert registry.get_sample_value("fraud_worker_batch_size_events_sum") == 4
    assert consumer.commits[-1] == {(_TOPIC, 0): 4}


def test_batch_short_of_its_size_is_scored_when_the_wait_is_over(model_dir):
    consumer = _IdleConsumer({})
    worker, registry, thread, _ = _threaded_worker(
        model_dir, consumer, FakeProducer({}), "--max-batch-wait-ms", "1000"
    )
    consumer.steps = [lambda: _assign(worker, consumer, 0), _messages(0, 0, 1)]

    started = time.monotonic()
    thread.start()
    while registry.get_sample_value("fraud_worker_batches_total") == 0:
        assert time.monotonic() - started < 10, "the batch was never scored"
        time.sleep(0.01)
    scored_after = time.monotonic() - started
    worker.stop()
    thread.join(30)

    assert scored_after >= 0.9
    assert registry.get_sample_value("fraud_worker_events_consumed_total") == 1
