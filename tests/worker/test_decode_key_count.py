"""The duplicate-key check that needs no second parse stays exact.

Clean, flat events (as the replay tool writes them, ``Time`` included) are decoded
without orjson; anything the colon count cannot vouch for is checked the slow way,
so a duplicate key is never scored, however it is written.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from modelkit import FEATURES, event, feature_rows

import worker.decode
from worker.decode import Decoder


def _body(tid: str = "t-1", **extra: object) -> dict:
    return event(tid, feature_rows(1, seed=5)[0], **extra)


def _decode(*values: bytes) -> worker.decode.DecodedBatch:
    matrix = np.zeros((len(values), len(FEATURES)), np.float32)
    return Decoder(FEATURES).decode_into(list(values), matrix)


@pytest.fixture
def second_parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record every value orjson parses inside the decoder."""
    seen: list[bytes] = []
    original = orjson.loads

    def counting(value: bytes) -> object:
        seen.append(value)
        return original(value)

    monkeypatch.setattr(worker.decode.orjson, "loads", counting)
    return seen


def test_replay_shaped_events_are_decoded_without_a_second_parse(
    second_parses: list[bytes],
) -> None:
    values = [orjson.dumps(_body(Time=float(i))) for i in range(8)]
    values += [orjson.dumps(_body()) for _ in range(2)]
    decoded = _decode(*values)
    assert decoded.count == 10 and not decoded.dead
    assert second_parses == []


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(
            orjson.dumps(_body(Time=1.5)).replace(b'"V2":', b'"V2":1.0,"V2":', 1),
            id="duplicate_feature_with_time",
        ),
        pytest.param(
            orjson.dumps(_body(Time=1.5)).replace(b'"Time":', b'"Time":2,"Time":', 1),
            id="duplicate_time",
        ),
        pytest.param(
            orjson.dumps(_body()).replace(b'"V2":', b'"V2" : 1.0, "V2":', 1),
            id="duplicate_with_space_before_colon",
        ),
        pytest.param(
            orjson.dumps(_body())
            .replace(b'"V2":', b'"V2":1.0,"V2":', 1)
            .replace(b"15:30", b"15\\u003a30", 1),
            id="duplicate_hidden_by_escaped_colon",
        ),
        pytest.param(
            orjson.dumps(_body(card_id="c:1")).replace(b'"V3":', b'"V3":0,"V3":', 1),
            id="duplicate_with_unknown_field_holding_a_colon",
        ),
        pytest.param(
            orjson.dumps(_body(card_id="c")).replace(b'"V3":', b'"V3" :0, "V3":', 1),
            id="duplicate_with_space_and_unknown_field",
        ),
        pytest.param(
            orjson.dumps(_body(deep={"a": 1})).replace(b'"V3":', b'"V3":0,"V3":', 1),
            id="duplicate_next_to_a_nested_object",
        ),
    ],
)
def test_duplicate_keys_are_dead_lettered_however_written(value: bytes) -> None:
    decoded = _decode(orjson.dumps(_body()), value)
    assert decoded.count == 1
    assert [(d.index, d.reason) for d in decoded.dead] == [(1, "not_json")]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"Time": "12:30:00"}, id="time_as_text_with_colons"),
        pytest.param({"Time": {"a": 1, "b": {"c": 2}}}, id="time_as_object"),
        pytest.param({"Time": 7}, id="time_as_integer"),
        pytest.param({"Time": None}, id="time_as_null"),
        pytest.param({"card_id": "c:1:2", "merchant": "m"}, id="unknown_fields"),
        pytest.param({"tid": "a:b::c"}, id="id_with_colons"),
    ],
)
def test_unusual_but_valid_events_are_still_scored(extra: dict) -> None:
    decoded = _decode(orjson.dumps(_body(**extra)), orjson.dumps(_body(Time=3.0)))
    assert decoded.count == 2 and not decoded.dead
