"""Delivery guarantees on a real broker: fencing, kill -9 and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from kafkakit import committed, produce, read, running_worker, wait_for, worker_argv
from modelkit import event, feature_rows, write_model_dir

from worker.errors import KafkaFatalError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
_PARTITIONS = 2


def _records(count: int, prefix: str) -> list[tuple[bytes, bytes]]:
    rows = feature_rows(count, fraud_every=40, seed=21)
    return [
        (f"{prefix}-{i:05d}".encode(), orjson.dumps(event(f"{prefix}-{i:05d}", row)))
        for i, row in enumerate(rows)
    ]


def _feed(bootstrap: str, topic: str, records: list, chunk: int, pause_s: float):
    def run() -> None:
        for start in range(0, len(records), chunk):
            produce(bootstrap, topic, records[start : start + chunk])
            time.sleep(pause_s)

    thread = threading.Thread(target=run, name="feeder", daemon=True)
    thread.start()
    return thread


def _total_committed(bootstrap: str, group: str, topic: str) -> int:
    return sum(max(o, 0) for o in committed(bootstrap, group, topic, _PARTITIONS))


def test_fenced_zombie_cannot_commit_and_outputs_stay_exactly_once(
    kafka_bootstrap, make_topic, model_dir
):
    source = make_topic(partitions=_PARTITIONS, prefix="tx")
    scores = make_topic(prefix="scores")
    group = f"{source}-g"
    records = _records(3000, "e")
    argv = worker_argv(
        kafka_bootstrap,
        model_dir,
        source,
        group,
        scores_topic=scores,
        alerts_topic=make_topic(prefix="alerts"),
        processing_guarantee="exactly-once",
        instance_id="w0",
        max_batch_size=50,
    )
    feeder = _feed(kafka_bootstrap, source, records, 100, 0.1)

    with running_worker(argv) as zombie:
        wait_for(
            lambda: zombie.sample("fraud_worker_commits_total") >= 3,
            60,
            "the first instance to commit transactions",
        )
        with running_worker(argv) as successor:
            zombie.thread.join(60)
            assert not zombie.thread.is_alive(), "the fenced instance kept running"
            feeder.join(60)
            wait_for(
                lambda: (
                    _total_committed(kafka_bootstrap, group, source) == len(records)
                ),
                90,
                "the successor to commit every offset",
            )
        assert successor.outcome == {"code": 0}

    error = zombie.outcome.get("error")
    assert isinstance(error, KafkaFatalError), zombie.outcome
    assert "fenced" in str(error).lower() or "another instance" in str(error)
    outputs = read(kafka_bootstrap, scores, len(records), settle_s=1.0)
    counts = Counter(orjson.loads(m.value())["transaction_id"] for m in outputs)
    assert set(counts) == {key.decode() for key, _ in records}
    assert max(counts.values()) == 1, "a read_committed reader saw a duplicate"


@pytest.mark.parametrize(
    "guarantee",
    ["at-least-once", "exactly-once"],
    ids=["at_least_once", "exactly_once"],
)
def test_kill_minus_nine_and_restart_loses_nothing(
    kafka_bootstrap, make_topic, tmp_path, guarantee
):
    model = write_model_dir(tmp_path / "m")
    source = make_topic(partitions=_PARTITIONS, prefix="tx")
    scores = make_topic(prefix="scores")
    group = f"{source}-g"
    records = _records(5000, "k")
    argv = worker_argv(
        kafka_bootstrap,
        model,
        source,
        group,
        scores_topic=scores,
        alerts_topic=make_topic(prefix="alerts"),
        processing_guarantee=guarantee,
        instance_id="w0",
        max_batch_size=50,
        # The killed member leaves no goodbye; the broker's minimum session timeout
        # bounds how long its partitions stay orphaned.
        X=["consumer.session.timeout.ms=6000", "consumer.heartbeat.interval.ms=1000"],
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    command = [sys.executable, "-m", "worker", *argv]
    feeder = _feed(kafka_bootstrap, source, records, 250, 0.1)

    victim = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wait_for(
        lambda: _total_committed(kafka_bootstrap, group, source) > 800,
        60,
        "the first process to commit",
    )
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    killed_at = _total_committed(kafka_bootstrap, group, source)
    assert killed_at < len(records), "the kill came after the end of the stream"

    survivor = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        feeder.join(60)
        wait_for(
            lambda: _total_committed(kafka_bootstrap, group, source) == len(records),
            90,
            "the restarted process to commit every offset",
        )
    finally:
        survivor.send_signal(signal.SIGTERM)
        _, err = survivor.communicate(timeout=60)
    assert survivor.returncode == 0, err.decode()[-2000:]

    outputs = read(kafka_bootstrap, scores, len(records), settle_s=1.0)
    counts = Counter(orjson.loads(m.value())["transaction_id"] for m in outputs)
    assert set(counts) == {key.decode() for key, _ in records}, "an event was lost"
    if guarantee == "exactly-once":
        assert max(counts.values()) == 1, "a read_committed reader saw a duplicate"
