"""Fixtures of the fault tests: a private broker that a test may stop and restart.

The session broker serves every other test at the same time, so it is never stopped;
faults aimed at the broker go to this one, started on free ports by the local
launcher. It also opens SCRAM-SHA-512 listeners (plaintext and TLS) for the
security tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import ModuleType

import pytest
from faultkit import PrivateBroker, free_port_block


@pytest.fixture(scope="session")
def private_broker(local_launcher: ModuleType) -> Iterator[PrivateBroker]:
    """A broker on free ports with a SCRAM user; removed with its data at the end."""
    user, password = "fault-user", f"pw-{uuid.uuid4().hex}"
    port = free_port_block(4)
    home = local_launcher.cache_root() / f"kafka-{local_launcher.kafka_version()}"
    broker = local_launcher.Broker(
        port, port + 1, home, ((user, password),), port + 2, port + 3
    )
    try:
        local_launcher.up(broker)
    except local_launcher.LauncherError as exc:
        pytest.fail(f"cannot start the private broker for fault tests: {exc}")
    try:
        yield PrivateBroker(local_launcher, broker, user, password)
    finally:
        local_launcher.down(broker)
