"""``fraud-worker``: score Kafka transaction events and publish fraud alerts.

Exit codes: 0 after a clean stop (SIGTERM or SIGINT), 1 when a runtime error stops
the worker (an output the broker refused, a fatal Kafka error, fencing), 2 when the
settings or the model are unusable; nothing is consumed in that case.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from prometheus_client import CollectorRegistry

from worker.app import Worker
from worker.config import Settings, load_settings
from worker.errors import ConfigError, FraudWorkerError, ModelLoadError
from worker.http import MetricsServer
from worker.metrics import Metrics
from worker.model import load_model

__all__ = ["main"]

logger = logging.getLogger("worker")

_EXIT_OK = 0
_EXIT_RUNTIME = 1
_EXIT_SETUP = 2
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format=_LOG_FORMAT, stream=sys.stderr)
    # ``kill -USR1 <pid>`` prints every thread's stack to stderr, for a stuck worker.
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def _serve(settings: Settings) -> int:
    model = load_model(settings.model_dir, settings.intra_op_threads)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    worker = Worker(settings, model, metrics)

    server: MetricsServer | None = None
    if settings.metrics_port >= 0:
        server = MetricsServer(
            settings.metrics_host,
            settings.metrics_port,
            registry,
            lambda: worker.ready,
            worker.liveness.problem,
        )
        server.start()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal received name=%s", signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return worker.run()
    finally:
        if server is not None:
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker; return the exit code."""
    try:
        settings = load_settings(argv)
    except ConfigError as exc:
        _configure_logging("INFO")
        logger.error("invalid settings: %s", exc)
        return _EXIT_SETUP
    _configure_logging(settings.log_level)
    try:
        return _serve(settings)
    except (ConfigError, ModelLoadError) as exc:
        logger.error("cannot start: %s", exc)
        return _EXIT_SETUP
    except FraudWorkerError as exc:
        logger.error("stopped: %s", exc)
        return _EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
