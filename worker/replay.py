"""Replay card transactions into Kafka as schema-valid JSON events.

Rows come from a CSV file with the public dataset's columns (``Time``, ``V1``..``V28``,
``Amount`` and optionally ``Class``) or from :func:`trainer.synthetic.generate`. Each
row becomes one event as ``schemas/transaction.schema.json`` describes it, keyed by
its ``transaction_id``. The label never goes into the event; ``--labels-out`` writes
``transaction_id,Class`` pairs to a CSV file so that alerts can be judged afterwards.

Transaction ids are deterministic: the source's name plus the row's index, so the
same rows replayed twice carry the same ids. ``event_time`` is ``--start-time`` plus
the row's ``Time`` offset by default, or the wall-clock time of sending with
``--event-time now``.

Usage::

    fraud-replay --synthetic 100000 --rate 5000 --labels-out out/labels.csv
    fraud-replay --data ../shared/data/creditcard/creditcard-subset.csv --limit 1000

Note:
    Events carry ``Time`` and the 29 model features only; any other CSV column is
    dropped, so card or merchant ids in a richer file do not reach the topic. A CSV
    file is read twice, once to count its rows for the ETA (about 0.1 s per 100 MB).
    ``--synthetic N`` generates all N rows in memory first (about 250 bytes a row).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NoReturn, Protocol, TextIO

import orjson

from worker.errors import FraudWorkerError

__all__ = [
    "DEFAULT_START_TIME",
    "FEATURE_COLUMNS",
    "EventEncoder",
    "Pacer",
    "Progress",
    "ReplayError",
    "ReplayResult",
    "Row",
    "Source",
    "build_parser",
    "csv_source",
    "main",
    "parse_rfc3339",
    "replay",
    "synthetic_source",
]

logger = logging.getLogger(__name__)

# The model's inputs by name, in order; the same tuple as trainer.synthetic's, kept
# here so that CSV replay needs neither numpy nor the trainer package.
FEATURE_COLUMNS: tuple[str, ...] = (*(f"V{i}" for i in range(1, 29)), "Amount")

DEFAULT_START_TIME = "2013-09-01T00:00:00Z"
"""Start of the public dataset's two days; ``Time`` offsets count from here."""

EventTimeMode = Literal["data", "now"]

# Events handed to librdkafka per call: large enough that the per-call cost of
# produce_batch vanishes, small enough that pacing and the progress bar stay smooth.
_MAX_CHUNK = 1_000
# Paced replay sends at most this many bursts per second; between bursts it waits
# in producer.poll, so delivery reports are served while it waits.
_PACED_BURSTS_PER_S = 200
# When librdkafka's queue is full, wait this long for deliveries before retrying.
_QUEUE_FULL_WAIT_S = 0.05
# A broker that does not answer metadata within this is reported, not waited on.
_CONNECT_TIMEOUT_S = 10.0
# Delivery of everything queued must finish within this after the last event.
_FLUSH_TIMEOUT_S = 60.0
# Progress redraws on a terminal; a pipe or a file gets a plain line less often.
_BAR_REDRAW_S = 0.2
_LINE_EVERY_S = 5.0
_BAR_WIDTH = 24
# Synthetic rows become Python lists this many at a time.
_SYNTHETIC_SLICE = 10_000
# Transaction ids may hold at most 128 characters; the index takes up to 12.
_MAX_PREFIX_LEN = 64

# Throughput settings: batches of up to 1 MB after at most 5 ms of waiting, lz4 to
# shrink them at little CPU cost. A longer linger would raise the peak rate a little
# but adds directly to the end-to-end latency the worker measures from each event's
# Kafka timestamp.
_PRODUCER_DEFAULTS: dict[str, str | int | bool] = {
    "enable.idempotence": True,
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
    "compression.type": "lz4",
}


class ReplayError(FraudWorkerError):
    """Replay cannot start or cannot finish; the message says what to change."""


Row = tuple[float | None, Sequence[float], int | None]
"""One transaction: ``Time`` offset in seconds (or None), features, label (or None)."""


@dataclass(frozen=True)
class Source:
    """Rows to replay and what is known about them before reading.

    Attributes:
        name: prefix of every transaction id, e.g. ``creditcard-subset`` or ``syn0``.
        rows: the rows, read lazily.
        total: number of rows, when known in advance.
        has_time: rows carry a ``Time`` offset.
        has_labels: rows carry a ``Class`` label.
    """

    name: str
    rows: Iterable[Row]
    total: int | None
    has_time: bool
    has_labels: bool


