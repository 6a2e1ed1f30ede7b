#!/usr/bin/env python3
"""``make demo``: train, stream transactions through the worker, judge its alerts.

Steps, each printed as it runs:

1. Use the broker at ``KAFKA_BOOTSTRAP_SERVERS``, or start the local one
   (``deploy/kafka/localkafka.py``) and remember to stop it.
2. Train a model on synthetic rows (or on the CSV file named by ``DATA``), unless an
   earlier demo left one trained on the same data in ``out/demo/model``.
3. Create private topics for this run and replay a backlog into the input topic as
   fast as possible, before any worker runs.
4. Start ``fraud-worker`` on a free metrics port and time how fast it drains the
   backlog: the throughput figure, left out when the drain lasts under 1 s.
5. Replay fresh synthetic rows (a file's rows again) paced below the worker's
   capacity: the latency figures, read from the worker's own end-to-end histogram.
   Labels of every replayed row are kept aside in CSV files, never sent.
6. Wait until the metrics show every event scored, read every alert, judge each
   transaction once against the labels and print the summary.
7. Stop the worker with SIGTERM, delete the topics, stop the broker if step 1
   started it (deleting its data too if this run created it).

Environment: ``DATA`` (CSV to train on and replay), ``KAFKA_BOOTSTRAP_SERVERS``,
``DEMO_EVENTS``, ``DEMO_RATE``, ``DEMO_BACKLOG_EVENTS``, ``DEMO_TRAIN_ROWS``,
``DEMO_MODEL``, ``DEMO_OUT``, ``DEMO_RETRAIN=1``, ``DEMO_HOLD=1``; each has a flag
too (``--help``), which wins over the variable.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import importlib.util
import io
import json
import logging
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

logger = logging.getLogger("demo")

ROOT = Path(__file__).resolve().parent.parent

# Paced replay: well under one worker's capacity on 2 shared cores, so the latency
# measured is the pipeline's, not a queue's.
_DEFAULT_EVENTS = 20_000
_DEFAULT_RATE = 2_000.0
# Backlog: enough events to keep the worker busy for a few seconds.
_DEFAULT_BACKLOG_EVENTS = 200_000
_DEFAULT_TRAIN_ROWS = 100_000
_TRAIN_SEED = 0
# Replayed rows come from other seeds than the training rows: unseen transactions.
_PACED_SEED = 1
_BACKLOG_SEED = 2
_INPUT_PARTITIONS = 3
_READY_TIMEOUT_S = 90.0
_TOPIC_TIMEOUT_S = 30.0
# Scoring must finish within this after the replay ends, plus 1 s per 2,000 events.
_SCORE_GRACE_S = 60.0
_SCORE_EVENTS_PER_S_FLOOR = 2_000
_POLL_S = 0.2
# While a backlog drains, scrape often: the drain time is read to about this.
_DRAIN_POLL_S = 0.05
# A drain shorter than this is a handful of scrapes: its throughput is not reported.
_MIN_DRAIN_S = 1.0
_STOP_TIMEOUT_S = 30.0
_LATENCY = "fraud_worker_end_to_end_latency_seconds"
_CONSUMED = "fraud_worker_events_consumed_total"
_DEAD_LETTERS = "fraud_worker_dead_letters_total"
_ALERTS = "fraud_worker_alerts_total"


class DemoError(RuntimeError):
    """The demo cannot go on; the message says what failed and what to do."""


# --- metrics -----------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Values read from one scrape of the worker's /metrics."""

    values: Mapping[str, float]
    buckets: Mapping[str, tuple[tuple[float, float], ...]]

    def get(self, name: str) -> float:
        return self.values.get(name, 0.0)

    def histogram(self, name: str) -> tuple[tuple[float, float], ...]:
        """Cumulative (upper bound, count) pairs of a histogram, ``+Inf`` last."""
        return self.buckets.get(name, ())


