"""Output records match their JSON Schemas."""

from __future__ import annotations

import jsonschema
import orjson

import schemas
from worker.decode import DeadLetter
from worker.outputs import alert_value, dead_letter_headers, rfc3339_ms, score_value

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