@dataclass(frozen=True)
class ReplayResult:
    """What one replay did."""

    sent: int
    delivered: int
    failed: int
    elapsed_s: float
    frauds: int | None
    first_error: str | None = None

    @property
    def rate(self) -> float:
        """Events sent per second over the whole replay."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def undelivered(self) -> int:
        """Events handed to the producer that the broker never acknowledged."""
        return self.sent - self.delivered


# --- sources -------------------------------------------------------------------------


def _count_data_lines(path: Path) -> int:
    lines = 0
    last = b"\n"
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        lines += 1  # the last row has no line break
    return max(lines - 1, 0)  # the header


def _parse_float(text: str, column: str, line: int, path: Path) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ReplayError(
            f"{path}:{line}: column {column} must hold a finite number, found "
            f"{text!r}; fix or drop that row"
        )
    return value


def csv_source(path: Path) -> Source:
    """Read rows from a CSV file with a header naming at least V1..V28 and Amount.

    ``Time`` and ``Class`` are used when present; other columns are ignored. Values
    are parsed with the standard library, so no pandas is needed.

    Raises:
        ReplayError: the file is missing, has no header, or lacks a feature column.
    """
    if not path.is_file():
        raise ReplayError(f"--data expects a CSV file, but {path} is not a file")
    with path.open(newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise ReplayError(f"{path} is empty; expected a header line and rows")
    header = [name.strip().strip('"') for name in header]
    missing = [name for name in FEATURE_COLUMNS if name not in header]
    if missing:
        raise ReplayError(
            f"{path} must have the columns {', '.join(FEATURE_COLUMNS)}; it lacks "
            f"{', '.join(missing)} (header: {', '.join(header[:40])})"
        )
    feature_idx = [header.index(name) for name in FEATURE_COLUMNS]
    time_idx = header.index("Time") if "Time" in header else None
    label_idx = header.index("Class") if "Class" in header else None

    def rows() -> Iterator[Row]:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            next(reader)
            for line, record in enumerate(reader, start=2):
                if not record:
                    continue
                try:
                    features = [float(record[i]) for i in feature_idx]
                    t = float(record[time_idx]) if time_idx is not None else None
                    label = (
                        int(float(record[label_idx])) if label_idx is not None else None
                    )
                except (ValueError, IndexError):
                    _explain_bad_row(record, line, path, header)
                if not all(map(math.isfinite, features)):
                    _explain_bad_row(record, line, path, header)
                yield t, features, label

    return Source(
        name=path.stem[:_MAX_PREFIX_LEN],
        rows=rows(),
        total=_count_data_lines(path),
        has_time=time_idx is not None,
        has_labels=label_idx is not None,
    )


def _explain_bad_row(
    record: list[str], line: int, path: Path, header: list[str]
) -> NoReturn:
    if len(record) != len(header):
        raise ReplayError(
            f"{path}:{line}: expected {len(header)} fields as in the header, found "
            f"{len(record)}; fix or drop that row"
        )
    for name in (*FEATURE_COLUMNS, "Time", "Class"):
        if name in header:
            _parse_float(record[header.index(name)], name, line, path)
    raise ReplayError(
        f"{path}:{line}: cannot read this row as numbers; check its quoting"
    )


def synthetic_source(n_rows: int, seed: int = 0) -> Source:
    """Rows from :func:`trainer.synthetic.generate`, labels included.

    Raises:
        ReplayError: ``n_rows`` is negative or the trainer package is not installed.
    """
    if n_rows < 0:
        raise ReplayError(f"--synthetic expects a row count >= 0, got {n_rows}")
    try:
        from trainer.synthetic import FEATURE_COLUMNS as SYNTHETIC_COLUMNS
        from trainer.synthetic import generate
    except ImportError as exc:
        raise ReplayError(
            "--synthetic needs the trainer package (trainer.synthetic); install "
            "fraudstream from its source tree or replay a CSV file with --data"
        ) from exc
    if tuple(SYNTHETIC_COLUMNS) != FEATURE_COLUMNS:
        raise ReplayError(
            f"trainer.synthetic makes columns {SYNTHETIC_COLUMNS}, replay expects "
            f"{FEATURE_COLUMNS}; update worker/replay.py to the new feature contract"
        )
    data = generate(n_rows, seed=seed)

    def rows() -> Iterator[Row]:
        # Python floats take four times the memory of the arrays: convert a slice
        # at a time.
        for start in range(0, n_rows, _SYNTHETIC_SLICE):
            end = start + _SYNTHETIC_SLICE
            yield from zip(
                data.time[start:end].tolist(),
                data.features[start:end].tolist(),
                data.labels[start:end].tolist(),
                strict=True,
            )

    return Source(
        name=f"syn{seed}", rows=rows(), total=n_rows, has_time=True, has_labels=True
    )


# --- events --------------------------------------------------------------------------


def parse_rfc3339(text: str) -> float:
    """Seconds since the Unix epoch of an RFC 3339 timestamp with a time zone.

    Raises:
        ReplayError: the text is not such a timestamp.
    """
    try:
        moment = datetime.fromisoformat(
            text.replace("Z", "+00:00").replace("z", "+00:00")
        )
    except ValueError as exc:
        raise ReplayError(
            f"--start-time expects an RFC 3339 timestamp such as {DEFAULT_START_TIME}, "
            f"got {text!r}"
        ) from exc
    if moment.tzinfo is None:
        raise ReplayError(
            f"--start-time needs a time zone (e.g. a trailing Z for UTC), got {text!r}"
        )
    return moment.timestamp()


class EventEncoder:
    """Turns rows into (key, JSON value) pairs, the same bytes for the same row.

    Args:
        source_name: prefix of every transaction id.
        start_epoch_s: ``event_time`` of ``Time == 0``, in Unix seconds.
        mode: ``data`` stamps ``start + Time``; ``now`` stamps the wall clock.
        clock: wall clock for ``now`` mode, in Unix seconds.
    """

    def __init__(
        self,
        source_name: str,
        start_epoch_s: float,
        mode: EventTimeMode = "data",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._prefix = source_name[:_MAX_PREFIX_LEN]
        self._start = start_epoch_s
        self._mode = mode
        self._clock = clock
        self._cached_second: int | None = None
        self._cached_text = ""

    def transaction_id(self, index: int) -> str:
        """The id of the row at ``index`` (0-based) of this source."""
        return f"{self._prefix}-{index:08d}"

    def event_time(self, offset_s: float | None) -> str:
        """RFC 3339 UTC time, millisecond precision, of a row's ``Time`` offset."""
        if self._mode == "now" or offset_s is None:
            moment = self._clock()
        else:
            moment = self._start + offset_s
        millis = round(moment * 1000)
        second, ms = divmod(millis, 1000)
        # Consecutive rows mostly share their second: format it once.
        if second != self._cached_second:
            self._cached_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._cached_second = second
        return f"{self._cached_text}.{ms:03d}Z"

    def encode(self, index: int, row: Row) -> tuple[str, bytes]:
        """Return ``(transaction_id, JSON bytes)`` of one row; the label stays out."""
        offset_s, features, _label = row
        tid = self.transaction_id(index)
        event: dict[str, Any] = {
            "transaction_id": tid,
            "event_time": self.event_time(offset_s),
        }
        if offset_s is not None:
            event["Time"] = offset_s
        event.update(zip(FEATURE_COLUMNS, features, strict=True))
        return tid, orjson.dumps(event)


