"""Exactly-once: a paused worker that wakes after its replacement took over (a zombie)
commits nothing, so read_committed readers see each input scored exactly once.

The zombie is made with SIGSTOP: the process keeps its open transaction and its
idea of the group generation while the group moves on, then SIGCONT lets it
continue as if nothing happened.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from faultkit import (
    FAST_GROUP_SETTINGS,
    Feeder,
    Tally,
    WorkerFleet,
    count_lines,
    kafkakit,
    modelkit,
    report,
    wait_until_committed,
)

pytestmark = pytest.mark.integration

_PARTITIONS = 2
# Longer than the 6 s session timeout plus a replacement's start-up.
_PAUSE_S = 14.0


@pytest.mark.parametrize(
    "replacement_instance",
    [
        pytest.param("zombie", id="same-transactional-id"),
        pytest.param("successor", id="own-transactional-id", marks=pytest.mark.slow),
    ],
)
def test_woken_zombie_commits_nothing(
    kafka_bootstrap, make_topic, tmp_path: Path, replacement_instance: str
):
    source = make_topic(partitions=_PARTITIONS, prefix="zombie-in")
    scores = make_topic(partitions=_PARTITIONS, prefix="zombie-scores")
    alerts = make_topic(prefix="zombie-alerts")
    group = f"{source}-g"
    model = modelkit.write_model_dir(tmp_path / "model")
    # The stream outlasts the pause by ~10 s, so the woken zombie meets new events.
    events, rate = 12_000, 400.0

    def argv(instance: str) -> list[str]:
        return kafkakit.worker_argv(
            kafka_bootstrap,
            model,
            source,
            group,
            scores_topic=scores,
            alerts_topic=alerts,
            processing_guarantee="exactly-once",
            instance_id=instance,
            X=list(FAST_GROUP_SETTINGS),
        )

    zombie = WorkerFleet(argv("zombie"), tmp_path, name="zombie")
    successor = WorkerFleet(argv(replacement_instance), tmp_path, name="successor")
    feeder = Feeder(kafka_bootstrap, source, events, rate, tmp_path / "feeder.log")
    try:
        paused = zombie.start()
        wait_until_committed(
            kafka_bootstrap, group, source, _PARTITIONS, events // 5, timeout_s=60
        )
        paused.process.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        successor.start()
        time.sleep(max(_PAUSE_S - (time.monotonic() - stopped_at), 0.0))
        paused.process.send_signal(signal.SIGCONT)

        feeder.wait(events / rate + 120)
        wait_until_committed(
            kafka_bootstrap, group, source, _PARTITIONS, events, timeout_s=120
        )
        assert successor.current.alive, successor.current.log()
        assert successor.current.stop() == 0, successor.current.log()
        zombie_code = paused.stop()
    finally:
        feeder.close()
        zombie.stop_all()
        successor.stop_all()

    zombie_log = paused.log()
    tally = Tally.of(kafka_bootstrap, source, scores)
    report(
        "SIGSTOP worker 14 s, replacement starts, SIGCONT (zombie)",
        f"exactly-once/{replacement_instance}",
        1,
        tally,
        zombie_exit=zombie_code,
        zombie_fenced=count_lines(zombie_log, "fenced") > 0,
        zombie_aborts=count_lines(zombie_log, "transaction aborted"),
    )
    assert tally.inputs == events
    assert tally.missing == 0
    assert tally.duplicates == 0
    if replacement_instance == "zombie":
        # Same transactional id: the replacement's init_transactions fenced it.
        assert zombie_code == 1, zombie_log
        assert "another instance" in zombie_log, zombie_log
