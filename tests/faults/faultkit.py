"""Fault-injection kit: workers as processes, a paced feeder and an output tally.

Every fault test follows one shape: the replay tool streams synthetic events into a
private input topic while ``python -m worker`` scores them with the scores topic on,
a fault is injected, and afterwards the scores are compared with the inputs by
``transaction_id``: an input without a score is *missing*, a second score of the same
input is a *duplicate*.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

ROOT = Path(__file__).resolve().parents[2]

# The worker's own test kits (tiny ONNX model, worker arguments, committed offsets).
# They live beside the worker tests, which pytest puts on sys.path only when it
# collects them; loading them by path works whichever directory runs first.
_KIT_DIR = ROOT / "tests" / "worker"


def _load_kit(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _KIT_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


modelkit = _load_kit("modelkit")
kafkakit = _load_kit("kafkakit")

# The broker's smallest allowed session timeout: a killed worker's partitions move
# to a live one after 6 s instead of the 45 s default, which keeps the tests short.
FAST_GROUP_SETTINGS: tuple[str, ...] = (
    "consumer.session.timeout.ms=6000",
    "consumer.heartbeat.interval.ms=1000",
)
# Reading a topic to its end takes well under this on a loaded 2-core machine.
_READ_TIMEOUT_S = 120.0
_STOP_TIMEOUT_S = 60.0
_METRICS_PORT = re.compile(r"metrics server listening port=(\d+)")


def fault_seed(default: int) -> int:
    """Return the seed of the random kill moments: ``FRAUD_FAULT_SEED`` or default."""
    raw = os.environ.get("FRAUD_FAULT_SEED", "")
    return int(raw) if raw else default


def free_port_block(count: int) -> int:
    """Return a port p such that p .. p + count - 1 are all free on 127.0.0.1."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        if all(_port_free(p) for p in range(first + 1, first + count)):
            return first
    raise RuntimeError(f"no {count} adjacent free ports found on 127.0.0.1")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    env.update(extra or {})
    return env


class WorkerProcess:
    """One ``python -m worker`` process whose output goes to a log file."""

    def __init__(self, argv: Sequence[str], log_path: Path) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.started_at = time.monotonic()
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker", *self.argv],
                cwd=ROOT,
                env=_clean_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no close; the process is gone at once."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(_STOP_TIMEOUT_S)

    def stop(self) -> int:
        """SIGTERM and wait; return the exit code.

        Raises:
            AssertionError: the worker did not exit in time; it is killed first.
        """
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"worker ignored SIGTERM for {_STOP_TIMEOUT_S:.0f} s and was killed; "
                f"its log: {self.log_path}"
            ) from None

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout_s)

    def metrics_url(self, timeout_s: float = 30.0) -> str:
        """Return the /metrics URL once the worker logged its metrics port."""
        found: list[str] = []

        def logged() -> bool:
            match = _METRICS_PORT.search(self.log())
            if match:
                found.append(match.group(1))
            return bool(match)

        kafkakit.wait_for(logged, timeout_s, "the worker's metrics port in its log")
        return f"http://127.0.0.1:{found[0]}/metrics"


@dataclass
class WorkerFleet:
    """Workers started one after another with the same arguments; keeps every log."""

    argv: list[str]
    log_dir: Path
    name: str = "worker"
    runs: list[WorkerProcess] = field(default_factory=list)

    def start(self) -> WorkerProcess:
        log = self.log_dir / f"{self.name}-{len(self.runs)}.log"
        run = WorkerProcess(self.argv, log)
        self.runs.append(run)
        return run

    @property
    def current(self) -> WorkerProcess:
        return self.runs[-1]

    def logs(self) -> str:
        return "\n".join(run.log() for run in self.runs)

    def stop_all(self) -> None:
        """Stop every run still alive; a run that ignores SIGTERM is killed."""
        for run in self.runs:
            if run.alive:
                try:
                    run.stop()
                except AssertionError:
                    pass  # killed; the test reports its own failure


