"""fraud-replay turns rows into keyed, schema-valid events at the asked rate."""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime
from pathlib import Path

import jsonschema
import orjson
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

import schemas
from worker import replay
from worker.replay import EventEncoder, Pacer, Progress, ReplayError

_HEADER = ["Time", *replay.FEATURE_COLUMNS, "Class"]
_START = replay.parse_rfc3339(replay.DEFAULT_START_TIME)
_CONSUME_DEADLINE_S = 60.0
# Paced replay never runs ahead of the asked rate; this margin covers the broker's
# millisecond timestamps. Running behind is not asserted: a loaded machine slows the
# replay by any amount, and the pacer's arithmetic is tested with a fake clock.
_AHEAD_TOLERANCE = 0.01
# A call given a 1 s timeout that takes this long is hung, however loaded the machine.
_HANG_S = 60.0


def _write_csv(
    path: Path, rows: list[list[object]], header: list[str] = _HEADER
) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _row(t: float, label: int, base: float = 0.5) -> list[object]:
    return [t, *(base + i / 100 for i in range(28)), 12.34, label]


@pytest.fixture(scope="module")
def transaction_validator() -> jsonschema.Draft202012Validator:
    schema = schemas.load("transaction")
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def _consume_all(bootstrap: str, topic: str, expected: int) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-reader",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + _CONSUME_DEADLINE_S
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=1.0):
                assert msg.error() is None, msg.error()
                messages.append(msg)
    finally:
        consumer.close()
    return messages


# --- events, without a broker ---------------------------------------------------------


def test_csv_rows_become_schema_valid_events_without_their_label(
    tmp_path, transaction_validator
):
    path = _write_csv(tmp_path / "cards.csv", [_row(0, 0), _row(1.5, 1)])
    source = replay.csv_source(path)
    encoder = EventEncoder(source.name, _START)

    events = [encoder.encode(i, row) for i, row in enumerate(source.rows)]

    assert source.total == 2 and source.has_labels and source.has_time
    for key, value in events:
        event = orjson.loads(value)
        transaction_validator.validate(event)
        assert event["transaction_id"] == key
        assert "Class" not in event
        assert [event[name] for name in replay.FEATURE_COLUMNS[:2]] == [0.5, 0.51]
        assert event["Amount"] == 12.34
    assert [key for key, _ in events] == ["cards-00000000", "cards-00000001"]


def test_event_time_is_start_time_plus_the_row_time_in_utc_milliseconds():
    encoder = EventEncoder("src", replay.parse_rfc3339("2013-09-01T00:00:00Z"))

    assert encoder.event_time(0.0) == "2013-09-01T00:00:00.000Z"
    assert encoder.event_time(3661.25) == "2013-09-01T01:01:01.250Z"
    assert encoder.event_time(172792) == "2013-09-02T23:59:52.000Z"


def test_event_time_now_mode_stamps_the_wall_clock_and_ignores_time():
    encoder = EventEncoder("src", _START, mode="now", clock=lambda: 1_700_000_000.5)

    _, value = encoder.encode(0, (99.0, [0.0] * 29, 0))

    assert orjson.loads(value)["event_time"] == "2023-11-14T22:13:20.500Z"


def test_transaction_ids_repeat_for_the_same_source_and_row(tmp_path):
    path = _write_csv(tmp_path / "same.csv", [_row(i, 0) for i in range(5)])

    first = [
        EventEncoder("same", _START).encode(i, r)
        for i, r in enumerate(replay.csv_source(path).rows)
    ]
    second = [
        EventEncoder("same", _START).encode(i, r)
        for i, r in enumerate(replay.csv_source(path).rows)
    ]

    assert first == second
    assert len({key for key, _ in first}) == 5


def test_synthetic_source_matches_the_generator_and_carries_labels():
    from trainer.synthetic import generate

    source = replay.synthetic_source(2_000, seed=3)
    rows = list(source.rows)
    data = generate(2_000, seed=3)

    assert source.name == "syn3" and source.total == 2_000
    assert [r[2] for r in rows] == data.labels.tolist()
    assert rows[17][1] == data.features[17].tolist()


def test_csv_without_a_feature_column_is_refused_naming_it(tmp_path):
    header = [name for name in _HEADER if name != "V7"]
    path = _write_csv(tmp_path / "bad.csv", [], header=header)

    with pytest.raises(ReplayError, match=r"lacks V7"):
        replay.csv_source(path)


