"""A watchdog that ends the process when a blocking Kafka call never returns.

librdkafka's ``send_offsets_to_transaction`` can block past its timeout when the
group coordinator disappeared during the call (for example a single broker that
restarts); the calling thread stays inside C and cannot be interrupted. In
exactly-once mode the only way forward is a new process: its ``init_transactions``
fences this one and aborts the open transaction, so no output is lost or repeated.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

__all__ = ["Watchdog", "exit_process"]

logger = logging.getLogger(__name__)

# How often the watchdog thread looks at the armed call.
_CHECK_INTERVAL_S = 0.5
_EXIT_STALLED = 1


def exit_process() -> None:
    """End the process at once with exit code 1, flushing log handlers first."""
    logging.shutdown()
    os._exit(_EXIT_STALLED)


class Watchdog:
    """Calls ``on_stall`` when a call armed with ``arm`` runs longer than ``limit_s``.

    Args:
        limit_s: how long one armed call may block.
        on_stall: what to do then; the default ends the process.
    """

    def __init__(
        self, limit_s: float, on_stall: Callable[[], None] = exit_process
    ) -> None:
        self.limit_s = limit_s
        self._on_stall = on_stall
        self._armed_at: float | None = None
        self._what = ""
        self._thread = threading.Thread(
            target=self._watch, name="watchdog", daemon=True
        )
        self._thread.start()

    def arm(self, what: str) -> None:
        """Start timing the blocking call ``what``."""
        self._what = what
        self._armed_at = time.monotonic()

    def disarm(self) -> None:
        """Stop timing; the call returned."""
        self._armed_at = None

    def _watch(self) -> None:
        while True:
            time.sleep(_CHECK_INTERVAL_S)
            armed_at = self._armed_at
            if armed_at is None or time.monotonic() - armed_at < self.limit_s:
                continue
            logger.error(
                "expected %s to return within %.0f s, found it still blocked; "
                "the worker exits so that a restart fences this instance and "
                "aborts its open transaction",
                self._what,
                self.limit_s,
            )
            self._on_stall()
            return
