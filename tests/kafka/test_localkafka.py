"""The local launcher starts, reuses and removes a real broker, and fails clearly."""

from __future__ import annotations

import socket
from types import ModuleType

import pytest

pytestmark = pytest.mark.integration


def _free_port_pair(launcher: ModuleType) -> int:
    """Return a port p such that p and p + 1 are both free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 65535 and not launcher._port_in_use(port + 1):
            return int(port)
    raise RuntimeError("no two adjacent free ports found on 127.0.0.1")


@pytest.fixture
def launcher(local_launcher: ModuleType) -> ModuleType:
    return local_launcher


@pytest.fixture
def spare_broker(launcher, monkeypatch):
    monkeypatch.setenv("KAFKA_PORT", str(_free_port_pair(launcher)))
    monkeypatch.delenv("KAFKA_CONTROLLER_PORT", raising=False)
    broker = launcher.Broker.from_env()
    yield broker
    launcher.down(broker)


def test_up_twice_leaves_one_broker_and_down_removes_it(launcher, spare_broker):
    assert launcher.up(spare_broker) is True
    first_pid = spare_broker.pid()
    assert first_pid is not None
    assert launcher.answers(spare_broker.bootstrap)
    brokers = launcher.metadata(spare_broker.bootstrap)["brokers"]
    assert [b.split(":")[-1] for b in brokers] == [str(spare_broker.port)]

    assert launcher.up(spare_broker) is False
    assert spare_broker.pid() == first_pid

    assert launcher.down(spare_broker) is True
    assert spare_broker.pid() is None
    assert not spare_broker.run_dir.exists()
    assert not launcher.answers(spare_broker.bootstrap)


def test_taken_port_is_reported_with_the_setting_to_change(launcher, spare_broker):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", spare_broker.port))
        squatter.listen()
        with pytest.raises(launcher.LauncherError, match="already in use.*KAFKA_PORT"):
            launcher.up(spare_broker)


def test_missing_java_is_reported_with_the_install_command(
    launcher, spare_broker, monkeypatch
):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(launcher.LauncherError, match="java was not found.*Java 17"):
        launcher.up(spare_broker)


def test_status_command_exits_non_zero_when_nothing_runs(
    launcher, spare_broker, capsys
):
    assert launcher.main(["status"]) == 3
    assert f"not running on {spare_broker.bootstrap}" in capsys.readouterr().out
