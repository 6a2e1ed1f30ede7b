"""Build the bytes of alert, score and dead-letter records.

The record layouts are fixed by ``schemas/alert.schema.json``,
``schemas/score.schema.json`` and ``schemas/dead_letter.schema.json``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

from worker.decode import DeadLetter

__all__ = ["alert_value", "dead_letter_headers", "rfc3339_ms", "score_value"]

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


def rfc3339_ms(epoch_s: float) -> str:
    """Format a Unix time as RFC 3339 UTC with millisecond precision."""
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


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
        {
            "transaction_id": transaction_id,
            "score": score,
            "threshold": threshold,
            "model_version": model_version,
            "event_time": event_time,
            "scored_at": scored_at,
            "source": {"topic": topic, "partition": partition, "offset": offset},
        }
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
    return orjson.dumps(
        {
            "transaction_id": transaction_id,
            "score": score,
            "threshold": threshold,
            "model_version": model_version,
            "event_time": event_time,
            "scored_at": scored_at,
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "is_alert": is_alert,
        }
    )


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
