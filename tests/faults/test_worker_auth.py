"""SCRAM-SHA-512 over plaintext and TLS: right credentials work, wrong ones fail fast.

So does a broker certificate the client cannot verify (no ssl.ca.location naming the
broker's CA): a retry cannot fix it, so the worker exits 2 at once.

The fault tests' private broker opens a SASL_PLAINTEXT and a SASL_SSL listener with
one SCRAM user. Events go in and results are checked through its plaintext
listener; the worker itself talks only to a secured one. Its password must appear
in no log line (at DEBUG) and in no metric.
"""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

import orjson
import pytest
from faultkit import (
    PrivateBroker,
    WorkerProcess,
    create_topics,
    kafkakit,
    modelkit,
    unique,
)

pytestmark = pytest.mark.integration

_EVENTS = 300
# Generous on a loaded 2-core machine: start-up takes ~2 s, one failed SASL
# handshake a few milliseconds.
_FAIL_FAST_S = 15.0


def _client_settings(
    private: PrivateBroker, listener: str, password: str, trust_ca: bool = True
) -> str:
    lines = [
        # librdkafka's own debug output about the SASL exchange joins the log too.
        "debug=security",
        "sasl.mechanism=SCRAM-SHA-512",
        f"sasl.username={private.user}",
        f"sasl.password={password}",
    ]
    if listener == "sasl-ssl":
        lines.append("security.protocol=SASL_SSL")
        if trust_ca:
            lines.append(f"ssl.ca.location={private.broker.ca_file}")
    else:
        lines.append("security.protocol=SASL_PLAINTEXT")
    return "\n".join(lines) + "\n"


def _secured_bootstrap(private: PrivateBroker, listener: str) -> str:
    broker = private.broker
    return str(
        broker.tls_bootstrap if listener == "sasl-ssl" else broker.scram_bootstrap
    )


def _argv(
    private: PrivateBroker,
    listener: str,
    password: str,
    tmp_path: Path,
    guarantee: str = "at-least-once",
    trust_ca: bool = True,
) -> tuple[list[str], dict[str, str]]:
    topics = {
        "input": unique("auth-in"),
        "scores": unique("auth-scores"),
        "alerts": unique("auth-alerts"),
        "dlq": unique("auth-dlq"),
    }
    create_topics(private.bootstrap, {name: 1 for name in topics.values()})
    settings = tmp_path / "kafka.properties"
    settings.write_text(_client_settings(private, listener, password, trust_ca))
    argv = kafkakit.worker_argv(
        _secured_bootstrap(private, listener),
        modelkit.write_model_dir(tmp_path / "model"),
        topics["input"],
        f"{topics['input']}-g",
        scores_topic=topics["scores"],
        alerts_topic=topics["alerts"],
        dlq_topic=topics["dlq"],
        kafka_config=settings,
        log_level="DEBUG",
        processing_guarantee=guarantee,
        instance_id="auth",
    )
    return argv, topics


def _refused_at_start(argv: list[str], tmp_path: Path) -> tuple[str, str]:
    """Run a worker that must exit 2 within the fail-fast limit.

    Returns its last ERROR line and its whole log.
    """
    worker = WorkerProcess(argv, tmp_path / "worker.log")
    try:
        code = worker.wait(_FAIL_FAST_S)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        worker.stop()
    log = worker.log()

    assert code is not None, f"still running after {_FAIL_FAST_S} s:\n{log[-3000:]}"
    assert code == 2, log
    return [line for line in log.splitlines() if " ERROR " in line][-1], log


@pytest.mark.parametrize("listener", ["sasl-plaintext", "sasl-ssl"])
def test_right_scram_credentials_let_the_worker_score_events(
    private_broker, tmp_path, listener
):
    private = private_broker
    argv, topics = _argv(private, listener, private.password, tmp_path)
    rows = modelkit.feature_rows(_EVENTS, fraud_every=10, seed=5)
    kafkakit.produce(
        private.bootstrap,
        topics["input"],
        [
            (f"a-{i}".encode(), orjson.dumps(modelkit.event(f"a-{i}", row)))
            for i, row in enumerate(rows)
        ],
    )

    worker = WorkerProcess(argv, tmp_path / "worker.log")
    try:
        group = f"{topics['input']}-g"
        kafkakit.wait_for(
            lambda: (
                kafkakit.committed(private.bootstrap, group, topics["input"], 1)[0]
                == _EVENTS
            ),
            60,
            "the worker to commit every event",
        )
        with urllib.request.urlopen(worker.metrics_url(), timeout=10) as response:
            metrics = response.read().decode()
    finally:
        code = worker.stop()
    log = worker.log()

    assert code == 0, log
    scores = kafkakit.read(private.bootstrap, topics["scores"], _EVENTS)
    assert len(scores) == _EVENTS
    assert "fraud_worker_events_consumed_total 300.0" in metrics
    assert private.password not in log
    assert private.password not in metrics
    assert "sasl.password=***" in log


@pytest.mark.parametrize(
    ("listener", "guarantee"),
    [("sasl-plaintext", "at-least-once"), ("sasl-ssl", "exactly-once")],
)
def test_wrong_password_stops_the_worker_fast_and_names_the_setting(
    private_broker, tmp_path, listener, guarantee
):
    private = private_broker
    wrong = "pw-wrong-" + private.password[-8:]
    argv, _topics = _argv(private, listener, wrong, tmp_path, guarantee)

    last_error, log = _refused_at_start(argv, tmp_path)
    assert "authentication" in last_error.lower(), log
    assert "sasl.username" in last_error and "sasl.password" in last_error, log
    assert wrong not in log and private.password not in log


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_unverifiable_broker_certificate_stops_the_worker_fast_and_names_the_ca(
    private_broker, tmp_path, guarantee
):
    private = private_broker
    # Without ssl.ca.location the client trusts only the system's CAs, and the
    # private broker's certificate is signed by a CA of its own.
    argv, _topics = _argv(
        private, "sasl-ssl", private.password, tmp_path, guarantee, trust_ca=False
    )

    last_error, log = _refused_at_start(argv, tmp_path)
    assert "certificate" in last_error.lower(), log
    assert "ssl.ca.location" in last_error, log
    assert private.password not in log
