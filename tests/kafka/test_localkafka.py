"""The local launcher starts, reuses and removes a real broker, and fails clearly."""

from __future__ import annotations

import socket
from types import ModuleType

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

pytestmark = pytest.mark.integration


def _free_ports(launcher: ModuleType, count: int = 4) -> int:
    """Return a port p such that p .. p + count - 1 are all free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        following = range(port + 1, port + count)
        if port + count <= 65535 and not any(map(launcher._port_in_use, following)):
            return port
    raise RuntimeError(f"no {count} adjacent free ports found on 127.0.0.1")


@pytest.fixture
def launcher(local_launcher: ModuleType) -> ModuleType:
    return local_launcher


@pytest.fixture
def spare_broker(launcher, monkeypatch):
    monkeypatch.setenv("KAFKA_PORT", str(_free_ports(launcher)))
    for name in ("KAFKA_CONTROLLER_PORT", "KAFKA_SCRAM_PORT", "KAFKA_TLS_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("KAFKA_SCRAM_USERS", raising=False)
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


def _list_topics(config: dict[str, str]) -> list[KafkaError]:
    """Ask for metadata; return the errors the client reported (empty if it worked)."""
    errors: list[KafkaError] = []
    client = Producer({**config, "error_cb": errors.append, "log_level": 0})
    try:
        client.list_topics(timeout=5)
    except KafkaException:
        client.poll(1)  # serves error_cb with the reason the connection failed
    return errors


def test_scram_and_tls_listeners_accept_only_the_configured_credentials(
    launcher, monkeypatch
):
    monkeypatch.setenv("KAFKA_PORT", str(_free_ports(launcher)))
    monkeypatch.setenv("KAFKA_SCRAM_USERS", "alice=alice-secret,bob=bob-secret")
    broker = launcher.Broker.from_env()
    try:
        launcher.up(broker)
        scram = {
            "bootstrap.servers": broker.scram_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "alice",
            "sasl.password": "alice-secret",
        }
        tls = {
            **scram,
            "bootstrap.servers": broker.tls_bootstrap,
            "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(broker.ca_file),
            "sasl.username": "bob",
            "sasl.password": "bob-secret",
        }
        assert _list_topics(scram) == []
        assert _list_topics(tls) == []

        wrong = _list_topics({**scram, "sasl.password": "not-alices"})
        assert wrong and wrong[0].code() == KafkaError._AUTHENTICATION
        untrusted = _list_topics(
            {k: v for k, v in tls.items() if k != "ssl.ca.location"}
        )
        assert untrusted and "certificate verify failed" in untrusted[0].str()
    finally:
        launcher.down(broker)
    assert (
        "alice-secret" not in broker.log_file.parent.joinpath("server.properties").name
    )


def test_malformed_scram_users_are_rejected_with_the_expected_format(
    launcher, monkeypatch
):
    monkeypatch.setenv("KAFKA_SCRAM_USERS", "alice")
    with pytest.raises(launcher.LauncherError, match="user=password pairs"):
        launcher.Broker.from_env()


def test_cluster_ids_never_start_with_a_dash(launcher, monkeypatch):
    # One id in 32 starts with "-", which the storage tool's parser takes for an option.
    ids = iter([b"\xfb" + bytes(15), b"\x00" * 16])
    monkeypatch.setattr(
        launcher.uuid, "uuid4", lambda: type("U", (), {"bytes": next(ids)})()
    )
    cluster_id = launcher._new_cluster_id()
    assert cluster_id == "AAAAAAAAAAAAAAAAAAAAAA"