@pytest.mark.parametrize(
    "bad", ["nan", "inf", "", "abc"], ids=["nan", "infinite", "empty", "text"]
)
def test_csv_value_that_is_not_a_finite_number_is_refused_with_its_line(tmp_path, bad):
    row = _row(0, 0)
    row[5] = bad
    path = _write_csv(tmp_path / "bad.csv", [_row(0, 0), row])

    with pytest.raises(ReplayError, match=r"bad\.csv:3: column V5 must hold a finite"):
        list(replay.csv_source(path).rows)


def test_labels_out_is_refused_for_a_source_without_labels(tmp_path):
    header = _HEADER[:-1]
    path = _write_csv(tmp_path / "nolabel.csv", [_row(0, 0)[:-1]], header=header)
    source = replay.csv_source(path)

    with pytest.raises(ReplayError, match="no Class column"):
        replay.replay(
            source,
            producer=None,  # type: ignore[arg-type]
            topic="unused",
            encoder=EventEncoder(source.name, _START),
            pacer=Pacer(0),
            labels_out=io.StringIO(),
        )


# --- pacing and progress -------------------------------------------------------------


class _FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def test_pacer_waits_until_each_event_is_due():
    clock = _FakeClock()
    pacer = Pacer(200.0, wait=clock.wait, clock=clock)

    for k in range(0, 400, pacer.chunk):
        pacer.until_due(k)
    pacer.until_due(400)

    assert pacer.chunk == 1
    assert clock.now - 100.0 == pytest.approx(2.0)


def test_pacer_at_rate_zero_never_waits():
    clock = _FakeClock()
    pacer = Pacer(0, wait=clock.wait, clock=clock)

    for k in range(0, 100_000, pacer.chunk):
        pacer.until_due(k)

    assert clock.waits == []


def test_negative_rate_is_refused():
    with pytest.raises(ReplayError, match="--rate expects events per second >= 0"):
        Pacer(-1)


def test_progress_text_shows_count_share_rate_and_eta():
    progress = Progress(10_000, io.StringIO())

    text = progress.render(2_500, elapsed_s=5.0)

    assert "2,500/10,000" in text
    assert "25%" in text
    assert "500 ev/s" in text
    assert "ETA 0:15" in text


def test_progress_on_a_pipe_prints_plain_lines_not_carriage_returns():
    clock = _FakeClock()
    stream = io.StringIO()
    progress = Progress(100, stream, clock=clock)

    clock.now += 6.0
    progress.update(50)
    progress.close(100)

    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0].startswith("replay 50/100") and lines[-1].startswith(
        "replay 100/100"
    )


# --- against the broker --------------------------------------------------------------


@pytest.mark.integration
def test_real_subset_round_trips_as_keyed_valid_events_with_labels_aside(
    kafka_bootstrap, make_topic, creditcard_csv, tmp_path, transaction_validator
):
    topic = make_topic(partitions=3, prefix="replay-real")
    labels_path = tmp_path / "labels.csv"

    code = replay.main(
        [
            "--data", str(creditcard_csv),
            "--topic", topic,
            "--bootstrap-servers", kafka_bootstrap,
            "--labels-out", str(labels_path),
            "--no-progress",
        ]
    )  # fmt: skip

    assert code == 0
    with labels_path.open() as f:
        labels = {row["transaction_id"]: int(row["Class"]) for row in csv.DictReader(f)}
    assert len(labels) == 7_570 and sum(labels.values()) == 392
    messages = _consume_all(kafka_bootstrap, topic, len(labels))
    assert len(messages) == len(labels)
    seen = set()
    for msg in messages:
        value, key = msg.value(), msg.key()
        assert value is not None and key is not None
        event = orjson.loads(value)
        transaction_validator.validate(event)
        assert datetime.fromisoformat(event["event_time"]).tzinfo is not None
        assert key.decode() == event["transaction_id"]
        seen.add(event["transaction_id"])
    assert seen == set(labels)


@pytest.mark.integration
def test_paced_replay_never_runs_ahead_of_the_asked_rate(kafka_bootstrap, make_topic):
    topic = make_topic(partitions=1, prefix="replay-rate")
    rate, count = 1_500.0, 3_000
    source = replay.synthetic_source(count, seed=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})

    result = replay.replay(
        source,
        producer,
        topic,
        encoder=EventEncoder(source.name, _START),
        pacer=Pacer(rate, wait=producer.poll),
    )

    assert result.delivered == count and result.failed == 0
    assert 0 < result.rate <= rate
    # The broker's record timestamps tell the same story independently: the events
    # are spread over the paced interval, not sent in one burst.
    messages = _consume_all(kafka_bootstrap, topic, count)
    stamps = sorted(msg.timestamp()[1] for msg in messages)
    spread_s = (stamps[-1] - stamps[0]) / 1000
    assert spread_s > 0
    assert (count - 1) / spread_s <= rate * (1 + _AHEAD_TOLERANCE)


