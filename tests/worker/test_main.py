"""``python -m worker`` as a process: exit codes, graceful stop and exact resumption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from kafkakit import committed, produce, read, wait_for, worker_argv
from modelkit import event, feature_rows, write_model_dir

ROOT = Path(__file__).resolve().parents[2]
_PARTITIONS = 2


def _start(argv: list[str]) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    return subprocess.Popen(
        [sys.executable, "-m", "worker", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _run_to_end(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_corrupt_model_exits_non_zero_before_consuming(tmp_path):
    model = write_model_dir(tmp_path / "m")
    (model / "model.onnx").write_bytes(b"garbage")

    result = _run_to_end(["--model", str(model), "--bootstrap-servers", "127.0.0.1:1"])

    assert result.returncode == 2
    assert "sha256" in result.stderr and "expects model.onnx" in result.stderr
    assert "worker started" not in result.stderr


def test_unknown_librdkafka_setting_exits_non_zero_before_consuming(tmp_path):
    model = write_model_dir(tmp_path / "m")

    result = _run_to_end(
        ["--model", str(model), "-X", "no.such.setting=1", "-X", "sasl.password=pw1"]
    )

    assert result.returncode == 2
    assert "expected librdkafka to accept the Kafka settings" in result.stderr
    assert "no.such.setting" in result.stderr
    assert "pw1" not in result.stderr


def test_invalid_setting_exits_non_zero_with_the_fix(tmp_path):
    result = _run_to_end(["--model", str(tmp_path), "--max-batch-size", "-3"])

    assert result.returncode == 2
    assert "max_batch_size: expected an integer" in result.stderr


@pytest.mark.integration
def test_sigterm_stops_cleanly_and_restart_resumes_after_the_last_commit(
    kafka_bootstrap, make_topic, tmp_path
):
    model = write_model_dir(tmp_path / "m")
    source = make_topic(partitions=_PARTITIONS, prefix="tx")
    scores = make_topic(prefix="scores")
    group = f"{source}-g"
    rows = feature_rows(6000, fraud_every=50, seed=9)
    records = [
        (f"e-{i:05d}".encode(), orjson.dumps(event(f"e-{i:05d}", row)))
        for i, row in enumerate(rows)
    ]
    # Events trickle in while the first worker runs, so SIGTERM lands mid-stream.
    feeder = threading.Thread(
        target=lambda: [
            (produce(kafka_bootstrap, source, records[i : i + 200]), time.sleep(0.1))
            for i in range(0, len(records), 200)
        ],
        daemon=True,
    )
    feeder.start()
    argv = worker_argv(
        kafka_bootstrap,
        model,
        source,
        group,
        scores_topic=scores,
        alerts_topic=make_topic(prefix="alerts"),
        max_batch_size=64,
        X=["sasl.password=never-logged-secret"],
    )

    first = _start(argv)
    wait_for(
        lambda: (
            sum(max(o, 0) for o in committed(kafka_bootstrap, group, source, 2)) > 500
        ),
        60,
        "the first worker to commit some offsets",
    )
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out
    assert "signal received name=SIGTERM" in out and "worker stopped" in out
    assert "never-logged-secret" not in out
    stopped_at = committed(kafka_bootstrap, group, source, _PARTITIONS)
    done_first = sum(stopped_at)
    assert 0 < done_first < len(records), "stop came too late to test resumption"
    assert len(read(kafka_bootstrap, scores, done_first, settle_s=1.0)) == done_first

    feeder.join(60)
    second = _start(argv)
    try:
        wait_for(
            lambda: (
                sum(committed(kafka_bootstrap, group, source, _PARTITIONS))
                == len(records)
            ),
            90,
            "the second worker to commit every offset",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        out2, _ = second.communicate(timeout=60)
    assert second.returncode == 0, out2

    outputs = read(kafka_bootstrap, scores, len(records), settle_s=1.0)
    ids = [orjson.loads(m.value())["transaction_id"] for m in outputs]
    assert len(ids) == len(records), "a graceful stop must neither lose nor repeat"
    assert set(ids) == {key.decode() for key, _ in records}
