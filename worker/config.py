"""All worker settings in one frozen object, read from flags and the environment.

Every operator-facing value is declared once in ``_OPTIONS`` with its flag, its
environment variable and its default; flags win over the environment, which wins
over the default. librdkafka settings pass through unchanged from a properties file
(``--kafka-config``) and repeated ``-X key=value`` flags, later ones winning. A key
prefixed ``consumer.`` or ``producer.`` reaches only that client.

Note:
    The input is one named topic. A ``^`` prefix, which librdkafka reads as a regex
    subscription, is refused: offsets, alert sources and lag are kept under the
    configured name, so a pattern would never commit. To read several topics, run
    one worker (and group id) per topic.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from worker.errors import ConfigError
from worker.liveness import stats_interval_ms

__all__ = [
    "Guarantee",
    "Settings",
    "build_parser",
    "is_secret",
    "load_settings",
    "parse_properties",
    "redact",
]

logger = logging.getLogger(__name__)

Guarantee = Literal["at-least-once", "exactly-once"]
GUARANTEES: tuple[Guarantee, ...] = ("at-least-once", "exactly-once")

# librdkafka keys the worker sets itself because its delivery guarantee rests on them.
_RESERVED_KEYS = frozenset(
    {
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.idempotence",
        "transactional.id",
        "group.id",
        "bootstrap.servers",
    }
)
_SECRET_MARKERS = ("password", "secret", "jaas", ".pem", "oauthbearer.config")
_REDACTED = "***"


@dataclass(frozen=True)
class _Option:
    dest: str
    flags: tuple[str, ...]
    env: tuple[str, ...]
    default: str | None
    help: str


_OPTIONS: tuple[_Option, ...] = (
    _Option("model", ("--model",), ("FRAUD_MODEL_DIR",), None,
            "model directory holding model.onnx and model.json"),
    _Option("bootstrap_servers", ("--bootstrap-servers",),
            ("FRAUD_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"), "127.0.0.1:9092",
            "Kafka bootstrap servers, host:port[,host:port]"),
    _Option("group_id", ("--group-id",), ("FRAUD_GROUP_ID",), "fraud-worker",
            "consumer group id"),
    _Option("input_topic", ("--input-topic",), ("FRAUD_INPUT_TOPIC",), "transactions",
            "topic of transaction events (one name; a '^' regex is refused)"),
    _Option("alerts_topic", ("--alerts-topic",), ("FRAUD_ALERTS_TOPIC",),
            "fraud-alerts", "topic that receives fraud alerts"),
    _Option("dlq_topic", ("--dlq-topic",), ("FRAUD_DLQ_TOPIC",), "transactions.dlq",
            "topic for events that cannot be scored; empty only counts them"),
    _Option("scores_topic", ("--scores-topic",), ("FRAUD_SCORES_TOPIC",), "",
            "topic that receives every score; empty turns it off"),
    _Option("threshold", ("--threshold",), ("FRAUD_THRESHOLD",), None,
            "alert threshold in (0, 1); default: the model's threshold"),
    _Option("alert_key_field", ("--alert-key-field",), ("FRAUD_ALERT_KEY_FIELD",),
            "transaction_id", "string field of the event used as the output key"),
    _Option("max_batch_size", ("--max-batch-size",), ("FRAUD_MAX_BATCH_SIZE",), "512",
            "most events scored in one model call"),
    _Option("max_batch_wait_ms", ("--max-batch-wait-ms",),
            ("FRAUD_MAX_BATCH_WAIT_MS",), "5",
            "longest wait for a batch to fill, in milliseconds (at least 1)"),
    _Option("max_event_bytes", ("--max-event-bytes",), ("FRAUD_MAX_EVENT_BYTES",),
            "65536", "events larger than this go to the dead-letter topic"),
    _Option("intra_op_threads", ("--intra-op-threads",),
            ("FRAUD_INTRA_OP_THREADS",), "1", "onnxruntime intra-op threads"),
    _Option("commit_interval_ms", ("--commit-interval-ms",),
            ("FRAUD_COMMIT_INTERVAL_MS",), "1000",
            "at-least-once: how often safe offsets are committed"),
    _Option("metrics_host", ("--metrics-host",), ("FRAUD_METRICS_HOST",), "0.0.0.0",
            "bind address of the metrics/health HTTP server"),
    _Option("metrics_port", ("--metrics-port",), ("FRAUD_METRICS_PORT",), "9108",
            "metrics/health HTTP port; 0 picks a free one, -1 turns it off"),
    _Option("processing_guarantee", ("--processing-guarantee",),
            ("FRAUD_PROCESSING_GUARANTEE",), "at-least-once",
            "at-least-once or exactly-once (transactional producer)"),
    _Option("instance_id", ("--instance-id",), ("FRAUD_INSTANCE_ID",), None,
            "exactly-once: stable id of this instance; default: the host name"),
    _Option("kafka_config", ("--kafka-config",), ("FRAUD_KAFKA_CONFIG",), None,
            "file of librdkafka settings, one key=value a line"),
    _Option("unhealthy_after_s", ("--unhealthy-after-s",),
            ("FRAUD_UNHEALTHY_AFTER_S",), "300",
            "/healthz answers 503 once the consumer group has not been steady for "
            "this many seconds; 0 turns the check off"),
    _Option("log_level", ("--log-level",), ("FRAUD_LOG_LEVEL",), "INFO",
            "DEBUG, INFO, WARNING or ERROR"),
)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """Validated worker settings; build with ``load_settings``."""

    model_dir: Path
    bootstrap_servers: str
    group_id: str
    input_topic: str
    alerts_topic: str
    dlq_topic: str
    scores_topic: str
    threshold: float | None
    alert_key_field: str
    max_batch_size: int
    max_batch_wait_ms: int
    max_event_bytes: int
    intra_op_threads: int
    commit_interval_ms: int
    metrics_host: str
    metrics_port: int
    processing_guarantee: Guarantee
    instance_id: str
    unhealthy_after_s: int
    log_level: str
    kafka: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def transactional_id(self) -> str:
        """Transactional id of the exactly-once producer: group id plus instance id."""
        return f"{self.group_id}-{self.instance_id}"

    def client_config(self, role: Literal["consumer", "producer"]) -> dict[str, str]:
        """Return the pass-through librdkafka settings meant for ``role``."""
        other = "producer." if role == "consumer" else "consumer."
        own = f"{role}."
        out: dict[str, str] = {}
        for key, value in self.kafka.items():
            if key.startswith(other):
                continue
            out[key.removeprefix(own)] = value
        return out

    def describe(self) -> str:
        """Return a one-line summary for the start-up log, with secrets redacted."""
        kafka = ",".join(f"{k}={v}" for k, v in sorted(redact(self.kafka).items()))
        return (
            f"bootstrap={self.bootstrap_servers} group={self.group_id} "
            f"input={self.input_topic} alerts={self.alerts_topic} "
            f"dlq={self.dlq_topic} scores={self.scores_topic or '-'} "
            f"batch={self.max_batch_size}/{self.max_batch_wait_ms}ms "
            f"guarantee={self.processing_guarantee} kafka=[{kafka}]"
        )


def is_secret(key: str) -> bool:
    """Tell whether a librdkafka key holds a secret that must never be logged."""
    lowered = key.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


def redact(config: Mapping[str, str]) -> dict[str, str]:
    """Return a copy of ``config`` with every secret value replaced by ``***``."""
    return {k: (_REDACTED if is_secret(k) else v) for k, v in config.items()}


def parse_properties(text: str, source: str) -> dict[str, str]:
    """Parse java-properties style ``key=value`` lines; ``#`` and ``!`` start comments.

    Raises:
        ConfigError: a line has no ``=``; the message names the source and line.
    """
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"{source}:{number}: expected key=value, found a line without '=' "
                "or without a key; fix or comment out that line"
            )
        out[key.strip()] = value.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``fraud-worker``; defaults are applied later."""
    parser = argparse.ArgumentParser(
        prog="fraud-worker",
        description="Score Kafka transaction events with an ONNX model in "
        "micro-batches and publish fraud alerts.",
    )
    for option in _OPTIONS:
        env = " or ".join(option.env)
        default = "" if option.default is None else f", default {option.default!r}"
        parser.add_argument(
            *option.flags,
            dest=option.dest,
            default=None,
            help=f"{option.help} (env {env}{default})",
        )
    parser.add_argument(
        "-X",
        dest="kafka_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka setting for both clients; prefix the key with consumer. "
        "or producer. to target one; repeatable, wins over --kafka-config",
    )
    return parser


