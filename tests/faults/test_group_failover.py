"""Two workers share a group; one is killed and the other takes over its partitions."""

from __future__ import annotations

import time
from collections.abc import Callable
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

_PARTITIONS = 4


def _run_failover(
    bootstrap: str,
    make_topic: Callable[..., str],
    tmp_path: Path,
    guarantee: str,
    events: int,
    rate: float,
) -> Tally:
    source = make_topic(partitions=_PARTITIONS, prefix="failover-in")
    scores = make_topic(partitions=_PARTITIONS, prefix="failover-scores")
    alerts = make_topic(prefix="failover-alerts")
    group = f"{source}-g"
    model = modelkit.write_model_dir(tmp_path / "model")

    def argv(instance: str) -> list[str]:
        return kafkakit.worker_argv(
            bootstrap,
            model,
            source,
            group,
            scores_topic=scores,
            alerts_topic=alerts,
            processing_guarantee=guarantee,
            instance_id=instance,
            X=list(FAST_GROUP_SETTINGS),
        )

    survivor = WorkerFleet(argv("a"), tmp_path, name="survivor")
    victim = WorkerFleet(argv("b"), tmp_path, name="victim")
    feeder = Feeder(bootstrap, source, events, rate, tmp_path / "feeder.log")
    try:
        survivor.start()
        victim.start()
        # Kill only once both own partitions and the victim has scored some events.
        kafkakit.wait_for(
            lambda: (
                "partitions assigned" in victim.current.log()
                and count_lines(survivor.current.log(), "partitions assigned") >= 1
            ),
            60,
            "both workers to own partitions",
        )
        wait_until_committed(
            bootstrap, group, source, _PARTITIONS, events // 4, timeout_s=60
        )
        time.sleep(0.5)
        seen_before_kill = len(survivor.current.log())
        victim.current.kill()
        killed_at = time.monotonic()

        feeder.wait(events / rate + 120)
        wait_until_committed(
            bootstrap, group, source, _PARTITIONS, events, timeout_s=120
        )
        print(f"survivor finished {time.monotonic() - killed_at:.1f} s after the kill")
        assert survivor.current.stop() == 0, survivor.current.log()
    finally:
        feeder.close()
        survivor.stop_all()
        victim.stop_all()

    log = survivor.current.log()
    tally = Tally.of(bootstrap, source, scores)
    report(
        "kill -9 one of two workers",
        guarantee,
        1,
        tally,
        rate=rate,
        survivor_assignments=count_lines(log, "partitions assigned"),
        survivor_revocations=count_lines(log, "partitions revoked"),
    )
    # After the kill the survivor was assigned every partition.
    taken_over = [
        line
        for line in log[seen_before_kill:].splitlines()
        if "partitions assigned" in line and line.count("[") == _PARTITIONS
    ]
    assert taken_over, log
    assert tally.inputs == events
    assert tally.unexpected == 0
    return tally


def test_survivor_takes_over_a_killed_workers_partitions_without_loss(
    kafka_bootstrap, make_topic, tmp_path
):
    tally = _run_failover(
        kafka_bootstrap, make_topic, tmp_path, "at-least-once", 6_000, 600.0
    )

    assert tally.missing == 0


@pytest.mark.slow
def test_exactly_once_survivor_takes_over_without_loss_or_repeat(
    kafka_bootstrap, make_topic, tmp_path
):
    tally = _run_failover(
        kafka_bootstrap, make_topic, tmp_path, "exactly-once", 30_000, 1_500.0
    )

    assert tally.missing == 0
    assert tally.duplicates == 0
