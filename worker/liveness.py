"""Consumer group liveness, read from librdkafka's statistics, for ``/healthz``.

librdkafka can lose its consumer group for good (after a broker restart its request for
the group coordinator may stay unsent); the worker then consumes nothing while every
call still succeeds. No callback and no empty assignment tells this apart from an idle
worker or from a worker with more peers than partitions, but the statistics do: the
``cgrp`` object carries the group handler's ``state`` and ``join_state``, which read
``up`` and ``steady`` whenever the consumer is a settled member, with or without
partitions.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping

__all__ = ["STATS_INTERVAL_MS", "GroupLiveness", "stats_interval_ms"]

logger = logging.getLogger(__name__)

# One JSON document per interval; every 5 s costs nothing next to scoring and sees a
# lost group within seconds of the unhealthy limit.
STATS_INTERVAL_MS = 5000
_STATS_KEY = "statistics.interval.ms"
_STEADY = ("up", "steady")


def stats_interval_ms(config: Mapping[str, object]) -> int | None:
    """Return the statistics interval ``config`` asks for, the default when unset.

    Returns None when the value is not an integer (librdkafka refuses it later).
    """
    try:
        return int(str(config.get(_STATS_KEY, STATS_INTERVAL_MS)))
    except ValueError:
        return None


class GroupLiveness:
    """Tell whether the consumer group has been steady recently enough.

    ``on_stats`` is librdkafka's ``stats_cb``: it runs on the consumer's thread once per
    statistics interval, never per record. ``problem`` answers ``/healthz`` from the
    HTTP thread.

    Args:
        unhealthy_after_s: how long the group may stay unsettled (a rebalance takes
            seconds) before the worker counts as unhealthy; 0 turns the check off.
        clock: monotonic seconds; tests pass a fake one.

    Note:
        No statistics at all count as no steady group: when the loop stops calling the
        consumer (statistics are served from its poll), the worker also turns
        unhealthy after the limit. With ``statistics.interval.ms=0`` the check is off.
    """

    def __init__(
        self, unhealthy_after_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit_s = unhealthy_after_s
        self._clock = clock
        self._lock = threading.Lock()
        # Start-up joins the group like a rebalance does, so it gets the same grace.
        self._steady_at = clock()
        self._state: tuple[str, str] | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when the check can turn the worker unhealthy."""
        return self._limit_s > 0

    @property
    def group_state(self) -> tuple[str, str] | None:
        """The last ``(cgrp.state, cgrp.join_state)`` seen; None before statistics."""
        return self._state

    def on_stats(self, stats_json: str) -> None:
        """Record the group state of one statistics document; ignore malformed ones."""
        try:
            cgrp = json.loads(stats_json)["cgrp"]
            state, join_state = cgrp["state"], cgrp["join_state"]
            if not isinstance(state, str) or not isinstance(join_state, str):
                raise TypeError("state and join_state are not strings")
        except (ValueError, TypeError, KeyError) as exc:
            logger.debug(
                "librdkafka statistics ignored: expected JSON with cgrp.state and "
                "cgrp.join_state strings, found %s: %s",
                type(exc).__name__,
                exc,
            )
            return
        with self._lock:
            self._state = (state, join_state)
            if self._state == _STEADY:
                self._steady_at = self._clock()
        self.problem()

    def problem(self) -> str | None:
        """Return None while healthy, else a one-line reason; log the change once."""
        if not self.enabled:
            return None
        with self._lock:
            unsettled_s = self._clock() - self._steady_at
            if unsettled_s <= self._limit_s:
                if self._warned:
                    self._warned = False
                    logger.info("consumer group steady again; healthy")
                return None
            if self._state is None:
                seen = "no statistics yet"
            else:
                seen = f"state={self._state[0]} join_state={self._state[1]}"
            reason = (
                f"consumer group not steady for {unsettled_s:.0f} s (limit "
                f"{self._limit_s:g} s), last seen {seen}; the worker consumes "
                "nothing until it rejoins, a restart rejoins it"
            )
            if not self._warned:
                self._warned = True
                logger.warning("unhealthy: %s", reason)
            return reason
