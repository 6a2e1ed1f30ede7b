"""Settings come from flags, then the environment, then defaults, and are validated."""

from __future__ import annotations

import pytest

from worker.config import is_secret, load_settings, parse_properties, redact
from worker.errors import ConfigError


def test_defaults_apply_when_only_the_model_is_given():
    settings = load_settings(["--model", "m"], environ={})

    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.input_topic == "transactions"
    assert settings.alerts_topic == "fraud-alerts"
    assert settings.dlq_topic == "transactions.dlq"
    assert settings.scores_topic == ""
    assert settings.max_batch_size == 512
    assert settings.max_batch_wait_ms == 5
    assert settings.intra_op_threads == 1
    assert settings.metrics_port == 9108
    assert settings.processing_guarantee == "at-least-once"
    assert settings.threshold is None


def test_flags_win_over_environment_which_wins_over_defaults():
    environ = {
        "FRAUD_MODEL_DIR": "from-env",
        "KAFKA_BOOTSTRAP_SERVERS": "kafka-env:9092",
        "FRAUD_MAX_BATCH_SIZE": "64",
        "FRAUD_GROUP_ID": "env-group",
    }
    settings = load_settings(["--group-id", "flag-group"], environ=environ)

    assert str(settings.model_dir) == "from-env"
    assert settings.bootstrap_servers == "kafka-env:9092"
    assert settings.max_batch_size == 64
    assert settings.group_id == "flag-group"


def test_fraud_bootstrap_servers_wins_over_kafka_bootstrap_servers():
    environ = {"FRAUD_BOOTSTRAP_SERVERS": "a:1", "KAFKA_BOOTSTRAP_SERVERS": "b:2"}
    settings = load_settings(["--model", "m"], environ=environ)
    assert settings.bootstrap_servers == "a:1"


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        ([], "expected a model directory"),
        (["--model", "m", "--max-batch-size", "0"], r"max_batch_size: expected an int"),
        (["--model", "m", "--max-batch-wait-ms", "soon"], "found 'soon'"),
        (["--model", "m", "--max-batch-wait-ms", "0"], "at least 1 ms, found 0"),
        (["--model", "m", "--input-topic", "^tx.*"], "found the pattern '\\^tx"),
        (["--model", "m", "--threshold", "1.5"], "strictly between 0 and 1"),
        (["--model", "m", "--processing-guarantee", "maybe"], "exactly-once"),
        (["--model", "m", "-X", "enable.auto.commit=true"], "left to the worker"),
        (["--model", "m", "-X", "producer.transactional.id=x"], "left to the worker"),
        (["--model", "m", "-X", "novalue"], "expected key=value"),
        (["--model", "m", "--kafka-config", "/nonexistent/x"], "readable properties"),
    ],
    ids=[
        "model_missing",
        "batch_size_zero",
        "wait_not_a_number",
        "wait_zero_spins",
        "input_topic_regex",
        "threshold_above_one",
        "unknown_guarantee",
        "reserved_auto_commit",
        "reserved_transactional_id",
        "override_without_equals",
        "missing_properties_file",
    ],
)
def test_invalid_settings_are_refused_with_a_fix(argv, match):
    with pytest.raises(ConfigError, match=match):
        load_settings(argv, environ={})


def test_properties_file_and_overrides_reach_the_right_client(tmp_path):
    props = tmp_path / "kafka.properties"
    props.write_text(
        "# comment\n! also a comment\n\nsecurity.protocol = SASL_SSL\n"
        "sasl.password=hunter2\nconsumer.fetch.min.bytes=1000\nlinger.ms=1\n"
    )
    settings = load_settings(
        [
            "--model",
            "m",
            "--kafka-config",
            str(props),
            "-X",
            "linger.ms=20",
            "-X",
            "producer.compression.type=lz4",
        ],
        environ={},
    )

    consumer = settings.client_config("consumer")
    producer = settings.client_config("producer")
    assert consumer["fetch.min.bytes"] == "1000"
    assert "compression.type" not in consumer
    assert producer["compression.type"] == "lz4"
    assert "fetch.min.bytes" not in producer
    assert producer["linger.ms"] == "20"
    assert consumer["security.protocol"] == "SASL_SSL"


def test_secrets_never_appear_in_the_description_or_repr(tmp_path):
    settings = load_settings(
        [
            "--model",
            "m",
            "-X",
            "sasl.password=hunter2",
            "-X",
            "ssl.key.password=k3y",
            "-X",
            "sasl.username=alice",
        ],
        environ={},
    )

    text = settings.describe() + repr(settings)
    assert "hunter2" not in text and "k3y" not in text
    assert "sasl.password=***" in text and "sasl.username=alice" in text


@pytest.mark.parametrize(
    "key",
    ["sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret",
     "ssl.key.pem", "sasl.jaas.config"],
)  # fmt: skip
def test_secret_keys_are_recognised(key):
    assert is_secret(key)
    assert redact({key: "x"}) == {key: "***"}


def test_parse_properties_keeps_equals_signs_in_values():
    assert parse_properties("a=b=c\n", "t") == {"a": "b=c"}


def test_transactional_id_joins_group_and_instance():
    settings = load_settings(
        ["--model", "m", "--group-id", "g", "--instance-id", "w-0"], environ={}
    )
    assert settings.transactional_id == "g-w-0"
