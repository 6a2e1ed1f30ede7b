"""A worker whose broker does not answer: a few clear log lines, not a flood.

These tests use real librdkafka clients pointed at 127.0.0.1:1, where nothing
listens, so every connect is refused; no broker is needed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from prometheus_client import CollectorRegistry

from worker.app import Worker, _LibrdkafkaLog
from worker.config import load_settings
from worker.metrics import Metrics
from worker.model import load_model

_NOWHERE = "127.0.0.1:1"


def test_unreachable_broker_logs_one_clear_line_not_a_flood(model_dir, caplog):
    settings = load_settings(
        [
            "--model",
            str(model_dir),
            "--bootstrap-servers",
            _NOWHERE,
            "--metrics-port",
            "-1",
        ],
        environ={},
    )
    worker = Worker(settings, load_model(model_dir), Metrics(CollectorRegistry()))
    thread = threading.Thread(target=worker.run, daemon=True)

    with caplog.at_level(logging.INFO, logger="worker"):
        thread.start()
        time.sleep(3)
        worker.stop()
        thread.join(30)

    assert not thread.is_alive()
    librdkafka = [r for r in caplog.records if r.name == "worker.kafka"]
    refused = [r for r in librdkafka if "Connection refused" in r.getMessage()]
    # Unthrottled, each client logs a refused connect about 20 times a second.
    assert refused
    kinds = Counter((r.args[0], r.args[2].split("]")[0]) for r in librdkafka)
    assert max(kinds.values()) == 1, kinds
    clear = [r.getMessage() for r in caplog.records if "cannot reach" in r.getMessage()]
    assert len(clear) == 1
    assert clear[0].startswith(f"cannot reach Kafka at {_NOWHERE} ")
    assert "make kafka-up" in clear[0]


class _Target:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, level: int, msg: str, *args: object) -> None:
        self.lines.append(msg % args)


_FAIL = "[thrd:{}]: {}: Connect to {} failed: Connection refused"


def _fail(broker: str) -> tuple[str, str, str]:
    return ("FAIL", "rdkafka#consumer-1", _FAIL.format(broker, broker, broker))


def test_librdkafka_line_after_a_quiet_spell_counts_the_held_back_ones():
    target = _Target()
    log = _LibrdkafkaLog(target, interval_s=0.2)  # type: ignore[arg-type]

    for _ in range(5):
        log.log(logging.ERROR, "%s [%s] %s", *_fail("a:1/bootstrap"))
    log.log(logging.ERROR, "%s [%s] %s", *_fail("b:1/bootstrap"))
    time.sleep(0.25)
    log.log(logging.ERROR, "%s [%s] %s", *_fail("a:1/bootstrap"))

    assert len(target.lines) == 3
    assert "a:1/bootstrap" in target.lines[0]
    assert "b:1/bootstrap" in target.lines[1]
    assert target.lines[2].endswith("(similar lines not logged=4)")


def test_librdkafka_debug_lines_are_not_throttled():
    target = _Target()
    log = _LibrdkafkaLog(target, interval_s=10.0)  # type: ignore[arg-type]

    for _ in range(5):
        log.log(logging.DEBUG, "%s [%s] %s", "FETCH", "rdkafka#consumer-1", "x")

    assert len(target.lines) == 5
