"""Shared fixtures: one real Kafka broker per test session and private topics.

The broker comes from, in order of preference:

1. ``KAFKA_BOOTSTRAP_SERVERS``, when set: an existing cluster is used as is.
2. testcontainers' Kafka module, when a Docker engine answers.
3. The local launcher in ``deploy/kafka/localkafka.py``, which runs the real Apache
   Kafka jars on 127.0.0.1 (port ``KAFKA_PORT``, default 9092).

Whatever this file starts, it stops at the end of the session; a broker that was
already running is left alone.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parent.parent
# The real credit-card subset is shared reference data kept beside the checkout, never
# inside it; FRAUDSTREAM_CREDITCARD_CSV points the tests at a copy elsewhere.
SHARED_DATA = Path(
    os.environ.get("FRAUDSTREAM_CREDITCARD_CSV")
    or ROOT.parent / "shared" / "data" / "creditcard" / "creditcard-subset.csv"
)

_TOPIC_TIMEOUT_S = 30.0
# A test that forgets to clean up leaves a few small topics behind; unique names keep
# them from leaking into other tests, and `make kafka-down` removes them all.
_topic_counter = itertools.count()


def _load_launcher() -> ModuleType:
    if "localkafka" in sys.modules:
        return sys.modules["localkafka"]
    path = ROOT / "deploy" / "kafka" / "localkafka.py"
    spec = importlib.util.spec_from_file_location("localkafka", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["localkafka"] = module
    spec.loader.exec_module(module)
    return module


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Yield the bootstrap address of a real Kafka broker."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return

    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return

    launcher = _load_launcher()
    broker = launcher.Broker.from_env()
    if launcher.answers(broker.bootstrap):
        yield broker.bootstrap  # a broker someone else started: use it, leave it
        return
    try:
        started = launcher.up(broker)
    except launcher.LauncherError as exc:
        pytest.exit(f"cannot start the local Kafka broker: {exc}", returncode=3)
    try:
        yield broker.bootstrap
    finally:
        if started:
            launcher.down(broker)


@pytest.fixture(scope="session")
def local_launcher() -> ModuleType:
    """The ``deploy/kafka/localkafka.py`` module, for tests of the launcher itself."""
    return _load_launcher()


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:

    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def make_topic(kafka_admin: AdminClient) -> Iterator[Callable[..., str]]:
    """Return a function that creates a uniquely named topic and returns its name.

    Topics created through it are deleted when the test ends.
    """
    from confluent_kafka.admin import NewTopic

    created: list[str] = []

    def create(partitions: int = 1, prefix: str = "t", **config: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}-{next(_topic_counter)}"
        topic = NewTopic(
            name, num_partitions=partitions, replication_factor=1, config=config
        )
        futures = kafka_admin.create_topics([topic], operation_timeout=_TOPIC_TIMEOUT_S)
        futures[name].result(timeout=_TOPIC_TIMEOUT_S)
        created.append(name)
        return name

    yield create

    if created:
        for future in kafka_admin.delete_topics(created).values():
            try:
                future.result(timeout=_TOPIC_TIMEOUT_S)
            except Exception:
                pass  # deletion is housekeeping; the names are unique anyway


@pytest.fixture(scope="session")
def creditcard_csv() -> Path:
    """Path of the real credit-card subset, or skip when this machine lacks it."""
    if not SHARED_DATA.is_file():
        pytest.skip(
            f"real credit-card subset not found at {SHARED_DATA}; set "
            "FRAUDSTREAM_CREDITCARD_CSV to its path to run this test"
        )
    return SHARED_DATA
