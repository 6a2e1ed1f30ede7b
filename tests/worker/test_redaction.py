"""Secret Kafka settings never reach the worker's errors or log lines."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from fakes import FakeConsumer, FakeProducer
from prometheus_client import CollectorRegistry

from worker.app import Worker
from worker.config import load_settings
from worker.errors import ConfigError, KafkaFatalError
from worker.metrics import Metrics
from worker.model import load_model
from worker.redaction import Redactor, secret_values

_OAUTH = "principal=admin scope=s3cr3t-scope"
_PASSWORD = "pw-Sekrit99"


def _worker(model_dir: Path, producer_factory: Any = FakeProducer) -> Worker:
    settings = load_settings(
        [
            "--model",
            str(model_dir),
            "--metrics-port",
            "-1",
            "-X",
            f"sasl.oauthbearer.config={_OAUTH}",
            "-X",
            f"sasl.password={_PASSWORD}",
        ],
        environ={},
    )
    return Worker(
        settings,
        load_model(model_dir),
        Metrics(CollectorRegistry()),
        consumer_factory=FakeConsumer,
        producer_factory=producer_factory,
    )


def test_secret_values_are_those_of_secret_settings_only():
    kafka = {"sasl.password": "p1", "client.rack": "r", "sasl.jaas.config": ""}
    assert secret_values(kafka) == ["p1"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bad config: principal=admin scope=s3cr3t-scope", "bad config: ***"),
        ("beginning at: scope=s3cr3t-scope", "beginning at: ***"),
        ("token s3cr3t-scope refused", "token *** refused"),
        ("user admin logged in", "user *** logged in"),
    ],
    ids=["whole_value", "quoted_piece", "piece_value", "value_after_equals"],
)
def test_redactor_replaces_whole_secrets_and_their_pieces(text, expected):
    assert Redactor([_OAUTH]).scrub(text) == expected


def test_pieces_shorter_than_four_characters_are_kept_but_whole_values_are_not():
    redactor = Redactor(["ab cd", "xy"])
    assert redactor.scrub("ab and cd, then xy") == "ab and cd, then ***"
    assert redactor.scrub("ab cd") == "***"


def test_redacted_error_drops_the_library_error_that_quotes_the_secret():
    cause = KafkaException(KafkaError(KafkaError._INVALID_ARG, f"bad {_PASSWORD}"))
    try:
        try:
            raise cause
        except KafkaException as exc:
            raise KafkaFatalError(f"found {exc.args[0]}") from exc
    except KafkaFatalError as error:
        Redactor([_PASSWORD]).scrub_error(error)
        caught = error

    assert _PASSWORD not in str(caught) and "***" in str(caught)
    assert caught.__cause__ is None and caught.__suppress_context__


def test_kafka_errors_the_worker_logs_are_redacted(model_dir, caplog):
    worker = _worker(model_dir)
    caplog.set_level(logging.INFO)

    worker._on_error(KafkaError(KafkaError._TRANSPORT, f"login {_PASSWORD} refused"))
    logging.getLogger("worker.kafka").warning("SASL: %s", "scope=s3cr3t-scope")

    assert "login *** refused" in caplog.text
    assert "SASL: ***" in caplog.text
    assert _PASSWORD not in caplog.text and "s3cr3t" not in caplog.text


def test_settings_librdkafka_refuses_are_reported_without_the_secret(model_dir):
    def refusing(_config: dict[str, Any]) -> Any:
        raise KafkaException(
            KafkaError(KafkaError._INVALID_ARG, f'Invalid value "{_PASSWORD}"')
        )

    with pytest.raises(ConfigError, match="expected librdkafka to accept") as caught:
        _worker(model_dir, producer_factory=refusing)

    assert _PASSWORD not in str(caught.value)
    assert caught.value.__cause__ is None
