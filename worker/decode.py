"""Turn raw event bytes into rows of the float32 batch matrix, or into dead letters.

The fast path decodes each value with a msgspec ``Struct`` built from the model's
feature names, so types are checked in C and no dict of the whole event is kept. The
features of all good events are gathered with one ``attrgetter`` per event and land
in the batch matrix in one numpy assignment; finiteness is checked on the matrix as
a whole. Only events that fail take the slow path, which works out a reason and a
human-readable detail for the dead-letter headers.

Duplicate keys are rejected because parsers disagree on which copy wins. The fast
check needs no second parse: outside strings, every key of a flat object is followed
by exactly one colon, so the number of ``:`` bytes in a value equals the number of
keys plus the colons written inside key and string values. The decoded struct says
what that number is when the value holds only the struct's fields, each once
(optional fields such as the replay tool's ``Time`` count when present). A value
whose count differs, or that holds a backslash (an escape could hide a colon), is
checked the slow way: the same count against the dict orjson makes of it (which
keeps one copy per key), and when the value is nested or still unsure, a stdlib
parse confirms a real duplicate.

Note:
    Events with fields the decoder does not know (other than ``Time``) or with
    escapes take the slow check (about 3 µs more per event); events with nested
    objects or whitespace before the colons also take the stdlib confirmation
    (about 20 µs). Compact, flat events, as the replay tool writes them, take
    neither.
"""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Annotated, Any, Literal, cast, get_args

import msgspec
import numpy as np
import orjson

from worker.errors import ConfigError

__all__ = [
    "REASONS",
    "DeadLetter",
    "DecodedBatch",
    "Decoder",
    "Reason",
]

logger = logging.getLogger(__name__)

Reason = Literal[
    "not_utf8",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "not_finite",
    "too_large",
    "empty",
]
REASONS: tuple[Reason, ...] = get_args(Reason)