class Feeder:
    """The replay tool streaming synthetic events at a fixed rate, as a process."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        events: int,
        rate: float,
        log_path: Path,
        seed: int = 0,
    ) -> None:
        self.events = events
        self.log_path = log_path
        self.prefix = f"f{uuid.uuid4().hex[:6]}"
        argv = [
            "--synthetic", str(events),
            "--seed", str(seed),
            "--rate", str(rate),
            "--topic", topic,
            "--bootstrap-servers", bootstrap,
            "--id-prefix", self.prefix,
            "--no-progress",
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker.replay", *argv],
                cwd=ROOT,
                env=_clean_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def done(self) -> bool:
        return self.process.poll() is not None

    def wait(self, timeout_s: float) -> None:
        """Wait for the replay to deliver everything; fail with its log otherwise."""
        code = self.process.wait(timeout_s)
        assert code == 0, f"replay exited {code}:\n{self.log_path.read_text()}"

    def close(self) -> None:
        if not self.done:
            self.process.kill()
            self.process.wait(_STOP_TIMEOUT_S)


def read_all(bootstrap: str, topic: str, key_of: Callable[[Any], str]) -> list[str]:
    """Read every committed record of ``topic`` to its end; return ``key_of`` each."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"fault-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    out: list[str] = []
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        partitions = sorted(meta.partitions)
        consumer.assign(
            [TopicPartition(topic, p, -2) for p in partitions]  # -2: beginning
        )
        pending = set(partitions)
        deadline = time.monotonic() + _READ_TIMEOUT_S
        while pending:
            assert time.monotonic() < deadline, f"{topic} not read to its end"
            for message in consumer.consume(5000, 0.5):
                error = message.error()
                if error is None:
                    out.append(key_of(message))
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                else:
                    raise AssertionError(f"reading {topic} failed: {error}")
    finally:
        consumer.close()
    return out


def _key(message: Any) -> str:
    return bytes(message.key()).decode()


def _value_id(message: Any) -> str:
    return str(orjson.loads(message.value())["transaction_id"])


@dataclass(frozen=True)
class Tally:
    """How the outputs compare with the inputs, by transaction_id."""

    inputs: int
    outputs: int
    missing: int
    duplicates: int
    unexpected: int

    @classmethod
    def of(cls, bootstrap: str, input_topic: str, output_topic: str) -> Tally:
        inputs = read_all(bootstrap, input_topic, _key)
        outputs = read_all(bootstrap, output_topic, _value_id)
        wanted = set(inputs)
        seen = Counter(outputs)
        assert len(wanted) == len(inputs), "the feeder repeated a transaction_id"
        return cls(
            inputs=len(inputs),
            outputs=len(outputs),
            missing=len(wanted - seen.keys()),
            duplicates=sum(n - 1 for n in seen.values()),
            unexpected=len(seen.keys() - wanted),
        )


def report(fault: str, mode: str, injections: int, tally: Tally, **extra: Any) -> None:
    """Print one result line; append it as JSON to ``FRAUD_FAULT_REPORT`` if set."""
    record = {"fault": fault, "mode": mode, "injections": injections}
    record.update(asdict(tally))
    record.update(extra)
    print("fault-result " + json.dumps(record, sort_keys=True))
    target = os.environ.get("FRAUD_FAULT_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps(record, sort_keys=True) + "\n")


def wait_until_committed(
    bootstrap: str,
    group: str,
    topic: str,
    partitions: int,
    total: int,
    timeout_s: float,
    also: Callable[[], None] | None = None,
) -> None:
    """Wait until ``group`` committed every offset of ``topic``; ``also`` runs each
    round (e.g. to fail early when a worker died)."""

    def all_committed() -> bool:
        if also is not None:
            also()
        try:
            offsets = kafkakit.committed(bootstrap, group, topic, partitions)
        except KafkaException:
            return False  # e.g. the coordinator is still loading after a restart
        return sum(max(o, 0) for o in offsets) >= total

    kafkakit.wait_for(all_committed, timeout_s, f"{group} to commit {total} offsets")


def count_lines(text: str, needle: str) -> int:
    """Count the log lines that contain ``needle``."""
    return sum(needle in line for line in text.splitlines())


def create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    """Create topics on a broker that the session's ``make_topic`` does not serve."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n) for name, n in partitions.items()],
        operation_timeout=30,
    )
    for future in futures.values():
        future.result(timeout=30)


def unique(prefix: str) -> str:
    """Return a topic or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class PrivateBroker:
    """A local broker owned by the fault tests, and the launcher that runs it."""

    launcher: ModuleType
    broker: Any
    user: str
    password: str

    @property
    def bootstrap(self) -> str:
        return str(self.broker.bootstrap)

    def stop(self) -> None:
        """Stop the broker and keep its data, as an operator's restart would."""
        self.launcher.stop(self.broker)

    def start(self) -> None:
        """Start it again (or keep it running); its topics and offsets remain."""
        self.launcher.up(self.broker)
