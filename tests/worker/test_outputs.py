"""Output records match their JSON Schemas."""

from __future__ import annotations

import jsonschema
import orjson
import pytest
from confluent_kafka import Producer

import schemas
from worker.decode import DeadLetter
from worker.outputs import (
    alert_value,
    dead_letter_headers,
    fit_dead_letter,
    rfc3339_ms,
    score_value,
)

_ARGS = ("t-1", 0.9375, 0.5, "v1", "2026-12-04T15:30:00Z", rfc3339_ms(1.5), "tx", 2, 7)


def test_alert_matches_the_alert_schema():
    record = orjson.loads(alert_value(*_ARGS))
    jsonschema.validate(record, schemas.load("alert"))
    assert record["source"] == {"topic": "tx", "partition": 2, "offset": 7}
    assert record["scored_at"] == "1970-01-01T00:00:01.500Z"


def test_score_matches_the_score_schema():
    record = orjson.loads(score_value(*_ARGS, True))
    jsonschema.validate(record, schemas.load("score"))
    assert record["is_alert"] is True


def test_dead_letter_headers_match_the_dead_letter_schema():
    letter = DeadLetter(0, "wrong_type", "field 'V1': expected `float`, got `str`")
    headers = dict(dead_letter_headers(letter, "tx", 1, 99, "v1"))
    as_text = {k: v.decode() for k, v in headers.items()}
    jsonschema.validate(as_text, schemas.load("dead_letter"))
    assert as_text["fraudstream.source.offset"] == "99"


def _too_large_headers() -> list[tuple[str, bytes]]:
    letter = DeadLetter(0, "too_large", "expected at most 65536 bytes, found 5000")
    return dead_letter_headers(letter, "tx", 0, 3, "v1")


def test_dead_letter_that_fits_keeps_its_original_bytes():
    headers = _too_large_headers()
    assert fit_dead_letter(b"v" * 100, b"k", headers, 1000) == (
        b"v" * 100,
        b"k",
        headers,
    )


@pytest.mark.parametrize(
    ("key", "cut_key"),
    [(b"k" * 10, False), (b"k" * 5000, True)],
    ids=["value_cut", "key_too_cut"],
)
def test_oversized_dead_letter_is_cut_to_fit_and_says_so(key, cut_key):
    value = b"{" + b"x" * 4998 + b"}"
    cut_value, kept_key, headers = fit_dead_letter(
        value, key, _too_large_headers(), 1000
    )

    as_text = {k: v.decode() for k, v in headers}
    jsonschema.validate(as_text, schemas.load("dead_letter"))
    assert as_text["fraudstream.original.value_bytes"] == "5000"
    assert value.startswith(cut_value or b"")
    assert key.startswith(kept_key or b"")
    assert ("fraudstream.original.key_bytes" in as_text) is cut_key
    if cut_key:
        assert as_text["fraudstream.original.key_bytes"] == "5000"
    else:
        assert kept_key == key and cut_value


@pytest.mark.integration
def test_cut_dead_letter_passes_librdkafkas_own_size_check(kafka_bootstrap):
    limit = 1000  # librdkafka's smallest message.max.bytes
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "message.max.bytes": limit}
    )
    value, key, headers = fit_dead_letter(
        b"x" * 50_000, b"k" * 100, _too_large_headers(), limit
    )

    # produce() raises MSG_SIZE_TOO_LARGE itself when the record is over the limit.
    producer.produce("never-sent", value, key, headers=headers)

    assert len(producer) == 1 and value
    producer.purge()
    producer.flush(0)