@pytest.mark.integration
def test_unpaced_replay_never_waits_and_reports_a_rate_matching_its_own_timing(
    kafka_bootstrap, make_topic
):
    topic = make_topic(partitions=3, prefix="replay-max")
    count = 20_000
    source = replay.synthetic_source(count, seed=2)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, **replay._PRODUCER_DEFAULTS}
    )
    pacing_waits: list[float] = []

    def wait(seconds: float) -> None:
        pacing_waits.append(seconds)
        producer.poll(seconds)

    outer_start = time.monotonic()
    result = replay.replay(
        source,
        producer,
        topic,
        encoder=EventEncoder(source.name, _START),
        pacer=Pacer(0, wait=wait),
    )
    outer_s = time.monotonic() - outer_start

    assert (result.sent, result.delivered, result.failed) == (count, count, 0)
    assert pacing_waits == []
    assert 0 < result.elapsed_s <= outer_s
    assert result.rate == pytest.approx(count / result.elapsed_s)
    assert _end_offsets(kafka_bootstrap, topic) == count


def _end_offsets(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-ends"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


@pytest.mark.integration
def test_full_producer_queue_is_waited_out_and_nothing_is_lost(
    kafka_bootstrap, make_topic
):
    topic = make_topic(partitions=1, prefix="replay-full")
    source = replay.synthetic_source(5_000, seed=4)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "queue.buffering.max.messages": 300}
    )

    result = replay.replay(
        source,
        producer,
        topic,
        encoder=EventEncoder(source.name, _START),
        pacer=Pacer(0, wait=producer.poll),
    )

    assert (result.sent, result.delivered, result.failed) == (5_000, 5_000, 0)
    assert len(_consume_all(kafka_bootstrap, topic, 5_000)) == 5_000


@pytest.mark.integration
def test_cli_limit_sends_only_the_first_rows_and_their_labels(
    kafka_bootstrap, make_topic, tmp_path, capsys
):
    topic = make_topic(partitions=1, prefix="replay-limit")
    labels_path = tmp_path / "labels.csv"

    code = replay.main(
        [
            "--synthetic", "1000", "--limit", "250", "--topic", topic,
            "--bootstrap-servers", kafka_bootstrap,
            "--labels-out", str(labels_path), "--no-progress",
            "--id-prefix", "batch-a",
        ]
    )  # fmt: skip

    assert code == 0
    lines = labels_path.read_text().splitlines()
    assert len(lines) == 251
    assert lines[1].startswith("batch-a-00000000,")
    assert "sent 250 events" in capsys.readouterr().err
    assert len(_consume_all(kafka_bootstrap, topic, 250)) == 250


def test_cli_reports_an_unreachable_broker_instead_of_hanging(monkeypatch, capsys):
    monkeypatch.setattr(replay, "_CONNECT_TIMEOUT_S", 1.0)

    started = time.monotonic()
    code = replay.main(
        ["--synthetic", "10", "--bootstrap-servers", "127.0.0.1:1", "--no-progress"]
    )

    assert code == 2
    # The message proves the 1 s timeout applied; the bound only catches a hang, with
    # room for a machine so loaded that starting the client takes many seconds.
    assert time.monotonic() - started < _HANG_S
    assert "cannot reach Kafka at 127.0.0.1:1 within 1 s" in capsys.readouterr().err


class _SilentProducer:
    """Accepts every event and never delivers one, like a broker without a leader."""

    def __init__(self, settings: dict[str, object]) -> None:
        self.queued = 0

    def list_topics(self, timeout: float) -> object:
        return object()

    def produce_batch(self, topic, messages, on_delivery=None) -> int:
        self.queued += len(messages)
        return len(messages)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return self.queued


def test_undelivered_events_fail_the_replay_with_their_count(monkeypatch, capsys):
    import confluent_kafka

    monkeypatch.setattr(confluent_kafka, "Producer", _SilentProducer)

    code = replay.main(["--synthetic", "500", "--topic", "t", "--no-progress"])

    err = capsys.readouterr().err
    assert code == 1
    assert "FAILED: 500 of 500 events were not delivered to 't'" in err
    assert "500 events still queued for delivery" in err
