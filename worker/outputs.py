"""Build the bytes of alert, score and dead-letter records.

The record layouts are fixed by ``schemas/alert.schema.json``,
``schemas/score.schema.json`` and ``schemas/dead_letter.schema.json``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

from worker.decode import DeadLetter

__all__ = [
    "alert_value",
    "dead_letter_headers",
    "fit_dead_letter",
    "rfc3339_ms",
    "score_value",
]

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]

# librdkafka counts about 40 bytes of record framing plus a few per header against
# message.max.bytes; this leaves room for both.
_FRAMING_BYTES = 256


def rfc3339_ms(epoch_s: float) -> str:
    """Format a Unix time as RFC 3339 UTC with millisecond precision."""
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _alert_record(
    transaction_id: str,
    score: float,
    threshold: float,
    model_version: str,
    event_time: str,
    scored_at: str,
    topic: str,
    partition: int,
    offset: int,
) -> dict[str, object]:
    return {
        "transaction_id": transaction_id,
        "score": score,
        "threshold": threshold,
        "model_version": model_version,
        "event_time": event_time,
        "scored_at": scored_at,
        "source": {"topic": topic, "partition": partition, "offset": offset},
    }


def alert_value(
    transaction_id: str,
    score: float,
    threshold: float,
    model_version: str,
    event_time: str,
    scored_at: str,
    topic: str,
    partition: int,
    offset: int,
) -> bytes:
    """Return the JSON value of an alert record."""
    return orjson.dumps(
        _alert_record(
            transaction_id,
            score,
            threshold,
            model_version,
            event_time,
            scored_at,
            topic,
            partition,
            offset,
        )
    )


def score_value(
    transaction_id: str,
    score: float,
    threshold: float,
    model_version: str,
    event_time: str,
    scored_at: str,
    topic: str,
    partition: int,
    offset: int,
    is_alert: bool,
) -> bytes:
    """Return the JSON value of a score record (an alert plus ``is_alert``)."""
    record = _alert_record(
        transaction_id,
        score,
        threshold,
        model_version,
        event_time,
        scored_at,
        topic,
        partition,
        offset,
    )
    record["is_alert"] = is_alert
    return orjson.dumps(record)


def dead_letter_headers(
    letter: DeadLetter, topic: str, partition: int, offset: int, model_version: str
) -> Headers:
    """Return the headers of a dead-letter record; its value is the original bytes."""
    return [
        ("fraudstream.reason", letter.reason.encode()),
        ("fraudstream.detail", letter.detail.encode("utf-8", "replace")),
        ("fraudstream.source.topic", topic.encode()),
        ("fraudstream.source.partition", str(partition).encode()),
        ("fraudstream.source.offset", str(offset).encode()),
        ("fraudstream.model_version", model_version.encode()),
    ]


def _record_bytes(value: bytes | None, key: bytes | None, headers: Headers) -> int:
    named = sum(len(name) + len(text) for name, text in headers)
    return len(value or b"") + len(key or b"") + named + _FRAMING_BYTES


def fit_dead_letter(
    value: bytes | None, key: bytes | None, headers: Headers, max_bytes: int
) -> tuple[bytes | None, bytes | None, Headers]:
    """Cut a dead letter so that the producer's ``message.max.bytes`` accepts it.

    A record that fits is returned unchanged. Otherwise the value is cut to the
    prefix that fits and the header ``fraudstream.original.value_bytes`` gives its
    full size; if the key alone leaves no room, the value is emptied and the key is
    cut too, with ``fraudstream.original.key_bytes``.

    Note:
        A cut dead letter does not hold the whole event: that stays on the source
        topic at the partition and offset of the ``fraudstream.source.*`` headers
        only until that topic's retention removes it. Keeping it whole needs a
        dead-letter topic and producer that accept records of that size (raise the
        producer's ``message.max.bytes`` and the topic's ``max.message.bytes``).
    """
    if _record_bytes(value, key, headers) <= max_bytes:
        return value, key, headers
    original = str(len(value or b"")).encode()
    headers = [*headers, ("fraudstream.original.value_bytes", original)]
    room = max_bytes - _record_bytes(None, key, headers)
    if room >= 0:
        return (value or b"")[:room], key, headers
    original = str(len(key or b"")).encode()
    headers = [*headers, ("fraudstream.original.key_bytes", original)]
    room = max(max_bytes - _record_bytes(None, None, headers), 0)
    return b"", (key or b"")[:room], headers