def parse_metrics(text: str) -> Snapshot:
    """Sum every sample of the exposition text by name, and collect histograms.

    Labelled series of one name are added up (dead letters over all reasons); the
    buckets of one histogram are added up per upper bound.
    """
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
            if family.type == "histogram" and sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                per_bound = buckets.setdefault(family.name, {})
                per_bound[bound] = per_bound.get(bound, 0.0) + sample.value
    return Snapshot(
        values=values,
        buckets={name: tuple(sorted(b.items())) for name, b in buckets.items()},
    )


def subtract_buckets(
    later: Sequence[tuple[float, float]], earlier: Sequence[tuple[float, float]]
) -> tuple[tuple[float, float], ...]:
    """Bucket counts observed between two scrapes of the same histogram."""
    before = dict(earlier)
    return tuple((bound, count - before.get(bound, 0.0)) for bound, count in later)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Estimate a quantile from cumulative buckets the way Prometheus does.

    The value is interpolated linearly inside the bucket that holds the quantile,
    taking 0 as the lower edge of the first bucket. A quantile that falls in the
    ``+Inf`` bucket returns the largest finite bound. No observation gives NaN.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def scrape(url: str, timeout_s: float = 5.0) -> Snapshot:
    """Read and parse one /metrics page."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return parse_metrics(response.read().decode("utf-8"))


# --- processes and ports -----------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_launcher() -> ModuleType:
    """Import ``deploy/kafka/localkafka.py``, which is not part of the package."""
    path = ROOT / "deploy" / "kafka" / "localkafka.py"
    spec = importlib.util.spec_from_file_location("localkafka", path)
    if spec is None or spec.loader is None:
        raise DemoError(f"cannot load the local Kafka launcher from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("localkafka", module)
    spec.loader.exec_module(module)
    return module


@dataclass
class WorkerProcess:
    """A ``fraud-worker`` subprocess and where its metrics are served."""

    process: subprocess.Popen[bytes]
    metrics_url: str
    log_path: Path

    def health(self, path: str) -> bool:
        base = self.metrics_url.rsplit("/", 1)[0]
        try:
            with urllib.request.urlopen(base + path, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise DemoError(
                f"the worker exited with code {code}; its log ends with:\n"
                f"{_tail(self.log_path)}"
            )

    def wait_ready(self, timeout_s: float = _READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if self.health("/readyz"):
                return
            time.sleep(_POLL_S)
        raise DemoError(
            f"the worker was not ready within {timeout_s:.0f} s ({self.metrics_url}); "
            f"its log ends with:\n{_tail(self.log_path)}"
        )

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> int:
        """SIGTERM, then wait; SIGKILL only if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def start_worker(
    model_dir: Path,
    bootstrap: str,
    topics: Topics,
    group_id: str,
    log_path: Path,
    extra_args: Sequence[str] = (),
) -> WorkerProcess:
    """Start ``python -m worker`` with private topics and a free metrics port."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "worker",
        "--model", str(model_dir),
        "--bootstrap-servers", bootstrap,
        "--group-id", group_id,
        "--input-topic", topics.input,
        "--alerts-topic", topics.alerts,
        "--dlq-topic", topics.dlq,
        "--metrics-host", "127.0.0.1",
        "--metrics-port", str(port),
        *extra_args,
    ]  # fmt: skip
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
    return WorkerProcess(process, f"http://127.0.0.1:{port}/metrics", log_path)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --- topics ------------------------------------------------------------------------


@dataclass(frozen=True)
class Topics:
    """The private topics of one demo run."""

    input: str
    alerts: str
    dlq: str

    @classmethod
    def for_run(cls, run_id: str) -> Topics:
        return cls(
            f"demo-{run_id}.transactions",
            f"demo-{run_id}.fraud-alerts",
            f"demo-{run_id}.transactions.dlq",
        )

    def all(self) -> list[str]:
        return [self.input, self.alerts, self.dlq]


def check_broker(bootstrap: str, timeout_s: float = 10.0) -> None:
    """Fail fast, with advice, when nothing answers at ``bootstrap``."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise DemoError(
            f"no Kafka broker answered at KAFKA_BOOTSTRAP_SERVERS={bootstrap} within "
            f"{timeout_s:.0f} s ({exc.args[0]}); unset it to let the demo start the "
            "local broker, or point it at a running one"
        ) from exc


