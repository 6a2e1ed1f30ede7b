#!/usr/bin/env python3
"""Run a real single-node Apache Kafka broker on 127.0.0.1 without Docker.

The jars of the Apache Kafka release pinned in ``pom.xml`` beside this file are
resolved from Maven Central with ``mvn`` into a cache outside the repository,
then ``kafka.Kafka`` runs in KRaft mode as broker and controller in one JVM.

Usage::

    python3 deploy/kafka/localkafka.py up        # start, or keep the one running
    python3 deploy/kafka/localkafka.py status    # running? address? pid?
    python3 deploy/kafka/localkafka.py stop      # stop, keep the data
    python3 deploy/kafka/localkafka.py down      # stop and delete the data

Environment:
    KAFKA_PORT: client port on 127.0.0.1 (default 9092).
    KAFKA_CONTROLLER_PORT: KRaft controller port (default KAFKA_PORT + 1).
    FRAUDSTREAM_CACHE: cache root (default ``$XDG_CACHE_HOME/fraudstream`` or
        ``~/.cache/fraudstream``). Jars live in ``kafka-<version>/libs``, each
        broker's data and log in ``kafka-<version>/run/<port>``.
    KAFKA_HEAP_OPTS: JVM heap flags (default ``-Xms256m -Xmx1g``).
    KAFKA_SCRAM_USERS: ``user=password`` pairs separated by commas. When set, the
        broker stores these SCRAM-SHA-512 credentials and opens the listeners below.
    KAFKA_SCRAM_PORT: a SASL_PLAINTEXT listener with SCRAM-SHA-512 (default
        KAFKA_PORT + 2, only with KAFKA_SCRAM_USERS).
    KAFKA_TLS_PORT: a SASL_SSL listener with SCRAM-SHA-512 (default KAFKA_PORT + 3,
        only with KAFKA_SCRAM_USERS). Its self-signed certificate for 127.0.0.1 and
        localhost is written to ``run/<port>/tls/ca.pem`` for clients to trust.

Only the standard library is used, so this runs before any virtualenv exists.
It is also imported by ``tests/conftest.py``.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_POM = _HERE / "pom.xml"

# A cold JVM plus KRaft formatting takes ~3 s here; a slow CI machine gets ample room.
_START_TIMEOUT_S = 90.0
# The broker flushes and closes its log segments on SIGTERM; give it time to.
_STOP_TIMEOUT_S = 30.0
_MIN_JAVA = 17


class LauncherError(RuntimeError):
    """A broker could not be started or stopped; the message says how to fix it."""


def kafka_version() -> str:
    """The Apache Kafka version pinned in ``pom.xml``."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(_POM).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not node.text:
        raise LauncherError(f"{_POM} has no <kafka.version> property")
    return node.text.strip()


