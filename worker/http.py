"""A small HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from worker.errors import ConfigError

__all__ = ["MetricsServer"]

logger = logging.getLogger(__name__)


class MetricsServer:
    """Serve metrics and health in a daemon thread.

    Args:
        host: bind address.
        port: TCP port; 0 lets the kernel pick one (read it back from ``port``).
        registry: the registry to expose on ``/metrics``.
        is_ready: answers ``/readyz``: 200 when true, 503 otherwise.
        health_problem: answers ``/healthz``: 200 when it returns None, else 503 with
            the one-line reason it returns; by default always 200.

    Raises:
        ConfigError: ``host`` does not resolve or ``host:port`` cannot be bound.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        is_ready: Callable[[], bool],
        health_problem: Callable[[], str | None] | None = None,
    ) -> None:
        handler = _make_handler(registry, is_ready, health_problem or _no_problem)
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            server_type = type(
                "_Server", (ThreadingHTTPServer,), {"address_family": family}
            )
            self._server = server_type((host, port), handler)
        except OSError as exc:
            raise ConfigError(
                f"metrics server: expected to listen on {host}:{port}, found "
                f"{exc.strerror or exc}; pick a free --metrics-port (0 picks one, "
                "-1 turns the server off) or a local --metrics-host"
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start serving in the background."""
        self._thread.start()
        logger.info("metrics server listening port=%d", self.port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()


def _no_problem() -> str | None:
    return None


def _make_handler(
    registry: CollectorRegistry,
    is_ready: Callable[[], bool],
    health_problem: Callable[[], str | None],
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - name fixed by http.server
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                problem = health_problem()
                if problem is None:
                    self._reply(200, b"ok\n", "text/plain")
                else:
                    body = f"unhealthy: {problem}\n".encode()
                    self._reply(503, body, "text/plain; charset=utf-8")
            elif path == "/readyz":
                ready = is_ready()
                body = b"ready\n" if ready else b"not ready\n"
                self._reply(200 if ready else 503, body, "text/plain")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

    return Handler
