"""A trained model scores a replayed stream exactly as offline scoring predicts.

This is the end-to-end contract of the product: ``fraud-train`` exports a model,
``fraud-replay`` turns real and synthetic rows into events, ``fraud-worker`` scores
them on a real broker, and the alerts it publishes are exactly the rows whose offline
onnxruntime score reaches the model's threshold, with the same scores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from kafkakit import committed, read, running_worker, wait_for, worker_argv

from trainer.synthetic import generate

pytestmark = pytest.mark.integration

_EVENTS = 50_000
_PARTITIONS = 3
_SYNTHETIC_SEED = 5
# A small model trains in seconds; its quality does not matter here, only that the
# worker and offline scoring agree on it.
_TRAIN_ARGS = ["--synthetic", "20000", "--epochs", "2", "--seed", "0"]


def _replay(bootstrap: str, topic: str, *source: str) -> None:
    command = [sys.executable, "-m", "worker.replay", *source, "--topic", topic]
    command += ["--bootstrap-servers", bootstrap, "--no-progress"]
    subprocess.run(command, check=True, capture_output=True, timeout=300)


def _offline_alerts(model_dir: Path, ids: list[str], rows: np.ndarray) -> dict:
    meta = json.loads((model_dir / "model.json").read_text())
    session = ort.InferenceSession(str(model_dir / "model.onnx"))
    scores = session.run(
        [meta["output_name"]], {meta["input_name"]: rows.astype(np.float32)}
    )[0][:, 0]
    threshold = meta["threshold"]
    return {
        i: float(s) for i, s in zip(ids, scores.tolist(), strict=True) if s >= threshold
    }


def test_real_and_synthetic_replay_yields_exactly_the_offline_alerts(
    kafka_bootstrap, make_topic, creditcard_csv, tmp_path
):
    model_dir = tmp_path / "model"
    subprocess.run(
        [sys.executable, "-m", "trainer", *_TRAIN_ARGS, "--out", str(model_dir)],
        check=True,
        capture_output=True,
        timeout=600,
    )

    table = np.loadtxt(creditcard_csv, delimiter=",", skiprows=1, dtype=np.float64)
    real_rows = table[:, 1:30]  # V1..V28, Amount; Time and Class left out
    synthetic_count = _EVENTS - len(real_rows)
    synthetic_rows = generate(synthetic_count, seed=_SYNTHETIC_SEED).features
    ids = [f"{creditcard_csv.stem}-{i:08d}" for i in range(len(real_rows))]
    ids += [f"syn{_SYNTHETIC_SEED}-{i:08d}" for i in range(synthetic_count)]
    expected = _offline_alerts(model_dir, ids, np.vstack([real_rows, synthetic_rows]))
    assert expected, "the model raised no alert offline; the comparison would be empty"

    source = make_topic(partitions=_PARTITIONS, prefix="replayed")
    alerts_topic = make_topic(partitions=_PARTITIONS, prefix="replayed-alerts")
    _replay(kafka_bootstrap, source, "--data", str(creditcard_csv))
    _replay(
        kafka_bootstrap,
        source,
        "--synthetic",
        str(synthetic_count),
        "--seed",
        str(_SYNTHETIC_SEED),
    )

    group = f"{source}-g"
    argv = worker_argv(
        kafka_bootstrap, model_dir, source, group, alerts_topic=alerts_topic
    )
    with running_worker(argv) as run:
        wait_for(
            lambda: (
                sum(committed(kafka_bootstrap, group, source, _PARTITIONS)) == _EVENTS
            ),
            180,
            "every offset committed",
        )
        assert run.sample("fraud_worker_events_consumed_total") == _EVENTS
        assert run.sample("fraud_worker_alerts_total") == len(expected)

    alerts = [
        orjson.loads(m.value())
        for m in read(kafka_bootstrap, alerts_topic, len(expected))
    ]
    assert len(alerts) == len(expected)
    assert {a["transaction_id"]: a["score"] for a in alerts} == expected