def create_topics(bootstrap: str, topics: Topics, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    wanted = [NewTopic(topics.input, num_partitions=partitions, replication_factor=1)]
    wanted += [
        NewTopic(name, num_partitions=1, replication_factor=1)
        for name in (topics.alerts, topics.dlq)
    ]
    for name, future in admin.create_topics(
        wanted, operation_timeout=_TOPIC_TIMEOUT_S
    ).items():
        try:
            future.result(timeout=_TOPIC_TIMEOUT_S)
        except Exception as exc:
            raise DemoError(
                f"cannot create topic {name} at {bootstrap}: {exc}"
            ) from exc


def delete_topics(bootstrap: str, topics: Topics) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    for future in admin.delete_topics(topics.all()).values():
        with contextlib.suppress(Exception):
            future.result(timeout=_TOPIC_TIMEOUT_S)


def read_alerts(
    bootstrap: str, topic: str, timeout_s: float = 60.0
) -> dict[str, float]:
    """Every alert on ``topic`` as transaction_id -> score (repeats collapse)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-demo-reader",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = list(metadata.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p))[1]
                for p in partitions}  # fmt: skip
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        alerts: dict[str, float] = {}
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout_s
        while len(done) < len(partitions) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                value, offset, partition = msg.value(), msg.offset(), msg.partition()
                if msg.error() is not None or value is None or offset is None:
                    continue
                record = json.loads(value)
                alerts[record["transaction_id"]] = float(record["score"])
                if partition is not None and offset + 1 >= ends[partition]:
                    done.add(partition)
        if len(done) < len(partitions):
            raise DemoError(f"could not read every alert on {topic} in {timeout_s} s")
        return alerts
    finally:
        consumer.close()


# --- training ------------------------------------------------------------------------


def shell_command(command: Sequence[str]) -> str:
    """``command`` as a line to paste into a shell in the checkout's root.

    The interpreter is shown relative to the root when it lives inside it (such as
    ``.venv/bin/python``), so the line stays short and still runs.
    """
    program = Path(command[0])
    with contextlib.suppress(ValueError):
        program = program.relative_to(ROOT)
    return shlex.join([str(program), *command[1:]])


def _model_matches(model_dir: Path, source: str, rows: int | None) -> bool:
    try:
        meta = json.loads((model_dir / "model.json").read_text())
    except (OSError, ValueError):
        return False
    if not (model_dir / "model.onnx").is_file():
        return False
    data = meta.get("training_data", {})
    if data.get("source") != source:
        return False
    if rows is None:
        return True
    return bool(data.get("rows") == rows and data.get("seed") == _TRAIN_SEED)


def train(model_dir: Path, data: Path | None, rows: int, retrain: bool) -> float:
    """Train into ``model_dir`` unless a matching model is there; return seconds."""
    source = str(data) if data else "synthetic"
    if not retrain and _model_matches(model_dir, source, None if data else rows):
        print(f"  reusing the model in {model_dir} (--retrain trains a new one)")
        return 0.0
    command = [sys.executable, "-m", "trainer", "--out", str(model_dir)]
    command += ["--data", str(data)] if data else ["--synthetic", str(rows)]
    command += ["--seed", str(_TRAIN_SEED)]
    print(f"  $ {shell_command(command)}", flush=True)
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, check=False)
    if result.returncode != 0:
        raise DemoError(
            f"training failed with exit code {result.returncode}; see its output above"
        )
    return time.monotonic() - started


# --- replay --------------------------------------------------------------------------


@dataclass
class Phase:
    """One replay and what the worker's metrics said about it.

    Attributes:
        name: ``backlog`` (replayed before the worker starts, drained at full speed)
            or ``paced`` (replayed at ``rate`` while the worker runs).
        events: events replayed, from the labels file once it ran.
        rate: events per second asked of the replay, 0 for as fast as possible.
        labels_path: where the replay kept the labels.
        source_args: ``fraud-replay`` arguments naming the rows.
        id_prefix: start of the phase's transaction ids.
        busy_s: backlog only: from the first event consumed to the last event's
            outputs acknowledged.
        latency_buckets: the end-to-end histogram's growth during the phase.
    """

    name: str
    events: int
    rate: float
    labels_path: Path
    source_args: tuple[str, ...] = ()
    id_prefix: str = ""
    busy_s: float = 0.0
    latency_buckets: tuple[tuple[float, float], ...] = ()

    @property
    def throughput(self) -> float | None:
        """Events per second of the drain; None when it was too short to time."""
        if self.busy_s < _MIN_DRAIN_S:
            return None
        return self.events / self.busy_s


def plan_phases(
    data: Path | None,
    file_rows: int,
    backlog_events: int,
    events: int,
    rate: float,
    out: Path,
) -> list[Phase]:
    """The replays of one run: a backlog (unless 0 events) and the paced phase.

    Synthetic phases replay different seeds under different id prefixes. A CSV file
    has only its rows: each phase replays up to all of them under one prefix, so a
    row keeps its transaction id in both phases and is judged once.
    """
    phases: list[Phase] = []
    if data is not None:
        source = ("--data", str(data))
        if backlog_events:
            phases.append(
                Phase(
                    "backlog", min(backlog_events, file_rows), 0.0,
                    out / "labels-backlog.csv", source, "demo-data",
                )
            )  # fmt: skip
        phases.append(
            Phase(
                "paced", min(events, file_rows), rate, out / "labels-paced.csv",
                source, "demo-data",
            )
        )  # fmt: skip
        return phases
    if backlog_events:
        phases.append(
            Phase(
                "backlog", backlog_events, 0.0, out / "labels-backlog.csv",
                ("--synthetic", str(backlog_events), "--seed", str(_BACKLOG_SEED)),
                "demo-backlog",
            )
        )  # fmt: skip
    phases.append(
        Phase(
            "paced", events, rate, out / "labels-paced.csv",
            ("--synthetic", str(events), "--seed", str(_PACED_SEED)),
            "demo-paced",
        )
    )  # fmt: skip
    return phases


def count_file_rows(path: Path) -> int:
    """Rows of a CSV file that ``fraud-replay`` accepts; refuse one it would not."""
    from worker.replay import ReplayError, csv_source

    try:
        rows = csv_source(path).total or 0
    except ReplayError as exc:
        raise DemoError(f"DATA cannot be replayed: {exc}") from exc
    if rows == 0:
        raise DemoError(f"DATA must hold at least one row; {path} has none")
    return rows


def replay_into(phase: Phase, bootstrap: str, topic: str) -> None:
    """Run ``fraud-replay`` for one phase; its progress bar shows on the terminal."""
    command = [
        sys.executable,
        "-m",
        "worker.replay",
        *phase.source_args,
        "--limit", str(phase.events),
        "--topic", topic,
        "--rate", str(phase.rate),
        "--bootstrap-servers", bootstrap,
        "--labels-out", str(phase.labels_path),
        "--id-prefix", phase.id_prefix,
        "--event-time", "now",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, check=False)
    if result.returncode != 0:
        raise DemoError(f"the replay failed with exit code {result.returncode}")
    with phase.labels_path.open(newline="") as f:
        phase.events = sum(1 for _ in csv.DictReader(f))


def _scored(snapshot: Snapshot) -> float:
    # The latency histogram counts every event whose outputs the broker has
    # acknowledged, dead letters included: the events fully scored.
    return snapshot.get(f"{_LATENCY}_count")


def _try_scrape(worker: WorkerProcess) -> Snapshot | None:
    worker.check_alive()
    try:
        return scrape(worker.metrics_url)
    except (urllib.error.URLError, OSError):
        return None  # the metrics server is not up yet


def _score_deadline(events: int) -> float:
    return time.monotonic() + _SCORE_GRACE_S + events / _SCORE_EVENTS_PER_S_FLOOR


def drain_backlog(worker: WorkerProcess, phase: Phase) -> Snapshot:
    """Watch a just-started worker drain the backlog; set ``phase.busy_s``."""
    first_consumed: float | None = None
    deadline = _score_deadline(phase.events) + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        snapshot = _try_scrape(worker)
        now = time.monotonic()
        if snapshot is not None:
            if first_consumed is None and snapshot.get(_CONSUMED) > 0:
                first_consumed = now - _DRAIN_POLL_S / 2  # mid-interval estimate
            if _scored(snapshot) >= phase.events:
                assert first_consumed is not None
                phase.busy_s = now - first_consumed
                phase.latency_buckets = snapshot.histogram(_LATENCY)
                return snapshot
        time.sleep(_DRAIN_POLL_S)
    raise DemoError(
        f"the worker did not score the backlog of {phase.events:,} events in time; "
        f"see {worker.log_path}"
    )


def wait_scored(worker: WorkerProcess, before: Snapshot, phase: Phase) -> Snapshot:
    """Wait until the worker has scored the phase's events; record its latency."""
    goal = _scored(before) + phase.events
    deadline = _score_deadline(phase.events)
    while True:
        snapshot = _try_scrape(worker)
        if snapshot is not None and _scored(snapshot) >= goal:
            break
        if time.monotonic() > deadline:
            raise DemoError(
                f"{phase.name}: the worker did not score all {phase.events:,} events "
                f"in time; see {worker.log_path}"
            )
        time.sleep(_POLL_S)
    phase.latency_buckets = subtract_buckets(
        snapshot.histogram(_LATENCY), before.histogram(_LATENCY)
    )
    return snapshot


def read_labels(paths: Sequence[Path]) -> dict[str, int]:
    labels: dict[str, int] = {}
    for path in paths:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                labels[row["transaction_id"]] = int(row["Class"])
    return labels


# --- summary -------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Alerts judged against the labels kept aside."""

    events: int
    frauds: int
    alerts: int
    caught: int
    missed: int
    false_alarms: int

    @classmethod
    def judge(cls, labels: Mapping[str, int], alerts: Mapping[str, float]) -> Verdict:
        frauds = {tid for tid, label in labels.items() if label == 1}
        alerted = set(alerts) & set(labels)
        return cls(
            events=len(labels),
            frauds=len(frauds),
            alerts=len(alerted),
            caught=len(alerted & frauds),
            missed=len(frauds - alerted),
            false_alarms=len(alerted - frauds),
        )


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def format_summary(
    verdict: Verdict,
    phases: Sequence[Phase],
    final: Snapshot,
    metrics_url: str,
    model_dir: Path,
    threshold: float | None,
    wall_s: float,
) -> str:
    """The closing summary, one fact a line."""
    legit = verdict.events - verdict.frauds
    scored = sum(phase.events for phase in phases)
    lines = ["", "fraudstream demo summary", "------------------------"]
    if scored == verdict.events:
        lines.append(
            f"events scored   {scored:,}  ({verdict.frauds:,} fraud, {legit:,} "
            "legitimate, by the labels kept aside)"
        )
    else:
        lines += [
            f"events scored   {scored:,}  (rows of one file replayed in "
            f"{len(phases)} phases; each transaction is judged once below)",
            f"transactions    {verdict.events:,}  ({verdict.frauds:,} fraud, "
            f"{legit:,} legitimate, by the labels kept aside)",
        ]
    lines += [
        f"alerts          {verdict.alerts:,}"
        + (f"  (threshold {threshold:g})" if threshold is not None else ""),
        f"frauds caught   {verdict.caught:,} of {verdict.frauds:,}"
        + (f"  (recall {verdict.caught / verdict.frauds:.0%})"
           if verdict.frauds else ""),
        f"frauds missed   {verdict.missed:,}",
        f"false alarms    {verdict.false_alarms:,}"
        + (f"  (precision {verdict.caught / verdict.alerts:.0%})"
           if verdict.alerts else "")
        + (f", {verdict.false_alarms / legit * 10_000:.1f} per 10,000 legitimate"
           if legit else ""),
        f"dead letters    {final.get(_DEAD_LETTERS):,.0f}",
    ]  # fmt: skip
    for phase in phases:
        if phase.name == "backlog" and phase.throughput is None:
            lines.append(
                f"throughput      not measured: the backlog of {phase.events:,} "
                f"events drained in {phase.busy_s:.2f} s, too short to time by "
                f"scraping (a backlog lasting {_MIN_DRAIN_S:.0f} s or more would be)"
            )
        elif phase.name == "backlog":
            lines.append(
                f"throughput      {phase.throughput:,.0f} events/s: a backlog of "
                f"{phase.events:,} events drained in {phase.busy_s:.2f} s (first "
                "event consumed to last output acknowledged)"
            )
        else:
            p50 = histogram_quantile(0.50, phase.latency_buckets)
            p99 = histogram_quantile(0.99, phase.latency_buckets)
            lines.append(
                f"latency         p50 {_ms(p50)}, p99 {_ms(p99)} end to end, over "
                f"{phase.events:,} events replayed at {phase.rate:,.0f}/s"
            )
    lines += [
        f"model           {model_dir}",
        f"metrics         {metrics_url} (served while the worker runs)",
        f"wall time       {wall_s:.1f} s",
        "",
        "Latency runs from each event's Kafka timestamp to the broker's",
        "acknowledgement of its outputs, read from the worker's histogram",
        "(fraud_worker_end_to_end_latency_seconds) and interpolated within its",
        "buckets as Prometheus's histogram_quantile does.",
    ]
    return "\n".join(lines)


# --- the demo ------------------------------------------------------------------------


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise DemoError(f"{name} must be a number, got {raw!r}") from exc


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def _env_flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise DemoError(f"{name} must be 1 or 0 (or true/false, yes/no), got {raw!r}")


def _env_path(name: str, default: Path | None = None) -> Path | None:
    raw = os.environ.get(name, "")
    return Path(raw) if raw else default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="demo.py", description="Run fraudstream end to end and judge its alerts."
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=_env_path("DATA"),
        help="CSV with the real data's columns to train on and replay (env DATA; "
        "default: synthetic rows)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=_env_path("DEMO_MODEL"),
        help="use this model directory instead of training one (env DEMO_MODEL)",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=int(_env_number("DEMO_EVENTS", _DEFAULT_EVENTS)),
        help="events of the paced phase (env DEMO_EVENTS; default: %(default)s)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=_env_number("DEMO_RATE", _DEFAULT_RATE),
        help="events/s of the paced phase (env DEMO_RATE; default: %(default)s)",
    )
    parser.add_argument(
        "--backlog-events",
        type=int,
        default=int(_env_number("DEMO_BACKLOG_EVENTS", _DEFAULT_BACKLOG_EVENTS)),
        help="events replayed before the worker starts, to time how fast it drains "
        "them; 0 skips it "
        "(env DEMO_BACKLOG_EVENTS; default: %(default)s)",
    )
    parser.add_argument(
        "--train-rows",
        type=int,
        default=int(_env_number("DEMO_TRAIN_ROWS", _DEFAULT_TRAIN_ROWS)),
        help="synthetic training rows (env DEMO_TRAIN_ROWS; default: %(default)s)",
    )
    parser.add_argument(
        "--retrain",
        action="store_true",
        default=_env_flag("DEMO_RETRAIN"),
        help="train even if a matching model exists (env DEMO_RETRAIN=1)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=_env_path("DEMO_OUT", ROOT / "out" / "demo"),
        help="model, labels and worker log go here (env DEMO_OUT; default: out/demo)",
    )
    parser.add_argument(
        "--hold",
        action="store_true",
        default=_env_flag("DEMO_HOLD"),
        help="after the summary, keep the worker running (metrics URL live) "
        "until Ctrl-C (env DEMO_HOLD=1)",
    )
    return parser