def _raw_values(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for option in _OPTIONS:
        value = getattr(args, option.dest)
        if value is None:
            value = next((environ[e] for e in option.env if environ.get(e)), None)
        values[option.dest] = option.default if value is None else value
    return values


def _integer(name: str, text: str | None, low: int, high: int) -> int:
    try:
        value = int(str(text))
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ConfigError(
            f"{name}: expected an integer in [{low}, {high}], found {text!r}; "
            f"set --{name.replace('_', '-')} to a value in that range"
        )
    return value


def _batch_wait_ms(text: str | None) -> int:
    value = _integer("max_batch_wait_ms", text, 0, 60_000)
    if value == 0:
        # consume() with a zero timeout returns at once when nothing has arrived, so
        # an idle worker would call it in a tight loop and keep a core busy.
        raise ConfigError(
            "max_batch_wait_ms: expected at least 1 ms, found 0, which makes an idle "
            "worker poll without ever blocking and spin a core; set "
            "--max-batch-wait-ms 1 for the lowest latency (default 5)"
        )
    return value


def _threshold(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise ConfigError(
            f"threshold: expected a number strictly between 0 and 1, found {text!r}; "
            "set --threshold or leave it out to use the model's threshold"
        )
    return value


def _kafka_settings(file: str | None, overrides: Sequence[str]) -> dict[str, str]:
    kafka: dict[str, str] = {}
    if file:
        path = Path(file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"kafka_config: expected a readable properties file, found {file!r} "
                f"({exc.strerror}); fix --kafka-config"
            ) from exc
        kafka.update(parse_properties(text, str(path)))
    for item in overrides:
        kafka.update(parse_properties(item, "-X"))
    for key in kafka:
        bare = key.removeprefix("consumer.").removeprefix("producer.")
        if bare in _RESERVED_KEYS:
            raise ConfigError(
                f"librdkafka setting {key!r}: expected it to be left to the worker, "
                "found it in --kafka-config or -X; remove it (use the worker's own "
                "flags such as --bootstrap-servers, --group-id, "
                "--processing-guarantee)"
            )
    return kafka


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Parse flags and environment into validated ``Settings``.

    Raises:
        ConfigError: a value is missing or out of range; the message says which flag
            to change.
        SystemExit: argparse rejected the command line (e.g. ``--help``).
    """
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    raw = _raw_values(args, env)

    if not raw["model"]:
        raise ConfigError(
            "model: expected a model directory, found none; pass --model DIR or set "
            "FRAUD_MODEL_DIR (a directory written by fraud-train)"
        )
    guarantee = str(raw["processing_guarantee"])
    if guarantee not in GUARANTEES:
        raise ConfigError(
            f"processing_guarantee: expected one of {', '.join(GUARANTEES)}, found "
            f"{guarantee!r}; fix --processing-guarantee"
        )
    level = str(raw["log_level"]).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(
            f"log_level: expected DEBUG, INFO, WARNING or ERROR, found {level!r}; "
            "fix --log-level"
        )
    for name in ("bootstrap_servers", "group_id", "input_topic", "alerts_topic"):
        if not raw[name]:
            raise ConfigError(
                f"{name}: expected a non-empty value, found an empty one; "
                f"set --{name.replace('_', '-')}"
            )
    if not raw["alert_key_field"]:
        raise ConfigError(
            "alert_key_field: expected a field name, found an empty one; "
            "set --alert-key-field (default transaction_id)"
        )
    if str(raw["input_topic"]).startswith("^"):
        raise ConfigError(
            "input_topic: expected one topic name, found the pattern "
            f"{raw['input_topic']!r} (a '^' prefix subscribes by regex, which the "
            "worker does not support: it keeps offsets under the configured name); "
            "set --input-topic to one topic and run a worker per topic"
        )
    for name in ("alerts_topic", "dlq_topic", "scores_topic"):
        if raw[name] == raw["input_topic"]:
            raise ConfigError(
                f"{name}: expected a topic other than the input topic, found "
                f"{raw[name]!r} for both; the worker would consume its own output "
                "(a dead letter would be dead-lettered again forever); set "
                f"--{name.replace('_', '-')} to another topic"
            )

    settings = Settings(
        model_dir=Path(str(raw["model"])),
        bootstrap_servers=str(raw["bootstrap_servers"]),
        group_id=str(raw["group_id"]),
        input_topic=str(raw["input_topic"]),
        alerts_topic=str(raw["alerts_topic"]),
        dlq_topic=str(raw["dlq_topic"] or ""),
        scores_topic=str(raw["scores_topic"] or ""),
        threshold=_threshold(raw["threshold"]),
        alert_key_field=str(raw["alert_key_field"]),
        max_batch_size=_integer("max_batch_size", raw["max_batch_size"], 1, 100_000),
        max_batch_wait_ms=_batch_wait_ms(raw["max_batch_wait_ms"]),
        max_event_bytes=_integer(
            "max_event_bytes", raw["max_event_bytes"], 64, 64 * 1024 * 1024
        ),
        intra_op_threads=_integer("intra_op_threads", raw["intra_op_threads"], 0, 256),
        commit_interval_ms=_integer(
            "commit_interval_ms", raw["commit_interval_ms"], 10, 600_000
        ),
        metrics_host=str(raw["metrics_host"]),
        metrics_port=_integer("metrics_port", raw["metrics_port"], -1, 65_535),
        processing_guarantee=guarantee,
        instance_id=str(raw["instance_id"] or socket.gethostname()),
        unhealthy_after_s=_integer(
            "unhealthy_after_s", raw["unhealthy_after_s"], 0, 7 * 86_400
        ),
        log_level=level,
        kafka=_kafka_settings(raw["kafka_config"], args.kafka_overrides),
    )
    _check_liveness(settings)
    return settings


def _check_liveness(settings: Settings) -> None:
    interval_ms = stats_interval_ms(settings.client_config("consumer"))
    if settings.unhealthy_after_s == 0 or not interval_ms or interval_ms < 0:
        return
    # The group state is only known at each statistics interval; a limit shorter
    # than two of them would turn a worker unhealthy between two steady reports.
    if settings.unhealthy_after_s * 1000 < 2 * interval_ms:
        raise ConfigError(
            f"unhealthy_after_s: expected at least two statistics intervals "
            f"({2 * interval_ms / 1000:g} s with statistics.interval.ms="
            f"{interval_ms}), found {settings.unhealthy_after_s}; raise "
            "--unhealthy-after-s, lower -X statistics.interval.ms, or set "
            "--unhealthy-after-s 0 to turn the check off"
        )
