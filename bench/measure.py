"""Start a measured process, read its metrics, time a drain and latency under load.

Both kinds of subject, the worker (``python -m worker``) and the passthrough
(``python -m bench.passthrough``), serve the same metric names, so one code path
measures them:

- drain: from the first scrape that shows events consumed until the end-to-end
  histogram has counted every event of the backlog (its outputs acknowledged). The
  rate is the events retired between those two scrapes over the time between them;
  worker CPU is read with psutil at the same two moments.
- latency: the end-to-end histogram's growth while a paced producer offers a fixed
  load, as quantiles interpolated within the histogram's buckets.
- memory: the peak resident set (``VmHWM`` in ``/proc/<pid>/status``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.broker import LoadGenerator
from bench.errors import SubjectError

__all__ = [
    "Drain",
    "LoadPoint",
    "Subject",
    "histogram_quantile",
    "measure_drain",
    "measure_load",
    "start_subject",
]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent

_CONSUMED = "fraud_worker_events_consumed_total"
_LATENCY = "fraud_worker_end_to_end_latency_seconds"
_READY = "fraud_worker_ready"
# Scrape intervals while a backlog drains. One scrape costs the subject about 1-2 ms
# of its HTTP thread, so mid-drain it is scraped rarely and near the predicted end
# (and before the first event) often: the end is then known to about 20 ms.
_SCRAPE_FAST_S = 0.02
_SCRAPE_SLOW_S = 0.25
_READY_TIMEOUT_S = 90.0
_STOP_TIMEOUT_S = 30.0
# A subject that retires nothing for this long has stalled.
_STALL_S = 60.0
# After a paced load ends, the subject gets this long to retire what it was sent.
_CATCH_UP_S = 15.0


@dataclass(frozen=True)
class Snapshot:
    """One scrape: sample values summed by name, and the latency buckets."""

    at: float
    values: dict[str, float]
    latency: tuple[tuple[float, float], ...]

    def get(self, name: str) -> float:
        return self.values.get(name, 0.0)

    @property
    def retired(self) -> float:
        """Events whose outputs are acknowledged (the latency histogram's count)."""
        return self.get(_LATENCY + "_count")


def parse(text: str, at: float) -> Snapshot:
    """Parse exposition text into a ``Snapshot`` taken at ``at``."""
    values: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
            if sample.name == _LATENCY + "_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return Snapshot(at, values, tuple(sorted(buckets.items())))


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Estimate quantile ``q`` of cumulative buckets as Prometheus does.

    Linear interpolation inside the bucket holding the rank, 0 as the first bucket's
    lower edge; a rank in the ``+Inf`` bucket gives the largest finite bound; no
    observations give NaN.
    """
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    low_bound, low_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > low_count:
            if math.isinf(bound):
                return low_bound
            share = (rank - low_count) / (count - low_count)
            return low_bound + (bound - low_bound) * share
        low_bound, low_count = bound, count
    return low_bound


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Subject:
    """A measured process and the URL of its metrics."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.process.pid)

    def scrape(self) -> Snapshot:
        """Read /metrics once.

        Raises:
            SubjectError: the process exited.
        """
        self.check_alive()
        with urllib.request.urlopen(self.url, timeout=5) as response:
            text = response.read().decode("utf-8")
        return parse(text, time.monotonic())

    def try_scrape(self) -> Snapshot | None:
        try:
            return self.scrape()
        except (urllib.error.URLError, OSError):
            return None

    def cpu_s(self) -> float:
        """User plus system CPU seconds of the process (all its threads)."""
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def peak_rss_mb(self) -> float:
        """Peak resident set size so far, in MB (10^6 bytes)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
        return float(self.ps.memory_info().rss) / 1e6

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise SubjectError(
                f"expected {self.name} to keep running, found it exited with code "
                f"{code}; its log ends with:\n{_tail(self.log_path)}"
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            snapshot = self.try_scrape()
            if snapshot is not None and snapshot.get(_READY) >= 1:
                return
            time.sleep(0.05)
        raise SubjectError(
            f"expected {self.name} to be assigned partitions within "
            f"{_READY_TIMEOUT_S:.0f} s, found it not ready; its log ends with:\n"
            f"{_tail(self.log_path)}"
        )

    def stop(self) -> int:
        """SIGTERM, then wait; SIGKILL only when it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def start_subject(
    name: str,
    kind: str,
    bootstrap: str,
    group_id: str,
    input_topic: str,
    output_topic: str,
    dlq_topic: str,
    log_path: Path,
    model_dir: Path | None = None,
    batch: tuple[int, int] | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[Subject]:
    """Start a worker, the passthrough or its consume-only floor; stop it on exit.

    ``batch`` is (max_batch_size, max_batch_wait_ms); None keeps the defaults.
    ``extra_args`` are appended to the command line.
    """
    port = _free_port()
    if kind not in ("worker", "passthrough", "floor"):
        raise ValueError(f"kind must be worker, passthrough or floor, got {kind!r}")
    if kind == "worker":
        command = [
            sys.executable, "-m", "worker",
            "--model", str(model_dir),
            "--bootstrap-servers", bootstrap,
            "--group-id", group_id,
            "--input-topic", input_topic,
            "--alerts-topic", output_topic,
            "--dlq-topic", dlq_topic,
            "--metrics-host", "127.0.0.1",
            "--metrics-port", str(port),
            "--log-level", "WARNING",
        ]  # fmt: skip
    else:
        command = [
            sys.executable, "-m", "bench.passthrough",
            "--bootstrap-servers", bootstrap,
            "--group-id", group_id,
            "--input-topic", input_topic,
            "--output-topic", output_topic,
            "--metrics-port", str(port),
        ]  # fmt: skip
        if kind == "floor":
            command.append("--consume-only")
    if batch is not None:
        command += ["--max-batch-size", str(batch[0])]
        command += ["--max-batch-wait-ms", str(batch[1])]
    command += list(extra_args)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
    subject = Subject(name, process, f"http://127.0.0.1:{port}/metrics", log_path)
    try:
        yield subject
    finally:
        code = subject.stop()
        if code != 0:
            logger.warning("%s exited with code %d; see %s", name, code, log_path)


@dataclass(frozen=True)
class Drain:
    """How fast a subject emptied a backlog."""

    events: int
    seconds: float
    eps: float
    cpu_s: float
    cpu_s_per_million: float
    rss_mb: float


def measure_drain(subject: Subject, events: int) -> Drain:
    """Time ``subject`` through a backlog of ``events`` it starts consuming now.

    Raises:
        SubjectError: the subject exited or retired nothing for a minute.
    """
    first: Snapshot | None = None
    cpu_first = 0.0
    last_progress = time.monotonic()
    last_retired = -1.0
    while True:
        snapshot = subject.try_scrape()
        if snapshot is None:
            subject.check_alive()
            time.sleep(_SCRAPE_FAST_S)
            continue
        if first is None and snapshot.get(_CONSUMED) > 0:
            first, cpu_first = snapshot, subject.cpu_s()
        if first is not None and snapshot.retired >= events:
            cpu = subject.cpu_s() - cpu_first
            seconds = snapshot.at - first.at
            retired = snapshot.retired - first.retired
            eps = retired / seconds if seconds > 0 else math.inf
            return Drain(
                events,
                seconds,
                eps,
                cpu,
                cpu / retired * 1e6 if retired else math.nan,
                subject.peak_rss_mb(),
            )
        if snapshot.retired != last_retired:
            last_retired, last_progress = snapshot.retired, snapshot.at
        elif snapshot.at - last_progress > _STALL_S:
            raise SubjectError(
                f"expected {subject.name} to drain {events:,} events, found it stuck "
                f"at {last_retired:,.0f} for {_STALL_S:.0f} s; see {subject.log_path}"
            )
        time.sleep(_next_scrape(first, snapshot, events))


def _next_scrape(first: Snapshot | None, now: Snapshot, events: int) -> float:
    """Seconds to the next drain scrape: short before the start and near the end."""
    if first is None or now.at <= first.at:
        return _SCRAPE_FAST_S
    rate = (now.retired - first.retired) / (now.at - first.at)
    if rate <= 0:
        return _SCRAPE_FAST_S
    left_s = (events - now.retired) / rate
    return _SCRAPE_SLOW_S if left_s > 2 * _SCRAPE_SLOW_S else _SCRAPE_FAST_S


@dataclass(frozen=True)
class LoadPoint:
    """Latency of a subject under one offered load."""

    offered_eps: float
    sent: int
    achieved_eps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    saturated: bool
    note: str = ""


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000.0, 2)


def measure_load(
    subject: Subject,
    load: LoadGenerator,
    events: Sequence[tuple[bytes, bytes]],
    rate: float,
    duration_s: float,
) -> LoadPoint:
    """Offer ``rate`` events/s for ``duration_s`` to the subject; read the latency."""
    before = subject.scrape()
    started = time.monotonic()
    sent, send_s = load.offer(events, rate, duration_s)
    goal = before.retired + sent
    deadline = time.monotonic() + _CATCH_UP_S
    after = subject.scrape()
    while after.retired < goal and time.monotonic() < deadline:
        time.sleep(0.05)
        after = subject.scrape()
    done = after.retired - before.retired
    elapsed = after.at - started
    previous = dict(before.latency)
    growth = tuple((b, c - previous.get(b, 0.0)) for b, c in after.latency)
    saturated = done < sent
    note = ""
    if send_s > duration_s * 1.05:
        note = f"generator fell behind: {sent / send_s:,.0f}/s sent"
    if saturated:
        note = (note + "; " if note else "") + (
            f"{sent - done:,.0f} of {sent:,} not retired {_CATCH_UP_S:.0f} s "
            "after the load ended"
        )
    return LoadPoint(
        offered_eps=rate,
        sent=sent,
        achieved_eps=round(done / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=_ms(histogram_quantile(0.50, growth)),
        p95_ms=_ms(histogram_quantile(0.95, growth)),
        p99_ms=_ms(histogram_quantile(0.99, growth)),
        saturated=saturated,
        note=note,
    )