# RFC 3339 date-time: date, 'T', time with optional fraction, then Z or an offset.
_RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
# Dead-letter details are headers; long parser messages are cut to keep them small.
_DETAIL_CHARS = 400
_ID_MAX_CHARS = 128
# Fields the replay tool adds besides the model's; decoding them as optional fields
# keeps such events on the fast duplicate check. Their values are not validated.
_OPTIONAL_FIELDS = ("Time",)
# Stands for "cannot tell from the struct" in the expected colon count: a nested
# value's colons are unknown, so the value takes the slow check.
_UNKNOWN = -(1 << 40)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why the event at ``index`` of the batch cannot be scored."""

    index: int
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """The outcome of decoding one batch of values.

    Attributes:
        count: rows of the matrix filled with good events, from row 0.
        indexes: for each good row, the position of its value in the batch.
        events: for each good row, the decoded event (fields ``transaction_id``,
            ``event_time`` and the key field are read from it).
        dead: the values that cannot be scored, in batch order.
    """

    count: int
    indexes: list[int]
    events: list[Any]
    dead: list[DeadLetter]


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


def _optional_colons(value: Any, key_colons: int) -> int:
    """Colons an optional field adds to a flat value: none when it is absent."""
    if value is msgspec.UNSET:
        return 0
    if isinstance(value, str):
        return key_colons + value.count(":")
    if isinstance(value, dict | list):
        return _UNKNOWN
    return key_colons


def _flat_colons(parsed: dict[str, Any]) -> int:
    """Colons the compact bytes of a flat object hold; -1 when a value is nested."""
    total = 0
    for key, value in parsed.items():
        if isinstance(value, dict | list):
            return -1
        total += 1 + key.count(":")
        if isinstance(value, str):
            total += value.count(":")
    return total


def _cut(text: str) -> str:
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


class Decoder:
    """Decode transaction events for a model with the given feature names.

    Args:
        features: feature names in the model's input order (from model.json).
        key_field: string field used as the key of output records; it must not be
            a feature (features are numbers, and a key is the field's UTF-8 text).
        max_event_bytes: values longer than this are dead-lettered as too_large.

    Raises:
        ConfigError: ``key_field`` names a feature, or a feature shares a name with
            one of the event's string fields.
    """

    def __init__(
        self,
        features: Sequence[str],
        key_field: str = "transaction_id",
        max_event_bytes: int = 65536,
    ) -> None:
        self.features = tuple(features)
        self.width = len(self.features)
        self.key_field = key_field
        self.max_event_bytes = max_event_bytes
        event_id = Annotated[str, msgspec.Meta(min_length=1, max_length=_ID_MAX_CHARS)]
        event_time = Annotated[str, msgspec.Meta(pattern=_RFC3339)]
        fields: list[tuple[str, Any]] = [
            ("transaction_id", event_id),
            ("event_time", event_time),
        ]
        if key_field in self.features:
            raise ConfigError(
                f"alert_key_field: expected a string field of the event, found "
                f"{key_field!r}, which is a model feature (a number); set "
                "--alert-key-field to a string field such as transaction_id or card_id"
            )
        taken = {"transaction_id", "event_time"}
        if key_field not in taken:
            fields.append((key_field, Annotated[str, msgspec.Meta(min_length=1)]))
            taken.add(key_field)
        clash = taken.intersection(self.features)
        if clash:
            raise ConfigError(
                f"feature names must differ from the event's string fields, found "
                f"{sorted(clash)} in both; rename the features or --alert-key-field"
            )
        fields.extend((name, float) for name in self.features)
        string_fields = [name for name, _ in fields[: len(fields) - self.width]]
        optional = [
            name
            for name in _OPTIONAL_FIELDS
            if name not in taken and name not in self.features
        ]
        required = [name for name, _ in fields]
        fields.extend((name, Any) for name in optional)
        # msgspec field names must be identifiers; features are mapped by rename.
        attrs = [f"f{i}" for i in range(len(fields))]
        renames = {attr: name for attr, (name, _) in zip(attrs, fields, strict=True)}
        specs: list[tuple[str, Any] | tuple[str, Any, Any]] = [
            (attr, kind) for attr, (_, kind) in zip(attrs, fields, strict=True)
        ]
        for i in range(len(required), len(specs)):
            specs[i] = (attrs[i], Any, msgspec.UNSET)
        struct = msgspec.defstruct(
            "TransactionEvent",
            specs,
            rename=renames,
            forbid_unknown_fields=False,
            gc=False,
        )
        self._attr = {name: attr for attr, name in renames.items()}
        self._decode = msgspec.json.Decoder(struct).decode
        feature_attrs = [self._attr[name] for name in self.features]
        self._row = operator.attrgetter(*feature_attrs)
        self.read_transaction_id = operator.attrgetter(self._attr["transaction_id"])
        self.read_event_time = operator.attrgetter(self._attr["event_time"])
        self.read_key = operator.attrgetter(self._attr[key_field])
        # Colons of a value holding each required field once: one after each key,
        # plus any inside the key names; string values add theirs per event.
        self._base_colons = sum(1 + name.count(":") for name in required)
        self._read_strings = [
            operator.attrgetter(self._attr[name]) for name in string_fields
        ]
        self._read_optional = [
            (operator.attrgetter(self._attr[name]), 1 + name.count(":"))
            for name in optional
        ]

    def decode_into(
        self, values: Sequence[bytes | None], matrix: np.ndarray
    ) -> DecodedBatch:
        """Decode ``values`` into the first rows of ``matrix``.

        Never raises for bad input: every value either fills a row or becomes a
        ``DeadLetter``. ``matrix`` must be float32 with at least ``len(values)`` rows
        and ``width`` columns.
        """
        fast = self._decode_all(values)
        if fast is not None:
            events: list[Any] = fast
            indexes: list[int] = list(range(len(values)))
            dead: list[DeadLetter] = []
        else:
            events, indexes, dead = self._decode_each(values)

        count = len(events)
        if count:
            block = matrix[:count]
            with np.errstate(over="ignore"):
                block[:] = list(map(self._row, events))
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                return self._drop_non_finite(matrix, count, indexes, events, dead)
        return DecodedBatch(count, indexes, events, dead)

    def _decode_all(self, values: Sequence[bytes | None]) -> list[Any] | None:
        """Decode a batch in C-level loops; None when any value needs a closer look."""
        # A None value (tombstone) raises TypeError in len() and sends the batch to
        # the value-by-value path.
        raw = cast("Sequence[bytes]", values)
        try:
            if max(map(len, raw), default=0) > self.max_event_bytes:
                return None
            events = list(map(self._decode, raw))
        except (
            msgspec.DecodeError,
            msgspec.ValidationError,
            RecursionError,
            TypeError,
        ):
            return None
        # No value holds fewer colons than its struct implies (escapes aside), so
        # equal totals mean every value matches: one count for the whole batch.
        joined = b"".join(raw)
        if b"\\" not in joined and joined.count(b":") == self._expected_total(events):
            return events
        count = len(raw)
        colons = np.fromiter(map(bytes.count, raw, repeat(b":")), np.int64, count)
        unsure = colons != self._expected_colons(events)
        unsure |= np.fromiter(map(operator.contains, raw, repeat(b"\\")), bool, count)
        for i in np.flatnonzero(unsure).tolist():
            try:
                self._check_duplicates(raw[i])
            except (_Duplicate, ValueError, RecursionError):
                return None
        return events

    def _expected_total(self, events: list[Any]) -> int:
        """The sum of ``_expected_colons`` over the batch, in a few C-level calls."""
        total = self._base_colons * len(events)
        for read in self._read_strings:
            total += "".join(map(read, events)).count(":")
        for read, key_colons in self._read_optional:
            values = list(map(read, events))
            if list(map(type, values)).count(float) == len(values):
                total += key_colons * len(values)
            else:
                total += sum(map(_optional_colons, values, repeat(key_colons)))
        return total

    def _expected_colons(self, events: list[Any]) -> np.ndarray:
        """Colons each event's value holds if it has only the struct's fields, once."""
        count = len(events)
        expected = np.full(count, self._base_colons, dtype=np.int64)
        for read in self._read_strings:
            expected += np.fromiter(
                map(str.count, map(read, events), repeat(":")), np.int64, count
            )
        for read, key_colons in self._read_optional:
            values = list(map(read, events))
            if list(map(type, values)).count(float) == count:
                expected += key_colons  # present everywhere, a number: no colons
                continue
            expected += np.fromiter(
                map(_optional_colons, values, repeat(key_colons)), np.int64, count
            )
        return expected

    def _decode_each(
        self, values: Sequence[bytes | None]
    ) -> tuple[list[Any], list[int], list[DeadLetter]]:
        """Decode value by value, turning each failure into a dead letter."""
        decode = self._decode
        limit = self.max_event_bytes
        events: list[Any] = []
        indexes: list[int] = []
        dead: list[DeadLetter] = []
        for i, value in enumerate(values):
            if not value or len(value) > limit:
                dead.append(self._diagnose(i, value, None))
                continue
            try:
                event = decode(value)
                self._check_duplicates(value)
            except (
                msgspec.DecodeError,
                msgspec.ValidationError,
                orjson.JSONDecodeError,
                RecursionError,
                _Duplicate,
            ) as exc:
                dead.append(self._diagnose(i, value, exc))
                continue
            events.append(event)
            indexes.append(i)
        return events, indexes, dead

    def _drop_non_finite(
        self,
        matrix: np.ndarray,
        count: int,
        indexes: list[int],
        events: list[Any],
        dead: list[DeadLetter],
    ) -> DecodedBatch:
        block = matrix[:count]
        bad_rows = np.flatnonzero(~np.isfinite(block).all(axis=1))
        for row in bad_rows.tolist():
            column = int(np.flatnonzero(~np.isfinite(block[row]))[0])
            name = self.features[column]
            found = self._row(events[row])[column]
            dead.append(
                DeadLetter(
                    indexes[row],
                    "not_finite",
                    f"field {name!r}: expected a finite float32, found {found!r}",
                )
            )
        keep = np.flatnonzero(np.isfinite(block).all(axis=1))
        kept = len(keep)
        matrix[:kept] = block[keep]
        dead.sort(key=operator.attrgetter("index"))
        return DecodedBatch(
            kept,
            [indexes[k] for k in keep.tolist()],
            [events[k] for k in keep.tolist()],
            dead,
        )

    def _check_duplicates(self, value: bytes) -> None:
        """Raise ``_Duplicate`` if ``value`` repeats a key; stdlib parse only if unsure.

        orjson keeps one copy of each key; for a flat object without escapes the
        colon count of the bytes matches that dict exactly when no key repeats.
        """
        parsed = orjson.loads(value)
        if (
            isinstance(parsed, dict)
            and b"\\" not in value
            and value.count(b":") == _flat_colons(parsed)
        ):
            return
        self._confirm_no_duplicates(value)

    def _confirm_no_duplicates(self, value: bytes) -> None:
        json.loads(value, object_pairs_hook=_reject_duplicates)

    def _diagnose(
        self, index: int, value: bytes | None, exc: BaseException | None
    ) -> DeadLetter:
        reason, detail = self._reason(value, exc)
        return DeadLetter(index, reason, _cut(detail))

    def _reason(
        self, value: bytes | None, exc: BaseException | None
    ) -> tuple[Reason, str]:
        if value is None:
            return "empty", "expected a JSON object, found a null value (tombstone)"
        if not value:
            return "empty", "expected a JSON object, found zero bytes"
        if len(value) > self.max_event_bytes:
            return "too_large", (
                f"expected at most {self.max_event_bytes} bytes, found {len(value)}"
            )
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as err:
            return "not_utf8", (
                f"expected UTF-8, found byte 0x{value[err.start]:02x} at position "
                f"{err.start} that is not valid UTF-8"
            )
        if text.startswith("\ufeff"):
            return "not_json", "expected JSON text, found a UTF-8 byte-order mark"
        if isinstance(exc, _Duplicate):
            return "not_json", (
                f"expected unique keys, found key {exc.key!r} more than once"
            )
        if isinstance(exc, RecursionError):
            return "not_json", "expected shallow JSON, found nesting too deep to parse"
        if isinstance(exc, msgspec.ValidationError):
            return self._validation_reason(str(exc))
        return self._syntax_reason(text, exc)

    def _syntax_reason(
        self, text: str, exc: BaseException | None
    ) -> tuple[Reason, str]:
        constants: list[str] = []

        def note_constant(name: str) -> float:
            constants.append(name)
            return float("nan")

        try:
            json.loads(text, parse_constant=note_constant)
        except (ValueError, RecursionError):
            pass
        else:
            if constants:
                return "not_finite", (
                    f"expected finite JSON numbers, found the literal {constants[0]}"
                )
        return "not_json", f"expected a JSON object, found invalid JSON ({exc})"

    def _validation_reason(self, message: str) -> tuple[Reason, str]:
        path = ""
        if " - at `$." in message:
            message, _, path = message.partition(" - at `$.")
            path = path.rstrip("`")
            attr_name = {a: n for n, a in self._attr.items()}
            path = attr_name.get(path, path)
        if message.startswith("Expected `object`") and not path:
            found = message.rpartition("got ")[2].strip("`")
            return "not_object", f"expected a JSON object, found a JSON {found}"
        if message.startswith("Object missing required field"):
            missing = message.rpartition("field ")[2].strip("`")
            missing = {a: n for n, a in self._attr.items()}.get(missing, missing)
            return "missing_field", f"expected field {missing!r}, found it missing"
        if message.startswith("Number out of range"):
            return "not_finite", (
                f"field {path!r}: expected a finite number, found one out of range"
            )
        return "wrong_type", f"field {path!r}: {message.lower()}"