@dataclass
class _Started:
    """What this run started and therefore must stop."""

    broker: Any = None
    launcher: ModuleType | None = None
    # The broker's data directory was created by this run, so nothing else is in it.
    broker_data_ours: bool = False
    worker: WorkerProcess | None = None
    topics: Topics | None = None
    bootstrap: str = ""


@contextlib.contextmanager
def _cleanup(started: _Started) -> Iterator[None]:
    try:
        yield
    finally:
        if started.worker is not None:
            code = started.worker.stop()
            print(f"  worker stopped (exit code {code})")
        if started.topics is not None:
            delete_topics(started.bootstrap, started.topics)
        if started.broker is not None and started.launcher is not None:
            stop_broker(started.launcher, started.broker, started.broker_data_ours)


def stop_broker(launcher: ModuleType, broker: Any, data_ours: bool) -> None:
    """Stop a broker this run started; delete its data if this run created it.

    Kafka deletes a topic's files asynchronously, a minute after the topic is
    deleted; a broker stopped before then keeps them (tens of MB per demo run).
    Deleting the data directory removes them. A directory that existed before the
    run may hold other topics, so it is kept and the broker finishes the deletion
    the next time it runs.
    """
    if data_ours:
        launcher.down(broker)
        print("  local Kafka broker stopped and its data deleted (this demo started "
              "it; the model and labels are in the demo's out directory)")  # fmt: skip
    else:
        launcher.stop(broker)
        print(f"  local Kafka broker stopped (this demo started it; its data in "
              f"{broker.data_dir} was there before and is kept)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    wall_start = time.monotonic()
    started = _Started()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.data is not None and not args.data.is_file():
        raise DemoError(f"DATA must name a CSV file; {args.data} is not one")
    if args.events <= 0 or args.backlog_events < 0 or args.rate < 0:
        raise DemoError(
            "--events must be > 0, --backlog-events >= 0 and --rate >= 0; got "
            f"{args.events}, {args.backlog_events}, {args.rate}"
        )
    file_rows = count_file_rows(args.data) if args.data is not None else 0

    with _cleanup(started):
        # 1. broker
        print("1. Kafka")
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        if bootstrap:
            print(f"  using KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
            check_broker(bootstrap)
        else:
            launcher = load_launcher()
            broker = launcher.Broker.from_env()
            data_existed = broker.data_dir.exists()
            try:
                if launcher.up(broker):
                    started.broker, started.launcher = broker, launcher
                    started.broker_data_ours = not data_existed
                    print(f"  started the local broker at {broker.bootstrap}")
                else:
                    print(f"  using the local broker already running at "
                          f"{broker.bootstrap}")  # fmt: skip
            except launcher.LauncherError as exc:
                raise DemoError(f"cannot start the local Kafka broker: {exc}") from exc
            bootstrap = broker.bootstrap
        started.bootstrap = bootstrap

        # 2. model
        print("2. model")
        if args.model is not None:
            model_dir = args.model
            print(f"  using {model_dir}")
            train_s = 0.0
        else:
            model_dir = out / "model"
            train_s = train(model_dir, args.data, args.train_rows, args.retrain)
        threshold = _threshold(model_dir)

        # 3. topics, and a backlog replayed before the worker starts
        run_id = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
        topics = Topics.for_run(run_id)
        create_topics(bootstrap, topics, _INPUT_PARTITIONS)
        started.topics = topics
        print(f"3. topics {', '.join(topics.all())}")
        phases = plan_phases(
            args.data, file_rows, args.backlog_events, args.events, args.rate, out
        )
        *backlogs, paced = phases
        of_file = f" (rows of {args.data.name})" if args.data is not None else ""
        for backlog in backlogs:
            print(f"  replaying a backlog of {backlog.events:,} events{of_file} as "
                  "fast as possible, before the worker starts")  # fmt: skip
            if args.data is not None and backlog.events < args.backlog_events:
                print(f"  ({args.data.name} has {file_rows:,} rows, fewer than the "
                      f"{args.backlog_events:,} asked)")  # fmt: skip
            replay_into(backlog, bootstrap, topics.input)

        # 4. worker: start it, and time how fast it drains the backlog
        print("4. worker")
        worker = start_worker(
            model_dir, bootstrap, topics, f"demo-{run_id}", out / "worker.log"
        )
        started.worker = worker
        print(f"  started; metrics at {worker.metrics_url}, log in {worker.log_path}")
        for backlog in backlogs:
            drain_backlog(worker, backlog)
            if backlog.throughput is None:
                print(f"  backlog scored in {backlog.busy_s:.2f} s: too short to "
                      "time, so no throughput figure")  # fmt: skip
            else:
                print(f"  backlog scored: {backlog.throughput:,.0f} events/s")
        worker.wait_ready()

        # 5. paced replay, for latency
        if args.data is not None and backlogs:
            of_file = f" (the same rows of {args.data.name} again)"
        print(f"5. replaying {paced.events:,} events{of_file} at {paced.rate:,.0f}/s")
        before = scrape(worker.metrics_url)
        replay_into(paced, bootstrap, topics.input)
        final = wait_scored(worker, before, paced)

        # 6. judge the alerts against the labels kept aside
        print("6. reading alerts")
        alerts = read_alerts(bootstrap, topics.alerts)
        labels = read_labels([phase.labels_path for phase in phases])
        verdict = Verdict.judge(labels, alerts)
        wall_s = time.monotonic() - wall_start
        print(
            format_summary(
                verdict, phases, final, worker.metrics_url, model_dir, threshold,
                wall_s,
            )
        )  # fmt: skip
        if train_s:
            print(f"(training took {train_s:.0f} s of that)")
        if args.data is not None:
            print(
                "Note: the replayed rows include the rows the model was trained on, "
                "so these figures are optimistic."
            )
        _write_result(out / "summary.json", verdict, phases, final, worker, wall_s)

        if args.hold:
            # The message goes out inside the block: a Ctrl-C that answers it
            # always ends the hold, never the run.
            with contextlib.suppress(KeyboardInterrupt):
                print(f"\nWorker still running: {worker.metrics_url}  (Ctrl-C stops)")
                while worker.process.poll() is None:
                    time.sleep(1)

        # 7. stop (the cleanup context stops the worker, topics and broker)
        print("7. stopping")
    return 0


def _threshold(model_dir: Path) -> float | None:
    try:
        return float(json.loads((model_dir / "model.json").read_text())["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def _write_result(
    path: Path,
    verdict: Verdict,
    phases: Sequence[Phase],
    final: Snapshot,
    worker: WorkerProcess,
    wall_s: float,
) -> None:
    result = {
        "events_scored": sum(phase.events for phase in phases),
        "verdict": dataclasses.asdict(verdict),
        "phases": [
            {
                "name": phase.name,
                "events": phase.events,
                "rate": phase.rate,
                "busy_s": round(phase.busy_s, 3),
                "throughput": (
                    None if phase.throughput is None else round(phase.throughput, 1)
                ),
                "latency_p50_s": _finite(
                    histogram_quantile(0.5, phase.latency_buckets)
                ),
                "latency_p99_s": _finite(
                    histogram_quantile(0.99, phase.latency_buckets)
                ),
            }
            for phase in phases
        ],
        "dead_letters": final.get(_DEAD_LETTERS),
        "consumed": final.get(_CONSUMED),
        "alerts_counted": final.get(_ALERTS),
        "metrics_url": worker.metrics_url,
        "wall_s": round(wall_s, 1),
    }
    path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return 0 after printing the summary."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    # Each step shows as it happens, in order with the replay's output, even when
    # stdout is a pipe (make demo | tee demo.log).
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    # Ctrl-C and SIGTERM both unwind through the cleanup, which stops the worker and
    # any broker this run started; a shell that starts the demo in the background
    # would otherwise leave SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        args = build_parser().parse_args(argv)
        return run(args)
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted; what it started has been stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
