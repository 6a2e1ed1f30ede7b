"""The watchdog fires only for a call that stays blocked past its limit."""

from __future__ import annotations

import threading
import time

from worker.watchdog import Watchdog


def test_blocked_call_triggers_the_stall_action():
    fired = threading.Event()
    watchdog = Watchdog(0.3, on_stall=fired.set)

    watchdog.arm("send_offsets_to_transaction")

    assert fired.wait(5.0)


def test_call_that_returns_in_time_does_not_trigger_it():
    fired = threading.Event()
    watchdog = Watchdog(1.0, on_stall=fired.set)

    for _ in range(3):
        watchdog.arm("commit_transaction")
        time.sleep(0.2)
        watchdog.disarm()

    assert not fired.wait(1.5)