def cache_root() -> Path:
    if os.environ.get("FRAUDSTREAM_CACHE"):
        return Path(os.environ["FRAUDSTREAM_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "fraudstream"


def _port_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise LauncherError(f"{name} must be a TCP port from 1 to 65535, got {raw!r}")
    return port


def _scram_users_from_env() -> tuple[tuple[str, str], ...]:
    raw = os.environ.get("KAFKA_SCRAM_USERS", "")
    users = []
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        name, sep, password = pair.partition("=")
        # The storage tool parses credentials as name=...,password=... in brackets.
        if not sep or not name or not password or set(name + password) & set('[]=,"'):
            raise LauncherError(
                "KAFKA_SCRAM_USERS must be user=password pairs separated by commas, "
                "without [ ] = , or quotes inside names and passwords; got an entry "
                f"starting {pair[:3]!r}"
            )
        users.append((name, password))
    return tuple(users)


@dataclass(frozen=True)
class Broker:
    """Where one local broker lives: its ports, files and process id."""

    port: int
    controller_port: int
    home: Path
    scram_users: tuple[tuple[str, str], ...] = ()
    scram_port: int | None = None
    tls_port: int | None = None

    @classmethod
    def from_env(cls) -> Broker:
        port = _port_from_env("KAFKA_PORT", 9092)
        controller = _port_from_env("KAFKA_CONTROLLER_PORT", port + 1)
        users = _scram_users_from_env()
        scram = _port_from_env("KAFKA_SCRAM_PORT", port + 2) if users else None
        tls = _port_from_env("KAFKA_TLS_PORT", port + 3) if users else None
        ports = [p for p in (port, controller, scram, tls) if p is not None]
        if len(set(ports)) != len(ports):
            raise LauncherError(
                "KAFKA_PORT, KAFKA_CONTROLLER_PORT, KAFKA_SCRAM_PORT and "
                f"KAFKA_TLS_PORT must all differ; got {ports}"
            )
        home = cache_root() / f"kafka-{kafka_version()}"
        return cls(port, controller, home, users, scram, tls)

    @property
    def scram_bootstrap(self) -> str | None:
        return None if self.scram_port is None else f"127.0.0.1:{self.scram_port}"

    @property
    def tls_bootstrap(self) -> str | None:
        return None if self.tls_port is None else f"127.0.0.1:{self.tls_port}"

    @property
    def tls_dir(self) -> Path:
        return self.run_dir / "tls"

    @property
    def ca_file(self) -> Path:
        """PEM certificate that clients of the TLS listener trust."""
        return self.tls_dir / "ca.pem"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run" / str(self.port)

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "broker.pid"

    def pid(self) -> int | None:
        """The pid of this broker's JVM if it is alive, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return None
        # A recycled pid belongs to some other program: do not claim it.
        if b"kafka.Kafka" not in cmdline or str(self.run_dir).encode() not in cmdline:
            return None
        return pid


# --- talking to the broker ---------------------------------------------------


def metadata(address: str, timeout_s: float = 2.0) -> dict[str, object]:
    """Send one Kafka Metadata request (v4) and return the brokers it lists.

    This is the readiness probe: a broker that answers it is serving clients.

    Raises:
        OSError: nothing answered at ``address`` or the answer was cut short.
    """
    host, _, port = address.rpartition(":")
    api_key, api_version, correlation_id = 3, 4, 7
    client_id = b"fraudstream-launcher"
    # Header v1: api_key, api_version, correlation_id, client_id.
    # Body v4: topics = null (-1, all), allow_auto_topic_creation = false.
    request = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id))
    request += client_id + struct.pack(">ib", -1, 0)
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        body = _recv_exact(sock, size)
    if struct.unpack_from(">i", body, 0)[0] != correlation_id:
        raise OSError(f"{address} answered a Metadata request out of order")
    pos = 4 + 4  # correlation id, throttle_time_ms
    (n_brokers,) = struct.unpack_from(">i", body, pos)
    pos += 4
    brokers = []
    for _ in range(n_brokers):
        node_id, host_len = struct.unpack_from(">ih", body, pos)
        pos += 6
        broker_host = body[pos : pos + host_len].decode()
        pos += host_len
        (broker_port, rack_len) = struct.unpack_from(">ih", body, pos)
        pos += 6 + max(rack_len, 0)
        brokers.append(f"{node_id}@{broker_host}:{broker_port}")
    return {"brokers": brokers}


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise OSError("connection closed before the reply was complete")
        chunks += chunk
    return bytes(chunks)


def answers(address: str) -> bool:
    try:
        return bool(metadata(address)["brokers"])
    except (OSError, struct.error):
        return False


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# --- preparing the jars ------------------------------------------------------


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise LauncherError(
            f"java was not found on PATH; Apache Kafka {kafka_version()} needs Java "
            f"{_MIN_JAVA} or newer (Debian: apt-get install openjdk-17-jre-headless)"
        )
    out = subprocess.run(
        [java, "-XshowSettings:properties", "-version"],
        capture_output=True,
        text=True,
        check=False,
    ).stderr
    for line in out.splitlines():
        if "java.specification.version" in line:
            found = line.split("=")[-1].strip()
            if int(found.split(".")[-1] if found.startswith("1.") else found) < 17:
                raise LauncherError(
                    f"Apache Kafka {kafka_version()} needs Java {_MIN_JAVA} or newer, "
                    f"{java} is Java {found}; put a newer java first on PATH"
                )
    return java


def ensure_jars(broker: Broker) -> Path:
    """Resolve the Kafka jars into the cache once; later calls return at once."""
    marker = broker.libs / ".complete"
    if marker.exists():
        return broker.libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LauncherError(
            "mvn was not found on PATH; it fetches the Apache Kafka jars from Maven "
            "Central on first use (Debian: apt-get install maven)"
        )
    staging = broker.home / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    print(
        f"Fetching Apache Kafka {kafka_version()} jars from Maven Central "
        f"into {broker.libs} (first run only)...",
        file=sys.stderr,
    )
    result = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(_POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise LauncherError(
            f"mvn could not fetch Apache Kafka {kafka_version()} from Maven Central "
            f"(exit {result.returncode}). Check network access and any proxy or "
            f"mirror in ~/.m2/settings.xml, then run again. mvn said:\n{tail}"
        )
    shutil.rmtree(broker.libs, ignore_errors=True)
    staging.rename(broker.libs)
    marker.touch()
    return broker.libs


# --- configuration -----------------------------------------------------------


def _server_properties(broker: Broker) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{broker.controller_port}",
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{broker.port},"
            f"CONTROLLER://127.0.0.1:{broker.controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(broker.data_dir),
        "num.partitions": "1",
        # One node: every internal topic has a single replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "8",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Tests create many short-lived groups; do not wait 3 s for each.
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
    }
    if broker.scram_users:
        settings.update(_secured_listener_settings(broker, settings))
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _secured_listener_settings(broker: Broker, base: dict[str, str]) -> dict[str, str]:
    # Inter-broker and controller traffic stay on the plaintext listeners; only
    # clients authenticate, which is all a single local node needs.
    login = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    extra = {
        "SCRAM": ("SASL_PLAINTEXT", broker.scram_port),
        "TLS": ("SASL_SSL", broker.tls_port),
    }
    settings = {
        "listeners": base["listeners"]
        + "".join(f",{name}://127.0.0.1:{port}" for name, (_, port) in extra.items()),
        "advertised.listeners": base["advertised.listeners"]
        + "".join(f",{name}://127.0.0.1:{port}" for name, (_, port) in extra.items()),
        "listener.security.protocol.map": base["listener.security.protocol.map"]
        + "".join(f",{name}:{protocol}" for name, (protocol, _) in extra.items()),
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.scram.scram-sha-512.sasl.jaas.config": login,
        "listener.name.tls.scram-sha-512.sasl.jaas.config": login,
        "listener.name.tls.ssl.keystore.type": "PKCS12",
        "listener.name.tls.ssl.keystore.location": str(broker.tls_dir / "broker.p12"),
        "listener.name.tls.ssl.keystore.password": _KEYSTORE_PASSWORD,
        "listener.name.tls.ssl.key.password": _KEYSTORE_PASSWORD,
    }
    return settings


# The keystore holds a throwaway self-signed key made for this local broker only.
_KEYSTORE_PASSWORD = "fraudstream-local"


def _make_certificate(broker: Broker) -> None:
    keystore = broker.tls_dir / "broker.p12"
    if keystore.exists() and broker.ca_file.exists():
        return
    keytool = shutil.which("keytool")
    if keytool is None:
        raise LauncherError(
            "keytool was not found on PATH; it ships with the JDK and makes the TLS "
            "listener's certificate (Debian: apt-get install openjdk-17-jdk-headless)"
        )
    broker.tls_dir.mkdir(parents=True, exist_ok=True)
    common = ["-storetype", "PKCS12", "-keystore", str(keystore)]
    common += ["-storepass", _KEYSTORE_PASSWORD, "-alias", "broker"]
    for args in (
        ["-genkeypair", "-keyalg", "RSA", "-keysize", "2048", "-validity", "30"]
        + ["-dname", "CN=localhost", "-ext", "SAN=ip:127.0.0.1,dns:localhost"]
        + ["-keypass", _KEYSTORE_PASSWORD],
        ["-exportcert", "-rfc", "-file", str(broker.ca_file)],
    ):
        result = subprocess.run(
            [keytool, *args, *common], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise LauncherError(f"keytool failed:\n{result.stdout}{result.stderr}")


def _log4j_config(broker: Broker) -> Path:
    path = broker.run_dir / "log4j2.properties"
    path.write_text(
        "rootLogger.level = INFO\n"
        "rootLogger.appenderRef.out.ref = out\n"
        "appender.out.type = Console\n"
        "appender.out.name = out\n"
        "appender.out.layout.type = PatternLayout\n"
        "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
        # The broker prints every config value at INFO on start; keep the log short.
        "logger.config.name = org.apache.kafka.common.config.AbstractConfig\n"
        "logger.config.level = WARN\n"
    )
    return path


def _redact(text: str, broker: Broker) -> str:
    for _, password in broker.scram_users:
        text = text.replace(password, "[redacted]")
    return text


def _classpath(libs: Path) -> str:
    return os.pathsep.join(str(jar) for jar in sorted(libs.glob("*.jar")))


def _new_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes in URL-safe base64, like Kafka's own tool.

    The storage tool's argument parser reads an id starting with "-" as an option and
    fails, so such ids (one in 32) are drawn again.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(java: str, broker: Broker, props: Path, log4j: Path) -> None:
    if (broker.data_dir / "meta.properties").exists():
        return
    cluster_id = _new_cluster_id()
    result = subprocess.run(
        [
            java,
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            _classpath(broker.libs),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster_id,
            "-c",
            str(props),
            *(
                arg
                for name, password in broker.scram_users
                for arg in (
                    "--add-scram",
                    f"SCRAM-SHA-512=[name={name},password={password}]",
                )
            ),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LauncherError(
            f"formatting the KRaft storage in {broker.data_dir} failed:\n"
            f"{_redact(result.stdout + result.stderr, broker)}"
        )


# --- commands ----------------------------------------------------------------


def up(broker: Broker) -> bool:
    """Start the broker unless it already runs; return True if this call started it."""
    if broker.pid() is not None and answers(broker.bootstrap):
        return False
    java = _require_java()
    for port, setting in (
        (broker.port, "KAFKA_PORT"),
        (broker.controller_port, "KAFKA_CONTROLLER_PORT"),
        (broker.scram_port, "KAFKA_SCRAM_PORT"),
        (broker.tls_port, "KAFKA_TLS_PORT"),
    ):
        if port is not None and _port_in_use(port):
            raise LauncherError(
                f"127.0.0.1:{port} is already in use by another process; stop it or "
                f"choose a free port with {setting}=... "
                f"(a broker already there can be used with KAFKA_BOOTSTRAP_SERVERS)"
            )
    ensure_jars(broker)
    broker.run_dir.mkdir(parents=True, exist_ok=True)
    if broker.scram_users:
        _make_certificate(broker)
    props = broker.run_dir / "server.properties"
    props.write_text(_server_properties(broker))
    log4j = _log4j_config(broker)
    _format_storage(java, broker, props, log4j)

    heap = os.environ.get("KAFKA_HEAP_OPTS", "-Xms256m -Xmx1g").split()
    command = [
        java,
        *heap,
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dkafka.logs.dir={broker.run_dir}",
        "-cp",
        _classpath(broker.libs),
        "kafka.Kafka",
        str(props),
    ]
    with open(broker.log_file, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the shell or test run that started it
        )
    broker.pid_file.write_text(f"{process.pid}\n")

    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LauncherError(
                f"the Kafka broker exited with code {process.returncode} during start; "
                f"last lines of {broker.log_file}:\n{_tail(broker.log_file)}"
            )
        if answers(broker.bootstrap):
            return True
        time.sleep(0.25)
    _terminate(process.pid)
    raise LauncherError(
        f"the Kafka broker did not answer a metadata request on {broker.bootstrap} "
        f"within {_START_TIMEOUT_S:.0f} s; last lines of {broker.log_file}:\n"
        f"{_tail(broker.log_file)}"
    )


def stop(broker: Broker) -> bool:
    """Stop the broker, keeping its data; return True if one was running."""
    pid = broker.pid()
    if pid is not None:
        _terminate(pid)
    broker.pid_file.unlink(missing_ok=True)
    return pid is not None


def down(broker: Broker) -> bool:
    """Stop the broker and delete its data and log; return True if one was running."""
    was_running = stop(broker)
    shutil.rmtree(broker.run_dir, ignore_errors=True)
    return was_running


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _alive(pid: int) -> bool:
    # A child of ours that exited stays a zombie until reaped; reap it here.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log was written)"


def _secured_summary(broker: Broker) -> str:
    if not broker.scram_users:
        return ""
    users = ", ".join(name for name, _ in broker.scram_users)
    return (
        f"\n  scram:     {broker.scram_bootstrap} (SASL_PLAINTEXT, SCRAM-SHA-512)"
        f"\n  tls:       {broker.tls_bootstrap} (SASL_SSL, SCRAM-SHA-512)"
        f"\n  ca:        {broker.ca_file}"
        f"\n  users:     {users}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "status", "stop", "down"])
    args = parser.parse_args(argv)
    try:
        broker = Broker.from_env()
        if args.command == "up":
            started_at = time.monotonic()
            started = up(broker)
            verb = "started" if started else "already running"
            print(
                f"Kafka {kafka_version()} {verb} "
                f"({time.monotonic() - started_at:.1f} s)\n"
                f"  bootstrap: {broker.bootstrap}\n"
                f"  pid:       {broker.pid()}\n"
                f"  log:       {broker.log_file}"
                f"{_secured_summary(broker)}"
            )
        elif args.command == "status":
            pid = broker.pid()
            if pid is None:
                print(f"Kafka is not running on {broker.bootstrap}")
                return 3
            state = "answering" if answers(broker.bootstrap) else "not answering yet"
            print(
                f"Kafka {kafka_version()} running, {state}\n"
                f"  bootstrap: {broker.bootstrap}\n"
                f"  pid:       {pid}\n"
                f"  log:       {broker.log_file}"
            )
        elif args.command == "stop":
            was = stop(broker)
            print(
                f"Kafka on {broker.bootstrap} {'stopped' if was else 'was not running'}"
            )
        else:
            was = down(broker)
            state = "stopped" if was else "was not running"
            print(f"Kafka on {broker.bootstrap} {state}; data removed")
    except LauncherError as exc:
        print(f"localkafka: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