# --- pacing and progress -------------------------------------------------------------


class Pacer:
    """Holds a send rate by waiting until each event's due time.

    Event ``k`` (0-based) is due ``k / rate`` seconds after the first call. A rate of
    0 means no waiting.

    Args:
        rate: events per second, 0 for as fast as possible.
        wait: blocks for the given seconds; replay passes ``producer.poll`` so that
            delivery reports are served while it waits.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        rate: float,
        wait: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate < 0 or not math.isfinite(rate):
            raise ReplayError(f"--rate expects events per second >= 0, got {rate}")
        self.rate = rate
        self._wait = wait
        self._clock = clock
        self._start: float | None = None

    @property
    def chunk(self) -> int:
        """How many events to send between two waits."""
        if self.rate == 0:
            return _MAX_CHUNK
        return max(1, min(_MAX_CHUNK, int(self.rate / _PACED_BURSTS_PER_S)))

    def until_due(self, k: int) -> None:
        """Block until event ``k`` is due."""
        now = self._clock()
        if self._start is None:
            self._start = now
        if self.rate == 0:
            return
        due = self._start + k / self.rate
        while (delay := due - now) > 0:
            self._wait(delay)
            now = self._clock()


class Progress:
    """A progress bar on a terminal, or a plain line every few seconds elsewhere.

    Args:
        total: events expected, when known; gives the percentage and ETA.
        stream: where to draw, normally stderr.
        enabled: False draws nothing.
    """

    def __init__(
        self,
        total: int | None,
        stream: TextIO = sys.stderr,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._total = total
        self._stream = stream
        self._enabled = enabled
        self._clock = clock
        self._tty = enabled and stream.isatty()
        self._every = _BAR_REDRAW_S if self._tty else _LINE_EVERY_S
        self._start = clock()
        self._next_draw = self._start + self._every
        self._drawn = False

    def update(self, done: int) -> None:
        """Record that ``done`` events were sent; redraw when it is time to."""
        if not self._enabled:
            return
        now = self._clock()
        if now >= self._next_draw:
            self._next_draw = now + self._every
            self._draw(done, now)

    def close(self, done: int) -> None:
        """Draw the final state and end the line."""
        if not self._enabled:
            return
        if self._tty or self._drawn:
            self._draw(done, self._clock())
        if self._tty and self._drawn:
            self._stream.write("\n")
            self._stream.flush()

    def render(self, done: int, elapsed_s: float) -> str:
        """The progress text for ``done`` events after ``elapsed_s`` seconds."""
        rate = done / elapsed_s if elapsed_s > 0 else 0.0
        parts = [f"replay {done:,}"]
        if self._total:
            share = min(done / self._total, 1.0)
            filled = math.floor(share * _BAR_WIDTH)
            percent = math.floor(share * 100)  # 100 % only when all is sent
            parts[0] += f"/{self._total:,}"
            parts.append(f"{percent:3d}% [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}]")
        parts.append(f"{rate:,.0f} ev/s")
        if self._total and rate > 0:
            parts.append(f"ETA {_clock_text(max(self._total - done, 0) / rate)}")
        parts.append(f"elapsed {_clock_text(elapsed_s)}")
        return "  ".join(parts)

    def _draw(self, done: int, now: float) -> None:
        text = self.render(done, now - self._start)
        if self._tty:
            self._stream.write(f"\r{text}\x1b[K")
        else:
            self._stream.write(text + "\n")
        self._stream.flush()
        self._drawn = True


def _clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# --- producing -----------------------------------------------------------------------


class BatchProducer(Protocol):
    """The part of ``confluent_kafka.Producer`` that replay uses."""

    def produce_batch(
        self,
        topic: str,
        messages: list[dict[str, Any]],
        partition: int = ...,
        callback: Any = ...,
        on_delivery: Any = ...,
    ) -> int: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...


class _Deliveries:
    """Counts delivery reports; remembers the first error for the summary."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.first_error: str | None = None

    def __call__(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        if self.first_error is None:
            self.first_error = str(err)


def _queue_full(error: Any) -> bool:
    from confluent_kafka import KafkaError

    code = error.code() if hasattr(error, "code") else None
    return code == KafkaError._QUEUE_FULL


def _send(
    producer: BatchProducer,
    topic: str,
    batch: list[dict[str, Any]],
    reports: _Deliveries,
) -> None:
    """Hand a batch to librdkafka, waiting and retrying while its queue is full."""
    while batch:
        try:
            queued = producer.produce_batch(topic, batch, on_delivery=reports)
        except BufferError:
            queued = -1
        if queued == len(batch):
            producer.poll(0)
            return
        refused = [message for message in batch if "_error" in message]
        if queued == -1 and not refused:
            refused = batch  # the whole call was refused before queueing any
        retry = []
        for message in refused:
            error = message.pop("_error", None)
            if error is None or _queue_full(error):
                retry.append(message)
            else:
                reports(error, None)
        batch = retry
        producer.poll(_QUEUE_FULL_WAIT_S)


def replay(
    source: Source,
    producer: BatchProducer,
    topic: str,
    *,
    encoder: EventEncoder,
    pacer: Pacer,
    limit: int | None = None,
    labels_out: TextIO | None = None,
    progress: Progress | None = None,
    flush_timeout_s: float = _FLUSH_TIMEOUT_S,
) -> ReplayResult:
    """Send the source's rows as events and wait until the broker has them all.

    Args:
        source: the rows.
        producer: a Kafka producer (``confluent_kafka.Producer`` in production).
        topic: where the events go.
        encoder: builds each event's key and value.
        pacer: holds the rate.
        limit: send at most this many events.
        labels_out: receives ``transaction_id,Class`` lines, header first.
        progress: drawn while sending.

    Raises:
        ReplayError: labels were asked for but the source has none.
    """
    if labels_out is not None and not source.has_labels:
        raise ReplayError(
            f"--labels-out needs labelled rows, but source {source.name!r} has no "
            "Class column; drop --labels-out or use a file with Class"
        )
    writer = csv.writer(labels_out, lineterminator="\n") if labels_out else None
    if writer is not None:
        writer.writerow(["transaction_id", "Class"])
    reports = _Deliveries()
    chunk = pacer.chunk
    sent = 0
    frauds = 0
    batch: list[dict[str, Any]] = []
    labels: list[tuple[str, int | None]] = []
    start = time.monotonic()

    for index, row in enumerate(source.rows):
        if limit is not None and index >= limit:
            break
        if not batch:
            pacer.until_due(index)
        key, value = encoder.encode(index, row)
        batch.append({"key": key, "value": value})
        if row[2] == 1:
            frauds += 1
        if writer is not None:
            labels.append((key, row[2]))
        if len(batch) >= chunk:
            sent += _flush_batch(producer, topic, batch, reports, writer, labels)
            batch, labels = [], []
            if progress is not None:
                progress.update(sent)
    if batch:
        sent += _flush_batch(producer, topic, batch, reports, writer, labels)

    # The last event's successor is due when the paced interval ends; waiting for it
    # makes sent / elapsed equal the asked rate rather than run slightly above it.
    pacer.until_due(sent)
    if progress is not None:
        progress.close(sent)
    remaining = producer.flush(flush_timeout_s)
    elapsed = time.monotonic() - start
    if remaining:
        reports.failed += remaining
        reports.first_error = reports.first_error or (
            f"{remaining} events still queued for delivery {flush_timeout_s:.0f} s "
            "after the last was sent"
        )
    if reports.failed:
        logger.error(
            "replay delivery failures failed=%d first_error=%s",
            reports.failed,
            reports.first_error,
        )
    return ReplayResult(
        sent=sent,
        delivered=reports.delivered,
        failed=reports.failed,
        elapsed_s=elapsed,
        frauds=frauds if source.has_labels else None,
        first_error=reports.first_error,
    )


def _flush_batch(
    producer: BatchProducer,
    topic: str,
    batch: list[dict[str, Any]],
    reports: _Deliveries,
    writer: Any,
    labels: list[tuple[str, int | None]],
) -> int:
    _send(producer, topic, batch, reports)
    if writer is not None:
        writer.writerows(labels)
    return len(batch)


# --- command line --------------------------------------------------------------------


def _bootstrap_default() -> str:
    return (
        os.environ.get("FRAUD_BOOTSTRAP_SERVERS")
        or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        or "127.0.0.1:9092"
    )


def _parse_setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"expected a librdkafka setting as KEY=VALUE, got {text!r}"
        )
    return key.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``fraud-replay``."""
    parser = argparse.ArgumentParser(
        prog="fraud-replay",
        description="Replay card transactions into Kafka as JSON events.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--data", type=Path, metavar="CSV", help="CSV file to replay")
    what.add_argument(
        "--synthetic", type=int, metavar="N", help="replay N synthetic rows instead"
    )
    parser.add_argument("--topic", default="transactions", help="default: %(default)s")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="EVENTS_PER_S",
        help="events per second, 0 for as fast as possible (default: %(default)s)",
    )
    parser.add_argument("--limit", type=int, metavar="N", help="send at most N events")
    parser.add_argument(
        "--bootstrap-servers",
        default=None,
        help="Kafka brokers (default: $FRAUD_BOOTSTRAP_SERVERS, else "
        "$KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:9092)",
    )
    parser.add_argument(
        "--labels-out",
        type=Path,
        metavar="PATH",
        help="write transaction_id,Class of every sent event to this CSV file",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of --synthetic (default: %(default)s)"
    )
    parser.add_argument(
        "--id-prefix",
        metavar="TEXT",
        help="start of every transaction_id (default: the CSV file's name, or "
        "syn<seed>); ids are <prefix>-<row index>",
    )
    parser.add_argument(
        "--start-time",
        default=DEFAULT_START_TIME,
        help="event_time of Time=0, RFC 3339 (default: %(default)s)",
    )
    parser.add_argument(
        "--event-time",
        choices=("data", "now"),
        default="data",
        help="data: start time + the row's Time; now: the wall clock at sending "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--producer-config",
        type=_parse_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra librdkafka producer setting; repeatable",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="draw no progress bar"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``fraud-replay``; return 0 when every event was delivered."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        return _run(args)
    except ReplayError as exc:
        print(f"fraud-replay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fraud-replay: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException, Producer

    # 1. check every argument before connecting
    if args.limit is not None and args.limit < 0:
        raise ReplayError(f"--limit expects a count >= 0, got {args.limit}")
    if args.synthetic is not None:
        source = synthetic_source(args.synthetic, args.seed)
    else:
        source = csv_source(args.data)
    mode: EventTimeMode = args.event_time
    if mode == "data" and not source.has_time:
        raise ReplayError(
            f"{args.data} has no Time column to derive event_time from; "
            "pass --event-time now"
        )
    if args.id_prefix is not None:
        if not 1 <= len(args.id_prefix) <= _MAX_PREFIX_LEN:
            raise ReplayError(
                f"--id-prefix must hold 1 to {_MAX_PREFIX_LEN} characters, got "
                f"{len(args.id_prefix)}"
            )
        source = dataclasses.replace(source, name=args.id_prefix)
    encoder = EventEncoder(source.name, parse_rfc3339(args.start_time), mode)
    bootstrap = args.bootstrap_servers or _bootstrap_default()
    settings: dict[str, str | int | bool] = {
        **_PRODUCER_DEFAULTS,
        "bootstrap.servers": bootstrap,
        **dict(args.producer_config),
    }
    try:
        producer = Producer(settings)
        producer.list_topics(timeout=_CONNECT_TIMEOUT_S)
    except KafkaException as exc:
        raise ReplayError(
            f"cannot reach Kafka at {bootstrap} within {_CONNECT_TIMEOUT_S:.0f} s "
            f"({exc.args[0] if exc.args else exc}); start a broker (make kafka-up) or "
            "point --bootstrap-servers at one"
        ) from exc
    pacer = Pacer(args.rate, wait=producer.poll)
    total = source.total
    if args.limit is not None:
        total = args.limit if total is None else min(total, args.limit)
    progress = Progress(total, sys.stderr, enabled=not args.no_progress)

    # 2. send, keeping the labels aside
    labels_file: TextIO | None = None
    if args.labels_out is not None:
        args.labels_out.parent.mkdir(parents=True, exist_ok=True)
        labels_file = args.labels_out.open("w", encoding="utf-8", newline="")
    try:
        result = replay(
            source,
            producer,
            args.topic,
            encoder=encoder,
            pacer=pacer,
            limit=args.limit,
            labels_out=labels_file,
            progress=progress,
        )
    finally:
        if labels_file is not None:
            labels_file.close()

    # 3. summary
    rate_note = f" (asked {args.rate:,.0f})" if args.rate else ""
    print(
        f"fraud-replay: sent {result.sent:,} events from {source.name} to "
        f"{args.topic!r} at {bootstrap} in {result.elapsed_s:.2f} s: "
        f"{result.rate:,.0f} events/s{rate_note}; delivered {result.delivered:,}, "
        f"failed {result.failed:,}",
        file=sys.stderr,
    )
    if args.labels_out is not None:
        print(
            f"fraud-replay: labels of {result.sent:,} events ({result.frauds:,} fraud) "
            f"in {args.labels_out}",
            file=sys.stderr,
        )
    if result.failed or result.undelivered:
        print(
            f"fraud-replay: FAILED: {result.undelivered:,} of {result.sent:,} events "
            f"were not delivered to {args.topic!r} (first error: "
            f"{result.first_error or 'none reported'}); the topic holds only part "
            "of the replay. Check the broker and replay again: rows keep their "
            "transaction_id, so consumers can drop the repeats",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
