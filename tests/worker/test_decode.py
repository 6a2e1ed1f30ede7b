"""The decoder turns every value into a feature row or a dead letter, never a crash."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelkit import FEATURES, event, feature_rows

from worker.decode import REASONS, Decoder

_LIMIT = 4096


def _good(tid: str = "t-1") -> dict:
    return event(tid, feature_rows(1, seed=3)[0], card_id="c-9")


def _good_bytes(**patch: object) -> bytes:
    body = _good()
    body.update(patch)
    return orjson.dumps(body)


def _without(field: str) -> bytes:
    body = _good()
    del body[field]
    return orjson.dumps(body)


def _literal(feature: str, literal: str) -> bytes:
    body = _good()
    body[feature] = 12345.5
    return orjson.dumps(body).replace(b"12345.5", literal.encode())


def _duplicate_key() -> bytes:
    return _good_bytes().replace(b'"V2":', b'"V2":1.0,"V2":', 1)


BAD_EVENTS = {
    "truncated_json": (_good_bytes()[:-7], "not_json"),
    "binary_garbage": (bytes(range(256)) * 3, "not_utf8"),
    "huge_payload": (_good_bytes(padding="x" * (_LIMIT + 1)), "too_large"),
    "deep_nesting": (
        _good_bytes()[:-1] + b',"deep":' + b"[" * 1500 + b"]" * 1500 + b"}",
        "not_json",
    ),
    "nan_literal": (_literal("V3", "NaN"), "not_finite"),
    "infinity_literal": (_literal("V3", "Infinity"), "not_finite"),
    "negative_infinity_literal": (_literal("Amount", "-Infinity"), "not_finite"),
    "number_overflowing_double": (_literal("V4", "1e400"), "not_finite"),
    "number_overflowing_float32": (_literal("V4", "1e39"), "not_finite"),
    "number_as_string": (_good_bytes(V5="0.5"), "wrong_type"),
    "bool_as_feature": (_good_bytes(V6=True), "wrong_type"),
    "null_as_feature": (_good_bytes(V7=None), "wrong_type"),
    "object_as_feature": (_good_bytes(V8={"value": 1.0}), "wrong_type"),
    "array_as_feature": (_good_bytes(V9=[1.0]), "wrong_type"),
    "missing_feature": (_without("V28"), "missing_field"),
    "missing_transaction_id": (_without("transaction_id"), "missing_field"),
    "missing_event_time": (_without("event_time"), "missing_field"),
    "empty_transaction_id": (_good_bytes(transaction_id=""), "wrong_type"),
    "overlong_transaction_id": (_good_bytes(transaction_id="x" * 129), "wrong_type"),
    "numeric_transaction_id": (_good_bytes(transaction_id=42), "wrong_type"),
    "event_time_not_rfc3339": (_good_bytes(event_time="04/12/2026"), "wrong_type"),
    "duplicate_keys": (_duplicate_key(), "not_json"),
    "utf16_encoded": (json.dumps(_good()).encode("utf-16"), "not_utf8"),
    "latin1_encoded": (
        json.dumps(_good(), ensure_ascii=False)
        .replace("c-9", "caf\u00e9")
        .encode("latin-1"),
        "not_utf8",
    ),
    "utf8_byte_order_mark": (b"\xef\xbb\xbf" + _good_bytes(), "not_json"),
    "tombstone": (None, "empty"),
    "zero_bytes": (b"", "empty"),
    "whitespace_only": (b"   \n", "not_json"),
    "trailing_garbage": (_good_bytes() + b" x", "not_json"),
    "json_array": (b"[1, 2, 3]", "not_object"),
    "json_string": (b'"transaction"', "not_object"),
    "json_number": (b"42", "not_object"),
    "json_null": (b"null", "not_object"),
    "json_true": (b"true", "not_object"),
}


@pytest.fixture
def decoder() -> Decoder:
    return Decoder(FEATURES, max_event_bytes=_LIMIT)


def _matrix(rows: int) -> np.ndarray:
    return np.full((rows, len(FEATURES)), -7.0, dtype=np.float32)


@pytest.mark.parametrize(
    ("value", "reason"), list(BAD_EVENTS.values()), ids=list(BAD_EVENTS)
)
def test_bad_event_becomes_a_dead_letter_with_its_reason(decoder, value, reason):
    good = _good_bytes()
    decoded = decoder.decode_into([good, value, good], _matrix(3))

    assert decoded.count == 2
    assert decoded.indexes == [0, 2]
    assert [(d.index, d.reason) for d in decoded.dead] == [(1, reason)]
    detail = decoded.dead[0].detail
    assert detail.startswith(("expected", "field")), detail
    assert "expected" in detail and len(detail) <= 400


def test_bad_kinds_cover_every_reason():
    assert {reason for _, reason in BAD_EVENTS.values()} == set(REASONS)
    assert len(BAD_EVENTS) >= 20


def test_features_land_in_model_order_whatever_the_key_order(decoder):
    rows = feature_rows(4, seed=11)
    values = []
    for i, row in enumerate(rows):
        body = event(f"t-{i}", row)
        values.append(orjson.dumps(dict(reversed(list(body.items())))))
    matrix = _matrix(4)

    decoded = decoder.decode_into(values, matrix)

    assert decoded.count == 4
    np.testing.assert_array_equal(matrix, rows)
    assert [decoder.read_transaction_id(e) for e in decoded.events] == [
        "t-0",
        "t-1",
        "t-2",
        "t-3",
    ]
    assert decoder.read_event_time(decoded.events[0]) == "2026-12-04T15:30:00.250Z"


@pytest.mark.parametrize(
    "value",
    [
        json.dumps(_good(), indent=2).encode(),
        _good_bytes(extra={"nested": {"a": 1}, "list": [1, "x"]}),
        _good_bytes(V1=3, Amount=0),
        _good_bytes(note='quote " and colon ":'),
    ],
    ids=["pretty_printed", "nested_extra_fields", "integer_features", "tricky_string"],
)
def test_unusual_but_valid_events_are_scored(decoder, value):
    decoded = decoder.decode_into([value], _matrix(1))

    assert decoded.count == 1, decoded.dead
    assert decoded.dead == []


def test_non_finite_rows_are_removed_and_good_rows_compacted(decoder):
    values = [
        _good_bytes(transaction_id="a", V1=1.0),
        _literal("V2", "1e39"),
        _good_bytes(transaction_id="c", V1=3.0),
    ]
    matrix = _matrix(3)

    decoded = decoder.decode_into(values, matrix)

    assert decoded.count == 2
    assert decoded.indexes == [0, 2]
    assert matrix[:2, 0].tolist() == [1.0, 3.0]
    assert [decoder.read_transaction_id(e) for e in decoded.events] == ["a", "c"]
    assert decoded.dead[0].detail.startswith("field 'V2': expected a finite float32")


def test_configured_key_field_must_be_present(decoder):
    keyed = Decoder(FEATURES, key_field="card_id")
    body = _good()
    del body["card_id"]

    decoded = keyed.decode_into([_good_bytes(), orjson.dumps(body)], _matrix(2))

    assert keyed.read_key(decoded.events[0]) == "c-9"
    assert [d.reason for d in decoded.dead] == ["missing_field"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_the_decoder(value):
    decoder = Decoder(FEATURES, max_event_bytes=_LIMIT)
    decoded = decoder.decode_into([value], _matrix(1))
    assert decoded.count + len(decoded.dead) == 1


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from([*FEATURES, "transaction_id", "event_time", "x"]) | st.text(),
        _json_values,
        max_size=35,
    )
)
def test_arbitrary_json_objects_never_escape_the_decoder(body):
    decoder = Decoder(FEATURES, max_event_bytes=_LIMIT)
    value = json.dumps(body).encode()
    decoded = decoder.decode_into([value], _matrix(1))
    assert decoded.count + len(decoded.dead) == 1
    if decoded.count:
        assert all(name in body for name in FEATURES)
